# ruff: noqa: S608 - every interpolated name is a table name from model metadata or a fixed fragment
"""Recompute daily rollup buckets from raw rows: idempotent by construction.

A bucket is (tenant, participant, day); recomputing it deletes its rows and inserts them again from
the raw clicks, referrals, attributions and rewards of that participant and day, so running the same
refresh twice (a retried task, a re-delivered batch) changes nothing, and the order in which refreshes
run does not matter. ``rollups_rebuild`` recomputes a whole tenant the same way, month by month.

Every write takes a per-tenant advisory lock for its transaction, so two refreshes of one tenant never
interleave their delete and insert.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time, timedelta

from django.db import connection, transaction

from programs.models import Program
from referral_platform.db.prepared import execute_prepared
from referral_platform.db.sql import rows_insert
from referrals.models import Attribution, Click, ConversionEvent, Referral, ReferralLink
from rewards.models import Reward

from .models import DailyRollup, DailyTotal, MonthlyReferrals, RollupFootprint

Key = tuple[int, date]  # (participant_id, day)
LOCK_NAMESPACE = 7_310_010  # pg_advisory_xact_lock(namespace, tenant_id): analytics rollups

METRICS = [
    "clicks",
    "referrals",
    "signups",
    "qualified",
    "customers",
    "rejected",
    "churned",
    "revenue_minor",
    "refunds_minor",
    "deal_minor",
    "sales_cycle_seconds",
    "rewards_earned_minor",
    "rewards_owed_minor",
    "rewards_paid_minor",
    "rewards_paid_count",
    "reward_delay_seconds",
]

T = {
    "click": Click._meta.db_table,
    "link": ReferralLink._meta.db_table,
    "referral": Referral._meta.db_table,
    "event": ConversionEvent._meta.db_table,
    "attribution": Attribution._meta.db_table,
    "reward": Reward._meta.db_table,
    "program": Program._meta.db_table,
    "rollup": DailyRollup._meta.db_table,
    "total": DailyTotal._meta.db_table,
    "monthly": MonthlyReferrals._meta.db_table,
}


def _day(column: str) -> str:
    return f"(({column}) AT TIME ZONE 'UTC')::date"


def _zeros(**values: str) -> str:
    return ", ".join(f"{values.get(name, '0')}::bigint AS {name}" for name in METRICS)


# Each fact source yields rows (program_id, participant_id, day, channel, <every metric>) for the
# filter ``{scope}`` (an SQL condition on the source's own alias, given per mode below).
def _clicks_sql(scope: str) -> str:
    return f"""
    SELECT c.program_id, c.participant_id, {_day("c.occurred_at")} AS day, c.channel, {_zeros(clicks="1")}
    FROM {T["click"]} c
    WHERE c.tenant_id = %(tenant)s AND NOT c.is_bot AND {scope}
    """


_STAGES = (
    ("referrals", "r.created_at"),
    ("signups", "r.signed_up_at"),
    ("qualified", "r.qualified_at"),
    ("customers", "r.converted_at"),
    ("rejected", "r.rejected_at"),
    ("churned", "r.churned_at"),
)


def _referrals_sql(scope: str) -> str:
    stage_rows = ", ".join(f"('{name}', {column})" for name, column in _STAGES)
    metrics = {name: f"(s.stage = '{name}')::int" for name, _ in _STAGES}
    lead_at = "LEAST(r.created_at, COALESCE(r.clicked_at, r.created_at), COALESCE(r.signed_up_at, r.created_at))"
    metrics["sales_cycle_seconds"] = (
        f"CASE WHEN s.stage = 'customers' THEN GREATEST(0, EXTRACT(EPOCH FROM r.converted_at - {lead_at}))::bigint "
        "ELSE 0 END"
    )
    metrics["deal_minor"] = "CASE WHEN s.stage = 'customers' THEN COALESCE(first_payment.amount_minor, 0) ELSE 0 END"
    return f"""
    SELECT r.program_id, r.referrer_id AS participant_id, {_day("s.at")} AS day,
           COALESCE(l.channel, 'direct') AS channel, {_zeros(**metrics)}
    FROM {T["referral"]} r
    LEFT JOIN {T["link"]} l ON l.id = r.link_id
    CROSS JOIN LATERAL (VALUES {stage_rows}) AS s(stage, at)
    LEFT JOIN LATERAL (
        SELECT e.amount_minor FROM {T["event"]} e
        WHERE s.stage = 'customers' AND e.referral_id = r.id AND e.tenant_id = r.tenant_id
          AND e.kind = 'payment' AND e.status = 'processed'
        ORDER BY e.occurred_at, e.id LIMIT 1
    ) first_payment ON TRUE
    WHERE r.tenant_id = %(tenant)s AND r.review_status <> 'rejected' AND s.at IS NOT NULL AND {scope}
    """


def _revenue_sql(scope: str) -> str:
    metrics = {
        "revenue_minor": "CASE WHEN e.kind = 'refund' THEN -ABS(a.amount_minor) ELSE a.amount_minor END",
        "refunds_minor": "CASE WHEN e.kind = 'refund' THEN ABS(a.amount_minor) ELSE 0 END",
    }
    return f"""
    SELECT a.program_id, a.participant_id, {_day("e.occurred_at")} AS day,
           COALESCE(l.channel, 'direct') AS channel, {_zeros(**metrics)}
    FROM {T["attribution"]} a
    JOIN {T["event"]} e ON e.id = a.conversion_event_id
    LEFT JOIN {T["referral"]} r ON r.id = a.referral_id
    LEFT JOIN {T["link"]} l ON l.id = r.link_id
    WHERE a.tenant_id = %(tenant)s AND e.status = 'processed' AND e.kind IN ('payment', 'refund') AND {scope}
    """


def _rewards_sql(scope: str) -> str:
    net = "(w.amount_minor - w.reversed_minor - w.clawed_back_minor)"
    metrics_earned = {
        "rewards_earned_minor": net,
        "rewards_owed_minor": f"CASE WHEN w.status IN ('pending', 'approved') THEN {net} ELSE 0 END",
    }
    metrics_paid = {
        "rewards_paid_minor": "(w.amount_minor - w.reversed_minor)",
        "rewards_paid_count": "1",
        "reward_delay_seconds": "GREATEST(0, EXTRACT(EPOCH FROM w.paid_at - w.converted_at))::bigint",
    }
    base = f"""
    FROM {T["reward"]} w
    LEFT JOIN {T["referral"]} r ON r.id = w.referral_id
    LEFT JOIN {T["link"]} l ON l.id = r.link_id
    WHERE w.tenant_id = %(tenant)s AND w.is_current AND w.status <> 'rejected'"""
    return f"""
    SELECT w.program_id, w.participant_id, {_day("w.converted_at")} AS day,
           COALESCE(l.channel, 'direct') AS channel, {_zeros(**metrics_earned)}
    {base} AND {scope.format(at="w.converted_at")}
    UNION ALL
    SELECT w.program_id, w.participant_id, {_day("w.paid_at")} AS day,
           COALESCE(l.channel, 'direct') AS channel, {_zeros(**metrics_paid)}
    {base} AND w.paid_at IS NOT NULL AND {scope.format(at="w.paid_at")}
    """


def _insert_sql(facts: str) -> str:
    columns = ", ".join(METRICS)
    sums = ", ".join(f"SUM(f.{name})" for name in METRICS)
    nonzero = " OR ".join(f"SUM(f.{name}) <> 0" for name in METRICS)
    return f"""
    INSERT INTO {T["rollup"]} (tenant_id, day, program_id, participant_id, channel, kind, currency, {columns})
    SELECT %(tenant)s, f.day, f.program_id, f.participant_id, f.channel,
           CASE p.kind WHEN 'reseller' THEN 'partner' ELSE p.kind END, p.currency, {sums}
    FROM ({facts}) f
    JOIN {T["program"]} p ON p.id = f.program_id
    GROUP BY f.day, f.program_id, f.participant_id, f.channel, p.kind, p.currency
    HAVING {nonzero}
    """


def _totals_refresh(cursor, tenant_id: int, *, days: list[date] | None = None, low=None, high=None) -> None:
    """Recompute the DailyTotal rows of the given days (or of [low, high)) from the DailyRollup rows."""
    columns = ", ".join(METRICS)
    sums = ", ".join(f"SUM({name})" for name in METRICS)
    if days is not None:
        where, params = "day = ANY(%(days)s::date[])", {"tenant": tenant_id, "days": days}
    else:
        where, params = "day >= %(low)s AND day < %(high)s", {"tenant": tenant_id, "low": low, "high": high}
    cursor.execute(f"DELETE FROM {T['total']} WHERE tenant_id = %(tenant)s AND {where}", params)
    cursor.execute(
        f"""INSERT INTO {T["total"]} (tenant_id, day, program_id, channel, kind, currency, {columns})
        SELECT tenant_id, day, program_id, channel, kind, currency, {sums} FROM {T["rollup"]}
        WHERE tenant_id = %(tenant)s AND {where}
        GROUP BY tenant_id, day, program_id, channel, kind, currency""",
        params,
    )


def _monthly_refresh(cursor, tenant_id: int, *, keys: list[Key] | None = None) -> None:
    """Re-derive the ``MonthlyReferrals`` rows of the participant-months of ``keys`` (every month of the
    tenant when None) from the ``DailyRollup`` rows with referrals: delete, then insert their sums per channel
    and over all channels (channel ``''``)."""
    if keys is None:
        where, params, cte = "TRUE", {"tenant": tenant_id}, ""
    else:
        months = sorted({(participant, day.replace(day=1)) for participant, day in keys})
        params = {
            "tenant": tenant_id,
            "participants": [participant for participant, _ in months],
            "months": [month for _, month in months],
        }
        cte = (
            "WITH m AS (SELECT DISTINCT * FROM unnest(%(participants)s::bigint[], %(months)s::date[]) "
            "AS m(participant_id, month)) "
        )
        where = "(participant_id, month) IN (SELECT * FROM m)"
    cursor.execute(cte + f"DELETE FROM {T['monthly']} WHERE tenant_id = %(tenant)s AND {where}", params)
    if keys is None:
        daily_where = "TRUE"
    else:
        # Through the (tenant, participant, day) index: each participant-month's days.
        daily_where = (
            "participant_id IN (SELECT participant_id FROM m) AND day >= (SELECT MIN(month) FROM m) "
            "AND day < (SELECT MAX(month) FROM m) + interval '1 month' "
            "AND (participant_id, date_trunc('month', day)::date) IN (SELECT * FROM m)"
        )
    cursor.execute(
        cte
        + f"""INSERT INTO {T["monthly"]} (tenant_id, month, program_id, participant_id, channel, kind, currency,
                                          referrals)
        SELECT tenant_id, date_trunc('month', day)::date, program_id, participant_id, COALESCE(channel, ''), kind,
               currency, SUM(referrals)
        FROM {T["rollup"]}
        WHERE tenant_id = %(tenant)s AND referrals > 0 AND {daily_where}
        GROUP BY tenant_id, date_trunc('month', day)::date, program_id, participant_id, kind, currency,
                 GROUPING SETS ((channel), ())""",
        params,
    )


def rollups_rebuild_monthly(*, tenant_id: int) -> None:
    """Re-derive every ``MonthlyReferrals`` row of a tenant from its ``DailyRollup`` rows (the last step of
    ``rollups_rebuild``; also for a database whose daily rows predate the monthly table)."""
    with transaction.atomic(), connection.cursor() as cursor:
        _lock(tenant_id)
        _monthly_refresh(cursor, tenant_id)


def _lock(tenant_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [LOCK_NAMESPACE, tenant_id])


def try_lock(tenant_id: int) -> bool:
    """Take the tenant's rollup lock for this transaction if nobody holds it; never waits."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [LOCK_NAMESPACE, tenant_id])
        return cursor.fetchone()[0]


