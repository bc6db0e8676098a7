"""Statistics for tables PostgreSQL has never analysed, or that have doubled since (issue 15).

Without statistics PostgreSQL takes ``tenant_id = $1`` for as selective as any key, so every index that starts
with ``tenant_id`` looks as good as the key's: a plan made then — and kept, as a prepared statement's generic
plan is until a table it reads is analysed — may read the whole workspace at each execution. Measured on a
new installation's first billing run (1,000 payments, ``bench/bench_pipeline.py``, auto_explain): the fraud
screen of each new referral read every referral, conversion event and identity link of the workspace through
``tenant_id`` indexes (2.7 ms a screen at the end), the other statements alike; with statistics gathered once the
referrals reached ~300 rows, the same run went from 119.6 / 128.1 to 153.5 / 147.0 conversions/s and the
database's CPU per conversion from 6.8 / 5.5 to 4.8 / 4.9 ms.

Autovacuum analyses a table once 50 rows and 10 % have changed, within ``autovacuum_naptime`` (a minute) — when
it runs: a billing run of a few seconds is over before then, and where autovacuum is off it never comes. So the
Celery workers ask, before a task and between a drain's chunks, at most every ``CHECK_EVERY_SECONDS`` per
process: every table of the tables' owner that has reached ``settings.DB_ANALYZE_YOUNG_PAGES`` pages (10 by
default: below that the planner already counts a never-vacuumed table as ten pages) and twice the pages it had
when last analysed or vacuumed (``pg_class.relpages``, 0 if never) is analysed (``referral_analyze_young``, a
function of the tables' owner: migration tenancy 0003). Statistics gathered at 10 pages are young in their own
way (the conversion events' first sample had no unattributed one, and the orphans' UPDATE then read by
workspace); gathered again at each doubling, a table is analysed a few times in its life (ANALYZE reads a
sample of at most 30,000 rows), and where autovacuum runs it is usually there first. The check itself is one
read of ``pg_class``."""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import DatabaseError, connection

logger = logging.getLogger(__name__)

CHECK_EVERY_SECONDS = 2.0
_next_check = 0.0


def young_tables_analyze(min_pages: int | None = None) -> list[str]:
    """ANALYZE the tables of their owner that have at least ``min_pages`` pages (default: the setting) and twice
    the pages they had when last analysed or vacuumed (never: 0); the names of those analysed. Another caller
    busy doing it: nothing, at once."""
    pages = settings.DB_ANALYZE_YOUNG_PAGES if min_pages is None else min_pages
    with connection.cursor() as cursor:
        cursor.execute("SELECT referral_analyze_young(%s)", [pages])
        return list(cursor.fetchone()[0] or [])


def young_tables_check() -> list[str]:
    """``young_tables_analyze`` at most every ``CHECK_EVERY_SECONDS`` in this process, outside any transaction
    (ANALYZE's lock then lasts only its own statement), never failing its caller (a Celery task about to run)."""
    global _next_check
    if not settings.DB_ANALYZE_YOUNG_PAGES or connection.in_atomic_block:
        return []
    now = time.monotonic()
    if now < _next_check:
        return []
    _next_check = now + CHECK_EVERY_SECONDS
    try:
        analysed = young_tables_analyze()
    except DatabaseError as error:  # (autocommit: nothing to roll back; the task runs as it would have)
        logger.warning("young tables not analysed: %s", error)
        return []
    if analysed:
        logger.info("statistics gathered for young or grown tables: %s", ", ".join(analysed))
    return analysed
