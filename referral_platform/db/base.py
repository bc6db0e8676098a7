"""Django's PostgreSQL backend, applying the row-level-security state to every statement (issue 14).

``referral_platform.tenancy.rls`` keeps the state (tenant, bypass or nothing) in a context variable; this
backend makes PostgreSQL see it, always with transaction-local settings (``set_config(name, value, true)``,
the function form of ``SET LOCAL``):

- inside a transaction (``atomic()``), one ``set_config`` statement before the first statement that needs
  it, and again whenever the state changes or a savepoint rollback may have undone it;
- in autocommit, where each statement is its own transaction, the ``set_config`` travels in front of the
  statement in the same query string, which PostgreSQL runs as one implicit transaction.

So the settings end with their transaction: a pooled connection never carries one tenant's setting into
the next piece of work. Server-side cursors are disabled (settings), since a ``WITH HOLD`` cursor would
outlive the transaction that carried the setting.

Savepoints travel the same way (issue 15: they were a third of the money pipeline's round trips). Every
nested ``atomic()`` makes one; most enclose a few statements, many none at all. Here ``SAVEPOINT`` is not
sent when ``atomic()`` opens it but in front of the next statement, in the same query string (PostgreSQL
runs the parts in order: the savepoint exists before the statement does anything); ``RELEASE`` likewise
travels in front of the next statement, or not at all when the transaction ends first (COMMIT releases
every savepoint). A savepoint in which no statement ran is neither sent nor released, and rolling back to
it does nothing (nothing happened inside it). ``ROLLBACK TO SAVEPOINT`` of a savepoint that was sent is
sent at once, as before, dropping whatever was waiting inside it. The transaction sees the same savepoints
around the same statements; only the round trips are fewer.

A write whose result nothing reads can travel the same way (``write_with_next``, used through
``referral_platform.db.prepared.execute_prepared_with_next``): it is queued in order with the savepoints and
sent in front of the connection's next statement — before that statement, so every later read of the
transaction sees it, exactly as if it had been sent alone — and in front of the COMMIT at the latest. Rolled
back with the savepoint it was queued in (never sent, it is simply dropped), kept when that savepoint is
released. Its error (if any) is raised by the statement it travels with.
"""

from __future__ import annotations

from django.db import DatabaseError
from django.db.backends.postgresql import base

from referral_platform.tenancy import rls

_UNKNOWN = object()
_WRITE = "<write>"  # the marker of a queued write in ``_pending_savepoints`` (no savepoint id looks like it)
_CONTROL_PREFIXES = ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT", "SET ROLE", "RESET ROLE")
_SET_SQL = f"SELECT set_config('{rls.TENANT_SETTING}', %s, true), set_config('{rls.BYPASS_SETTING}', %s, true)"
_NOTHING_SETTINGS = rls.NOTHING.settings
_DML = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "MERGE", "(", "EXECUTE", "PREPARE")


