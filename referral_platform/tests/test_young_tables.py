"""referral_platform/db/young_tables.py: a table PostgreSQL has never analysed gets statistics once it has grown,
through the owner's ``referral_analyze_young`` (the application's role cannot ANALYZE the owner's tables)."""

from __future__ import annotations

import threading

import psycopg2
import pytest
from django.db import connection

from referral_platform.db import young_tables
from tests.app_role import as_table_owner


def _as_owner(sql: str, params=None):
    """``sql`` run as the tables' owner (``tests.app_role.as_table_owner``); its first row, if it returns any."""
    with as_table_owner(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() if cursor.description else None


def _reltuples(table: str) -> float:
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE relname = %s", [table])
        return cursor.fetchone()[0]


def _probe(rows: int) -> None:
    """A table of the owner's, never analysed, of ``rows`` rows of ~1 kB (about 7 to a page)."""
    _as_owner(
        "CREATE TABLE young_probe (id serial PRIMARY KEY, tenant_id bigint NOT NULL, pad text NOT NULL); "
        "INSERT INTO young_probe (tenant_id, pad) SELECT 1, repeat('x', 1000) FROM generate_series(1, %s)",
        [rows],
    )


@pytest.mark.django_db
def test_a_table_gets_statistics_once_it_has_the_pages_and_again_each_time_it_has_doubled():
    _probe(30)  # ~5 pages
    assert _reltuples("young_probe") < 0  # never analysed
    assert "young_probe" not in young_tables.young_tables_analyze(min_pages=10)
    assert _reltuples("young_probe") < 0

    _as_owner("INSERT INTO young_probe (tenant_id, pad) SELECT 1, repeat('x', 1000) FROM generate_series(1, 100)")
    assert "young_probe" in young_tables.young_tables_analyze(min_pages=10)
    assert _reltuples("young_probe") == 130  # statistics: the rows counted
    # What the planner lacked: the workspace column is not selective (one value here).
    assert _as_owner("SELECT n_distinct FROM pg_stats WHERE tablename = 'young_probe' AND attname = 'tenant_id'") == (
        1,
    )

    assert "young_probe" not in young_tables.young_tables_analyze(min_pages=10)  # analysed: not again until doubled
    _as_owner("INSERT INTO young_probe (tenant_id, pad) SELECT 2, repeat('x', 1000) FROM generate_series(1, 60)")
    assert "young_probe" not in young_tables.young_tables_analyze(min_pages=10)  # 190 rows: not yet twice the pages
    _as_owner("INSERT INTO young_probe (tenant_id, pad) SELECT 2, repeat('x', 1000) FROM generate_series(1, 100)")
    assert "young_probe" in young_tables.young_tables_analyze(min_pages=10)  # 290 rows: twice the pages and more
    assert _reltuples("young_probe") == 290
    assert _as_owner("SELECT n_distinct FROM pg_stats WHERE tablename = 'young_probe' AND attname = 'tenant_id'") == (
        2,
    )


@pytest.mark.django_db
def test_the_application_role_cannot_analyse_the_owners_tables_itself_but_may_ask_the_function():
    _probe(130)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE young_probe")  # PostgreSQL skips it with a warning: not the owner
    assert _reltuples("young_probe") < 0
    assert "young_probe" in young_tables.young_tables_analyze(min_pages=10)
    assert _reltuples("young_probe") == 130


@pytest.mark.django_db
def test_a_second_caller_goes_on_at_once_while_another_is_analysing():
    """Another connection (a real thread) holds the function's lock: this call returns nothing, without waiting;
    once it is let go, the table is analysed."""
    _probe(130)
    settings_dict = connection.settings_dict
    held, release, done = threading.Event(), threading.Event(), threading.Event()

    def holder():
        other = psycopg2.connect(
            dbname=settings_dict["NAME"],
            user=settings_dict["USER"],
            password=settings_dict["PASSWORD"] or None,
            host=settings_dict["HOST"],
            port=settings_dict["PORT"],
        )
        try:
            with other.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_lock(hashtext('referral_analyze_young'))")
                held.set()
                release.wait(30)
                cursor.execute("SELECT pg_advisory_unlock(hashtext('referral_analyze_young'))")
        finally:
            other.close()
            done.set()

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(30)
        assert young_tables.young_tables_analyze(min_pages=10) == []
        assert _reltuples("young_probe") < 0
    finally:
        release.set()
        thread.join(30)
    assert done.is_set()
    assert "young_probe" in young_tables.young_tables_analyze(min_pages=10)


@pytest.mark.django_db(transaction=True)
def test_the_workers_check_asks_at_most_every_few_seconds_outside_transactions_and_can_be_turned_off(
    settings, monkeypatch
):
    calls = []
    monkeypatch.setattr(young_tables, "young_tables_analyze", lambda: calls.append(1) or ["t"])
    monkeypatch.setattr(young_tables, "_next_check", 0.0)
    assert young_tables.young_tables_check() == ["t"]
    assert young_tables.young_tables_check() == []  # within CHECK_EVERY_SECONDS: not asked again
    assert calls == [1]

    monkeypatch.setattr(young_tables, "_next_check", 0.0)
    from django.db import transaction

    with transaction.atomic():
        assert young_tables.young_tables_check() == []  # never inside a transaction (ANALYZE's lock would last)
    settings.DB_ANALYZE_YOUNG_PAGES = 0
    assert young_tables.young_tables_check() == []
    assert calls == [1]
