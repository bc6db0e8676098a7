"""Celery tasks of rewards: take ids, re-read state, call a service; safe to retry and to run twice."""

from __future__ import annotations

from django.conf import settings
from django.db import OperationalError

from referral_platform.celery import app, money_task

from .models import Payout, PayoutStatus, StripeWebhookEvent


@app.task(name="rewards.release_holds")
def release_holds() -> int:
    """Beat: approve rewards whose hold ended and that are within the auto-approve limit."""
    from .services import rewards_release_holds

    return rewards_release_holds()


@money_task(name="rewards.payouts_run")
def payouts_run() -> dict:
    """Beat: prepare and execute due payouts for every tenant (retries of failed ones included). The
    result counts them: prepared, paid, failed, and skipped because another run held them."""
    from .payouts import payouts_run as run

    return run()


@money_task(name="rewards.payout_execute")
def payout_execute(payout_id: int) -> str:
    """Pay one payout; on a failure, queue the next attempt after the backoff delay. Returns the payout's
    status, or "skipped" when a payout run held it (that run pays it, or the next one does)."""
    from django.utils import timezone

    from .payouts import payout_execute as execute

    execution = execute(payout=Payout.objects.get(pk=payout_id))
    if execution.skipped:
        return "skipped"
    payout = execution.payout
    if payout.status == PayoutStatus.FAILED and payout.next_attempt_at:
        delay = int((payout.next_attempt_at - timezone.now()).total_seconds())
        payout_execute.apply_async((payout_id,), countdown=max(1, min(delay, settings.CELERY_MAX_COUNTDOWN_SECONDS)))
    return payout.status


@money_task(
    name="rewards.stripe_event_process", autoretry_for=(OperationalError,), retry_backoff=5, retry_backoff_max=300
)
def stripe_event_process(event_id: int) -> str:
    """Handle one stored Stripe webhook event (idempotent)."""
    from .webhooks import stripe_event_process as process

    return process(event=StripeWebhookEvent.objects.get(pk=event_id)).status


@money_task(
    name="rewards.stripe_events_drain", autoretry_for=(OperationalError,), retry_backoff=2, retry_backoff_max=60
)
def stripe_events_drain(tenant_id: int) -> int:
    """Handle a tenant's stored Stripe events in batches, with their matching, settlement and messages
    (``rewards.webhooks.stripe_events_drain``; queued by the webhook door). Returns how many were handled."""
    from .webhooks import stripe_events_drain as drain

    return drain(tenant_id=tenant_id)


@money_task(
    name="rewards.evaluate_conversion",
    autoretry_for=(OperationalError,),
    retry_backoff=5,
    retry_backoff_max=300,
)
def evaluate_conversion(event_id: int) -> str:
    """Settle the rewards of one conversion event's referral (queued by attribution_run after commit).
    Idempotent: settling again from the same events changes nothing, so a redelivered task creates nothing."""
    from .evaluation import reward_evaluate

    evaluation = reward_evaluate(event_id=event_id)
    return evaluation.status if evaluation is not None else "skipped"


@money_task(
    name="rewards.evaluate_referral",
    autoretry_for=(OperationalError,),
    retry_backoff=5,
    retry_backoff_max=300,
)
def evaluate_referral(referral_id: int) -> int:
    """Evaluate every not-yet-rewarded conversion of one referral (queued when fraud review clears it).
    Returns how many rewards were created."""
    from referrals.models import Referral

    from .evaluation import referral_rewards_evaluate

    referral = Referral.objects.filter(pk=referral_id).first()
    if referral is None:
        return 0
    return sum(evaluation.rewards_created for evaluation in referral_rewards_evaluate(referral=referral))


@money_task(
    name="rewards.settle_referral",
    autoretry_for=(OperationalError,),
    retry_backoff=5,
    retry_backoff_max=300,
)
def settle_referral(referral_id: int) -> str:
    """Settle one referral's rewards from the set of its events (idempotent; queued after an event is
    attributed, a stage moves or the referral is rejected)."""
    from .evaluation import referral_rewards_settle

    settlement = referral_rewards_settle(referral_id=referral_id)
    return settlement.status if settlement is not None else "skipped"


@money_task(
    name="rewards.settle_referrals",
    autoretry_for=(OperationalError,),
    retry_backoff=5,
    retry_backoff_max=300,
)
def settle_referrals(referral_ids: list[int]) -> dict:
    """Settle a batch of referrals, each in its own transaction (``referral_rewards_settle_batch``): one
    that fails is marked failed with its reason and the others commit; a transient database error retries
    the batch, which settles again idempotently. Returns {"settled": n, "failed": {id: reason}}."""
    from .evaluation import referral_rewards_settle_batch

    result = referral_rewards_settle_batch(referral_ids=referral_ids)
    return {"settled": len(result.settled), "failed": {str(k): v for k, v in result.failed.items()}}


@app.task(name="rewards.message_referral_stage", acks_late=True, autoretry_for=(OperationalError,), max_retries=5)
def message_referral_stage(referral_id: int, stage: str) -> bool:
    """Tell the referrer their referral reached ``stage`` ("received", "qualified"); sent once per referral."""
    from .messages import message_referral_stage as send

    return send(referral_id=referral_id, stage=stage) is not None
