"""Celery beat tasks of the partners app: they take no state, re-read it, and are safe to run twice."""

from __future__ import annotations

from celery import shared_task

from .services import deals_expire, deals_warn_expiring, partner_tiers_recompute


@shared_task(name="partners.deals_expire", acks_late=True)
def expire_deals() -> int:
    return deals_expire()


@shared_task(name="partners.deals_warn_expiring", acks_late=True)
def warn_expiring_deals() -> int:
    return deals_warn_expiring()


@shared_task(name="partners.tiers_recompute", acks_late=True)
def recompute_tiers() -> dict:
    return partner_tiers_recompute()
