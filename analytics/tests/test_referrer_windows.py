"""Referrer counts (referral rate, active referrers, the top 10 %'s share) read a period as whole months of
``MonthlyReferrals`` plus or minus edge days of ``DailyRollup``: the slicing, hand-computed figures at the
period edges (partial months at both ends, a period inside one month, a whole month, a month minus a day,
empty), the other tenant never counted, and a comparison with the plain per-day sums on random windows."""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest

from analytics.models import DailyRollup, MonthlyReferrals
from analytics.rollups import rollups_rebuild_monthly
from analytics.selectors import Filters, _referrer_counts, referrer_activity, window_slices
from programs.models import ProgramKind
from tests import factories as f

pytestmark = pytest.mark.django_db

D = date.fromisoformat


# --- slicing (pure) ----------------------------------------------------------------------------------------
def test_a_window_inside_one_month_reads_its_days():
    assert window_slices(D("2026-03-10"), D("2026-03-12"), today=D("2026-11-28")) == [
        ("day", D("2026-03-10"), D("2026-03-12"), 1)
    ]


def test_a_whole_month_reads_one_monthly_slice():
    assert window_slices(D("2026-02-01"), D("2026-02-28"), today=D("2026-11-28")) == [
        ("month", D("2026-02-01"), D("2026-02-01"), 1)
    ]


def test_a_month_but_its_first_day_reads_the_month_minus_that_day():
    # Outside: 1 day + 7 (a month's cost, MONTH_COST_DAYS) < 30 days inside.
    assert window_slices(D("2026-01-02"), D("2026-01-31"), today=D("2026-11-28")) == [
        ("month", D("2026-01-01"), D("2026-01-01"), 1),
        ("day", D("2026-01-01"), D("2026-01-01"), -1),
    ]


def test_partial_months_at_both_ends_read_their_days_and_the_months_between_as_one_range():
    assert window_slices(D("2026-01-30"), D("2026-04-03"), today=D("2026-11-28")) == [
        ("day", D("2026-01-30"), D("2026-01-31"), 1),
        ("month", D("2026-02-01"), D("2026-03-01"), 1),
        ("day", D("2026-04-01"), D("2026-04-03"), 1),
    ]


def test_the_ninety_days_to_today_read_the_current_month_minus_its_future_days():
    # 2026-08-31 .. 2026-11-28: one day of August, September to November as months, minus Nov 29-30 (no rows yet).
    assert window_slices(D("2026-08-31"), D("2026-11-28"), today=D("2026-11-28")) == [
        ("day", D("2026-08-31"), D("2026-08-31"), 1),
        ("month", D("2026-09-01"), D("2026-11-01"), 1),
        ("day", D("2026-11-29"), D("2026-11-30"), -1),
    ]


def test_an_empty_window_has_no_slices():
    assert window_slices(D("2026-03-02"), D("2026-03-01"), today=D("2026-11-28")) == []


# --- figures on a hand-built dataset -----------------------------------------------------------------------
@pytest.fixture
def people(world):
    customer = f.ProgramFactory(tenant=world.a, kind=ProgramKind.CUSTOMER)
    partner = f.ProgramFactory(tenant=world.a, kind=ProgramKind.PARTNER)
    c1, c2, c3 = (f.ParticipantFactory(program=customer) for _ in range(3))
    p1 = f.ParticipantFactory(program=partner)
    rows = [  # (participant, day, channel, referrals, clicks)
        (c1, "2026-01-31", "email", 1, 0),
        (c1, "2026-02-15", "email", 2, 0),
        (c1, "2026-02-20", "email", 0, 9),  # clicks only: never a referrer
        (c1, "2026-03-01", "social", 1, 0),
        (c2, "2026-01-01", "email", 7, 0),
        (c2, "2026-01-15", "email", 3, 0),
        (c2, "2026-04-03", "email", 1, 0),
        (c2, "2026-04-04", "email", 5, 0),
        (c3, "2026-01-01", "email", 2, 0),
        (p1, "2026-02-10", "email", 4, 0),
        (p1, "2026-03-31", "email", 1, 0),
    ]
    for participant, day, channel, referrals, clicks in rows:
        DailyRollup.objects.create(
            tenant=world.a,
            day=D(day),
            program=participant.program,
            participant=participant,
            channel=channel,
            kind=participant.program.kind,
            currency="USD",
            referrals=referrals,
            clicks=clicks,
        )
    # The other tenant refers a lot in every window: never counted for tenant a.
    other = f.ParticipantFactory(program=f.ProgramFactory(tenant=world.b, kind=ProgramKind.CUSTOMER))
    for day in ("2026-01-01", "2026-01-31", "2026-02-15", "2026-03-31", "2026-04-03"):
        DailyRollup.objects.create(
            tenant=world.b, day=D(day), program=other.program, participant=other, channel="email",
            kind="customer", currency="USD", referrals=50,
        )  # fmt: skip
    rollups_rebuild_monthly(tenant_id=world.a.pk)
    rollups_rebuild_monthly(tenant_id=world.b.pk)
    return {"c1": c1, "c2": c2, "c3": c3, "p1": p1}


