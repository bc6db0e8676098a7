"""The reconciler: nothing stays stuck after a crash.

A worker killed mid-task (SIGKILL, OOM, a lost host) leaves its late-acknowledged message invisible in
Redis until the broker's visibility timeout (12 hours) ends, and the row it was handling in a non-final
state (a conversion event still ``received``, a payout ``processing``…). Every such handler is idempotent,
so the cure is simple: a beat task (``referral_platform.reconcile``, every ``RECONCILE_INTERVAL_SECONDS``)
finds work older than ``RECONCILE_STALE_SECONDS`` in a non-final state and queues it again. A redelivery of
the original message later does nothing (the row is final by then).

Each app registers its own sweeps from its ``AppConfig.ready()`` — the core does not import upward::

    from referral_platform.reconcile import register_sweep
    register_sweep("referrals.conversion_events", conversion_events_requeue_stale)

A sweep takes ``cutoff`` (work last queued before it is stale) and ``max_attempts`` (after that many
requeues the work is marked failed with its reason rather than retried for ever) and returns how many
items it re-queued or failed. One failing sweep does not stop the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

logger = logging.getLogger(__name__)

Sweep = Callable[..., int]

_SWEEPS: dict[str, Sweep] = {}


def register_sweep(name: str, sweep: Sweep) -> None:
    """Register (or replace, by name) a sweep run by every reconciliation."""
    _SWEEPS[name] = sweep


def registered_sweeps() -> dict[str, Sweep]:
    return dict(_SWEEPS)


def reconcile(*, now: datetime | None = None, stale_seconds: int | None = None) -> dict[str, int | str]:
    """Run every registered sweep once; returns what each did (a count, or the error it raised)."""
    now = now or timezone.now()
    stale = settings.RECONCILE_STALE_SECONDS if stale_seconds is None else stale_seconds
    cutoff = now - timedelta(seconds=stale)
    results: dict[str, int | str] = {}
    for name, sweep in _SWEEPS.items():
        try:
            results[name] = sweep(cutoff=cutoff, max_attempts=settings.RECONCILE_MAX_ATTEMPTS)
        except Exception as error:  # one broken sweep must not keep the others from running
            logger.exception("reconcile sweep %s failed", name)
            results[name] = f"{type(error).__name__}: {error}"
    if any(results.values()):
        logger.info("reconcile: %s", results)
    return results
