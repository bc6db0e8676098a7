"""The figures the other metric tests leave out, on hand-built rollup rows (expected values worked out
here): the KPI change against a non-empty previous period, ROI with the running cost pro rata (home tile,
economics and compare agree), weekly and monthly series, LTV:CAC without a spend, and "—" (never NaN or
infinity) in the page and the CSV for the single-referrer and zero-cost cases."""

from __future__ import annotations

import csv
import io
import re
from datetime import date, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from analytics import selectors as s
from analytics.metrics import DASH
from analytics.models import DailyRollup, EconomicsSettings
from analytics.rollups import _totals_refresh
from tests import factories as f

pytestmark = pytest.mark.django_db


def _filters(tenant, **query):
    return s.filters_from_query(tenant, {"period": "30d", **query})


def _row(person, *, day=None, days_ago=1, channel="email", **metrics):
    values = {
        "tenant": person.tenant,
        "day": day or timezone.now().date() - timedelta(days=days_ago),
        "program": person.program,
        "participant": person,
        "channel": channel,
        "kind": person.program.kind,
        "currency": person.program.currency,
        **metrics,
    }
    DailyRollup.objects.create(**values)
    with connection.cursor() as cursor:
        _totals_refresh(cursor, person.tenant_id, days=[values["day"]])


def _person(tenant, kind="customer", name="Ann"):
    return f.ParticipantFactory(program=f.ProgramFactory(tenant=tenant, kind=kind, currency="USD"), name=name)


def _csv(client, page, figure):
    body = client.get(reverse(f"analytics_{page}_csv") + f"?figure={figure}").content.decode()
    return list(csv.reader(io.StringIO(body)))


def test_kpi_change_against_a_previous_period_with_activity(world):
    ann = _person(world.a)
    _row(ann, days_ago=2, clicks=30, signups=6, revenue_minor=90_000, rewards_earned_minor=10_000)
    _row(ann, days_ago=9, clicks=20, signups=8, revenue_minor=30_000, rewards_earned_minor=10_000)

    kpis = {kpi.key: kpi for kpi in s.kpis(world.a, _filters(world.a, period="7d"))}

    assert (kpis["clicks"].value, kpis["clicks"].previous) == (30, 20)
    assert kpis["clicks"].change == pytest.approx((30 - 20) / 20 * 100)  # +50 %
    assert kpis["signups"].change == pytest.approx((6 - 8) / 8 * 100)  # -25 %
    assert kpis["roi_percent"].value == pytest.approx((90_000 - 10_000) / 10_000 * 100)  # 800 %
    assert kpis["roi_percent"].previous == pytest.approx((30_000 - 10_000) / 10_000 * 100)  # 200 %
    assert kpis["roi_percent"].change == pytest.approx((800 - 200) / 200 * 100)


def test_roi_counts_the_running_cost_pro_rata_on_the_home_economics_and_compare(world):
    ann = _person(world.a)
    _row(ann, days_ago=3, customers=2, deal_minor=240_000, revenue_minor=500_000, rewards_earned_minor=20_000)
    EconomicsSettings.objects.create(tenant=world.a, program_yearly_cost_minor=365_000, average_lifetime_months=24)
    filters = _filters(world.a)  # 30 days

    running = 365_000 * 30 / 365  # 30,000
    cost = 20_000 + running
    roi = (500_000 - cost) / cost * 100
    kpis = {kpi.key: kpi for kpi in s.kpis(world.a, filters)}
    economics = s.economics(world.a, filters)
    compared = {row["figure"]: row for row in s.compare(world.a, filters.previous(), filters)}

    assert kpis["roi_percent"].value == pytest.approx(roi)  # 900 %
    assert economics["roi_percent"] == pytest.approx(roi) and economics["cost_minor"] == cost
    assert compared["roi_percent"]["b"] == pytest.approx(roi)
    assert compared["roi_percent"]["a"] == pytest.approx((0 - running) / running * 100)  # -100 %: cost alone
    assert economics["cost_per_customer_minor"] == pytest.approx(cost / 2)
    arr = 240_000 / 2
    assert economics["payback_months"] == pytest.approx((cost / 2) / (arr / 12))
    assert economics["ltv_minor"] == pytest.approx(arr * 24 / 12)
    # No sales & marketing spend entered: CAC and LTV:CAC are undefined, shown as "—".
    assert economics["cac_minor"] is None and economics["ltv_to_cac"] is None


