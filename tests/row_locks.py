"""A guard for the lock discipline: a row lock locks only the row (see docs/ledger.md, Payouts).

``select_for_update()`` on a query with joins (``select_related``, a filter across a relation) makes
PostgreSQL lock every joined row too: the tenant, the program, the participant. Those rows are shared by
every transaction of the tenant, so such a lock serializes unrelated work, deadlocks with foreign-key
checks, and makes ``SKIP LOCKED`` skip a row nobody else was using. Every locking query with a join must
name the locked table: ``select_for_update(of=("self",))``.

The root conftest installs the guard on every database connection of the test run (threads included);
the payout worker processes install it too.
"""

from __future__ import annotations

import re

from django.db import connection
from django.db.backends.signals import connection_created

_ROW_LOCK = re.compile(r"\bFOR\s+(?:NO\s+KEY\s+UPDATE|UPDATE|KEY\s+SHARE|SHARE)\b(?!\s+OF\b)", re.IGNORECASE)
_JOIN = re.compile(r"\bJOIN\b", re.IGNORECASE)


class RowLockOfJoinedRows(AssertionError):
    """A locking query with a join that does not say which table's rows it locks."""


def locks_joined_rows(sql: str) -> bool:
    """True when ``sql`` takes row locks (FOR [NO KEY] UPDATE, FOR [KEY] SHARE) without ``OF`` and joins."""
    return bool(_ROW_LOCK.search(sql)) and bool(_JOIN.search(sql))


def row_lock_guard(execute, sql, params, many, context):
    """A ``connection.execute_wrapper``: refuse (before running it) a query that would lock joined rows."""
    if isinstance(sql, str) and locks_joined_rows(sql):
        raise RowLockOfJoinedRows(
            "select_for_update() with joined tables locks the joined rows too; "
            f'use select_for_update(of=("self",)): {sql}'
        )
    return execute(sql, params, many, context)


def _install_on(db_connection) -> None:
    if row_lock_guard not in db_connection.execute_wrappers:
        db_connection.execute_wrappers.append(row_lock_guard)


def _on_connection_created(sender, connection, **kwargs) -> None:
    _install_on(connection)


def row_lock_guard_install() -> None:
    """Guard this thread's connection and every connection opened from now on (other threads too)."""
    _install_on(connection)
    connection_created.connect(_on_connection_created, dispatch_uid="tests.row_locks")


def row_lock_guard_uninstall() -> None:
    connection_created.disconnect(dispatch_uid="tests.row_locks")
    if row_lock_guard in connection.execute_wrappers:
        connection.execute_wrappers.remove(row_lock_guard)
