"""The test suite runs as the application's restricted role (issue 14, least privilege).

pytest-django creates and migrates the test database as the owner (the connecting user); afterwards every
connection switches to ``settings.DATABASE_APP_ROLE`` with ``SET ROLE`` — the privileges the application
has in production, where it logs in as that role directly. Only the harness's own work goes back to the
owner: flushing tables between transactional tests (TRUNCATE, which the application may not do) and the
few tests that build fixtures the application could never build (``as_table_owner``).
"""

from __future__ import annotations

import contextlib

from django.conf import settings
from django.db import connections
from django.db.backends.postgresql.operations import DatabaseOperations
from django.db.backends.signals import connection_created

from referral_platform import db_roles

_state = {"role": ""}
_original_flush = DatabaseOperations.execute_sql_flush


def _set_role(connection) -> None:
    if _state["role"] and connection.alias == "default":
        with connection.cursor() as cursor:
            cursor.execute(f"SET ROLE {connection.ops.quote_name(_state['role'])}")


def _on_connect(sender, connection, **kwargs) -> None:
    _set_role(connection)


def _flush_as_owner(self, sql_list):
    with contextlib.ExitStack() as stack:
        if _state["role"]:
            stack.enter_context(as_table_owner(self.connection))
        return _original_flush(self, sql_list)


@contextlib.contextmanager
def as_table_owner(connection=None):
    """Run the block as the owner (test fixtures only: DDL, trigger checks, flush)."""
    connection = connection or connections["default"]
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")
    try:
        yield
    finally:
        _set_role(connection)


def install() -> None:
    """After the test database exists: create/grant the role, switch every connection to it."""
    role = settings.DATABASE_APP_ROLE
    connection = connections["default"]
    db_roles.app_role_ensure(connection, role)
    db_roles.app_role_grant(connection, role)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_has_role(current_user, %s, 'MEMBER')", [role])
        if not cursor.fetchone()[0]:  # the owner must be allowed to SET ROLE to it
            cursor.execute(f"GRANT {connection.ops.quote_name(role)} TO CURRENT_USER")
    _state["role"] = role
    connection_created.connect(_on_connect, dispatch_uid="tests_app_role")
    DatabaseOperations.execute_sql_flush = _flush_as_owner
    if connection.connection is not None:
        _set_role(connection)


def uninstall() -> None:
    _state["role"] = ""
    connection_created.disconnect(dispatch_uid="tests_app_role")
    DatabaseOperations.execute_sql_flush = _original_flush
    for connection in connections.all():
        if connection.connection is not None:
            with connection.cursor() as cursor:
                cursor.execute("RESET ROLE")
