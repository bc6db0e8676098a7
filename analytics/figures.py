"""The analytics pages as data: each page is a list of figures (title, columns, rows, optional chart), so
the same figure renders as a table and a chart in the page and as a CSV download."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date

from referral_platform.money import currency_exponent

from . import metrics as m
from . import selectors as s


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    unit: str = "count"  # count, money, percent, days, months, ratio, text


@dataclass
class Figure:
    slug: str
    title: str
    columns: list[Column]
    rows: list[dict]
    chart: dict | None = None  # {type, labels, datasets: [{label, data}]}
    note: str = ""
    currency: str = ""


@dataclass
class Page:
    slug: str
    title: str
    build: Callable
    description: str = ""
    figures: list[Figure] = field(default_factory=list)


def _major(value, currency: str):
    """Minor units → major units for a chart or CSV (None stays None)."""
    if value is None:
        return None
    return value / (10 ** currency_exponent(currency))


def cell(value, column: Column, currency: str) -> str:
    """A figure's value as shown in the page and the CSV: "—" for undefined values."""
    if column.unit == "text":
        return str(value)
    if value is None:
        return m.DASH
    if column.unit == "money":
        return m.shown(float(_major(value, currency)), currency_exponent(currency))
    if column.unit in ("percent", "days", "months", "ratio"):
        return m.shown(float(value), 1)
    if isinstance(value, float):
        return m.shown(value, 1)
    return str(value)


def _series_chart(rows, fields, labels, currency) -> dict:
    return {
        "type": "line",
        "labels": [row["period"].isoformat() for row in rows],
        "datasets": [
            {
                "label": label,
                "data": [_major(row[key], currency) if key.endswith("_minor") else row[key] for row in rows],
                "axis": "y1" if key.endswith("_minor") else "y",
            }
            for key, label in zip(fields, labels, strict=True)
        ],
    }


# --- overview (the home) ----------------------------------------------------------------------------
def kpi_figure(tenant, filters, *, sums=None) -> Figure:
    tiles = s.kpis(tenant, filters, sums=sums)
    unit = {"count": "count", "money": "money", "percent": "percent"}
    rows = [
        {"figure": tile.label, "value": tile.value, "previous": tile.previous, "change": tile.change, "unit": tile.unit}
        for tile in tiles
    ]
    figure = Figure(
        "kpis",
        "Key figures against the previous period",
        [
            Column("figure", "Figure", "text"),
            Column("value", "This period"),
            Column("previous", "Previous period"),
            Column("change", "Change %", "percent"),
        ],
        rows,
        currency=filters.currency,
    )
    figure.tiles = [(tile, unit[tile.unit]) for tile in tiles]
    return figure


def _typed_rows(figure: Figure) -> Figure:
    """KPI rows mix units: the value columns take each row's own unit."""
    return figure


def series_figure(tenant, filters, grain="day") -> Figure:
    fields = ("clicks", "signups", "customers", "revenue_minor")
    rows = s.series(tenant, filters, grain=grain, fields=fields)
    titles = {"day": "Daily", "week": "Weekly", "month": "Monthly"}
    return Figure(
        f"series_{grain}",
        f"{titles[grain]} clicks, sign-ups, customers and referred revenue",
        [
            Column("period", "Period", "text"),
            Column("clicks", "Clicks"),
            Column("signups", "Sign-ups"),
            Column("customers", "Customers"),
            Column("revenue_minor", "Referred revenue", "money"),
        ],
        rows,
        chart=_series_chart(rows, fields, ["Clicks", "Sign-ups", "Customers", "Revenue"], filters.currency),
        currency=filters.currency,
    )


def funnel_figure(tenant, filters, *, sums=None) -> Figure:
    steps = s.funnel(s.totals(tenant, filters) if sums is None else sums)
    return Figure(
        "funnel",
        "Funnel: clicked → signed up → qualified → converted",
        [
            Column("step", "Step", "text"),
            Column("count", "Count"),
            Column("of_first", "% of clicks", "percent"),
            Column("drop_off", "Drop-off from previous step %", "percent"),
        ],
        steps,
        chart={
            "type": "bar",
            "labels": [step["step"] for step in steps],
            "datasets": [{"label": "Count", "data": [step["count"] for step in steps]}],
        },
    )


def leaderboard_figure(
    tenant, filters, *, kind="", slug="top_referrers", title="Top referrers", rows: list[dict] | None = None
) -> Figure:
    rows = s.leaderboard(tenant, filters, kind=kind) if rows is None else rows
    return Figure(
        slug,
        title,
        [
            Column("name", "Participant", "text"),
            Column("clicks", "Clicks"),
            Column("signups", "Sign-ups"),
            Column("customers", "Customers"),
            Column("revenue_minor", "Revenue", "money"),
            Column("rewards_earned_minor", "Earnings", "money"),
            Column("earnings_per_click_minor", "Earnings/click", "money"),
        ],
        rows,
        currency=filters.currency,
    )


