"""Leaderboards and referrer counts read the per-participant rollups through shortcuts (candidates from the
rows with customers, one pass for every referrer count); these tests pin them to the plain definitions on
hand-built rollup rows, with expected values worked out here."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from analytics import selectors as s
from analytics.models import DailyRollup
from analytics.rollups import _totals_refresh
from tests import factories as f

pytestmark = pytest.mark.django_db


def _filters(tenant, **query):
    return s.filters_from_query(tenant, {"period": "30d", **query})


def _row(person, *, days_ago=1, channel="email", **metrics):
    """A per-participant rollup row, and its day's totals recomputed (as every refresh does)."""
    row = DailyRollup.objects.create(
        tenant=person.tenant,
        day=timezone.now().date() - timedelta(days=days_ago),
        program=person.program,
        participant=person,
        channel=channel,
        kind=person.program.kind,
        currency=person.program.currency,
        **metrics,
    )
    with connection.cursor() as cursor:
        _totals_refresh(cursor, person.tenant_id, days=[row.day])
    return row


@pytest.fixture
def twelve(world):
    """Twelve customer referrers; referrer i (1..12) won i customers on two days (i-1 and 1 on two
    channels) and made 10 clicks; a thirteenth only clicks. Referrer 12 also earned 600 (60 a click)."""
    program = f.ProgramFactory(tenant=world.a, kind="customer", currency="USD")
    people = [f.ParticipantFactory(program=program, name=f"Referrer {index}") for index in range(1, 14)]
    for index, person in enumerate(people[:12], start=1):
        _row(person, days_ago=2, customers=index - 1, clicks=10)
        _row(person, days_ago=3, channel="social", customers=1)
    _row(people[11], days_ago=4, rewards_earned_minor=600)
    _row(people[12], clicks=99)
    _row(people[0], days_ago=40, customers=50)  # outside the 30 days: never counted
    return people


def test_the_top_ten_are_the_participants_with_most_customers(world, twelve):
    board = s.leaderboard(world.a, _filters(world.a), kind="customer")

    assert [row["name"] for row in board] == [f"Referrer {index}" for index in range(12, 2, -1)]
    assert [row["customers"] for row in board] == list(range(12, 2, -1))
    assert board[0]["clicks"] == 10 and board[0]["rewards_earned_minor"] == 600
    assert board[0]["earnings_per_click_minor"] == pytest.approx(600 / 10)
    assert board[1]["earnings_per_click_minor"] == 0


def test_a_quiet_period_ranks_everyone_with_rows_ties_by_the_older_participant(world):
    program = f.ProgramFactory(tenant=world.a, kind="customer", currency="USD")
    ann, bob, cat = (f.ParticipantFactory(program=program, name=name) for name in ("Ann", "Bob", "Cat"))
    _row(cat, customers=1)
    _row(bob, clicks=5)
    _row(ann, clicks=1)

    board = s.leaderboard(world.a, _filters(world.a))

    # Cat leads with one customer; Ann and Bob have none and follow in the order they were created.
    assert [row["name"] for row in board] == ["Cat", "Ann", "Bob"]
    assert board[1]["earnings_per_click_minor"] == 0 and board[1]["clicks"] == 1


def test_a_board_without_clicks_shows_a_dash_not_a_division_by_zero(world):
    program = f.ProgramFactory(tenant=world.a, kind="partner", currency="USD")
    pia = f.ParticipantFactory(program=program, name="Pia")
    _row(pia, customers=1, rewards_earned_minor=900)

    board = s.leaderboard(world.a, _filters(world.a), kind="partner")

    assert board[0]["earnings_per_click_minor"] is None


def test_boards_of_several_kinds_are_read_in_a_fixed_number_of_queries(world, twelve):
    partner_program = f.ProgramFactory(tenant=world.a, kind="partner", currency="USD")
    for index in range(15):
        _row(f.ParticipantFactory(program=partner_program), customers=index + 1)

    with CaptureQueriesContext(connection) as captured:
        boards = s.leaderboards(world.a, _filters(world.a), ["customer", "partner", "employee"])

    assert [row["customers"] for row in boards["partner"]] == list(range(15, 5, -1))
    assert len(boards["customer"]) == 10 and boards["employee"] == []
    # The kinds present (daily totals); customer and partner: 1 each (ranked from the rows with customers);
    # employee: none (no employee activity); then the chosen participants' figures and names.
    assert len(captured.captured_queries) == 5


def test_referrer_counts_and_the_top_ten_percent_with_25_referrers(world):
    """Referrer i (1..25) made i referrals: 325 in all. The top 10 % of 25 is round(2.5) = 2 referrers
    (Python rounds half to even, as metrics.top_share_percent), so the share is (25 + 24) / 325."""
    program = f.ProgramFactory(tenant=world.a, kind="customer", currency="USD")
    partners = f.ProgramFactory(tenant=world.a, kind="partner", currency="USD")
    for index in range(1, 26):
        _row(f.ParticipantFactory(program=program), referrals=index)
    f.ParticipantFactory(program=program)  # a customer who never referred
    _row(f.ParticipantFactory(program=partners), days_ago=60, referrals=7)  # a partner active 60 days ago

    activity = s.referrer_activity(world.a, _filters(world.a))
    rate = s.referral_rate(world.a, _filters(world.a))
    partner_only = s.referrer_activity(world.a, _filters(world.a, kind="partner"))

    assert activity["referrers"] == 25 and activity["active_90d"] == 26
    assert activity["top10_share"] == pytest.approx((25 + 24) / 325 * 100)
    assert (rate["referring"], rate["customers"]) == (25, 26)
    assert rate["rate"] == pytest.approx(25 / 26 * 100) and rate["verdict"] == "above"
    # The partner referred before the 30 days: active in the last 90 but no referrer of the period.
    assert (partner_only["referrers"], partner_only["active_90d"], partner_only["top10_share"]) == (0, 1, None)


def test_the_referrer_counts_of_tenant_b_ignore_tenant_a(world, twelve):
    program = f.ProgramFactory(tenant=world.a, kind="customer", currency="USD")
    _row(f.ParticipantFactory(program=program), referrals=3)

    assert s.referrer_activity(world.b, _filters(world.b)) == {"active_90d": 0, "referrers": 0, "top10_share": None}
    assert s.leaderboards(world.b, _filters(world.b), ["customer", ""]) == {"customer": [], "": []}