def counts(world, start, end, **extra):
    found = _referrer_counts(world.a, Filters(start=D(start), end=D(end), currency="USD", **extra))
    found["top_counts"] = found["top_counts"][: max(1, round(found["referrers"] * 0.1))] if found["referrers"] else []
    return found


def test_the_monthly_table_holds_the_daily_referrals_summed_per_participant_month_and_channel(world, people):
    c1 = people["c1"]
    DailyRollup.objects.create(
        tenant=world.a, day=D("2026-02-16"), program=c1.program, participant=c1, channel="social",
        kind="customer", currency="USD", referrals=3,
    )  # fmt: skip
    rollups_rebuild_monthly(tenant_id=world.a.pk)
    feb = {
        r.channel: r.referrals
        for r in MonthlyReferrals.objects.for_tenant(world.a).filter(participant=c1, month=D("2026-02-01"))
    }
    assert feb == {"email": 2, "social": 3, "": 5}
    DailyRollup.objects.for_tenant(world.a).filter(participant=c1, day=D("2026-02-16")).delete()
    rollups_rebuild_monthly(tenant_id=world.a.pk)  # the social row goes, the all-channels row is 2 again
    rows = {(r.participant_id, r.month, r.channel): r.referrals for r in MonthlyReferrals.objects.for_tenant(world.a)}
    c1, c2, c3, p1 = (people[key].pk for key in ("c1", "c2", "c3", "p1"))
    per_channel = {
        (c1, D("2026-01-01"), "email"): 1,
        (c1, D("2026-02-01"), "email"): 2,
        (c1, D("2026-03-01"), "social"): 1,
        (c2, D("2026-01-01"), "email"): 10,
        (c2, D("2026-04-01"), "email"): 6,
        (c3, D("2026-01-01"), "email"): 2,
        (p1, D("2026-02-01"), "email"): 4,
        (p1, D("2026-03-01"), "email"): 1,
    }
    # Each participant-month has one channel here, so the all-channels rows ('') repeat the figures.
    assert rows == per_channel | {(participant, month, ""): n for (participant, month, _), n in per_channel.items()}


def test_partial_months_at_both_ends(world, people):
    # 2026-01-30 .. 2026-04-03: c1 1+2+1 = 4, c2 1 (Apr 3; not Jan 1/15, not Apr 4), p1 4+1 = 5; c3 none.
    # 90 days to the end: 2026-01-05 .. 2026-04-03: c1, c2 (Jan 15), p1. Top 10 %: max(1, round(0.3)) = 1 → 5.
    assert counts(world, "2026-01-30", "2026-04-03") == {
        "referring_customers": 2,
        "active_90d": 3,
        "referrers": 3,
        "referrals": 10,
        "top_counts": [5],
    }
    activity = referrer_activity(world.a, Filters(start=D("2026-01-30"), end=D("2026-04-03"), currency="USD"))
    assert activity == {"active_90d": 3, "referrers": 3, "top10_share": 5 / 10 * 100}


def test_a_month_minus_its_first_day_does_not_count_a_referrer_of_that_day_only(world, people):
    # 2026-01-02 .. 2026-01-31 (the January month minus Jan 1): c1 1, c2 3 (not the 7 of Jan 1), c3 0 (Jan 1 only).
    # 90 days to the end: 2025-11-03 .. 2026-01-31: c1, c2, c3.
    assert counts(world, "2026-01-02", "2026-01-31") == {
        "referring_customers": 2,
        "active_90d": 3,
        "referrers": 2,
        "referrals": 4,
        "top_counts": [3],
    }


