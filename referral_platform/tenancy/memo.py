"""Rows a batch task reads once for a whole chunk of work (issue 15, docs/throughput.md).

A drain of Stripe events handles dozens of events of ONE tenant in a few hundred milliseconds; each event's
services read the same few rows again — the tenant (every ``obj.tenant``), its outbound webhook endpoints,
each program's current rules version and fraud policy.
Inside ``batch_memo()`` such a read is done once and its answer reused until the block ends. Outside one,
nothing changes: every read goes to the database.

What that means: within one chunk, a change to the tenant row, its endpoints, a program's rules (a new
version) or fraud policy made by someone else is
seen from the next chunk on (at most a chunk's duration, about a second), exactly as if the chunk had
read those rows at its start — as any request holding a ``Tenant`` object already does. Keys carry the
tenant id, so one tenant's answer is never another's.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable
from typing import Any

from django.db.models.fields.related_descriptors import ForwardManyToOneDescriptor

_memo: contextvars.ContextVar[dict | None] = contextvars.ContextVar("batch_memo", default=None)


@contextlib.contextmanager
def batch_memo(**known: Any):
    """Reads in the block are remembered until it ends (``known``: answers already in hand, by key name
    ``tenant_<id>``)."""
    memo = {}
    for name, value in known.items():
        memo[name] = value
    token = _memo.set(memo)
    try:
        yield memo
    finally:
        _memo.reset(token)


def memoized(key: str, compute: Callable[[], Any]) -> Any:
    """``compute()`` once per ``batch_memo`` block (every time outside one)."""
    memo = _memo.get()
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def in_batch() -> bool:
    """Inside a ``batch_memo`` block (a read done once for the block pays off)?"""
    return _memo.get() is not None


def recall(key: str) -> Any:
    """What ``remember`` kept under ``key`` in this ``batch_memo`` block (None: nothing, or outside one)."""
    memo = _memo.get()
    return None if memo is None else memo.get(key)


def remember(key: str, value: Any) -> None:
    """Keep ``value`` under ``key`` until the ``batch_memo`` block ends (nothing outside one). For rows the
    block READ: a row it wrote may still be rolled back with its savepoint, so it is not kept."""
    memo = _memo.get()
    if memo is not None:
        memo[key] = value


def tenant_key(tenant_id: int) -> str:
    return f"tenant_{tenant_id}"


class TenantDescriptor(ForwardManyToOneDescriptor):
    """``obj.tenant`` of a tenant-owned row: inside ``batch_memo`` the tenant is read once."""

    def get_object(self, instance):
        tenant_id = getattr(instance, self.field.attname)
        return memoized(tenant_key(tenant_id), lambda: super(TenantDescriptor, self).get_object(instance))