def _bounds(days: Iterable[date]) -> tuple[datetime, datetime]:
    days = list(days)
    low = datetime.combine(min(days), time.min, tzinfo=UTC)
    high = datetime.combine(max(days) + timedelta(days=1), time.min, tzinfo=UTC)
    return low, high


@transaction.atomic
def rollups_refresh_keys(*, tenant_id: int, keys: Iterable[Key]) -> int:
    """Recompute the buckets ``keys`` (participant, day) of one tenant from raw rows; returns the
    number of rollup rows written. Idempotent."""
    keys = sorted(set(keys))
    if not keys:
        return 0
    _lock(tenant_id)
    return _refresh_locked(tenant_id, keys)


def _refresh_locked(tenant_id: int, keys: list[Key]) -> int:
    low, high = _bounds(day for _, day in keys)
    params = {
        "tenant": tenant_id,
        "participants": [participant for participant, _ in keys],
        "days": [day for _, day in keys],
        "distinct_participants": sorted({participant for participant, _ in keys}),
        "low": low,
        "high": high,
    }
    in_keys = "(f.participant_id, f.day) IN (SELECT * FROM k)"
    # A filter on an array, not a semi-join with ``k``: on tables whose statistics are young (a billing run on a
    # new workspace) the planner took each part for one row and joined it to ``k`` by nested loop, row by key.
    participant_in = "= ANY(%(distinct_participants)s::bigint[])"
    facts = " UNION ALL ".join(
        [
            _clicks_sql(f"c.participant_id {participant_in} AND c.occurred_at >= %(low)s AND c.occurred_at < %(high)s"),
            _referrals_sql(f"r.referrer_id {participant_in} AND s.at >= %(low)s AND s.at < %(high)s"),
            _revenue_sql(
                f"a.participant_id {participant_in} AND e.occurred_at >= %(low)s AND e.occurred_at < %(high)s"
            ),
            _rewards_sql(f"w.participant_id {participant_in} AND {{at}} >= %(low)s AND {{at}} < %(high)s"),
        ]
    )
    facts = f"SELECT * FROM ({facts}) f WHERE {in_keys}"
    keys_cte = (
        "WITH k AS (SELECT DISTINCT * FROM unnest(%(participants)s::bigint[], %(days)s::date[]) "
        "AS k(participant_id, day)) "
    )
    with connection.cursor() as cursor:
        cursor.execute(
            keys_cte
            + f"DELETE FROM {T['rollup']} WHERE tenant_id = %(tenant)s AND (participant_id, day) IN (SELECT * FROM k)",
            params,
        )
        execute_prepared(cursor, keys_cte + _insert_sql(facts), params)
        written = cursor.rowcount
        _totals_refresh(cursor, tenant_id, days=sorted({day for _, day in keys}))
        _monthly_refresh(cursor, tenant_id, keys=keys)
        return written


