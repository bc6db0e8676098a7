"""Row-level security: the database's own wall between tenants (issue 14, docs/security.md).

Every tenant-owned table has RLS enabled and forced, with one policy: a row is visible and writable only
when its ``tenant_id`` equals the transaction's ``app.tenant_id`` setting, or the transaction runs the
audited cross-tenant path (``app.rls_bypass = 'on'``). With neither set, a query sees nothing.

The settings are always transaction-local (``set_config(…, true)``, i.e. ``SET LOCAL``): the database
backend (``referral_platform/db/base.py``) applies the state of this module before each statement — once
per transaction inside ``atomic()``, and in the same round trip as the statement in autocommit — so a pooled
connection never carries one tenant's setting into another's work.

The state lives in a context variable:

- ``activate(tenant_id)`` / ``tenant(tenant_id)``: the tenancy layer binds the tenant it resolved — the
  session's member or partner user, the API key, a signed dashboard or portal token, a task's subject;
- ``bypass(reason)``: the explicit, audited cross-tenant path (click flush, reconciler, payouts run,
  scheduled sweeps, platform staff, management commands, migrations); every entry is logged with its reason;
- resolving: a request or task that has not yet identified its tenant (the lookup of a token, link code
  or API key that tells which tenant it is), and code outside any request, task or command. It is a
  bypass too, counted and logged at debug level, and it ends as soon as the tenant is known: from then on
  the request runs under that tenant's policy, and a query that forgot its tenant filter sees that
  tenant's rows only.
- nothing: neither setting — what any other connection of the application role sees (psql, a report
  tool): no tenant-owned row at all.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from dataclasses import dataclass

logger = logging.getLogger("referral_platform.rls")

TENANT_SETTING = "app.tenant_id"
BYPASS_SETTING = "app.rls_bypass"
POLICY_NAME = "tenant_isolation"

# Tables without a tenant_id column that are not tenant data (or hold no tenant's secrets): the platform's
# own tables. A new table must either be tenant-owned (and get the policy) or be listed here.
GLOBAL_TABLES = frozenset(
    {
        "tenancy_tenant",  # the tenant registry itself: resolving a slug or switching workspaces reads it
        "auth_user",
        "auth_group",
        "auth_group_permissions",
        "auth_permission",
        "auth_user_groups",
        "auth_user_user_permissions",
        "django_admin_log",
        "django_content_type",
        "django_migrations",
        "django_session",
        "account_emailaddress",
        "account_emailconfirmation",
        "django_celery_beat_clockedschedule",
        "django_celery_beat_crontabschedule",
        "django_celery_beat_intervalschedule",
        "django_celery_beat_periodictask",
        "django_celery_beat_periodictasks",
        "django_celery_beat_solarschedule",
    }
)


@dataclass(frozen=True)
class RlsState:
    tenant_id: int | None = None
    bypass: bool = False
    reason: str = ""

    @property
    def settings(self) -> tuple[str, str]:
        """(app.tenant_id, app.rls_bypass) as the database sees them."""
        return ("" if self.tenant_id is None else str(int(self.tenant_id)), "on" if self.bypass else "off")


NOTHING = RlsState()
# Code that runs outside any request, task or command (a thread of its own, a shell's first statement)
# starts resolving as well; requests, tasks and commands set their own state (see the module's docstring).
UNBOUND = RlsState(bypass=True, reason="resolving: unbound")
_state: contextvars.ContextVar[RlsState] = contextvars.ContextVar("rls_state", default=UNBOUND)
_audit = {"bypass": 0, "resolving": 0}


def current() -> RlsState:
    return _state.get()


def current_tenant_id() -> int | None:
    return _state.get().tenant_id


def activate(tenant_id: int) -> None:
    """Bind this request/task (its context) to one tenant from now on."""
    if tenant_id is None:
        raise ValueError("activate() needs a tenant id")
    _state.set(RlsState(tenant_id=int(tenant_id)))


def is_resolving() -> bool:
    """A request or task that has not bound its tenant yet (not code outside any request or task)."""
    state = _state.get()
    return state is not UNBOUND and state.bypass and state.reason.startswith("resolving")


def bind(tenant_id: int) -> bool:
    """The tenancy layer found the tenant of the request or task: bind it, if still resolving. Returns
    whether it bound (a context already bound, or on an explicit bypass, is left as it is)."""
    if not is_resolving():
        return False
    activate(tenant_id)
    return True


def bind_bypass(reason: str) -> bool:
    """Like ``bind``, for platform staff: the audited cross-tenant path for the rest of the request."""
    if not is_resolving():
        return False
    activate_bypass(reason)
    return True


def _bypass_state(reason: str) -> RlsState:
    """The audited cross-tenant state: counted and logged (INFO), with its reason."""
    _audit["bypass"] += 1
    logger.info("rls bypass: %s", reason)
    return RlsState(bypass=True, reason=reason)


def _resolving_state(reason: str) -> RlsState:
    """Not yet bound: counted and logged at DEBUG (every request and unbound task passes here)."""
    _audit["resolving"] += 1
    logger.debug("rls resolving: %s", reason)
    return RlsState(bypass=True, reason=f"resolving: {reason}")


def activate_bypass(reason: str) -> None:
    """Run the rest of this context on the cross-tenant path (audited)."""
    _state.set(_bypass_state(reason))


def start_resolving(reason: str) -> None:
    """The start of a request or task: it may look up which tenant it belongs to."""
    _state.set(_resolving_state(reason))


def deactivate() -> None:
    _state.set(NOTHING)


def snapshot():
    """A token restoring the current state with ``restore`` (tests: one test's binding never leaks)."""
    return _state.set(_state.get())


def restore(token) -> None:
    _state.reset(token)


@contextlib.contextmanager
def _scoped(state: RlsState):
    token = _state.set(state)
    try:
        yield
    finally:
        _state.reset(token)


def within(state: RlsState):
    """Run the block in ``state`` (one ``current()`` returned earlier: work recorded then, written now)."""
    return _scoped(state)


def tenant(tenant_id: int):
    """Run the block as one tenant."""
    return _scoped(RlsState(tenant_id=int(tenant_id)))


def bypass(reason: str):
    """The explicit cross-tenant path, logged with its reason."""
    return _scoped(_bypass_state(reason))


def nothing():
    """Run the block with no tenant at all (tests of the wall)."""
    return _scoped(NOTHING)


def resolve(reason: str):
    """A lookup that finds which tenant a token, code or key belongs to (bypass, logged at debug level)."""
    return _scoped(_resolving_state(reason))


def audit_counts() -> dict[str, int]:
    return dict(_audit)


# --- the policy ------------------------------------------------------------------------------------------

POLICY_EXPRESSION = (
    f"(current_setting('{BYPASS_SETTING}', true) = 'on' "
    f"OR tenant_id = NULLIF(current_setting('{TENANT_SETTING}', true), '')::bigint)"
)


def tenant_tables(connection) -> list[str]:
    """Every table of the public schema with a tenant_id column (the tenant-owned tables)."""
    return list(policy_status(connection))


def policy_status(connection) -> dict[str, tuple[bool, bool, bool]]:
    """table -> (RLS enabled, forced, has the tenant policy) for every tenant-owned table."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                   EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = %s)
            FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
            WHERE c.relkind IN ('r', 'p') ORDER BY c.relname
            """,
            [POLICY_NAME],
        )
        return {row[0]: (row[1], row[2], row[3]) for row in cursor.fetchall()}


