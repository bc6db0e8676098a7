"""Celery tasks of analytics: take ids, recompute the rollup buckets they touch; safe to retry and to run twice."""

from __future__ import annotations

import logging

from django.conf import settings

from referral_platform.celery import app

logger = logging.getLogger(__name__)


@app.task(name="analytics.refresh_clicks")
def refresh_clicks(click_ids: list[int]) -> int:
    from .rollups import rollups_refresh_clicks

    return rollups_refresh_clicks(click_ids=click_ids)


@app.task(name="analytics.refresh_sources")
def refresh_sources(tenant_id: int, referral_ids=(), event_ids=(), reward_ids=()) -> int:
    """Recompute the buckets these sources touch: gathered into the tenant's next pending refresh
    (analytics/debounce.py), or at once — waiting for the tenant's rollup lock — when
    ``ANALYTICS_REFRESH_DEBOUNCE_SECONDS`` is 0 or Redis cannot be reached."""
    from redis.exceptions import RedisError

    from .debounce import refresh_later
    from .rollups import rollups_refresh_sources

    sources = {"referral_ids": referral_ids, "event_ids": event_ids, "reward_ids": reward_ids}
    if settings.ANALYTICS_REFRESH_DEBOUNCE_SECONDS > 0:
        try:
            refresh_later(tenant_id, **sources)
            return 0
        except RedisError:
            logger.warning("analytics refresh of tenant %s: Redis unreachable, refreshing at once", tenant_id)
    return rollups_refresh_sources(tenant_id=tenant_id, **sources)


@app.task(name="analytics.refresh_pending", bind=True, acks_late=True)
def refresh_pending(self, tenant_id: int) -> int:
    """The tenant's pending refresh (analytics/debounce.py). Another refresh holding the tenant's rollup lock:
    tried again later, the worker never waits (an eager call — tests — waits for the lock instead)."""
    from .debounce import refresh_pending_now, schedule_again

    written = refresh_pending_now(tenant_id, wait=bool(self.request.is_eager))
    if written is None:
        schedule_again(tenant_id)
        return 0
    return written


@app.task(name="analytics.refresh_recent")
def refresh_recent(days: int = 2) -> int:
    """Beat (nightly): recompute the last ``days`` days of every tenant, a safety net under the hooks."""
    from .rollups import rollups_refresh_recent

    return rollups_refresh_recent(days=days)
