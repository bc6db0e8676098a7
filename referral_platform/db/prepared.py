"""Server-side prepared statements for the hottest hand-written statements (issue 15).

psycopg2 sends every statement as text, so PostgreSQL parses and plans it each time; for the conversion
pipeline's large statements (a referral with its joined models and sub-queries, a CTE of three writes)
planning costs several times what executing them does. ``execute_prepared`` PREPAREs a statement once per
database connection (named by a digest of its text; ``PREPARE`` survives a rolled-back transaction) and then
sends ``EXECUTE name(values)``: PostgreSQL plans it afresh for its first executions and then keeps a generic
plan when that costs no more (``plan_cache_mode = auto``, the default). The values are still sent as literals
by psycopg2 and cast to the parameter types PostgreSQL inferred; the statement's text follows as a comment, so
logs and captured queries still show it. A statement whose parameters PostgreSQL
cannot type must not be sent through here (the tests of each caller run it against PostgreSQL). Behind a pooler
that hands one session's statements to several server connections (PgBouncer in transaction pooling mode)
set ``DB_PREPARED_STATEMENTS=0``: the statements are then sent as text, as any other.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import re

import psycopg2.extensions
from django.conf import settings

_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%s|%%")
_TEXTS: dict[str, str] = {}  # name -> the statement as written (``$n`` placeholders), for ``statements_sent``
_NAMED = re.compile(r"\s*(PREPARE|EXECUTE) (rp_[0-9a-f]+)\b")


def _numbered(sql: str, params) -> tuple[str, list]:
    """``sql`` with psycopg2's placeholders as ``$1``…, and the values in that order (a named one once)."""
    named = isinstance(params, dict)
    text, taken = _shape(sql, named)
    if named:
        return text, [params[name] for name in taken]
    values = list(params)
    if len(values) < taken:
        raise IndexError(f"{taken} placeholders, {len(values)} values")
    return text, values[:taken]


@functools.lru_cache(maxsize=4096)
def _shape(sql: str, named: bool) -> tuple[str, tuple[str, ...] | int]:
    """``sql``'s text with ``$n`` placeholders and what its values are: the names in order of first use (named
    placeholders), or how many (``%s``). Worked out once per statement text (issue 15: ~2 % of a drain's CPU was
    this substitution, redone at every execution)."""
    names: list[str] = []
    positions: dict[str, int] = {}
    count = 0

    def number(match) -> str:
        nonlocal count
        placeholder = match.group(0)
        if placeholder == "%%":
            return "%"
        if placeholder == "%s":
            count += 1
            return f"${count}"
        name = match.group(1)
        if name not in positions:
            names.append(name)
            positions[name] = len(names)
        return f"${positions[name]}"

    text = _PLACEHOLDER.sub(number, sql)
    return text, (tuple(names) if named else count)


@functools.lru_cache(maxsize=4096)
def _commands(text: str, count: int) -> tuple[str, str, str]:
    """The name of the statement ``text`` (``$n`` placeholders, ``count`` values), its ``PREPARE …; EXECUTE …``
    and its ``EXECUTE … /* text */`` (psycopg2 placeholders for the values), built once per text."""
    name = "rp_" + hashlib.blake2b(text.encode(), digest_size=10).hexdigest()
    _TEXTS.setdefault(name, text)
    arguments = f"({', '.join(['%s'] * count)})" if count else ""
    shown = text.replace("%", "%%") if count else text  # (psycopg2 reads '%' when it has values)
    # The statement's text rides along as a comment (PostgreSQL only skips it): what a log, pg_stat_activity or
    # a test's captured queries show is the statement, not only its name.
    return (
        name,
        f"PREPARE {name} AS {shown}; EXECUTE {name}{arguments}",
        f"EXECUTE {name}{arguments} /* {shown.replace('*/', '* /')} */",
    )