def waiting_figure(tenant, filters) -> Figure:
    rows = s.waiting_for_you(tenant)
    return Figure("waiting", "Waiting for you", [Column("label", "What", "text"), Column("count", "Count")], rows)


def overview_figures(tenant, filters) -> dict[str, Callable[[], Figure]]:
    """The home's figures, each computed only when asked for (a CSV needs one)."""
    grain = "day" if filters.days <= 120 else "week"
    return {
        "kpis": lambda: kpi_figure(tenant, filters),
        f"series_{grain}": lambda: series_figure(tenant, filters, grain),
        "funnel": lambda: funnel_figure(tenant, filters),
        "top_referrers": lambda: leaderboard_figure(
            tenant, filters, kind="customer", slug="top_referrers", title="Top referrers"
        ),
        "top_partners": lambda: leaderboard_figure(
            tenant, filters, kind="partner", slug="top_partners", title="Top partners"
        ),
        "waiting": lambda: waiting_figure(tenant, filters),
    }


def overview_page(tenant, filters) -> list[Figure]:
    """The whole home: the funnel reuses the KPI tiles' sums and both boards are ranked together."""
    sums = s.totals_with_previous(tenant, filters)
    boards = s.leaderboards(tenant, filters, ["customer", "partner"])
    grain = "day" if filters.days <= 120 else "week"
    return [
        kpi_figure(tenant, filters, sums=sums),
        series_figure(tenant, filters, grain),
        funnel_figure(tenant, filters, sums=sums[0]),
        leaderboard_figure(tenant, filters, slug="top_referrers", title="Top referrers", rows=boards["customer"]),
        leaderboard_figure(tenant, filters, slug="top_partners", title="Top partners", rows=boards["partner"]),
        waiting_figure(tenant, filters),
    ]


# --- program health -----------------------------------------------------------------------------------
def health_figures(tenant, filters) -> dict[str, Callable[[], Figure]]:
    """The health page's figures, each computed only when asked for (a CSV needs one); the referral rate
    and the referrer counts share one pass over the rollups."""
    found: dict[str, object] = {}

    def counts():
        if "counts" not in found:
            found["counts"] = s.referrer_health(tenant, filters, s.economics_settings(tenant))
        return found["counts"]

    def referral_rate() -> Figure:
        rate = counts()[0]
        low, high = rate["band"]
        return Figure(
            "referral_rate",
            f"Referral rate against the {low:.0f}-{high:.0f} % B2B SaaS band",
            [
                Column("referring", "Referring customers"),
                Column("customers", "All customers"),
                Column("rate", "Referral rate %", "percent"),
                Column("verdict", "Against the band", "text"),
            ],
            [{**rate, "verdict": rate["verdict"] or m.DASH}],
            chart={"type": "gauge", "value": rate["rate"], "band": [low, high]},
        )

    def time_to_reward() -> Figure:
        timing = s.time_to_reward(tenant, filters)
        return Figure(
            "time_to_reward",
            "Time to reward (conversion → paid) against the 7-day target",
            [
                Column("count", "Rewards paid"),
                Column("median_days", "Median (days)", "days"),
                Column("p90_days", "90th percentile (days)", "days"),
                Column("target_days", "Target (days)", "days"),
            ],
            [timing],
        )

    def referrers() -> Figure:
        activity = counts()[1]
        return Figure(
            "referrers",
            "Active referrers (last 90 days) and the top 10 %'s share",
            [
                Column("active_90d", "Active referrers, 90 days"),
                Column("referrers", "Referrers in the period"),
                Column("top10_share", "Top 10 % share of referrals %", "percent"),
            ],
            [activity],
        )

    def source_mix() -> Figure:
        mix = s.source_mix(tenant, filters)
        return Figure(
            "source_mix",
            "Source mix: customer, partner and employee referrals",
            [
                Column("kind", "Source", "text"),
                Column("referrals", "Referrals"),
                Column("share", "Share %", "percent"),
                Column("customers", "Customers"),
                Column("revenue_minor", "Revenue", "money"),
            ],
            mix,
            chart={
                "type": "doughnut",
                "labels": [row["kind"] for row in mix],
                "datasets": [{"label": "Referrals", "data": [row["referrals"] for row in mix]}],
            },
            currency=filters.currency,
        )

    return {
        "referral_rate": referral_rate,
        "time_to_reward": time_to_reward,
        "referrers": referrers,
        "source_mix": source_mix,
    }


def health_page(tenant, filters) -> list[Figure]:
    return [build() for build in health_figures(tenant, filters).values()]