def test_weekly_and_monthly_series_sum_the_days(world):
    ann = _person(world.a)
    # 2026-03-02 is a Monday: two days of its week, one of the next week, one in April.
    for day, clicks in ((date(2026, 3, 2), 5), (date(2026, 3, 4), 7), (date(2026, 3, 10), 11), (date(2026, 4, 1), 13)):
        _row(ann, day=day, clicks=clicks, revenue_minor=clicks * 100)
    filters = s.filters_from_query(world.a, {"start": "2026-03-01", "end": "2026-04-05", "period": "custom"})

    weeks = {row["period"]: row for row in s.series(world.a, filters, grain="week")}
    months = {row["period"]: row for row in s.series(world.a, filters, grain="month")}

    assert weeks[date(2026, 3, 2)]["clicks"] == 5 + 7 and weeks[date(2026, 3, 9)]["clicks"] == 11
    assert weeks[date(2026, 3, 16)]["clicks"] == 0 and weeks[date(2026, 3, 30)]["clicks"] == 13
    assert weeks[date(2026, 2, 23)]["clicks"] == 0  # the week of March 1st (a Sunday) starts in February
    assert months[date(2026, 3, 1)]["clicks"] == 23 and months[date(2026, 4, 1)]["revenue_minor"] == 1_300
    assert list(months) == [date(2026, 3, 1), date(2026, 4, 1)]


def test_a_single_referrer_page_and_csv_show_the_whole_share_and_dashes(world, client):
    ann = _person(world.a)
    _row(ann, referrals=3, signups=3)
    client.force_login(world.viewer_a)

    page = client.get(reverse("analytics_health")).content.decode()
    referrers = _csv(client, "health", "referrers")
    timing = _csv(client, "health", "time_to_reward")
    rate = _csv(client, "health", "referral_rate")

    assert referrers[2] == ["1", "1", "100.0"]  # active, referrers, top 10 % share
    assert timing[2][:3] == ["0", DASH, DASH]  # no reward paid: no median, no 90th percentile
    assert rate[2] == ["1", "1", "100.0", "above"]  # 1 referring customer of 1
    assert "100.0" in page and DASH in page


def test_zero_cost_shows_dashes_in_the_economics_page_and_csv(world, client):
    ann = _person(world.a)
    _row(ann, customers=1, deal_minor=90_000, revenue_minor=90_000)
    client.force_login(world.marketer_a)

    page = client.get(reverse("analytics_economics")).content.decode()
    rows = {row[0]: row[1] for row in _csv(client, "economics", "economics")[2:]}
    tiles = client.get("/").content.decode()

    assert rows["Program ROI % ((revenue - cost) / cost x 100)"] == DASH
    assert rows["Cost per acquired customer"] == "0.00" and rows["Payback (months, target < 6)"] == "0.0"
    assert rows["CAC (yearly S&M spend / customers per year)"] == DASH
    assert rows["LTV:CAC (healthy > 4)"] == DASH
    for body in (page, tiles):
        assert not re.search(r"\b(nan|inf|infinity|None)\b", re.sub(r"<[^>]+>", " ", body), re.IGNORECASE)
    assert 'data-kpi="roi_percent"' in tiles


def test_the_home_reads_a_fixed_number_of_queries_whatever_the_data(world, client):
    client.force_login(world.marketer_a)

    def add(count, start):
        for index in range(start, start + count):
            person = _person(world.a, kind="partner" if index % 2 else "customer", name=f"P{index}")
            _row(person, clicks=index, customers=1 + index % 3, referrals=1)

    add(24, 0)  # twelve customers and twelve partners with customers: both boards full
    with CaptureQueriesContext(connection) as small:
        assert client.get("/").status_code == 200
    add(40, 24)
    with CaptureQueriesContext(connection) as large:
        assert client.get("/").status_code == 200

    assert len(large.captured_queries) == len(small.captured_queries)
    assert len(large.captured_queries) <= 16
