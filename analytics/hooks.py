"""How analytics follows the lower layers (registered in ``AnalyticsConfig.ready``; referral_platform/hooks.py).

Every notification queues, after commit, a recomputation of the rollup buckets the changed rows touch
(``analytics.rollups``): clicks flushed → their (participant, day) buckets; a referral created or
changed → the referral, its conversion events and rewards; a conversion processed → the event and
its referral; a reward or payout changed → the rewards. One task per transaction (the ids of every change in it merged).
"""

from __future__ import annotations

from referral_platform.celery import enqueue_on_commit
from referral_platform.hooks import hooks


def _refresh(tenant_id: int, *, referral_ids=(), event_ids=(), reward_ids=()) -> None:
    from .tasks import refresh_sources

    enqueue_on_commit(
        refresh_sources,
        tenant_id,
        referral_ids=sorted(referral_ids),
        event_ids=sorted(event_ids),
        reward_ids=sorted(reward_ids),
        merge=("referral_ids", "event_ids", "reward_ids"),
    )


def on_clicks_flushed(*, click_ids: list[int]) -> None:
    from .tasks import refresh_clicks

    if click_ids:
        enqueue_on_commit(refresh_clicks, sorted(click_ids), once=True)


def on_referral(*, referral, change: str = "created") -> None:
    # The task adds the referral's events and rewards: nothing is read here, in the caller's transaction.
    _refresh(referral.tenant_id, referral_ids=[referral.pk])


def on_conversion(*, event) -> None:
    referral_ids = [event.referral_id] if event.referral_id else []
    _refresh(event.tenant_id, referral_ids=referral_ids, event_ids=[event.pk])


def on_reward(*, reward, change: str) -> None:
    _refresh(reward.tenant_id, reward_ids=[reward.pk])


def on_payout(*, payout, change: str) -> None:
    from rewards.models import Reward

    rewards = Reward.objects.for_tenant(payout.tenant_id).filter(payout_id=payout.pk).values_list("pk", flat=True)
    _refresh(payout.tenant_id, reward_ids=list(rewards))


def register() -> None:
    hooks.register("clicks_flushed", on_clicks_flushed)
    hooks.register("referral_created", on_referral)
    hooks.register("referral_changed", on_referral)
    hooks.register("conversion_processed", on_conversion)
    hooks.register("reward_changed", on_reward)
    hooks.register("payout_changed", on_payout)
