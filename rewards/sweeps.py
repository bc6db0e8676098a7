"""Reconciler sweeps of rewards (registered in ``RewardsConfig.ready``; referral_platform/reconcile.py).

Each finds work a dead worker left in a non-final state and queues its (idempotent) task again:
Stripe webhook events still ``received``, payouts ``processing`` whose executor died, and processed
conversion events whose referral was never settled (no ``RewardEvaluation`` row).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from referral_platform.celery import enqueue_on_commit
from referrals.models import SETTLED_EVENT_STATUSES, ConversionEvent

from .models import Payout, PayoutStatus, RewardEvaluation, StripeCharge, StripeWebhookEvent, WebhookEventStatus

BATCH = 1000


def stripe_events_requeue_stale(*, cutoff: datetime, max_attempts: int) -> int:
    """Webhook events still ``received`` since before ``cutoff`` are queued again; one received more than
    ``max_attempts`` periods ago is failed with the reason (it can be re-sent from Stripe's dashboard)."""
    from .tasks import stripe_event_process

    now = timezone.now()
    give_up_before = now - (now - cutoff) * (max_attempts + 1)
    stale = StripeWebhookEvent.objects.filter(status=WebhookEventStatus.RECEIVED, received_at__lt=cutoff)
    failed = stale.filter(received_at__lt=give_up_before).update(
        status=WebhookEventStatus.FAILED,
        error=f"Not processed after {max_attempts} re-queues by the reconciler; re-send it from Stripe.",
        processed_at=now,
    )
    ids = list(stale.order_by("pk").values_list("pk", flat=True)[:BATCH])
    with transaction.atomic():
        for event_id in ids:
            enqueue_on_commit(stripe_event_process, event_id)
    return failed + len(ids)


def payouts_requeue_stale(*, cutoff: datetime, max_attempts: int) -> int:
    """Payouts claimed (``processing``) before ``cutoff`` whose executor never recorded an answer are
    executed again: the execution lease skips one still running, and the Stripe idempotency key makes a
    replay return the first result."""
    from .tasks import payout_execute

    ids = list(
        Payout.objects.filter(status=PayoutStatus.PROCESSING, outcome_unknown_since__lt=cutoff)
        .order_by("pk")
        .values_list("pk", flat=True)[:BATCH]
    )
    with transaction.atomic():
        for payout_id in ids:
            enqueue_on_commit(payout_execute, payout_id)
    return len(ids)


def settlements_requeue_missing(*, cutoff: datetime, max_attempts: int) -> int:
    """Referrals with a conversion event processed before ``cutoff`` but never evaluated (the settlement
    task died with its worker), and referrals whose payment's Stripe charge was refunded after its last
    evaluation, are settled again."""
    from .tasks import settle_referral

    evaluated = RewardEvaluation.objects.all()
    referral_ids = list(
        ConversionEvent.objects.filter(
            status__in=SETTLED_EVENT_STATUSES,
            referral__isnull=False,
            processed_at__lt=cutoff,
            processed_at__gte=cutoff - timedelta(days=1),
        )
        .exclude(pk__in=evaluated.values("conversion_event_id"))
        .order_by()
        .values_list("referral_id", flat=True)
        .distinct()[:BATCH]
    )
    # A refund handled after the payment's evaluation whose settlement died with its worker (e.g. a drain
    # killed between committing a chunk and running its follow-ups): the charge changed after the last
    # evaluation of its payment.
    newer_than_evaluation = RewardEvaluation.objects.filter(
        conversion_event_id=OuterRef("conversion_event_id"), evaluated_at__lt=OuterRef("updated_at")
    )
    refunded = (
        StripeCharge.objects.filter(
            amount_refunded_minor__gt=0,
            conversion_event__referral__isnull=False,
            updated_at__lt=cutoff,
            updated_at__gte=cutoff - timedelta(days=1),
        )
        .filter(Exists(newer_than_evaluation))
        .order_by()
        .values_list("conversion_event__referral_id", flat=True)
        .distinct()[:BATCH]
    )
    referral_ids = sorted(set(referral_ids) | set(refunded))
    with transaction.atomic():
        for referral_id in referral_ids:
            enqueue_on_commit(settle_referral, referral_id)
    return len(referral_ids)
