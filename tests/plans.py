"""Reading what PostgreSQL's plan of a statement did (EXPLAIN ANALYZE), for tests that a read goes by key.

A workspace of a few hundred rows is read whole more cheaply than by any index, so these run with
``enable_seqscan = off``: whether the plan CAN read by key is the question; what its scans then removed by
filter says whether it read by key or by workspace.
"""

from __future__ import annotations

import json

from django.db import connection, transaction

from referral_platform.db.prepared import _numbered


def analyze(*tables: str) -> None:
    """Statistics, as autovacuum would gather them (the owner's right)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        role = cursor.fetchone()[0]
        cursor.execute(f"RESET ROLE; ANALYZE {', '.join(tables)}")
        cursor.execute(f'SET ROLE "{role}"')


def plan_nodes(plan) -> list[dict]:
    """Every node of an ``EXPLAIN (FORMAT JSON)`` result, sub-plans and init-plans included."""
    plan = plan if isinstance(plan, list) else json.loads(plan)
    nodes, todo = [], [plan[0]["Plan"]]
    while todo:
        node = todo.pop()
        todo += node.get("Plans", [])
        nodes.append(node)
    return nodes


def explained(sql: str, params=None) -> list[dict]:
    """The nodes of ``sql`` as EXPLAIN ANALYZE ran it (sequential scans off), in a savepoint rolled back."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        sid = transaction.savepoint()
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
        transaction.savepoint_rollback(sid)
    return plan_nodes(plan)


def prepared_run(sql: str, params, *, mode: str) -> tuple[list, list[dict]]:
    """``sql`` (psycopg2 placeholders) prepared under ``plan_cache_mode = mode`` (sequential scans off): its rows,
    and the nodes of its plan as EXPLAIN ANALYZE ran it — each in a savepoint rolled back (an UPDATE changes
    nothing)."""
    text, values = _numbered(sql, params)
    arguments = ", ".join(["%s"] * len(values))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL plan_cache_mode = {mode}")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"PREPARE plan_test AS {text}")
        try:
            sid = transaction.savepoint()
            cursor.execute(f"EXECUTE plan_test({arguments})", values)
            rows = cursor.fetchall()
            transaction.savepoint_rollback(sid)
            sid = transaction.savepoint()
            cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE plan_test({arguments})", values)
            plan = cursor.fetchone()[0]
            transaction.savepoint_rollback(sid)
        finally:
            cursor.execute("DEALLOCATE plan_test")
    return rows, plan_nodes(plan)


def removed(nodes: list[dict], tables: set[str]) -> int:
    """The rows the scans of ``tables`` read and threw away (filter and bitmap recheck)."""
    return sum(
        int(node.get("Rows Removed by Filter", 0)) + int(node.get("Rows Removed by Index Recheck", 0))
        for node in nodes
        if node.get("Relation Name") in tables
    )


def indexes(nodes: list[dict]) -> set[str]:
    return {node["Index Name"] for node in nodes if "Index Name" in node}
