"""A tenant's rollup refreshes gathered and run together (issue 15, docs/throughput.md).

The money pipeline asks for an analytics refresh after every chunk of webhooks it settles, and every change
a marketer makes asks for one too. Each refresh re-aggregates the whole (referrer, day) buckets it touches
under the tenant's rollup lock: a big partner's bucket holds the day's every referral, so a billing run that
refreshed after each chunk paid the square of its size, and a worker waiting for the lock drained nothing.

Here a request only adds its ids to the tenant's pending set in Redis and, unless a refresh is already
scheduled, schedules one ``ANALYTICS_REFRESH_DEBOUNCE_SECONDS`` later (``analytics.refresh_pending``). That
refresh takes every id pending then, in one transaction. It never waits for the lock: when another refresh
(the clicks', a rebuild) holds it, it tries again later.

Nothing is lost on the way:

- ids leave the pending set only once the refresh that read them has committed: a refresh that fails, or a
  worker that dies in it, leaves them for the next one (the task is acknowledged late: it is redelivered);
- the schedule mark is cleared before the pending ids are read, so a request arriving during a refresh
  schedules the next one; the mark expires (``MARK_SECONDS``), so a refresh lost with its message does not
  keep later requests from scheduling theirs;
- if Redis cannot be reached, the request refreshes at once, as with the debounce turned off;
- under it all, ``analytics.refresh_recent`` recomputes the last two days from raw rows every six hours.

A Redis that loses its data loses the pending ids together with the broker's queued tasks; that sweep covers
both. Refreshing twice is harmless: every refresh recomputes its buckets from raw rows.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.db import transaction

from referrals import hot_redis

MARK_SECONDS = 120
_SOURCES = (("referral_ids", "r"), ("event_ids", "e"), ("reward_ids", "w"))


def pending_keys(tenant_id: int) -> tuple[str, str]:
    """The tenant's pending set and its schedule mark (one hash tag: one slot on a Redis Cluster)."""
    tag = f"{{rp-rollups-{int(tenant_id)}}}"
    return hot_redis.key(tag, "pending"), hot_redis.key(tag, "scheduled")


def refresh_later(
    tenant_id: int, *, referral_ids: Iterable[int] = (), event_ids: Iterable[int] = (), reward_ids: Iterable[int] = ()
) -> bool:
    """Add the sources to the tenant's pending refresh and schedule it unless one is; True when this call
    scheduled it. Raises redis' errors (the caller then refreshes at once)."""
    given = {"referral_ids": referral_ids, "event_ids": event_ids, "reward_ids": reward_ids}
    members = [f"{prefix}{int(source_id)}" for name, prefix in _SOURCES for source_id in given[name]]
    if not members:
        return False
    pending, scheduled = pending_keys(tenant_id)
    pipe = hot_redis.client().pipeline(transaction=True)
    pipe.sadd(pending, *members)
    pipe.set(scheduled, "1", nx=True, ex=MARK_SECONDS)
    _added, first = pipe.execute()
    if first:
        schedule(tenant_id)
    return bool(first)


def schedule(tenant_id: int) -> None:
    from .tasks import refresh_pending

    refresh_pending.apply_async((tenant_id,), countdown=settings.ANALYTICS_REFRESH_DEBOUNCE_SECONDS)


def schedule_again(tenant_id: int) -> None:
    """The tenant's refresh found the lock held: the mark renewed (requests meanwhile add to the pending set
    without scheduling) and the refresh scheduled once more."""
    hot_redis.client().set(pending_keys(tenant_id)[1], "1", ex=MARK_SECONDS)
    schedule(tenant_id)


def refresh_pending_now(tenant_id: int, *, wait: bool = False) -> int | None:
    """Refresh every source pending for the tenant, in one transaction under its rollup lock; the rollup rows
    written. ``None`` when another transaction holds the lock (unless ``wait``): then nothing is taken."""
    from .rollups import _lock, refresh_sources_locked, try_lock

    client = hot_redis.client()
    pending, scheduled = pending_keys(tenant_id)
    with transaction.atomic():
        if wait:
            _lock(tenant_id)
        elif not try_lock(tenant_id):
            return None
        client.delete(scheduled)  # before the read: a request from now on schedules the next refresh
        members = client.smembers(pending)
        if not members:
            return 0
        ids: dict[str, list[int]] = {name: [] for name, _prefix in _SOURCES}
        by_prefix = {prefix: name for name, prefix in _SOURCES}
        for member in members:
            text = member.decode()
            ids[by_prefix[text[0]]].append(int(text[1:]))
        written = refresh_sources_locked(tenant_id=tenant_id, **ids)
        transaction.on_commit(lambda: client.srem(pending, *members))
    return written


def pending_count(tenant_id: int) -> int:
    return hot_redis.client().scard(pending_keys(tenant_id)[0])
