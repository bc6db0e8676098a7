"""Reads that may come from a PostgreSQL read replica (docs/scaling.md).

When ``DATABASE_REPLICA_URL`` is set, settings add a ``replica`` database and this router. Nothing is read
from the replica unless the code asks, inside ``replica_reads()``: analytics and reporting selectors, which
tolerate a replica's few seconds of lag. Writes, and every read of the money loop (attribution, settlement,
payouts), stay on the primary.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

from django.conf import settings

_state = threading.local()


@contextmanager
def replica_reads():
    """Route this thread's reads to the replica (when one is configured) for the duration of the block."""
    previous = getattr(_state, "active", False)
    _state.active = True
    try:
        yield
    finally:
        _state.active = previous


class ReplicaRouter:
    def db_for_read(self, model, **hints):
        if getattr(_state, "active", False) and "replica" in settings.DATABASES:
            return "replica"
        return None

    def db_for_write(self, model, **hints):
        return "default"

    def allow_relation(self, obj1, obj2, **hints):
        return True  # the replica mirrors the primary: the same rows

    def allow_migrate(self, db, app_label, **hints):
        return db == "default"
