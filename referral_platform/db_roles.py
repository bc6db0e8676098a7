"""Least privilege in PostgreSQL: an owner role runs the migrations, the application runs as another role.

- The owner role owns the database, its schema and every table; ``manage.py migrate`` runs as it.
- The application role (``settings.DATABASE_APP_ROLE``) owns nothing and is no superuser: it cannot
  disable triggers (needs ownership) or set ``session_replication_role`` (superuser only). It may read and
  write rows (SELECT, INSERT, UPDATE, DELETE), except the ledger (SELECT and INSERT only) and the
  migration history (SELECT only). ``app_role_grant`` gives exactly that after every ``migrate``.

Create both roles on an existing server with ``scripts/db_roles.sql`` (README "Database roles").
"""

from __future__ import annotations

from django.conf import settings
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

LEDGER_TABLES = ("rewards_ledgeraccount", "rewards_ledgertransaction", "rewards_ledgerentry")
READ_ONLY_TABLES = ("django_migrations",)
APP_ROLE_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"


def _role_exists(cursor, role: str) -> bool:
    cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
    return cursor.fetchone() is not None


def app_role_ensure(connection: BaseDatabaseWrapper, role: str, password: str = "") -> None:
    """Create the application role when it is missing (tests and the embedded server; needs CREATEROLE)."""
    quoted = connection.ops.quote_name(role)
    with connection.cursor() as cursor:
        if not _role_exists(cursor, role):
            cursor.execute(f"CREATE ROLE {quoted} {APP_ROLE_ATTRIBUTES}")
            if password:
                cursor.execute(f"ALTER ROLE {quoted} PASSWORD %s", [password])


def app_role_grant(connection: BaseDatabaseWrapper, role: str) -> bool:
    """Grant the application role what it needs and nothing more; False when the role does not exist or the
    connection already is that role (nothing to grant)."""
    quoted = connection.ops.quote_name(role)
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        if cursor.fetchone()[0] == role or not _role_exists(cursor, role):
            return False
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = {row[0] for row in cursor.fetchall()}
        cursor.execute(f"GRANT USAGE ON SCHEMA public TO {quoted}")
        cursor.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {quoted}")
        cursor.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}")
        cursor.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {quoted}")
        append_only = [connection.ops.quote_name(t) for t in LEDGER_TABLES if t in tables]
        if append_only:
            cursor.execute(f"REVOKE UPDATE, DELETE ON {', '.join(append_only)} FROM {quoted}")
        read_only = [connection.ops.quote_name(t) for t in READ_ONLY_TABLES if t in tables]
        if read_only:
            cursor.execute(f"REVOKE INSERT, UPDATE, DELETE ON {', '.join(read_only)} FROM {quoted}")
    return True


def grant_after_migrate(sender, using="default", **kwargs) -> None:
    """post_migrate (infrastructure, not a business event): re-grant after every ``migrate`` or ``flush``."""
    role = settings.DATABASE_APP_ROLE
    if role:
        app_role_grant(connections[using], role)
