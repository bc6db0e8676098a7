"""Reads of the analytics pages, tenant first. They read the rollups (DailyTotal for tenant-wide figures,
DailyRollup for per-participant ones), never raw clicks; a few small raw tables are read directly
(rewards paid for time-to-reward percentiles, the "waiting for you" counts, other-channel customers)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import Aggregate, Count, DurationField, ExpressionWrapper, F, Q, Sum, Value
from django.db.models.functions import Extract, Greatest, TruncMonth, TruncWeek
from django.utils import timezone

from partners.models import ConflictStatus, DealConflict
from programs.models import Participant, Program, ProgramKind, ProgramVersion
from referrals.models import Referral, ReviewStatus
from rewards.models import Payout, PayoutStatus, Reward, RewardStatus

from . import metrics as m
from .models import DailyRollup, DailyTotal, EconomicsSettings, OtherChannelCustomer, ParticipantKind
from .rollups import METRICS

PERIODS = {"7d": 7, "30d": 30, "90d": 90, "365d": 365}
COUNT_METRICS = ["clicks", "referrals", "signups", "qualified", "customers", "rejected", "churned"]


@dataclass(frozen=True)
class Filters:
    start: date
    end: date  # inclusive
    program_id: int | None = None
    kind: str = ""  # customer / partner / employee
    channel: str = ""
    participant_id: int | None = None
    currency: str = "USD"
    period: str = "30d"

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def previous(self) -> Filters:
        """The period of the same length just before this one."""
        return replace(self, start=self.start - timedelta(days=self.days), end=self.start - timedelta(days=1))

    def query(self) -> str:
        from urllib.parse import urlencode

        values = {"period": self.period, "start": self.start.isoformat(), "end": self.end.isoformat()}
        values.update(
            {
                key: value
                for key, value in (
                    ("program", self.program_id),
                    ("kind", self.kind),
                    ("channel", self.channel),
                    ("participant", self.participant_id),
                )
                if value
            }
        )
        return urlencode(values)


def _moment(day: date) -> datetime:
    """The start of a UTC day (the rollups' days are UTC days)."""
    return datetime.combine(day, time.min, tzinfo=UTC)


def _parse_date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def filters_from_query(tenant, query, *, prefix: str = "") -> Filters:
    """Filters from a page's query string (unknown or foreign values are ignored: a program id of another
    tenant is dropped, so it can never widen what is shown)."""
    today = timezone.now().date()
    period = query.get(f"{prefix}period") or "30d"
    start, end = _parse_date(query.get(f"{prefix}start")), _parse_date(query.get(f"{prefix}end"))
    if period in PERIODS or not (start and end and start <= end):
        period = period if period in PERIODS else "30d"
        end = today
        start = today - timedelta(days=PERIODS[period] - 1)
    else:
        period = "custom"
    program = None
    program_id = query.get(f"{prefix}program")
    if program_id and str(program_id).isdigit():
        program = Program.objects.for_tenant(tenant).filter(pk=int(program_id)).first()
    participant_id = query.get(f"{prefix}participant")
    participant = None
    if participant_id and str(participant_id).isdigit():
        participant = Participant.objects.for_tenant(tenant).filter(pk=int(participant_id)).first()
    kind = query.get(f"{prefix}kind") or ""
    channel = query.get(f"{prefix}channel") or ""
    return Filters(
        start=start,
        end=end,
        program_id=program.pk if program else None,
        kind=kind if kind in ParticipantKind.values else "",
        channel=channel if channel in _channels() else "",
        participant_id=participant.pk if participant else None,
        currency=program.currency if program else tenant.default_currency,
        period=period,
    )


def _channels() -> list[str]:
    from referrals.models import Channel

    return list(Channel.values)


def _scope(queryset, tenant, filters: Filters, *, dated: bool = True):
    queryset = queryset.filter(tenant_id=tenant.pk, currency=filters.currency)
    if dated:
        queryset = queryset.filter(day__gte=filters.start, day__lte=filters.end)
    if filters.program_id:
        queryset = queryset.filter(program_id=filters.program_id)
    if filters.kind:
        queryset = queryset.filter(kind=filters.kind)
    if filters.channel:
        queryset = queryset.filter(channel=filters.channel)
    if filters.participant_id:
        queryset = queryset.filter(participant_id=filters.participant_id)
    return queryset


def _source(tenant, filters: Filters, *, dated: bool = True):
    """DailyTotal unless a participant is chosen (per-participant figures live in DailyRollup only)."""
    model = DailyRollup if filters.participant_id else DailyTotal
    return _scope(model.objects.all(), tenant, filters, dated=dated)


def _sums(queryset) -> dict[str, int]:
    totals = queryset.aggregate(**{name: Sum(name) for name in METRICS})
    return {name: int(value or 0) for name, value in totals.items()}


def totals(tenant, filters: Filters) -> dict[str, int]:
    return _sums(_source(tenant, filters))


def derived(
    sums: dict[str, int], settings: EconomicsSettings | None = None, days: int = 0
) -> dict[str, float | int | None]:
    """The figures computed from a period's sums (every ratio None when undefined). Program cost = rewards
    earned + the yearly running cost pro rata over ``days`` (as the economics page)."""
    running = (settings.program_yearly_cost_minor or 0) * days / 365 if settings else 0
    cost = sums["rewards_earned_minor"] + running
    customers = sums["customers"]
    average_deal = m.ratio(sums["deal_minor"], customers)
    return {
        **sums,
        "conversion_rate": m.percent(customers, sums["referrals"]),
        "click_to_signup": m.percent(sums["signups"], sums["clicks"]),
        "average_deal_minor": average_deal,
        "sales_cycle_days": m.ratio(sums["sales_cycle_seconds"] / 86400, customers),
        "roi_percent": m.roi_percent(sums["revenue_minor"], cost),
        "cost_per_customer_minor": m.ratio(cost, customers),
        "revenue_per_customer_minor": m.ratio(sums["revenue_minor"], customers),
        "time_to_reward_mean_days": m.ratio(sums["reward_delay_seconds"] / 86400, sums["rewards_paid_count"]),
        "earnings_per_click_minor": m.ratio(sums["rewards_earned_minor"], sums["clicks"]),
    }


@dataclass(frozen=True)
class Kpi:
    key: str
    label: str
    value: float | int | None
    previous: float | int | None
    unit: str  # count, money, percent
    currency: str = ""

    @property
    def change(self) -> float | None:
        return m.change_percent(self.value, self.previous)


KPI_SPECS = [
    ("clicks", "Clicks", "count"),
    ("signups", "Sign-ups", "count"),
    ("qualified", "Qualified", "count"),
    ("customers", "Customers", "count"),
    ("revenue_minor", "Referred revenue", "money"),
    ("rewards_owed_minor", "Rewards owed", "money"),
    ("rewards_paid_minor", "Rewards paid", "money"),
    ("roi_percent", "Program ROI", "percent"),
]


def totals_with_previous(tenant, filters: Filters) -> tuple[dict[str, int], dict[str, int]]:
    """The period's sums and those of the period of the same length before it, in one query."""
    previous = filters.previous()
    rows = _source(tenant, replace(filters, start=previous.start))
    current, before = Q(day__gte=filters.start), Q(day__lt=filters.start)
    found = rows.aggregate(
        **{f"now_{name}": Sum(name, filter=current) for name in METRICS},
        **{f"before_{name}": Sum(name, filter=before) for name in METRICS},
    )
    return (
        {name: int(found[f"now_{name}"] or 0) for name in METRICS},
        {name: int(found[f"before_{name}"] or 0) for name in METRICS},
    )


def kpis(tenant, filters: Filters, *, sums=None) -> list[Kpi]:
    """The home's tiles: this period against the previous one of the same length (``sums``: the result of
    ``totals_with_previous`` when the caller has it already)."""
    settings = economics_settings(tenant)
    now, before = (derived(part, settings, filters.days) for part in (sums or totals_with_previous(tenant, filters)))
    return [
        Kpi(key, label, now[key], before[key], unit, filters.currency if unit == "money" else "")
        for key, label, unit in KPI_SPECS
    ]


def series(tenant, filters: Filters, *, grain: str = "day", fields=("clicks", "signups", "customers", "revenue_minor")):
    """[{period, field: value …}] for every day / week / month of the range (missing ones as zero)."""
    queryset = _source(tenant, filters)
    if grain == "week":
        queryset = queryset.annotate(period=TruncWeek("day"))
    elif grain == "month":
        queryset = queryset.annotate(period=TruncMonth("day"))
    else:
        queryset = queryset.annotate(period=F("day"))
    rows = queryset.values("period").annotate(**{name: Sum(name) for name in fields}).order_by("period")
    found = {_as_date(row["period"]): row for row in rows}
    result = []
    for period in _periods(filters.start, filters.end, grain):
        row = found.get(period, {})
        result.append({"period": period, **{name: int(row.get(name) or 0) for name in fields}})
    return result


def _as_date(value) -> date:
    return value.date() if hasattr(value, "date") and callable(value.date) else value


def _periods(start: date, end: date, grain: str) -> list[date]:
    if grain == "week":
        current = start - timedelta(days=start.weekday())
        step = lambda d: d + timedelta(days=7)  # noqa: E731
    elif grain == "month":
        current = start.replace(day=1)
        step = lambda d: (d.replace(day=28) + timedelta(days=4)).replace(day=1)  # noqa: E731
    else:
        current = start
        step = lambda d: d + timedelta(days=1)  # noqa: E731
    periods = []
    while current <= end:
        periods.append(current)
        current = step(current)
    return periods


FUNNEL_STEPS = [("clicks", "Clicked"), ("signups", "Signed up"), ("qualified", "Qualified"), ("customers", "Converted")]


def funnel(sums: dict[str, int]) -> list[dict]:
    """Clicked → signed up → qualified → converted, with the drop-off at each step."""
    steps = []
    previous = None
    for key, label in FUNNEL_STEPS:
        count = sums[key]
        steps.append(
            {
                "step": label,
                "count": count,
                "of_first": m.percent(count, sums["clicks"]),
                "drop_off": None if previous is None else m.drop_off_percent(previous, count),
            }
        )
        previous = count
    return steps


def funnel_by_channel(tenant, filters: Filters) -> dict[str, list[dict]]:
    rows = _source(tenant, filters).values("channel").annotate(**{name: Sum(name) for name in METRICS})
    by_channel = {row["channel"]: {name: int(row[name] or 0) for name in METRICS} for row in rows}
    return {channel: funnel(by_channel.get(channel, dict.fromkeys(METRICS, 0))) for channel in _channels()}


def leaderboard(tenant, filters: Filters, *, kind: str = "", limit: int = 10) -> list[dict]:
    """Participants ranked by customers won over the period (ties: the older participant first)."""
    return leaderboards(tenant, filters, [kind or filters.kind], limit=limit)[kind or filters.kind]


def leaderboards(tenant, filters: Filters, kinds: list[str], *, limit: int = 10) -> dict[str, list[dict]]:
    """{kind: the top ``limit`` participants of that kind ("" = every kind) by customers won}, read from
    the per-participant rollups: one query for the kinds present, one or two a board, then two for all the
    boards together.

    Ranking every participant of a period means summing all its per-participant rows (a row per
    participant, day and channel: millions at 10 M clicks). Only rows with customers count towards the
    order, so the candidates come from those rows alone (partial index ``daily_rollup_customers_idx``):
    when a board has at least ``limit`` participants with customers, its top ``limit`` are exactly the
    top of the full ranking (everyone else has 0 customers and ranks after them). A board with fewer
    (a quiet period, a small workspace) is ranked over all its rows, which are then few. The chosen
    participants' figures are then summed by the (tenant, participant, day) index, and named in one query.
    """
    base = _scope(DailyRollup.objects.all(), tenant, replace(filters, kind=""))
    # The kinds with any activity in the period, from the small daily totals: a board of a kind without
    # any (often the employees') is empty without reading a per-participant row.
    present = set(_source(tenant, replace(filters, kind="")).values_list("kind", flat=True).distinct())
    chosen: dict[str, list[int]] = {}
    for kind in kinds:
        if (kind and kind not in present) or not present:
            chosen[kind] = []
            continue
        scoped = base.filter(kind=kind) if kind else base
        ids = list(
            scoped.filter(customers__gt=0)
            .values("participant_id")
            .annotate(won=Sum("customers"))
            .order_by("-won", "participant_id")
            .values_list("participant_id", flat=True)[:limit]
        )
        if len(ids) < limit:
            # Every participant with customers is in; the rest of the board are those without, by age.
            ids += list(
                scoped.exclude(participant_id__in=ids)
                .order_by("participant_id")
                .values_list("participant_id", flat=True)
                .distinct()[: limit - len(ids)]
            )
        chosen[kind] = ids
    wanted = {pk for ids in chosen.values() for pk in ids}
    if not wanted:
        return {kind: [] for kind in kinds}
    sums = {
        row["participant_id"]: row
        for row in base.filter(participant_id__in=wanted)
        .values("participant_id")
        .annotate(**{name: Sum(name) for name in METRICS})
        .order_by()
    }
    names = dict(Participant.objects.filter(tenant_id=tenant.pk, pk__in=wanted).values_list("pk", "name"))
    boards = {}
    for kind, ids in chosen.items():
        rows = []
        for pk in ids:
            values = {name: int(sums[pk][name] or 0) for name in METRICS}
            rows.append(
                {
                    "participant_id": pk,
                    "name": names.get(pk) or f"#{pk}",
                    **values,
                    "earnings_per_click_minor": m.ratio(values["rewards_earned_minor"], values["clicks"]),
                }
            )
        boards[kind] = sorted(rows, key=lambda row: (-row["customers"], row["participant_id"]))
    return boards


def participant_figures(tenant, participant_ids, *, start: date | None = None, end: date | None = None):
    """{participant id: {clicks, signups, customers, revenue_minor, earnings_minor, earnings_per_click_minor}}
    over all time (or the range)."""
    queryset = DailyRollup.objects.filter(tenant_id=tenant.pk, participant_id__in=list(participant_ids))
    if start:
        queryset = queryset.filter(day__gte=start)
    if end:
        queryset = queryset.filter(day__lte=end)
    rows = queryset.values("participant_id").annotate(
        clicks=Sum("clicks"),
        signups=Sum("signups"),
        customers=Sum("customers"),
        revenue_minor=Sum("revenue_minor"),
        earnings_minor=Sum("rewards_earned_minor"),
    )
    figures = {}
    for row in rows:
        values = {
            key: int(row[key] or 0) for key in ("clicks", "signups", "customers", "revenue_minor", "earnings_minor")
        }
        values["earnings_per_click_minor"] = m.ratio(values["earnings_minor"], values["clicks"])
        figures[row["participant_id"]] = values
    return figures


WAITING = [
    ("rewards", "Rewards to review", "admin:rewards_reward_changelist", "status__exact=pending"),
    ("fraud", "Fraud cases", "admin:referrals_fraudreview_changelist", ""),
    ("conflicts", "Deal conflicts", "admin:partners_dealconflict_changelist", ""),
    ("payouts", "Failed payouts", "admin:rewards_payout_changelist", ""),
]


def waiting_for_you(tenant, *, now=None) -> list[dict]:
    """What waits for the marketer, counted in one query: rewards past their hold still pending review,
    referrals flagged by fraud screening, open deal conflicts, failed or abandoned payouts."""
    from django.db import connection

    now = now or timezone.now()
    sql = f"""SELECT
        (SELECT COUNT(*) FROM {Reward._meta.db_table} WHERE tenant_id = %(t)s AND status = %(pending)s
            AND is_current AND hold_until <= %(now)s),
        (SELECT COUNT(*) FROM {Referral._meta.db_table} WHERE tenant_id = %(t)s AND review_status = %(flagged)s),
        (SELECT COUNT(*) FROM {DealConflict._meta.db_table} WHERE tenant_id = %(t)s AND status = %(open)s),
        (SELECT COUNT(*) FROM {Payout._meta.db_table} WHERE tenant_id = %(t)s AND status IN (%(failed)s, %(abandoned)s))
    """  # noqa: S608 - table names from model metadata
    params = {
        "t": tenant.pk,
        "now": now,
        "pending": RewardStatus.PENDING,
        "flagged": ReviewStatus.FLAGGED,
        "open": ConflictStatus.OPEN,
        "failed": PayoutStatus.FAILED,
        "abandoned": PayoutStatus.ABANDONED,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        counts = cursor.fetchone()
    return [
        {"key": key, "label": label, "count": int(count), "url": url, "query": query}
        for (key, label, url, query), count in zip(WAITING, counts, strict=True)
    ]


# --- program health -----------------------------------------------------------------------------------
# A month of ``MonthlyReferrals`` rows costs about as much to read as this many days of ``DailyRollup`` rows
# with referrals (about 16 k all-channel rows against 2.5 k a day at the benchmark's full scale).
MONTH_COST_DAYS = 7


def _month_end(month: date) -> date:
    """The last day of the month starting on ``month``."""
    return (month.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


def window_slices(low: date, high: date, *, today: date) -> list[tuple[str, date, date, int]]:
    """The inclusive window [low, high] as signed slices ``(table, first, last, sign)`` whose sums add up to
    the window's: ``"month"`` slices are ``MonthlyReferrals`` months first..last (first days of months),
    ``"day"`` slices ``DailyRollup`` days first..last. Whole months come from the monthly table; at each edge
    the partial month is either its days inside the window (+1) or the whole month (+1) minus its days
    outside (-1), whichever reads fewer rows (days after ``today`` hold nothing and cost nothing)."""

    def days(first: date, last: date) -> int:
        last = min(last, today)
        return max(0, (last - first).days + 1)

    def edge(month: date, inside: list[tuple[date, date]], outside: list[tuple[date, date]]):
        inside = [(a, b) for a, b in inside if a <= b]
        outside = [(a, b) for a, b in outside if a <= b]
        if not outside:
            return [("month", month, month, 1)]
        if sum(days(a, b) for a, b in outside) + MONTH_COST_DAYS < sum(days(a, b) for a, b in inside):
            return [("month", month, month, 1)] + [("day", a, b, -1) for a, b in outside]
        return [("day", a, b, 1) for a, b in inside]

    if low > high:
        return []
    first_month, last_month = low.replace(day=1), high.replace(day=1)
    if first_month == last_month:
        return edge(
            first_month,
            [(low, high)],
            [(first_month, low - timedelta(days=1)), (high + timedelta(days=1), _month_end(high))],
        )
    slices = edge(first_month, [(low, _month_end(low))], [(first_month, low - timedelta(days=1))])
    next_month = _month_end(low) + timedelta(days=1)
    if next_month < last_month:
        slices.append(("month", next_month, (last_month - timedelta(days=1)).replace(day=1), 1))
    slices += edge(last_month, [(last_month, high)], [(high + timedelta(days=1), _month_end(high))])
    # Adjacent whole-month slices of the same sign read as one range.
    merged: list[tuple[str, date, date, int]] = []
    for piece in slices:
        if merged and piece[0] == merged[-1][0] == "month" and piece[3] == merged[-1][3]:
            merged[-1] = ("month", merged[-1][1], piece[2], piece[3])
        else:
            merged.append(piece)
    return merged


def _referrer_counts(tenant, filters: Filters) -> dict:
    """Per participant, the net referrals of the period and of the 90 days to its end, from whole months of
    ``MonthlyReferrals`` plus or minus the edge days of ``DailyRollup`` (``window_slices``; the partial
    index ``daily_rollup_referrals_idx`` and the covering ``monthly_referrals_month_idx``): customer
    participants who referred in the period, participants of the chosen kind who referred in the 90 days to
    the period's end, the period's referrals, and the largest per-referrer counts (enough for the top
    10 %). A participant referred in a window when its net sum is positive (counts are never negative)."""
    from django.db import connection

    from .models import MonthlyReferrals

    recent = filters.end - timedelta(days=89)
    today = timezone.now().date()
    period = window_slices(filters.start, filters.end, today=today)
    active = window_slices(recent, filters.end, today=today)
    # (table, first, last) -> [weight in the period, weight in the 90 days]
    weights: dict[tuple[str, date, date], list[int]] = {}
    for index, slices in enumerate((period, active)):
        for table, first, last, sign in slices:
            weights.setdefault((table, first, last), [0, 0])[index] += sign
    filter_sql, filter_params = ["currency = %s"], [filters.currency]
    for column, value in (("program_id", filters.program_id), ("participant_id", filters.participant_id)):
        if value:
            filter_sql.append(f"{column} = %s")
            filter_params.append(value)
    selects, params = [], []
    for (table, first, last), (in_period, in_recent) in weights.items():
        if not (in_period or in_recent):
            continue
        if table == "month":
            # The chosen channel's rows, else the all-channels rows (channel '').
            source, dated = MonthlyReferrals._meta.db_table, "channel = %s AND month >= %s AND month <= %s"
            dated_params = [filters.channel or "", first, last]
        else:
            source, dated = DailyRollup._meta.db_table, "referrals > 0 AND day >= %s AND day <= %s"
            dated_params = [first, last]
            if filters.channel:
                dated, dated_params = f"{dated} AND channel = %s", [*dated_params, filters.channel]
        # A table name from model metadata and fixed fragments; every value is a parameter.
        select = "SELECT participant_id, kind, referrals * %s AS p, referrals * %s AS r FROM " + source  # noqa: S608
        selects.append(f"{select} WHERE tenant_id = %s AND {dated} AND {' AND '.join(filter_sql)}")
        params += [in_period, in_recent, tenant.pk, *dated_params, *filter_params]
    if not selects:
        selects, params = ["SELECT NULL::bigint, NULL::varchar, 0, 0 WHERE FALSE"], []
    kind_ok = "kind = %s" if filters.kind else "TRUE"
    kind_params = [filters.kind] if filters.kind else []
    sql = f"""
    WITH slices(participant_id, kind, p, r) AS ({" UNION ALL ".join(selects)}),
    per AS (
        SELECT participant_id,
               SUM(p) FILTER (WHERE {kind_ok}) AS n,
               SUM(p) FILTER (WHERE kind = %s) AS customer_n,
               SUM(r) FILTER (WHERE {kind_ok}) AS recent_n
        FROM slices
        GROUP BY participant_id
    )
    SELECT COUNT(*) FILTER (WHERE customer_n > 0),
           COUNT(*) FILTER (WHERE recent_n > 0),
           COUNT(*) FILTER (WHERE n > 0),
           COALESCE(SUM(n) FILTER (WHERE n > 0), 0),
           (SELECT ARRAY(SELECT n FROM per WHERE n > 0 ORDER BY n DESC
                         LIMIT (SELECT CEIL(COUNT(*) FILTER (WHERE n > 0) * 0.1)::int + 1 FROM per)))
    FROM per
    """  # noqa: S608 - table names from model metadata, fixed fragments; every value is a parameter
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *kind_params, ParticipantKind.CUSTOMER, *kind_params])
        referring, active_count, referrers, referrals, top = cursor.fetchone()
    return {
        "referring_customers": int(referring),
        "active_90d": int(active_count),
        "referrers": int(referrers),
        "referrals": int(referrals),
        "top_counts": [int(value) for value in top],
    }


def _customers_of(tenant, filters: Filters, settings: EconomicsSettings | None) -> int:
    if settings and settings.total_customers:
        return settings.total_customers
    programs = Program.objects.filter(tenant_id=tenant.pk, kind=ProgramKind.CUSTOMER)
    if filters.program_id:
        programs = programs.filter(pk=filters.program_id)
    return Participant.objects.filter(tenant_id=tenant.pk, program__in=programs).count()


def _rate(referring: int, customers: int) -> dict:
    rate = m.percent(referring, customers)
    low, high = m.REFERRAL_RATE_BAND
    verdict = None if rate is None else "below" if rate < low else "above" if rate > high else "within"
    return {
        "referring": referring,
        "customers": customers,
        "rate": rate,
        "band": m.REFERRAL_RATE_BAND,
        "verdict": verdict,
    }


def _activity(counts: dict) -> dict:
    top = max(1, round(counts["referrers"] * 0.10)) if counts["referrers"] else 0
    share = m.percent(sum(counts["top_counts"][:top]), counts["referrals"]) if counts["referrers"] else None
    return {"active_90d": counts["active_90d"], "referrers": counts["referrers"], "top10_share": share}


def referral_rate(tenant, filters: Filters, settings: EconomicsSettings | None = None) -> dict:
    """Referring customers / all customers x 100, against the 15-25 % band. Referring customers: customer
    participants with at least one referral in the period; all customers: the tenant's figure in the
    economics settings, else the participants of customer programs."""
    counts = _referrer_counts(tenant, filters)
    return _rate(counts["referring_customers"], _customers_of(tenant, filters, settings))


def referrer_activity(tenant, filters: Filters) -> dict:
    """Active referrers in the last 90 days (to the period's end) and the top 10 %'s share of referrals
    (the top max(1, round(10 % of referrers)), as ``metrics.top_share_percent``)."""
    return _activity(_referrer_counts(tenant, filters))


def referrer_health(tenant, filters: Filters, settings: EconomicsSettings | None = None) -> tuple[dict, dict]:
    """``referral_rate`` and ``referrer_activity`` from one pass over the rollups."""
    counts = _referrer_counts(tenant, filters)
    return _rate(counts["referring_customers"], _customers_of(tenant, filters, settings)), _activity(counts)


class _MedianAndP90(Aggregate):
    """PostgreSQL's percentile_cont (linear interpolation between the closest ranks) at 0.5 and 0.9, in one
    sort of the intervals."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression):
        from django.contrib.postgres.fields import ArrayField

        super().__init__(expression, output_field=ArrayField(DurationField()))


def time_to_reward(tenant, filters: Filters) -> dict:
    """Median and 90th percentile of conversion → paid, in days, of rewards paid in the period (UTC days, as
    the rollups), computed in PostgreSQL: one row back, whatever the number of rewards (the partial index
    ``reward_paid_time_idx`` finds the period's paid rewards)."""
    low, high = _moment(filters.start), _moment(filters.end + timedelta(days=1))
    rewards = Reward.objects.filter(
        tenant_id=tenant.pk,
        status=RewardStatus.PAID,
        is_current=True,
        paid_at__gte=low,
        paid_at__lt=high,
        currency=filters.currency,
    )
    if filters.program_id:
        rewards = rewards.filter(program_id=filters.program_id)
    if filters.participant_id:
        rewards = rewards.filter(participant_id=filters.participant_id)
    if filters.kind:
        kinds = [ProgramKind.PARTNER, ProgramKind.RESELLER] if filters.kind == "partner" else [filters.kind]
        rewards = rewards.filter(program__kind__in=kinds)
    delay = Greatest(
        ExpressionWrapper(F("paid_at") - F("converted_at"), output_field=DurationField()),
        Value(timedelta(0), output_field=DurationField()),
    )
    # COUNT(*) and the included columns: an index-only scan of reward_paid_time_idx.
    found = rewards.aggregate(count=Count("*"), percentiles=_MedianAndP90(delay))
    median, p90 = (
        (None, None) if not found["count"] else (value.total_seconds() / 86400 for value in found["percentiles"])
    )
    return {
        "count": found["count"],
        "median_days": median,
        "p90_days": p90,
        "target_days": m.TIME_TO_REWARD_TARGET_DAYS,
        "on_target": None if p90 is None else p90 <= m.TIME_TO_REWARD_TARGET_DAYS,
    }


def source_mix(tenant, filters: Filters) -> list[dict]:
    """Referrals, customers and revenue by participant kind (customer / partner / employee)."""
    rows = {
        row["kind"]: row
        for row in _source(tenant, replace(filters, kind=""))
        .values("kind")
        .annotate(referrals=Sum("referrals"), customers=Sum("customers"), revenue_minor=Sum("revenue_minor"))
    }
    total = sum(int(row["referrals"] or 0) for row in rows.values())
    return [
        {
            "kind": label,
            "referrals": int(rows.get(kind, {}).get("referrals") or 0),
            "share": m.percent(int(rows.get(kind, {}).get("referrals") or 0), total),
            "customers": int(rows.get(kind, {}).get("customers") or 0),
            "revenue_minor": int(rows.get(kind, {}).get("revenue_minor") or 0),
        }
        for kind, label in ParticipantKind.choices
    ]


# --- economics ---------------------------------------------------------------------------------------
def economics_settings(tenant) -> EconomicsSettings:
    found = EconomicsSettings.objects.for_tenant(tenant).first()
    return found or EconomicsSettings(tenant=tenant, currency=tenant.default_currency)


def economics(tenant, filters: Filters, settings: EconomicsSettings | None = None) -> dict:
    """ROI, payback, cost per acquired customer, LTV, CAC and LTV:CAC over the period.

    Referred ARR = average first deal x 12 / billing months is not knowable here, so ARR is the average
    first payment annualised as a yearly contract (B2B SaaS bills yearly); program cost = rewards earned +
    the program's yearly running cost pro rata; CAC uses the customers of every channel acquired in the
    year to the period's end.
    """
    settings = settings or economics_settings(tenant)
    sums = totals(tenant, filters)
    running_cost = settings.program_yearly_cost_minor * filters.days / 365
    cost = sums["rewards_earned_minor"] + running_cost
    customers = sums["customers"]
    average_arr = m.ratio(sums["deal_minor"], customers)
    cost_per_customer = m.ratio(cost, customers)
    year = replace(filters, start=filters.end - timedelta(days=364))
    referred_year = totals(tenant, year)["customers"]
    other_year = (
        OtherChannelCustomer.objects.for_tenant(tenant)
        .filter(converted_at__gte=_moment(year.start), converted_at__lt=_moment(year.end + timedelta(days=1)))
        .count()
    )
    customers_per_year = referred_year + other_year
    ltv = m.ltv_minor(average_arr, settings.average_lifetime_months)
    cac = m.cac_minor(settings.yearly_sales_marketing_spend_minor or None, customers_per_year)
    return {
        "revenue_minor": sums["revenue_minor"],
        "rewards_minor": sums["rewards_earned_minor"],
        "running_cost_minor": round(running_cost),
        "cost_minor": round(cost),
        "customers": customers,
        "roi_percent": m.roi_percent(sums["revenue_minor"], cost) if cost else None,
        "cost_per_customer_minor": cost_per_customer,
        "average_arr_minor": average_arr,
        "payback_months": m.payback_months(cost_per_customer, average_arr),
        "payback_target_months": m.PAYBACK_TARGET_MONTHS,
        "ltv_minor": ltv,
        "customers_per_year": customers_per_year,
        "cac_minor": cac,
        "ltv_to_cac": m.ratio(ltv, cac),
        "healthy_ltv_to_cac": m.HEALTHY_LTV_TO_CAC,
        "lifetime_months": settings.average_lifetime_months,
        "yearly_spend_minor": settings.yearly_sales_marketing_spend_minor,
    }


def channel_comparison(tenant, filters: Filters, settings: EconomicsSettings | None = None) -> list[dict]:
    """Referred customers against every other channel the tenant reported: conversion rate, sales cycle,
    deal size and LTV (ARR x the average lifetime)."""
    settings = settings or economics_settings(tenant)
    sums = totals(tenant, filters)
    referred_deal = m.ratio(sums["deal_minor"], sums["customers"])
    rows = [
        {
            "channel": "referral",
            "leads": sums["referrals"],
            "customers": sums["customers"],
            "conversion_rate": m.percent(sums["customers"], sums["referrals"]),
            "sales_cycle_days": m.ratio(sums["sales_cycle_seconds"] / 86400, sums["customers"]),
            "deal_minor": referred_deal,
            "ltv_minor": m.ltv_minor(referred_deal, settings.average_lifetime_months),
        }
    ]
    others = (
        OtherChannelCustomer.objects.filter(tenant_id=tenant.pk, currency=filters.currency)
        .filter(lead_at__gte=_moment(filters.start), lead_at__lt=_moment(filters.end + timedelta(days=1)))
        .values("channel")
        .annotate(
            leads=Count("pk"),
            won=Count("pk", filter=Q(converted_at__isnull=False)),
            cycle_seconds=Sum(Extract(F("converted_at") - F("lead_at"), "epoch")),
            deals=Sum("deal_minor", filter=Q(converted_at__isnull=False)),
            arr=Sum("arr_minor", filter=Q(converted_at__isnull=False)),
        )
        .order_by("channel")
    )
    for row in others:
        won = row["won"]
        average_arr = m.ratio(int(row["arr"] or 0), won)
        rows.append(
            {
                "channel": row["channel"],
                "leads": row["leads"],
                "customers": won,
                "conversion_rate": m.percent(won, row["leads"]),
                "sales_cycle_days": m.ratio(float(row["cycle_seconds"] or 0) / 86400, won),
                "deal_minor": m.ratio(int(row["deals"] or 0), won),
                "ltv_minor": m.ltv_minor(average_arr, settings.average_lifetime_months),
            }
        )
    return rows


# --- comparisons ----------------------------------------------------------------------------------
def rule_version_period(tenant, version_id) -> tuple[ProgramVersion, date, date] | None:
    """The days a rule version was the program's current one (to its successor's start, or today)."""
    version = ProgramVersion.objects.for_tenant(tenant).filter(pk=version_id).select_related("program").first()
    if version is None:
        return None
    successor = (
        ProgramVersion.objects.for_tenant(tenant)
        .filter(program_id=version.program_id, number__gt=version.number)
        .order_by("number")
        .first()
    )
    end = (successor.created_at.date() - timedelta(days=1)) if successor else timezone.now().date()
    start = version.created_at.date()
    return version, start, max(start, end)


COMPARED = ["clicks", "referrals", "signups", "qualified", "customers", "revenue_minor", "rewards_earned_minor"]
COMPARED_DERIVED = ["conversion_rate", "roi_percent", "cost_per_customer_minor", "average_deal_minor"]


def compare(tenant, left: Filters, right: Filters) -> list[dict]:
    """The same figures side by side for two filter sets (two programs, two periods, two rule versions),
    with the difference in percent; daily averages too, since the two may differ in length."""
    settings = economics_settings(tenant)
    a, b = derived(totals(tenant, left), settings, left.days), derived(totals(tenant, right), settings, right.days)
    rows = []
    for key in COMPARED + COMPARED_DERIVED:
        rows.append({"figure": key, "a": a[key], "b": b[key], "change": m.change_percent(b[key], a[key])})
    for key in ("clicks", "customers", "revenue_minor"):
        per_day_a, per_day_b = m.ratio(a[key], left.days), m.ratio(b[key], right.days)
        rows.append(
            {
                "figure": f"{key} per day",
                "a": per_day_a,
                "b": per_day_b,
                "change": m.change_percent(per_day_b, per_day_a),
            }
        )
    return rows


def programs_of(tenant):
    return Program.objects.for_tenant(tenant).order_by("name")


def rule_versions_of(tenant):
    return ProgramVersion.objects.for_tenant(tenant).select_related("program").order_by("program__name", "number")