def funnel_page(tenant, filters) -> list[Figure]:
    by_channel = s.funnel_by_channel(tenant, filters)
    rows = []
    for channel, steps in by_channel.items():
        for step in steps:
            rows.append({"channel": channel, **step})
    labels = [label for _, label in s.FUNNEL_STEPS]
    return [
        funnel_figure(tenant, filters),
        Figure(
            "funnel_by_channel",
            "Funnel by channel, with the drop-off at each step",
            [
                Column("channel", "Channel", "text"),
                Column("step", "Step", "text"),
                Column("count", "Count"),
                Column("of_first", "% of clicks", "percent"),
                Column("drop_off", "Drop-off %", "percent"),
            ],
            rows,
            chart={
                "type": "bar",
                "labels": labels,
                "datasets": [
                    {"label": channel, "data": [step["count"] for step in steps]}
                    for channel, steps in by_channel.items()
                ],
            },
        ),
    ]


def channels_page(tenant, filters) -> list[Figure]:
    rows = s.channel_comparison(tenant, filters)
    return [
        Figure(
            "referred_vs_other",
            "Referred customers against other channels",
            [
                Column("channel", "Channel", "text"),
                Column("leads", "Leads"),
                Column("customers", "Customers"),
                Column("conversion_rate", "Conversion rate %", "percent"),
                Column("sales_cycle_days", "Sales cycle (days)", "days"),
                Column("deal_minor", "Deal size", "money"),
                Column("ltv_minor", "LTV", "money"),
            ],
            rows,
            chart={
                "type": "bar",
                "labels": [row["channel"] for row in rows],
                "datasets": [{"label": "Conversion rate %", "data": [row["conversion_rate"] for row in rows]}],
            },
            note="Other channels come from the conversions API (/api/v1/analytics/other-customers) or a CSV import.",
            currency=filters.currency,
        )
    ]


def economics_page(tenant, filters) -> list[Figure]:
    figures = s.economics(tenant, filters)
    money = ["revenue_minor", "rewards_minor", "running_cost_minor", "cost_minor", "cost_per_customer_minor"]
    money += ["average_arr_minor", "ltv_minor", "cac_minor", "yearly_spend_minor"]
    labels = {
        "revenue_minor": "Referred revenue",
        "rewards_minor": "Rewards earned",
        "running_cost_minor": "Program running cost (pro rata)",
        "cost_minor": "Program cost",
        "customers": "Customers acquired",
        "roi_percent": "Program ROI % ((revenue - cost) / cost x 100)",
        "cost_per_customer_minor": "Cost per acquired customer",
        "average_arr_minor": "Average ARR of a referred customer",
        "payback_months": "Payback (months, target < 6)",
        "ltv_minor": "LTV (average ARR x average lifetime)",
        "customers_per_year": "Customers acquired per year (all channels)",
        "cac_minor": "CAC (yearly S&M spend / customers per year)",
        "ltv_to_cac": "LTV:CAC (healthy > 4)",
        "lifetime_months": "Average lifetime (months)",
        "yearly_spend_minor": "Yearly sales & marketing spend",
    }
    rows = []
    for key, label in labels.items():
        unit = "money" if key in money else "percent" if key == "roi_percent" else "ratio"
        if key in ("customers", "customers_per_year", "lifetime_months"):
            unit = "count"
        if key == "payback_months":
            unit = "months"
        rows.append({"figure": label, "value": figures[key], "unit": unit})
    figure = Figure(
        "economics",
        "Program economics",
        [Column("figure", "Figure", "text"), Column("value", "Value")],
        rows,
        currency=filters.currency,
    )
    return [figure]


def series_figures(tenant, filters) -> dict[str, Callable[[], Figure]]:
    return {
        "series_week": lambda: series_figure(tenant, filters, "week"),
        "series_month": lambda: series_figure(tenant, filters, "month"),
    }


def series_page(tenant, filters) -> list[Figure]:
    return [build() for build in series_figures(tenant, filters).values()]


def leaderboards_figures(tenant, filters) -> dict[str, Callable[[], Figure]]:
    return {
        slug: (
            lambda kind=kind, slug=slug, title=title: leaderboard_figure(
                tenant, filters, kind=kind, slug=slug, title=title
            )
        )
        for kind, slug, title in (
            ("customer", "referrers", "Referrers"),
            ("partner", "partners", "Partners"),
            ("employee", "employees", "Employees"),
        )
    }


LEADERBOARDS = [
    ("customer", "referrers", "Referrers"),
    ("partner", "partners", "Partners"),
    ("employee", "employees", "Employees"),
]


