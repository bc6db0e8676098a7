"""Celery tasks of referrals: take ids, re-read, call a service; safe to retry."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import OperationalError

from referral_platform.celery import app, money_task
from referral_platform.hooks import hooks
from referral_platform.tenancy.actors import system_actor

from . import hot_redis, services
from .click_buffer import clicks_flush
from .fraud_services import referral_screen
from .models import Referral

logger = logging.getLogger(__name__)


@money_task(
    name="referrals.process_conversion_event",
    autoretry_for=(OperationalError,),
    retry_backoff=5,
    retry_backoff_max=300,
)
def process_conversion_event(event_id: int, alone: bool = False) -> str:
    """Match, advance and attribute one stored conversion event (a repeat does nothing). Returns its status.

    Unless ``alone``, the workspace's other events of the same source still waiting (up to
    CONVERSION_TASK_BATCH, oldest first) are processed with it in ONE batch, their follow-ups (settlement,
    stage messages, analytics) batched too (the ``conversions_process_batch`` hook, rewards.pipeline); their
    own tasks then find them done. An event the batch hands back, or every event of a batch that raised, is
    processed alone (docs/throughput.md, "The conversions API in batches")."""
    if not alone and settings.CONVERSION_TASK_BATCH > 1:
        waiting, status = services.conversion_events_waiting(event_id=event_id, limit=settings.CONVERSION_TASK_BATCH)
        if not waiting:  # processed meanwhile (by another task's batch), or gone: one read
            return status
        if len(waiting) > 1:
            try:
                handed_back = hooks.conversions_process_batch(event_ids=waiting)
            except Exception:  # the batch is rolled back whole: this event goes alone, the others have tasks
                logger.exception("conversion events %s: the batch failed; %s is processed alone", waiting, event_id)
                handed_back = None
            if handed_back is not None:
                for other in handed_back:
                    if other != event_id:
                        process_conversion_event.apply_async((other,), {"alone": True})
                if event_id not in handed_back:
                    return services.conversion_event_status(event_id=event_id)
    event = services.conversion_event_process(event_id=event_id)
    return event.status if event is not None else "missing"


@app.task(name="referrals.referral_screen", acks_late=True, max_retries=3)
def referral_screen_task(referral_id: int) -> list[str]:
    """Screen one referral for fraud (again). Idempotent: flags are unique per referral and code, so a
    redelivered or repeated task adds nothing. Returns the signal codes found; a deleted referral gives []."""
    referral = Referral.objects.select_related("tenant").filter(pk=referral_id).first()
    if referral is None:
        return []
    return [signal.code for signal in referral_screen(referral=referral, actor=system_actor(referral.tenant))]


@app.task(name="referrals.flush_clicks", ignore_result=True)
def flush_clicks() -> dict:
    """Flush buffered clicks from the Redis stream into Postgres (beat, every few seconds).

    Takes no input: what it writes comes from the stream, and each click's tenant from the link
    row the entry names (see referrals.click_buffer). Safe to run concurrently or to retry; a lock
    only keeps beat from piling up runs while one is still draining a backlog.
    """
    budget = settings.CLICK_FLUSH_TIME_BUDGET_SECONDS
    lock = hot_redis.client().lock(hot_redis.key("clicks", "flush-lock"), timeout=budget + 60, blocking=False)
    if not lock.acquire():
        return {"skipped": "another flush is running"}
    try:
        result = clicks_flush(time_budget=budget)
    finally:
        lock.release()
    return {"read": result.read, "written": result.written, "bots": result.bots, "skipped": result.skipped}
