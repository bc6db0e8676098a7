"""Server-side prepared statements for the hottest hand-written statements (issue 15,
``referral_platform.db.prepared.execute_prepared``): PREPAREd once per connection, then only EXECUTEd; the
same rows as the statement sent as text; a PREPARE made in a transaction that rolls back still serves; a new
connection prepares again; and row-level security still applies per execution — a statement prepared while one
workspace was bound never shows another's rows (the suite runs as the application's restricted role)."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from hypothesis import given
from hypothesis import strategies as st

from programs.models import Program
from referral_platform.db.prepared import _numbered, execute_prepared
from referral_platform.tenancy import rls
from tests import factories as f

SQL = "SELECT id, slug FROM programs_program WHERE tenant_id = ANY(%s) AND slug <> %s ORDER BY id"


def _rows(sql, params, *, prepared: bool):
    with connection.cursor() as cursor:
        if prepared:
            execute_prepared(cursor, sql, params)
        else:
            cursor.execute(sql, params)
        return cursor.fetchall()


def test_placeholders_are_numbered_in_order_a_name_once_and_percent_signs_kept():
    assert _numbered("a = %s AND b = %s AND c LIKE 'x%%'", [1, 2]) == ("a = $1 AND b = $2 AND c LIKE 'x%'", [1, 2])
    text, values = _numbered("t = %(t)s AND (v = ANY(%(v)s) OR w = ANY(%(v)s)) AND u <= %(t)s", {"t": 7, "v": ["a"]})
    assert (text, values) == ("t = $1 AND (v = ANY($2) OR w = ANY($2)) AND u <= $1", [7, ["a"]])


def test_prepared_once_then_executed_with_the_same_rows_as_the_text(world):
    programs = [f.ProgramFactory(tenant=world.a, slug=slug) for slug in ("alpha", "beta", "it's 100%")]
    with rls.tenant(world.a.pk), transaction.atomic():
        with CaptureQueriesContext(connection) as captured:
            first = _rows(SQL, [[world.a.pk], "beta"], prepared=True)
            second = _rows(SQL, [[world.a.pk], "alpha"], prepared=True)
        plain = _rows(SQL, [[world.a.pk], "beta"], prepared=False)
    sent = [query["sql"] for query in captured.captured_queries]
    assert first == plain and [slug for _pk, slug in second] == ["beta", "it's 100%"]
    assert sum("PREPARE rp_" in sql for sql in sent) <= 1 and sum("EXECUTE rp_" in sql for sql in sent) == 2
    assert {pk for pk, _slug in first} == {programs[0].pk, programs[2].pk}


def test_a_prepare_in_a_rolled_back_transaction_still_serves(world):
    f.ProgramFactory(tenant=world.a, slug="gamma")
    sql = SQL + " LIMIT 5"  # a statement of its own (never prepared on this connection before)

    class Undo(Exception):
        pass

    with rls.tenant(world.a.pk):
        with pytest.raises(Undo), transaction.atomic():
            _rows(sql, [[world.a.pk], ""], prepared=True)
            raise Undo
        with transaction.atomic(), CaptureQueriesContext(connection) as captured:
            assert [slug for _pk, slug in _rows(sql, [[world.a.pk], ""], prepared=True)] == ["gamma"]
    assert not any("PREPARE rp_" in query["sql"] for query in captured.captured_queries)


@pytest.mark.django_db(transaction=True)
def test_a_new_connection_prepares_again():
    tenant = f.TenantFactory()
    f.ProgramFactory(tenant=tenant, slug="delta")
    sql = SQL + " LIMIT 6"
    with rls.tenant(tenant.pk), transaction.atomic():
        assert [slug for _pk, slug in _rows(sql, [[tenant.pk], ""], prepared=True)] == ["delta"]
    connection.close()
    with rls.tenant(tenant.pk), transaction.atomic(), CaptureQueriesContext(connection) as captured:
        assert [slug for _pk, slug in _rows(sql, [[tenant.pk], ""], prepared=True)] == ["delta"]
    assert sum("PREPARE rp_" in query["sql"] for query in captured.captured_queries) == 1


def test_row_level_security_applies_to_every_execution_of_a_prepared_statement(world):
    f.ProgramFactory(tenant=world.a, slug="ours")
    f.ProgramFactory(tenant=world.b, slug="theirs")
    everyone = [[world.a.pk, world.b.pk], ""]  # the statement itself does not filter by workspace
    sql = SQL + " LIMIT 50"
    with rls.tenant(world.a.pk), transaction.atomic():
        assert [slug for _pk, slug in _rows(sql, everyone, prepared=True)] == ["ours"]
    for _ in range(6):  # past the executions after which PostgreSQL may keep a generic plan
        with rls.tenant(world.b.pk), transaction.atomic():
            assert [slug for _pk, slug in _rows(sql, everyone, prepared=True)] == ["theirs"]
    with rls.tenant(world.a.pk), transaction.atomic():
        assert [slug for _pk, slug in _rows(sql, everyone, prepared=True)] == ["ours"]
    assert Program.objects.count() >= 2


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_both_the_first_and_a_later_execution_carry_the_workspace():
    """An admin page or a public view may read through a prepared statement in autocommit: the workspace's
    binding travels with the PREPARE and with every EXECUTE, as with any statement."""
    a, b = f.TenantFactory(), f.TenantFactory()
    f.ProgramFactory(tenant=a, slug="ours")
    f.ProgramFactory(tenant=b, slug="theirs")
    sql = SQL + " LIMIT 7"
    everyone = [[a.pk, b.pk], ""]
    assert connection.get_autocommit()
    with rls.tenant(a.pk):
        assert [slug for _pk, slug in _rows(sql, everyone, prepared=True)] == ["ours"]  # PREPARE + EXECUTE
    with rls.tenant(b.pk):
        assert [slug for _pk, slug in _rows(sql, everyone, prepared=True)] == ["theirs"]  # EXECUTE only
    with rls.nothing():
        assert _rows(sql, everyone, prepared=True) == []


def test_turned_off_the_statement_is_sent_as_text(world, settings):
    """``DB_PREPARED_STATEMENTS=0`` (behind a transaction-pooling PgBouncer): nothing is prepared."""
    settings.DB_PREPARED_STATEMENTS = False
    f.ProgramFactory(tenant=world.a, slug="plain")
    with rls.tenant(world.a.pk), transaction.atomic(), CaptureQueriesContext(connection) as captured:
        assert [slug for _pk, slug in _rows(SQL + " LIMIT 8", [[world.a.pk], ""], prepared=True)] == ["plain"]
    assert [query["sql"].startswith("SELECT id, slug") for query in captured.captured_queries] == [True]


def test_a_first_execution_that_fails_after_its_prepare_does_not_stop_the_next_ones(world):
    """PREPARE and the first EXECUTE travel together; when the EXECUTE fails (here: a unique key) the PREPARE
    has been done all the same (it outlives the failed transaction) — the next use finds it and executes."""
    program = f.ProgramFactory(tenant=world.a, slug="taken")
    insert = "INSERT INTO programs_program SELECT * FROM programs_program WHERE id = %s RETURNING id"
    with rls.tenant(world.a.pk):
        with pytest.raises(Exception, match="duplicate key"), transaction.atomic():
            _rows(insert, [program.pk], prepared=True)
        with transaction.atomic():
            assert _rows(SQL + " LIMIT 9", [[world.a.pk], ""], prepared=True) == [(program.pk, "taken")]
        with pytest.raises(Exception, match="duplicate key"), transaction.atomic():
            _rows(insert, [program.pk], prepared=True)  # prepared already: only the EXECUTE, failing the same way
        with transaction.atomic(), CaptureQueriesContext(connection) as captured:
            assert _rows(SQL + " LIMIT 9", [[world.a.pk], ""], prepared=True) == [(program.pk, "taken")]
    assert not any("PREPARE rp_" in query["sql"] for query in captured.captured_queries)


def _numbered_each_time(sql, params):
    """The numbering as it was done at every execution before its shape was remembered per text (the reference)."""
    import re

    ordered, positions = [], {}
    sequence = iter(params) if not isinstance(params, dict) else None

    def number(match):
        placeholder = match.group(0)
        if placeholder == "%%":
            return "%"
        if placeholder == "%s":
            ordered.append(next(sequence))
            return f"${len(ordered)}"
        name = match.group(1)
        if name not in positions:
            ordered.append(params[name])
            positions[name] = len(ordered)
        return f"${positions[name]}"

    return re.sub(r"%\((\w+)\)s|%s|%%", number, sql), ordered


_pieces = st.lists(st.sampled_from(["a", " = ", "%s", "%%", "'x'", "%(k)s", "%(m)s", "%(k)s", ","]), max_size=14)


@given(pieces=_pieces, values=st.lists(st.integers(), min_size=14, max_size=14), again=st.booleans())
def test_the_numbering_remembered_per_text_is_the_numbering_done_each_time(pieces, values, again):
    """The text and values ``_numbered`` gives (its shape worked out once per statement text) are those of numbering
    the statement afresh, for positional and named placeholders, ``%%`` and a name used twice — asked once or
    twice with other values."""
    named = any("%(" in piece for piece in pieces)
    pieces = [piece for piece in pieces if piece != "%s"] if named else pieces
    sql = "".join(pieces)
    params = {"k": values[0], "m": values[1]} if named else values
    if again:
        _numbered(sql, {"k": -1, "m": -2} if named else [-v for v in values])
    assert _numbered(sql, params) == _numbered_each_time(sql, params)
