"""The Celery app of bench_pipeline.py's workers: the project's app, plus a count of the SQL statements
every task runs (added to a Redis counter after each task), so the benchmark can print queries per
conversion. Never used outside bench/."""

from __future__ import annotations

import os

from celery import signals

from referral_platform.celery import app

COUNTER_KEY = os.environ.get("BENCH_QUERY_COUNTER", "")
_count = [0]
_client = []


def _counting(execute, sql, params, many, context):
    _count[0] += 1
    return execute(sql, params, many, context)


@signals.worker_process_init.connect
def _install_counter(**_kwargs):
    from django.db import connection

    if COUNTER_KEY and _counting not in connection.execute_wrappers:
        connection.execute_wrappers.append(_counting)


@signals.task_postrun.connect
def _report(**_kwargs):
    if not COUNTER_KEY or not _count[0]:
        return
    if not _client:
        import redis

        _client.append(redis.Redis.from_url(os.environ["REDIS_URL"]))
    _client[0].incrby(COUNTER_KEY, _count[0])
    _count[0] = 0


__all__ = ["app"]