def _literal(value: str) -> str:
    # The two values are digits or on/off (RlsState.settings); quoted for the inline form all the same.
    return "'" + value.replace("'", "''") + "'"


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The settings in force in the open transaction; a new transaction starts with none.
        self._rls_applied = _NOTHING_SETTINGS
        # SAVEPOINT / RELEASE statements not sent yet: (sid or None, sql), in order.
        self._pending_savepoints: list[tuple[str | None, str]] = []
        self._unsent_rolled_back: set[str] = set()  # never sent, rolled back: their RELEASE is not sent either
        self.execute_wrappers.append(self._rls_execute)
        # Called with the savepoint id before each rollback to a savepoint (sent or not): work kept in memory
        # for the open transaction (deferred audit rows) drops what was done inside it.
        self.savepoint_rollback_listeners: list = []

    # -- keeping track of what the open transaction carries ----------------------------------------------

    def _rls_forget(self, value=_NOTHING_SETTINGS) -> None:
        self._rls_applied = value

    def _rls_forget_all(self, value=_NOTHING_SETTINGS) -> None:
        self._rls_applied = value
        self._pending_savepoints = []
        self._unsent_rolled_back = set()

    def _commit(self):
        if self.connection is not None and self.pending_writes():
            self.flush_pending_writes()  # in front of the COMMIT (an error here rolls the transaction back)
        try:
            return super()._commit()
        finally:
            self._rls_forget_all()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._rls_forget_all()

    # -- savepoints, sent with the next statement -------------------------------------------------------

    def write_with_next(self, sql: str) -> None:
        """Queue ``sql`` — a complete statement, its values inlined, whose result nobody reads — to be sent in
        front of the next statement (see the module docstring). Outside a transaction it is sent at once."""
        if self.autocommit or not self.in_atomic_block:
            with self.cursor() as cursor:
                cursor.execute(sql)
            return
        self._pending_savepoints.append((_WRITE, sql))

    def pending_writes(self) -> bool:
        """Whether a write queued by ``write_with_next`` still waits for a statement to travel with."""
        return any(sid is _WRITE for sid, _sql in self._pending_savepoints)

    def flush_pending_writes(self) -> None:
        """Send the queued writes now (one round trip; nothing when none waits)."""
        if self.pending_writes():
            with self.cursor() as cursor:
                cursor.execute(self._pending_sql())

    def _pending_index(self, sid) -> int | None:
        for index, (pending_sid, sql) in enumerate(self._pending_savepoints):
            if pending_sid == sid and sql.startswith("SAVEPOINT"):
                return index
        return None

    def _savepoint(self, sid):
        self._pending_savepoints.append((sid, self.ops.savepoint_create_sql(sid)))

    def _savepoint_commit(self, sid):
        if sid in self._unsent_rolled_back:  # Django releases a savepoint after rolling back to it
            self._unsent_rolled_back.discard(sid)
            return
        index = self._pending_index(sid)
        if index is not None:  # never sent: nothing ran inside it (nor inside what it encloses) but queued writes
            writes = [item for item in self._pending_savepoints[index + 1 :] if item[0] is _WRITE]
            del self._pending_savepoints[index:]
            self._pending_savepoints.extend(writes)  # released: they belong to the enclosing savepoint now
            return
        self._pending_savepoints.append((None, self.ops.savepoint_commit_sql(sid)))

    def _savepoint_rollback(self, sid):
        for listener in list(self.savepoint_rollback_listeners):
            listener(sid)
        index = self._pending_index(sid)
        if index is not None:  # never sent: nothing ran inside it, there is nothing to undo
            del self._pending_savepoints[index:]
            self._unsent_rolled_back.add(sid)
            return
        # Sent: everything still waiting was opened or closed inside it.
        self._pending_savepoints = []
        try:
            return super()._savepoint_rollback(sid)
        finally:
            self._rls_forget(_UNKNOWN)  # the savepoint may have undone a set_config made inside it

    def _pending_sql(self, *, sent: bool = True, escaped: bool = False) -> str:
        """The waiting SAVEPOINT / RELEASE statements (and queued writes) as a prefix (forgotten when ``sent``:
        they are being sent directly). ``escaped``: the statement it goes in front of has parameters, so psycopg2
        reads '%' in the whole string — a queued write's '%' are doubled (savepoints hold none)."""
        if not self._pending_savepoints:
            return ""
        prefix = (
            "; ".join(
                sql.replace("%", "%%") if escaped and sid is _WRITE else sql for sid, sql in self._pending_savepoints
            )
            + "; "
        )
        if sent:
            self._pending_savepoints = []
        return prefix

    def _set_autocommit(self, autocommit):
        try:
            return super()._set_autocommit(autocommit)
        finally:
            self._rls_forget_all()

    def _close(self):
        try:
            return super()._close()
        finally:
            self._rls_forget_all()

    def get_new_connection(self, conn_params):
        self._rls_forget_all()
        return super().get_new_connection(conn_params)

    # -- applying it ------------------------------------------------------------------------------------

    def rls_apply_now(self) -> None:
        """Apply the current state at once (before work that does not go through a cursor's execute, such
        as COPY). Only meaningful inside a transaction."""
        if self.connection is None or self.autocommit:
            return
        wanted = rls.current().settings
        pending = self._pending_sql(escaped=True)
        if wanted != self._rls_applied or pending:
            with self.connection.cursor() as raw:
                raw.execute(pending + _SET_SQL, wanted)
            self._rls_applied = wanted

    def _rls_execute(self, execute, sql, params, many, context):
        wanted = rls.current().settings
        # Only the statement's first words matter: never copy or upper-case the whole SQL per statement.
        head = sql[:32].lstrip().upper() if isinstance(sql, str) else ""
        if head.startswith(_CONTROL_PREFIXES):
            if self._pending_savepoints and not self.autocommit:
                context["cursor"].cursor.execute(self._pending_sql())
            return execute(sql, params, many, context)
        if not self.autocommit:
            if wanted != self._rls_applied:
                context["cursor"].cursor.execute(self._pending_sql(escaped=True) + _SET_SQL, wanted)
                self._rls_applied = wanted
            if self._pending_savepoints and (many or not isinstance(sql, str)):
                context["cursor"].cursor.execute(self._pending_sql())
            if not self._pending_savepoints:
                return execute(sql, params, many, context)
            waiting = len(self._pending_savepoints)
            # With parameters psycopg2 interpolates '%' over the whole string: the prefix holds none.
            try:
                result = execute(self._pending_sql(sent=False, escaped=params is not None) + sql, params, many, context)
            except DatabaseError:
                del self._pending_savepoints[:waiting]  # it reached PostgreSQL: the prefix ran first
                raise
            # (Refused before it was sent — e.g. by a test's guard — the savepoints are still waiting.)
            del self._pending_savepoints[:waiting]
            return result
        if wanted == _NOTHING_SETTINGS or not head.startswith(_DML):
            # DDL and utility statements read no row (some, like CREATE DATABASE, refuse a transaction).
            return execute(sql, params, many, context)
        prefix = (
            f"SELECT set_config('{rls.TENANT_SETTING}', {_literal(wanted[0])}, true), "
            f"set_config('{rls.BYPASS_SETTING}', {_literal(wanted[1])}, true); "
        )
        # With parameters psycopg2 interpolates '%' over the whole string: the prefix holds none.
        return execute(prefix + sql, params, many, context)
