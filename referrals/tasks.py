"""Celery tasks of referrals: take ids, call a service, safe to retry."""

from __future__ import annotations

from django.db import OperationalError

from referral_platform.celery import money_task

from . import services


@money_task(
    name="referrals.process_conversion_event",
    autoretry_for=(OperationalError,),
    retry_backoff=5,
    retry_backoff_max=300,
)
def process_conversion_event(event_id: int) -> str:
    """Match, advance and attribute one stored conversion event (a repeat does nothing)."""
    event = services.conversion_event_process(event_id=event_id)
    return event.status if event is not None else "missing"