def leaderboards_page(tenant, filters) -> list[Figure]:
    boards = s.leaderboards(tenant, filters, [kind for kind, _, _ in LEADERBOARDS])
    return [
        leaderboard_figure(tenant, filters, kind=kind, slug=slug, title=title, rows=boards[kind])
        for kind, slug, title in LEADERBOARDS
    ]


LAZY_FIGURES = {
    "overview": overview_figures,
    "health": health_figures,
    "series": series_figures,
    "leaderboards": leaderboards_figures,
}


def compare_figure(tenant, left, right, title: str) -> Figure:
    rows = s.compare(tenant, left, right)
    money_keys = {"revenue_minor", "rewards_earned_minor", "cost_per_customer_minor", "average_deal_minor"}
    for row in rows:
        base = row["figure"].replace(" per day", "")
        row["unit"] = (
            "money" if base in money_keys else "percent" if base in ("conversion_rate", "roi_percent") else "count"
        )
    return Figure(
        "comparison",
        title,
        [
            Column("figure", "Figure", "text"),
            Column("a", "A"),
            Column("b", "B"),
            Column("change", "B against A %", "percent"),
        ],
        rows,
        chart={
            "type": "bar",
            "labels": ["clicks", "referrals", "signups", "qualified", "customers"],
            "datasets": [
                {"label": "A", "data": [row["a"] for row in rows[:5]]},
                {"label": "B", "data": [row["b"] for row in rows[:5]]},
            ],
        },
        currency=left.currency,
    )


PAGES: dict[str, Page] = {
    page.slug: page
    for page in [
        Page("overview", "Is it working?", overview_page, "Key figures, trend, funnel, top referrers and partners."),
        Page("health", "Program health", health_page, "Referral rate, time to reward, active referrers, source mix."),
        Page("funnel", "Funnel by channel", funnel_page, "Where referrals drop off, per channel."),
        Page("channels", "Referred vs other channels", channels_page, "Conversion, sales cycle, deal size, LTV."),
        Page("economics", "Economics", economics_page, "ROI, payback, cost per customer, LTV, CAC, LTV:CAC."),
        Page("series", "Weekly and monthly", series_page, "Per-week and per-month series."),
        Page("leaderboards", "Leaderboards", leaderboards_page, "Referrers, partners and employees."),
    ]
}


def compare_filters(tenant, query) -> tuple[object, object, str]:
    """Two filter sets from ``a_*`` / ``b_*`` query parameters: two programs, two periods or two rule versions
    (``a_version`` / ``b_version``: the days each version was current)."""
    left = s.filters_from_query(tenant, query, prefix="a_")
    right = s.filters_from_query(tenant, query, prefix="b_")
    chosen = [key for key, value in query.items() if key[:2] in ("a_", "b_") and value and not key.endswith("period")]
    if not chosen:  # nothing chosen: this period against the one before
        right = left
        left = left.previous()
    label = "Two periods / programs"
    for prefix, which in (("a_", "left"), ("b_", "right")):
        version_id = query.get(f"{prefix}version")
        if version_id and str(version_id).isdigit():
            found = s.rule_version_period(tenant, int(version_id))
            if found:
                version, start, end = found
                chosen = replace(
                    left if which == "left" else right,
                    program_id=version.program_id,
                    start=start,
                    end=end,
                    currency=version.program.currency,
                    period="custom",
                )
                if which == "left":
                    left = chosen
                else:
                    right = chosen
                label = "Two rule versions"
    return left, right, label


def page_figures(slug: str, tenant, filters, query=None, only: str | None = None) -> list[Figure]:
    """The figures of page ``slug``; with ``only``, just that figure where the page can compute it alone."""
    if only and slug in LAZY_FIGURES:
        builders = LAZY_FIGURES[slug](tenant, filters)
        return [builders[only]()] if only in builders else []
    if slug == "compare":
        left, right, label = compare_filters(tenant, query or {})
        return [
            compare_figure(tenant, left, right, f"{label}: A {left.start}…{left.end} / B {right.start}…{right.end}")
        ]
    return PAGES[slug].build(tenant, filters)


def typed_cell(row: dict, column: Column, currency: str) -> str:
    """The cell of ``row`` for ``column``; rows carrying their own ``unit`` (KPI and economics lists) use it."""
    unit = row.get("unit") if column.unit not in ("text",) and "unit" in row else column.unit
    value = row.get(column.key)
    if column.key == "change":
        unit = "percent"
    return cell(value, Column(column.key, column.label, unit or "count"), currency)


def table(figure: Figure) -> tuple[list[str], list[list[str]]]:
    head = [column.label for column in figure.columns]
    body = [[typed_cell(row, column, figure.currency) for column in figure.columns] for row in figure.rows]
    return head, body


def date_label(value: date) -> str:
    return value.isoformat()
