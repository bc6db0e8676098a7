"""Celery tasks of rewards: take ids, re-read state, call a service; safe to retry and to run twice."""

from __future__ import annotations

from django.conf import settings

from referral_platform.celery import app, money_task

from .models import Payout, PayoutStatus, StripeWebhookEvent


@app.task(name="rewards.release_holds")
def release_holds() -> int:
    """Beat: approve rewards whose hold ended and that are within the auto-approve limit."""
    from .services import rewards_release_holds

    return rewards_release_holds()


@money_task(name="rewards.payouts_run")
def payouts_run() -> dict:
    """Beat: prepare and execute due payouts for every tenant (retries of failed ones included)."""
    from .payouts import payouts_run as run

    return run()


@money_task(name="rewards.payout_execute")
def payout_execute(payout_id: int) -> str:
    """Pay one payout; on a failure, queue the next attempt after the backoff delay."""
    from django.utils import timezone

    from .payouts import payout_execute as execute

    payout = execute(payout=Payout.objects.get(pk=payout_id))
    if payout.status == PayoutStatus.FAILED and payout.next_attempt_at:
        delay = int((payout.next_attempt_at - timezone.now()).total_seconds())
        payout_execute.apply_async((payout_id,), countdown=max(1, min(delay, settings.CELERY_MAX_COUNTDOWN_SECONDS)))
    return payout.status


@money_task(name="rewards.stripe_event_process")
def stripe_event_process(event_id: int) -> str:
    """Handle one stored Stripe webhook event (idempotent)."""
    from .webhooks import stripe_event_process as process

    return process(event=StripeWebhookEvent.objects.get(pk=event_id)).status