# --- sources: what a referral, an event or a reward contributes to ----------------------------------
def _source_keys_sql(source: str) -> str:
    """Rows (source_id, participant_id, day) for the sources in %(ids)s."""
    if source == "referral":
        stage_rows = ", ".join(f"({column})" for _, column in _STAGES)
        return f"""
        SELECT r.id, r.referrer_id, {_day("s.at")} FROM {T["referral"]} r
        CROSS JOIN LATERAL (VALUES {stage_rows}) AS s(at)
        WHERE r.tenant_id = %(tenant)s AND r.id = ANY(%(ids)s) AND s.at IS NOT NULL
        """
    if source == "event":
        return f"""
        SELECT e.id, a.participant_id, {_day("e.occurred_at")} FROM {T["event"]} e
        JOIN {T["attribution"]} a ON a.conversion_event_id = e.id
        WHERE e.tenant_id = %(tenant)s AND e.id = ANY(%(ids)s)
        """
    return f"""
    SELECT w.id, w.participant_id, {_day("w.converted_at")} FROM {T["reward"]} w
    WHERE w.tenant_id = %(tenant)s AND w.id = ANY(%(ids)s)
    UNION
    SELECT w.id, w.participant_id, {_day("w.paid_at")} FROM {T["reward"]} w
    WHERE w.tenant_id = %(tenant)s AND w.id = ANY(%(ids)s) AND w.paid_at IS NOT NULL
    """