def test_a_whole_month(world, people):
    # March: c1 1 (social), p1 1. 90 days to Mar 31: 2026-01-01 .. 03-31: c1, c2, c3, p1.
    assert counts(world, "2026-03-01", "2026-03-31") == {
        "referring_customers": 1,
        "active_90d": 4,
        "referrers": 2,
        "referrals": 2,
        "top_counts": [1],
    }


def test_a_period_within_one_month_and_a_kind(world, people):
    # Feb 11-20: c1 2 (Feb 15); p1's Feb 10 is outside. 90 days to Feb 20: 2025-11-23 .. 2026-02-20: all four.
    assert counts(world, "2026-02-11", "2026-02-20") == {
        "referring_customers": 1,
        "active_90d": 4,
        "referrers": 1,
        "referrals": 2,
        "top_counts": [2],
    }
    # Partners only: nobody referred in the period (share "—"), p1 in the 90 days; referring customers ignore
    # the kind.
    assert counts(world, "2026-02-11", "2026-02-20", kind="partner") == {
        "referring_customers": 1,
        "active_90d": 1,
        "referrers": 0,
        "referrals": 0,
        "top_counts": [],
    }
    activity = referrer_activity(
        world.a, Filters(start=D("2026-02-11"), end=D("2026-02-20"), currency="USD", kind="partner")
    )
    assert activity == {"active_90d": 1, "referrers": 0, "top10_share": None}


def test_a_channel_and_a_program(world, people):
    assert counts(world, "2026-01-30", "2026-04-03", channel="social") == {
        "referring_customers": 1,
        "active_90d": 1,
        "referrers": 1,
        "referrals": 1,
        "top_counts": [1],
    }
    partner_program = people["p1"].program_id
    assert counts(world, "2026-01-30", "2026-04-03", program_id=partner_program) == {
        "referring_customers": 0,
        "active_90d": 1,
        "referrers": 1,
        "referrals": 5,
        "top_counts": [5],
    }


def test_an_empty_period(world, people):
    assert counts(world, "2025-06-01", "2025-06-30") == {
        "referring_customers": 0,
        "active_90d": 0,
        "referrers": 0,
        "referrals": 0,
        "top_counts": [],
    }


def test_random_windows_equal_the_plain_per_day_sums(world, people):
    """Any window: the sliced figures equal sums over the daily rows alone (computed here in Python)."""
    rng = random.Random(10)
    for _ in range(80):
        participant = people[rng.choice(["c1", "c2", "c3", "p1"])]
        DailyRollup.objects.update_or_create(
            tenant=world.a,
            day=D("2025-12-01") + timedelta(days=rng.randint(0, 240)),
            program=participant.program,
            participant=participant,
            channel=rng.choice(["email", "social"]),
            defaults={"kind": participant.program.kind, "currency": "USD", "referrals": rng.randint(0, 3)},
        )
    rollups_rebuild_monthly(tenant_id=world.a.pk)
    daily = [
        (r.participant_id, r.day, r.kind, r.referrals)
        for r in DailyRollup.objects.for_tenant(world.a).filter(referrals__gt=0)
    ]

    def plain(start, end, kind):
        recent = end - timedelta(days=89)
        per, customers, active = {}, set(), set()
        for participant, day, row_kind, referrals in daily:
            kind_ok = not kind or row_kind == kind
            if start <= day <= end and kind_ok:
                per[participant] = per.get(participant, 0) + referrals
            if start <= day <= end and row_kind == "customer":
                customers.add(participant)
            if recent <= day <= end and kind_ok:
                active.add(participant)
        ranked = sorted(per.values(), reverse=True)
        return {
            "referring_customers": len(customers),
            "active_90d": len(active),
            "referrers": len(ranked),
            "referrals": sum(ranked),
            "top_counts": ranked[: max(1, round(len(ranked) * 0.1))] if ranked else [],
        }

    for _ in range(40):
        start = D("2025-12-01") + timedelta(days=rng.randint(0, 150))
        end = start + timedelta(days=rng.choice([0, 1, 6, 27, 29, 30, 45, 89, 120]))
        kind = rng.choice(["", "customer", "partner"])
        assert counts(world, start.isoformat(), end.isoformat(), kind=kind) == plain(start, end, kind), (start, end)