def policy_install(connection, tables: list[str] | None = None) -> list[str]:
    """Enable and force RLS with the tenant policy on every tenant-owned table that lacks any of the three
    (idempotent: the owner runs it after every migrate). Returns the tables it changed."""
    status = policy_status(connection)
    quote = connection.ops.quote_name
    changed = []
    with connection.cursor() as cursor:
        for table, (enabled, forced, has_policy) in status.items():
            if tables is not None and table not in tables:
                continue
            if not enabled:
                cursor.execute(f"ALTER TABLE {quote(table)} ENABLE ROW LEVEL SECURITY")
            if not forced:
                cursor.execute(f"ALTER TABLE {quote(table)} FORCE ROW LEVEL SECURITY")
            if not has_policy:
                cursor.execute(
                    f"CREATE POLICY {POLICY_NAME} ON {quote(table)} AS PERMISSIVE FOR ALL "
                    f"USING {POLICY_EXPRESSION} WITH CHECK {POLICY_EXPRESSION}"
                )
            if not (enabled and forced and has_policy):
                changed.append(table)
    return changed


def policy_uninstall(connection, tables: list[str] | None = None) -> None:
    """Switch RLS off (the benchmark's "RLS off" column only)."""
    tables = tenant_tables(connection) if tables is None else tables
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"ALTER TABLE {quote(table)} NO FORCE ROW LEVEL SECURITY")
            cursor.execute(f"ALTER TABLE {quote(table)} DISABLE ROW LEVEL SECURITY")


def install_after_migrate(sender, using="default", **kwargs) -> None:
    """post_migrate (infrastructure): every tenant-owned table, old or new, gets the policy."""
    from django.db import connections

    policy_install(connections[using])


def enter_task(tenant_id: int | None, name: str, *, cross_tenant: str | None = None):
    """A Celery task starts: a declared cross-tenant job on the audited bypass; else bound to the tenant its
    sender was bound to; else resolving. Returns the token that ``leave_task`` takes to undo it."""
    if cross_tenant:
        return _state.set(_bypass_state(f"task {name} ({cross_tenant})"))
    if tenant_id is not None:
        if isinstance(tenant_id, int) and not isinstance(tenant_id, bool) and tenant_id > 0:
            return _state.set(RlsState(tenant_id=tenant_id))
        # A header we did not write (another publisher, a tampered message): bind nothing from it.
        logger.warning("rls: task %s ignores a malformed tenant header %r", name, tenant_id)
    return _state.set(_resolving_state(f"task {name}"))


def leave_task(token) -> None:
    try:
        _state.reset(token)
    except ValueError:  # reset from another context: start clean instead
        _state.set(NOTHING)