def _current_keys(tenant_id: int, source: str, ids: list[int]) -> dict[int, set[Key]]:
    found: dict[int, set[Key]] = {source_id: set() for source_id in ids}
    with connection.cursor() as cursor:
        cursor.execute(_source_keys_sql(source), {"tenant": tenant_id, "ids": ids})
        for source_id, participant_id, day in cursor.fetchall():
            found[source_id].add((participant_id, day))
    return found


@transaction.atomic
def rollups_refresh_sources(
    *, tenant_id: int, referral_ids: Iterable[int] = (), event_ids: Iterable[int] = (), reward_ids: Iterable[int] = ()
) -> int:
    """Recompute every bucket the given referrals (with their conversion events and rewards), conversion
    events and rewards touch now or touched at their last refresh (their footprints), then record their
    new footprints. Idempotent."""
    _lock(tenant_id)
    return refresh_sources_locked(
        tenant_id=tenant_id, referral_ids=referral_ids, event_ids=event_ids, reward_ids=reward_ids
    )


def refresh_sources_locked(
    *, tenant_id: int, referral_ids: Iterable[int] = (), event_ids: Iterable[int] = (), reward_ids: Iterable[int] = ()
) -> int:
    """``rollups_refresh_sources`` once its transaction holds the tenant's rollup lock."""
    referral_ids = sorted(set(referral_ids))
    event_ids, reward_ids = set(event_ids), set(reward_ids)
    if referral_ids:
        # A referral's change moves its events' and rewards' buckets too (its link, referrer, review status).
        event_ids |= set(
            ConversionEvent.objects.for_tenant(tenant_id)
            .filter(referral_id__in=referral_ids)
            .values_list("pk", flat=True)
        )
        reward_ids |= set(
            Reward.objects.for_tenant(tenant_id).filter(referral_id__in=referral_ids).values_list("pk", flat=True)
        )
    keys: set[Key] = set()
    for source, ids in (("referral", referral_ids), ("event", event_ids), ("reward", reward_ids)):
        ids = sorted(set(ids))
        if not ids:
            continue
        current = _current_keys(tenant_id, source, ids)
        previous = RollupFootprint.objects.for_tenant(tenant_id).filter(source=source, source_id__in=ids)
        for footprint in previous:
            keys.update((participant, date.fromisoformat(day)) for participant, day in footprint.keys)
        for found in current.values():
            keys.update(found)
        RollupFootprint.objects.for_tenant(tenant_id).filter(source=source, source_id__in=ids).delete()
        rows_insert(
            [
                RollupFootprint(
                    tenant_id=tenant_id,
                    source=source,
                    source_id=source_id,
                    keys=[[participant, day.isoformat()] for participant, day in sorted(found)],
                )
                for source_id, found in current.items()
                if found
            ]
        )
    return _refresh_locked(tenant_id, sorted(keys)) if keys else 0


