"""The Celery app of bench_pipeline.py's workers: the project's app, plus a count of the SQL statements
every task runs (added to Redis counters after each task: in all, and per task name with the number
of runs), so the benchmark can print queries per conversion and where they go. Never used outside bench/."""

from __future__ import annotations

import os
import re
import time

from celery import signals

from referral_platform.celery import app

COUNTER_KEY = os.environ.get("BENCH_QUERY_COUNTER", "")
TIME_SQL = os.environ.get("BENCH_TIME_SQL") == "1"  # also the SQL seconds per statement shape
_count = [0]
_client = []


_timings: dict[str, float] = {}


def _counting(execute, sql, params, many, context):
    _count[0] += 1
    if not TIME_SQL:
        return execute(sql, params, many, context)
    started = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        shape = re.sub(r"\s+", " ", sql)[:160]
        _timings[shape] = _timings.get(shape, 0.0) + time.perf_counter() - started


@signals.worker_process_init.connect
def _install_counter(**_kwargs):
    from django.db import connection

    if COUNTER_KEY and _counting not in connection.execute_wrappers:
        connection.execute_wrappers.append(_counting)


@signals.task_postrun.connect
def _report(sender=None, **_kwargs):
    if not COUNTER_KEY:
        return
    if not _client:
        import redis

        _client.append(redis.Redis.from_url(os.environ["REDIS_URL"]))
    name = getattr(sender, "name", "?")
    with _client[0].pipeline(transaction=False) as pipe:
        pipe.incrby(COUNTER_KEY, _count[0])
        pipe.hincrby(f"{COUNTER_KEY}:by-task", name, _count[0])
        pipe.hincrby(f"{COUNTER_KEY}:runs", name, 1)
        for shape, seconds in _timings.items():
            pipe.hincrbyfloat(f"{COUNTER_KEY}:sql", shape, seconds)
        pipe.execute()
    _count[0] = 0
    _timings.clear()


__all__ = ["app"]
