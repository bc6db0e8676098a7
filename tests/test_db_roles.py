"""Least privilege (issue 14): the application's role owns nothing, is no superuser, may only insert into and
read the ledger, and can switch off neither the ledger's triggers nor trigger firing as a whole."""

from __future__ import annotations

import psycopg2
import pytest
from django.conf import settings
from django.db import connection, transaction
from django.db.utils import ProgrammingError

from referral_platform.db_roles import LEDGER_TABLES

pytestmark = pytest.mark.django_db

ROLE = settings.DATABASE_APP_ROLE
REFUSED = r"permission denied|must be owner|must be superuser"

BYPASSES = {
    "session-replication-role": "SET session_replication_role = replica",
    "disable-trigger": "ALTER TABLE rewards_ledgerentry DISABLE TRIGGER rewards_ledgerentry_append_only",
    "disable-all-triggers": "ALTER TABLE rewards_ledgertransaction DISABLE TRIGGER ALL",
    "update-ledger": "UPDATE rewards_ledgerentry SET amount_minor = 0",
    "delete-ledger": "DELETE FROM rewards_ledgeraccount",
    "truncate-ledger": "TRUNCATE rewards_ledgerentry",
    "drop-trigger": "DROP TRIGGER rewards_ledgerentry_append_only ON rewards_ledgerentry",
    "become-superuser": f'ALTER ROLE "{ROLE}" SUPERUSER',
}


def _login_as_app_role():
    """A connection that logs in as the application role itself (as production does), not via SET ROLE."""
    db = connection.settings_dict
    return psycopg2.connect(
        dbname=db["NAME"], user=ROLE, host=db["HOST"] or None, port=db["PORT"] or None, connect_timeout=5
    )


def test_the_tests_run_as_the_application_role():
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        assert cursor.fetchone()[0] == ROLE


def test_the_application_role_is_no_superuser_and_owns_nothing():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication FROM pg_roles "
            "WHERE rolname = %s",
            [ROLE],
        )
        attributes = cursor.fetchone()
        cursor.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relowner = (SELECT oid FROM pg_roles WHERE rolname = %s) AND n.nspname = 'public'",
            [ROLE],
        )
        owned = cursor.fetchone()[0]

    assert attributes == (False, False, False, False, False)
    assert owned == 0


@pytest.mark.parametrize("table", LEDGER_TABLES)
def test_the_ledger_is_insert_and_select_only_for_the_application_role(table):
    with connection.cursor() as cursor:
        granted = {}
        for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "TRIGGER", "REFERENCES"):
            cursor.execute("SELECT has_table_privilege(%s, %s, %s)", [ROLE, table, privilege])
            granted[privilege] = cursor.fetchone()[0]

    assert granted == {
        "SELECT": True,
        "INSERT": True,
        "UPDATE": False,
        "DELETE": False,
        "TRUNCATE": False,
        "TRIGGER": False,
        "REFERENCES": False,
    }


@pytest.mark.parametrize("statement", list(BYPASSES.values()), ids=list(BYPASSES))
def test_ledger_bypasses_are_refused_to_the_application_role(statement):
    """Over the tests' own connection (SET ROLE to the app role)…"""
    refused = pytest.raises(ProgrammingError, match=REFUSED)
    with refused, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement)


@pytest.mark.parametrize("statement", list(BYPASSES.values()), ids=list(BYPASSES))
def test_ledger_bypasses_are_refused_to_a_login_as_the_application_role(statement):
    """…and over a connection that logs in as the role itself."""
    login = _login_as_app_role()
    try:
        with login.cursor() as cursor:
            cursor.execute("SELECT current_user, count(*) FROM rewards_ledgerentry")
            user, _ = cursor.fetchone()
            assert user == ROLE
            with pytest.raises(psycopg2.Error, match=REFUSED):
                cursor.execute(statement)
    finally:
        login.close()