def execute_prepared(cursor, sql: str, params) -> None:
    """Run ``sql`` (psycopg2 placeholders, ``params`` a sequence or a mapping) on ``cursor`` (a cursor of
    ``django.db.connection``) as a prepared statement of its connection."""
    if not settings.DB_PREPARED_STATEMENTS:  # (behind a transaction-pooling PgBouncer: sent as text)
        cursor.execute(sql, params)
        return
    db = cursor.db
    raw = db.connection
    state = getattr(db, "_prepared_statements", None)
    if state is None or state[0] is not raw:  # a new connection: nothing is prepared on it yet
        state = (raw, set(), set())  # (the connection, names prepared on it, names perhaps prepared)
        db._prepared_statements = state
    text, values = _numbered(sql, params)
    name, prepare, execute = _commands(text, len(values))
    if name in state[2]:  # a first use that failed: was its PREPARE done (it outlives a failed transaction)?
        cursor.execute("SELECT 1 FROM pg_prepared_statements WHERE name = %s", [name])
        if cursor.fetchone() is not None:
            state[1].add(name)
        state[2].discard(name)
    if name not in state[1]:
        # First on this connection: prepared and executed in one round trip.
        try:
            cursor.execute(prepare, values or None)
        except Exception:
            state[2].add(name)  # the PREPARE may have run and the EXECUTE failed (a lock timeout, a conflict)
            raise
        state[1].add(name)
        return
    cursor.execute(execute, values or None)


_WRITES_WITH_NEXT: contextvars.ContextVar[bool] = contextvars.ContextVar("writes_with_next", default=False)


@contextlib.contextmanager
def writes_with_next():
    """Within the block, ``execute_prepared_with_next`` sends its writes in front of the connection's next
    statement instead of on their own (issue 15: conversion processing). The caller sends what is still queued
    before leaving its savepoint (``flush_pending_writes``)."""
    token = _WRITES_WITH_NEXT.set(True)
    try:
        yield
    finally:
        _WRITES_WITH_NEXT.reset(token)


def writes_travel() -> bool:
    """Whether a write whose result nobody reads may travel with the next statement here (``writes_with_next``)."""
    return _WRITES_WITH_NEXT.get()


def execute_prepared_with_next(sql: str, params) -> None:
    """``execute_prepared`` of a write whose result nobody reads (no RETURNING, no row count looked at), sent in
    front of the connection's next statement instead of on its own (``DatabaseWrapper.write_with_next``: one
    round trip fewer; issue 15). Only inside ``writes_with_next``, inside a transaction, and once the statement
    is prepared on this connection (its first use prepares it as ``execute_prepared`` does, on its own), so
    what travels is an ``EXECUTE`` alone; otherwise, or with prepared statements off, it is executed at once."""
    from django.db import connection

    state = getattr(connection, "_prepared_statements", None)
    text, values = _numbered(sql, params)
    name, _prepare, execute = _commands(text, len(values))
    if (
        not writes_travel()
        or not settings.DB_PREPARED_STATEMENTS
        or not connection.in_atomic_block
        or not hasattr(connection, "write_with_next")
        or state is None
        or state[0] is not connection.connection
        or name not in state[1]
        or name in state[2]
    ):
        with connection.cursor() as cursor:
            execute_prepared(cursor, sql, params)
        return
    raw = connection.connection
    with raw.cursor() as cursor:
        rendered = cursor.mogrify(execute, values or None).decode(psycopg2.extensions.encodings[raw.encoding])
    connection.write_with_next(rendered)


def statements_sent(sql: str) -> list[str]:
    """The statements one string sent to PostgreSQL runs (``;``-separated: savepoints travel in front of the
    next statement), a prepared one as its text instead of its ``PREPARE``/``EXECUTE`` (one entry for both) —
    for reading captured queries (tests, logs)."""
    out: list[str] = []
    for part in (part.strip() for part in sql.split(";")):
        match = _NAMED.match(part) if part else None
        if match is None:
            if part:
                out.append(part)
        elif match.group(1) == "PREPARE" or not (out and out[-1] == _TEXTS.get(match.group(2))):
            out.append(_TEXTS.get(match.group(2), part))
    return out