def rollups_refresh_clicks(*, click_ids: list[int]) -> int:
    """Recompute the buckets of a flushed batch of clicks (of any tenants)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT tenant_id, participant_id, {_day('occurred_at')} FROM {T['click']} WHERE id = ANY(%s)",
            [list(click_ids)],
        )
        rows = cursor.fetchall()
    by_tenant: dict[int, set[Key]] = {}
    for tenant_id, participant_id, day in rows:
        by_tenant.setdefault(tenant_id, set()).add((participant_id, day))
    return sum(rollups_refresh_keys(tenant_id=tenant_id, keys=keys) for tenant_id, keys in sorted(by_tenant.items()))


# --- rebuild ---------------------------------------------------------------------------------------
def _first_day(tenant_id: int) -> date | None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT LEAST(
                (SELECT MIN(occurred_at) FROM {T["click"]} WHERE tenant_id = %(t)s),
                (SELECT MIN(LEAST(created_at, signed_up_at, qualified_at, converted_at, rejected_at, churned_at))
                   FROM {T["referral"]} WHERE tenant_id = %(t)s),
                (SELECT MIN(occurred_at) FROM {T["event"]} WHERE tenant_id = %(t)s),
                (SELECT MIN(converted_at) FROM {T["reward"]} WHERE tenant_id = %(t)s))""",
            {"t": tenant_id},
        )
        first = cursor.fetchone()[0]
    return first.astimezone(UTC).date() if first else None


