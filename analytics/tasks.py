"""Celery tasks of analytics: take ids, recompute the rollup buckets they touch; safe to retry and to run twice."""

from __future__ import annotations

from referral_platform.celery import app


@app.task(name="analytics.refresh_clicks")
def refresh_clicks(click_ids: list[int]) -> int:
    from .rollups import rollups_refresh_clicks

    return rollups_refresh_clicks(click_ids=click_ids)


@app.task(name="analytics.refresh_sources")
def refresh_sources(tenant_id: int, referral_ids=(), event_ids=(), reward_ids=()) -> int:
    from .rollups import rollups_refresh_sources

    return rollups_refresh_sources(
        tenant_id=tenant_id, referral_ids=referral_ids, event_ids=event_ids, reward_ids=reward_ids
    )


@app.task(name="analytics.refresh_recent")
def refresh_recent(days: int = 2) -> int:
    """Beat (nightly): recompute the last ``days`` days of every tenant, a safety net under the hooks."""
    from .rollups import rollups_refresh_recent

    return rollups_refresh_recent(days=days)
