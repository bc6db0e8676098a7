"""Every figure of the analytics pages on a small hand-built dataset. Expected values are worked out here
from the formulas (docs/analytics.md), not copied from the code: referral rate, funnel drop-off,
conversion rate, sales cycle, deal size, ROI, cost per customer, payback, LTV, CAC, LTV:CAC, time to
reward (median, p90), active referrers, top-10 % share, source mix. Plus the empty, single-referrer and
zero-cost cases, where undefined ratios are None and show as "—"."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from analytics import selectors as s
from analytics.figures import page_figures, table
from analytics.metrics import DASH, percentile, top_share_percent
from analytics.models import EconomicsSettings, OtherChannelCustomer
from analytics.rollups import rollups_rebuild
from tests import factories as f

pytestmark = pytest.mark.django_db
DAY = timedelta(days=1)


def _filters(tenant, **query):
    return s.filters_from_query(tenant, {"period": "30d", **query})


@pytest.fixture
def data(world):
    """Two customer referrers (Ann, Bob) and a partner (Pia) in one USD program each, over the last days.

    Ann: 6 clicks, 3 referrals (all signed up; 2 qualified; 2 converted, deals 1,000.00 and 3,000.00 after
    10 and 20 days); a refund of 500.00 on the first. Bob: 4 clicks, 1 referral signed up. Pia: 2 clicks,
    1 referral converted (deal 2,000.00 after 5 days). Rewards: Ann 100.00 paid after 2 days, 100.00 paid
    after 9 days, an approved, unpaid 50.00 for Bob; Pia 200.00 paid after 4 days (all converted 12 days ago).
    """
    now = timezone.now() - timedelta(hours=1)
    customer_program = f.ProgramFactory(tenant=world.a, kind="customer", currency="USD")
    partner_program = f.ProgramFactory(tenant=world.a, kind="partner", currency="USD")
    ann = f.ParticipantFactory(program=customer_program, name="Ann")
    bob = f.ParticipantFactory(program=customer_program, name="Bob")
    f.ParticipantFactory(program=customer_program, name="Cat (never refers)")
    f.ParticipantFactory(program=customer_program, name="Dan (never refers)")
    pia = f.ParticipantFactory(program=partner_program, name="Pia")
    links = {
        person.name: f.ReferralLinkFactory(participant=person, channel=channel)
        for person, channel in ((ann, "email"), (bob, "social"), (pia, "direct"))
    }
    for person, count in (("Ann", 6), ("Bob", 4), ("Pia", 2)):
        for _ in range(count):
            f.ClickFactory(link=links[person], channel=links[person].channel, occurred_at=now - 3 * DAY)
    f.ClickFactory(link=links["Bob"], channel="social", occurred_at=now - 3 * DAY, is_bot=True)  # never counted

    def referral(person, *, lead_days_ago, qualified=None, converted_after=None, deal=None):
        lead_at = now - lead_days_ago * DAY
        ref = f.ReferralFactory(
            referrer=person,
            link=links[person.name],
            created_at=lead_at,
            signed_up_at=lead_at,
            qualified_at=lead_at + DAY if qualified else None,
            converted_at=lead_at + converted_after * DAY if converted_after else None,
        )
        if deal:
            event = f.ConversionEventFactory(
                tenant=world.a,
                kind="payment",
                amount_minor=deal,
                occurred_at=ref.converted_at,
                referral=ref,
                status="processed",
            )
            f.AttributionFactory(participant=person, conversion_event=event, referral=ref, amount_minor=deal)
        return ref

    first = referral(ann, lead_days_ago=25, qualified=True, converted_after=10, deal=100_000)
    referral(ann, lead_days_ago=22, qualified=True, converted_after=20, deal=300_000)
    referral(ann, lead_days_ago=4)
    referral(bob, lead_days_ago=4)
    referral(pia, lead_days_ago=9, converted_after=5, deal=200_000)
    refund = f.ConversionEventFactory(
        tenant=world.a,
        kind="refund",
        amount_minor=50_000,
        occurred_at=now - 2 * DAY,
        referral=first,
        status="processed",
    )
    f.AttributionFactory(participant=ann, conversion_event=refund, referral=first, amount_minor=50_000)

    def reward(person, amount, *, paid_after_days=None, converted_days_ago=12, status="paid"):
        converted = now - converted_days_ago * DAY
        paid_at = converted + paid_after_days * DAY if paid_after_days is not None else None
        f.RewardFactory(
            participant=person,
            amount_minor=amount,
            status=status,
            converted_at=converted,
            paid_at=paid_at,
            time_to_reward=(paid_at - converted) if paid_at else None,
        )

    reward(ann, 10_000, paid_after_days=2)
    reward(ann, 10_000, paid_after_days=9)
    reward(bob, 5_000, status="approved")
    reward(pia, 20_000, paid_after_days=4)
    rollups_rebuild(tenant_id=world.a.pk)
    return {"ann": ann, "bob": bob, "pia": pia, "customer_program": customer_program}


def test_totals_and_derived_figures_follow_the_formulas(world, data):
    sums = s.totals(world.a, _filters(world.a))
    figures = s.derived(sums)

    clicks, referrals, signups, qualified, customers = 12, 5, 5, 2, 3
    revenue = 100_000 + 300_000 + 200_000 - 50_000
    earned = 10_000 + 10_000 + 5_000 + 20_000
    assert (sums["clicks"], sums["referrals"], sums["signups"], sums["qualified"], sums["customers"]) == (
        clicks,
        referrals,
        signups,
        qualified,
        customers,
    )
    assert sums["revenue_minor"] == revenue and sums["refunds_minor"] == 50_000
    assert sums["rewards_earned_minor"] == earned
    assert sums["rewards_owed_minor"] == 5_000
    assert sums["rewards_paid_minor"] == 10_000 + 10_000 + 20_000
    assert figures["conversion_rate"] == pytest.approx(customers / referrals * 100)
    assert figures["roi_percent"] == pytest.approx((revenue - earned) / earned * 100)
    assert figures["cost_per_customer_minor"] == pytest.approx(earned / customers)
    assert figures["average_deal_minor"] == pytest.approx((100_000 + 300_000 + 200_000) / customers)
    assert figures["sales_cycle_days"] == pytest.approx((10 + 20 + 5) / customers)
    assert figures["earnings_per_click_minor"] == pytest.approx(earned / clicks)


def test_the_funnel_shows_each_steps_drop_off(world, data):
    steps = s.funnel(s.totals(world.a, _filters(world.a)))

    assert [step["count"] for step in steps] == [12, 5, 2, 3]
    assert steps[0]["drop_off"] is None
    assert steps[1]["drop_off"] == pytest.approx((12 - 5) / 12 * 100)
    assert steps[2]["drop_off"] == pytest.approx((5 - 2) / 5 * 100)
    assert steps[3]["drop_off"] == 0.0  # a payment can convert a lead that never qualified: never negative
    by_channel = s.funnel_by_channel(world.a, _filters(world.a))
    assert [step["count"] for step in by_channel["email"]] == [6, 3, 2, 2]
    assert [step["count"] for step in by_channel["qr"]] == [0, 0, 0, 0]
    assert by_channel["qr"][1]["drop_off"] is None


def test_referral_rate_counts_referring_customers_among_all_customers(world, data):
    rate = s.referral_rate(world.a, _filters(world.a))
    # Customers: the 4 participants of the customer program; referring: Ann and Bob.
    assert (rate["referring"], rate["customers"]) == (2, 4)
    assert rate["rate"] == pytest.approx(2 / 4 * 100) and rate["verdict"] == "above"

    EconomicsSettings.objects.create(tenant=world.a, total_customers=10)
    with_total = s.referral_rate(world.a, _filters(world.a), s.economics_settings(world.a))
    assert with_total["rate"] == pytest.approx(2 / 10 * 100) and with_total["verdict"] == "within"


def test_time_to_reward_median_and_p90_against_the_target(world, data):
    timing = s.time_to_reward(world.a, _filters(world.a))
    days = sorted([2, 9, 4])
    # Linear interpolation between closest ranks (PostgreSQL's percentile_cont).
    expected_p90 = days[1] + (days[2] - days[1]) * ((len(days) - 1) * 0.9 - 1)
    assert timing["count"] == 3
    assert timing["median_days"] == pytest.approx(days[1])
    assert timing["p90_days"] == pytest.approx(expected_p90)
    assert timing["on_target"] is (expected_p90 <= 7)


def test_active_referrers_top_share_and_source_mix(world, data):
    activity = s.referrer_activity(world.a, _filters(world.a))
    mix = {row["kind"]: row for row in s.source_mix(world.a, _filters(world.a))}

    assert activity["active_90d"] == 3 and activity["referrers"] == 3
    # Top 10 % of 3 referrers rounds to one referrer: Ann, 3 of the 5 referrals.
    assert activity["top10_share"] == pytest.approx(3 / 5 * 100)
    assert mix["Customer"]["referrals"] == 4 and mix["Partner"]["referrals"] == 1 and mix["Employee"]["referrals"] == 0
    assert mix["Customer"]["share"] == pytest.approx(4 / 5 * 100) and mix["Employee"]["share"] == 0


def test_economics_ltv_cac_payback_and_roi(world, data):
    EconomicsSettings.objects.create(
        tenant=world.a,
        yearly_sales_marketing_spend_minor=12_000_000,
        program_yearly_cost_minor=0,
        average_lifetime_months=24,
    )
    f.OtherChannelCustomerFactory(tenant=world.a, converted_at=timezone.now() - 10 * DAY)
    economics = s.economics(world.a, _filters(world.a))

    customers, earned = 3, 45_000
    revenue = 550_000
    arr = (100_000 + 300_000 + 200_000) / customers
    ltv = arr * 24 / 12
    cac = 12_000_000 / (customers + 1)  # every channel's customers of the year: 3 referred + 1 other
    assert economics["roi_percent"] == pytest.approx((revenue - earned) / earned * 100)
    assert economics["cost_per_customer_minor"] == pytest.approx(earned / customers)
    assert economics["payback_months"] == pytest.approx((earned / customers) / (arr / 12))
    assert economics["ltv_minor"] == pytest.approx(ltv)
    assert economics["cac_minor"] == pytest.approx(cac)
    assert economics["ltv_to_cac"] == pytest.approx(ltv / cac)


def test_referred_customers_against_other_channels(world, data):
    now = timezone.now()
    OtherChannelCustomer.objects.create(
        tenant=world.a,
        external_id="o1",
        channel="paid_search",
        lead_at=now - 20 * DAY,
        converted_at=now - 10 * DAY,
        deal_minor=50_000,
        arr_minor=60_000,
        currency="USD",
    )
    OtherChannelCustomer.objects.create(
        tenant=world.a, external_id="o2", channel="paid_search", lead_at=now - 15 * DAY, currency="USD"
    )
    rows = {row["channel"]: row for row in s.channel_comparison(world.a, _filters(world.a))}

    assert rows["referral"]["conversion_rate"] == pytest.approx(3 / 5 * 100)
    assert rows["paid_search"]["conversion_rate"] == pytest.approx(1 / 2 * 100)
    assert rows["paid_search"]["sales_cycle_days"] == pytest.approx(10)
    assert rows["paid_search"]["deal_minor"] == pytest.approx(50_000)
    assert rows["paid_search"]["ltv_minor"] == pytest.approx(60_000 * 36 / 12)


def test_kpis_compare_with_the_previous_period(world, data):
    kpis = {kpi.key: kpi for kpi in s.kpis(world.a, _filters(world.a, period="7d"))}
    # In the last 7 days: 12 clicks; in the 7 days before: none, so no change can be computed.
    assert kpis["clicks"].value == 12 and kpis["clicks"].previous == 0 and kpis["clicks"].change is None
    # Sign-ups: 2 in the last 7 days (Ann's and Bob's 4-day-old leads); none in the week before.
    assert kpis["signups"].value == 2


def test_a_participants_figures(world, data):
    figures = s.participant_figures(world.a, [data["ann"].pk])[data["ann"].pk]

    assert figures["clicks"] == 6 and figures["signups"] == 3 and figures["customers"] == 2
    assert figures["revenue_minor"] == 100_000 + 300_000 - 50_000
    assert figures["earnings_per_click_minor"] == pytest.approx(20_000 / 6)


# --- empty, single referrer, zero cost --------------------------------------------------------------
def test_an_empty_workspace_has_no_ratio_and_shows_dashes(world, client):
    figures = s.derived(s.totals(world.a, _filters(world.a)))
    economics = s.economics(world.a, _filters(world.a))

    for key in ("conversion_rate", "roi_percent", "cost_per_customer_minor", "average_deal_minor", "sales_cycle_days"):
        assert figures[key] is None
    assert economics["ltv_to_cac"] is None and economics["payback_months"] is None
    assert s.referral_rate(world.a, _filters(world.a))["rate"] is None
    assert s.referrer_activity(world.a, _filters(world.a))["top10_share"] is None
    assert s.time_to_reward(world.a, _filters(world.a))["median_days"] is None
    client.force_login(world.marketer_a)
    body = client.get(reverse("analytics_economics_csv") + "?figure=economics").content.decode()
    rows = list(csv.reader(io.StringIO(body)))
    assert dict((row[0], row[1]) for row in rows[2:])["Program ROI % ((revenue - cost) / cost x 100)"] == DASH


def test_a_single_referrer_is_the_whole_top_ten_percent(world):
    program = f.ProgramFactory(tenant=world.a, kind="customer")
    only = f.ParticipantFactory(program=program)
    for _ in range(3):
        f.ReferralFactory(referrer=only, created_at=timezone.now() - DAY)
    rollups_rebuild(tenant_id=world.a.pk)

    activity = s.referrer_activity(world.a, _filters(world.a))

    assert activity["referrers"] == 1 and activity["top10_share"] == pytest.approx(100.0)
    assert top_share_percent([3]) == 100.0 and percentile([5.0], 0.9) == 5.0


def test_zero_cost_roi_is_undefined_not_infinite(world):
    program = f.ProgramFactory(tenant=world.a, kind="customer", currency="USD")
    person = f.ParticipantFactory(program=program)
    ref = f.ReferralFactory(referrer=person, created_at=timezone.now() - 2 * DAY, converted_at=timezone.now() - DAY)
    event = f.ConversionEventFactory(
        tenant=world.a, amount_minor=90_000, occurred_at=ref.converted_at, referral=ref, status="processed"
    )
    f.AttributionFactory(participant=person, conversion_event=event, referral=ref, amount_minor=90_000)
    rollups_rebuild(tenant_id=world.a.pk)

    figures = s.derived(s.totals(world.a, _filters(world.a)))
    economics = s.economics(world.a, _filters(world.a))
    economics_figure = page_figures("economics", world.a, _filters(world.a))[0]
    _head, body = table(economics_figure)

    assert figures["revenue_minor"] == 90_000 and figures["roi_percent"] is None
    assert economics["roi_percent"] is None and economics["cost_per_customer_minor"] == 0
    assert economics["payback_months"] == 0
    roi_row = next(row for row in body if row[0].startswith("Program ROI"))
    assert roi_row[1] == DASH


def test_waiting_for_you_counts_each_queue_of_its_own_workspace_only(world):
    program = f.ProgramFactory(tenant=world.a)
    person = f.ParticipantFactory(program=program)
    f.RewardFactory(participant=person, status="pending", hold_until=timezone.now() - DAY)
    f.RewardFactory(participant=person, status="pending", hold_until=timezone.now() + DAY)  # still on hold
    f.ReferralFactory(referrer=person, review_status="flagged")
    f.DealConflictFactory(holder=f.DealRegistrationFactory(partner=f.PartnerFactory(tenant=world.a)))
    f.PayoutFactory(participant=person, status="failed")
    f.PayoutFactory(participant=person, status="abandoned")

    mine = {item["key"]: item["count"] for item in s.waiting_for_you(world.a)}
    theirs = {item["key"]: item["count"] for item in s.waiting_for_you(world.b)}

    assert mine == {"rewards": 1, "fraud": 1, "conflicts": 1, "payouts": 2}
    assert theirs == {"rewards": 0, "fraud": 0, "conflicts": 0, "payouts": 0}