def _last_day(tenant_id: int) -> date:
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT GREATEST(
                (SELECT MAX(occurred_at) FROM {T["click"]} WHERE tenant_id = %(t)s),
                (SELECT MAX(GREATEST(created_at, signed_up_at, qualified_at, converted_at, rejected_at, churned_at))
                   FROM {T["referral"]} WHERE tenant_id = %(t)s),
                (SELECT MAX(occurred_at) FROM {T["event"]} WHERE tenant_id = %(t)s),
                (SELECT MAX(GREATEST(converted_at, paid_at)) FROM {T["reward"]} WHERE tenant_id = %(t)s))""",
            {"t": tenant_id},
        )
        last = cursor.fetchone()[0]
    return last.astimezone(UTC).date()


def rollup_chunks(first: date, last: date, days: int = 31) -> list[tuple[date, date]]:
    chunks = []
    start = first
    while start <= last:
        end = min(start + timedelta(days=days), last + timedelta(days=1))
        chunks.append((start, end))
        start = end
    return chunks


def rollups_rebuild(*, tenant_id: int, progress: Callable[[int, int], None] | None = None) -> int:
    """Recompute every rollup row of a tenant from raw rows, a month per transaction, and record the
    footprint of every referral, event and reward. Returns the rollup rows written."""
    with transaction.atomic():
        _lock(tenant_id)
        DailyRollup.objects.for_tenant(tenant_id).delete()
        DailyTotal.objects.for_tenant(tenant_id).delete()
        MonthlyReferrals.objects.for_tenant(tenant_id).delete()
        RollupFootprint.objects.for_tenant(tenant_id).delete()
    first = _first_day(tenant_id)
    if first is None:
        if progress:
            progress(1, 1)
        return 0
    chunks = rollup_chunks(first, _last_day(tenant_id))
    total = len(chunks) + 1
    written = 0
    for done, (start, end) in enumerate(chunks, 1):
        low, high = _bounds([start, end - timedelta(days=1)])
        params = {"tenant": tenant_id, "low": low, "high": high}
        facts = " UNION ALL ".join(
            [
                _clicks_sql("c.occurred_at >= %(low)s AND c.occurred_at < %(high)s"),
                _referrals_sql("s.at >= %(low)s AND s.at < %(high)s"),
                _revenue_sql("e.occurred_at >= %(low)s AND e.occurred_at < %(high)s"),
                _rewards_sql("{at} >= %(low)s AND {at} < %(high)s"),
            ]
        )
        with transaction.atomic(), connection.cursor() as cursor:
            _lock(tenant_id)
            cursor.execute(
                f"DELETE FROM {T['rollup']} WHERE tenant_id = %(tenant)s AND day >= %(start)s AND day < %(end)s",
                {**params, "start": start, "end": end},
            )
            cursor.execute(_insert_sql(facts), params)
            written += cursor.rowcount
            _totals_refresh(cursor, tenant_id, low=start, high=end)
        if progress:
            progress(done, total)
    rollups_rebuild_monthly(tenant_id=tenant_id)
    _footprints_rebuild(tenant_id)
    if progress:
        progress(total, total)
    return written


def _footprints_rebuild(tenant_id: int) -> None:
    footprint = RollupFootprint._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        _lock(tenant_id)
        cursor.execute(f"DELETE FROM {footprint} WHERE tenant_id = %s", [tenant_id])
        for source in ("referral", "event", "reward"):
            keys_sql = _source_keys_sql(source).replace("= ANY(%(ids)s)", "IS NOT NULL")
            cursor.execute(
                f"""INSERT INTO {footprint} (tenant_id, source, source_id, keys)
                SELECT %(tenant)s, %(source)s, k.id,
                       jsonb_agg(jsonb_build_array(k.participant_id, to_char(k.day, 'YYYY-MM-DD'))
                                 ORDER BY k.participant_id, k.day)
                FROM (SELECT DISTINCT * FROM ({keys_sql}) raw(id, participant_id, day)) k
                GROUP BY k.id""",
                {"tenant": tenant_id, "source": source},
            )


def rollups_refresh_recent(*, days: int = 2, today: date | None = None) -> int:
    """Recompute the last ``days`` days of every tenant that has rollups or clicks in them."""
    today = today or datetime.now(UTC).date()
    first = today - timedelta(days=days - 1)
    low, high = _bounds([first, today])
    written = 0
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT DISTINCT tenant_id, participant_id, {_day("occurred_at")} FROM {T["click"]}
                WHERE occurred_at >= %(low)s AND occurred_at < %(high)s
                UNION SELECT DISTINCT tenant_id, participant_id, day FROM {T["rollup"]}
                WHERE day >= %(first)s AND day <= %(today)s""",
            {"low": low, "high": high, "first": first, "today": today},
        )
        rows = cursor.fetchall()
    by_tenant: dict[int, set[Key]] = {}
    for tenant_id, participant_id, day in rows:
        by_tenant.setdefault(tenant_id, set()).add((participant_id, day))
    for tenant_id, keys in sorted(by_tenant.items()):
        written += rollups_refresh_keys(tenant_id=tenant_id, keys=keys)
    return written
