"""Reward evaluation through the real pipeline: conversion API → attribution → evaluation task → rewards
and ledger entries, for every rule kind; multi-touch splits; caps, tiers and partner tiers."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from programs.models import ParticipantStatus
from programs.services import participant_tier_set
from referral_platform.tenancy.actors import system_actor
from referrals.attribution import exact_shares, split_amount
from referrals.models import Attribution
from rewards.evaluation import period_bounds, reward_evaluate, split_by_share
from rewards.ledger import participant_balances, unbalanced_transactions
from rewards.models import BeneficiarySide, LedgerTransaction, Reward, RewardEvaluation, RewardKind
from tests import factories as f

from .pipeline import Pipeline, program_with_rules, referrer, rules_doc

pytestmark = pytest.mark.django_db


@pytest.fixture
def pipe(world, django_capture_on_commit_callbacks):
    return Pipeline(world, django_capture_on_commit_callbacks)


def _rewards(**filters):
    return list(Reward.objects.filter(**filters).order_by("pk"))


def test_a_flat_conversion_reward_is_granted_through_the_whole_pipeline(world, pipe):
    # Given a program paying 50.00 per new customer, and Dana's referral signed up with her code
    program = program_with_rules(world.a, rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}]))
    dana, link = referrer(program, "Dana Whitfield")
    referral = pipe.sign_up(email="cto@orbit.example", customer="cus_orbit", code=link.code, company="Orbit Labs")

    # When the customer's first payment arrives through the API
    event = pipe.pay("pay_orbit_1", customer="cus_orbit", amount=49_900)

    # Then Dana has one pending reward of 50.00, accrued in the ledger, explained
    [reward] = _rewards(participant=dana)
    assert (reward.amount_minor, reward.kind, reward.status) == (5_000, RewardKind.CASH, "pending")
    assert (reward.conversion_event_id, reward.referral_id) == (event.pk, referral.pk)
    assert reward.slot_key == f"ref:{referral.pk}:referrer:{dana.pk}:default:0:conversion"
    assert reward.source_key == f"{reward.slot_key}#1"
    assert reward.explanation_text.startswith("Rule version 1, referrer rule 1 (flat per conversion): Flat 50.00 USD")
    assert reward.explanation["share"] == "1.000000" and reward.explanation["rule_version"] == 1
    accrual = LedgerTransaction.objects.get(reward=reward)
    assert accrual.kind == "accrual" and accrual.idempotency_key == f"reward:{reward.pk}:accrual"
    assert participant_balances(world.a, participant=dana, currency="USD")["pending"] == 5_000
    evaluation = RewardEvaluation.objects.get(conversion_event=event)
    assert evaluation.status == "done" and evaluation.rewards_created == 1
    assert unbalanced_transactions(world.a) == []


def test_the_hold_counts_from_the_payment_that_earned_the_reward(world, pipe):
    program = program_with_rules(
        world.a, rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}]), hold_days=30
    )
    _dana, link = referrer(program, "Dana Whitfield")
    pipe.sign_up(email="cto@orbit.example", customer="cus_orbit", code=link.code, at=timezone.now() - timedelta(days=9))
    paid_at = timezone.now() - timedelta(days=8)

    event = pipe.pay("pay_orbit_1", customer="cus_orbit", amount=49_900, at=paid_at)

    [reward] = _rewards(conversion_event=event)
    assert reward.hold_until == event.occurred_at + timedelta(days=30)
    assert reward.converted_at == event.occurred_at


def _three_touch_journey(world, pipe, rules, model="position_based"):
    """Priya, Marco and Nina's links clicked by one visitor (oldest first), then a sign-up and a payment."""
    program = program_with_rules(world.a, rules, attribution_model=model)
    now = timezone.now()
    people = []
    for days_ago, name in ((10, "Priya Sharma"), (6, "Marco Rossi"), (3, "Nina Petrova")):
        person, link = referrer(program, name)
        f.ClickFactory(link=link, visitor_id="v-quanta", occurred_at=now - timedelta(days=days_ago))
        people.append(person)
    pipe.sign_up(email="ops@quanta.example", customer="cus_quanta", visitor="v-quanta", at=now - timedelta(days=2))
    return program, people


def test_a_referrers_reward_is_the_rule_amount_times_their_attribution_share(world, pipe):
    # Given 10 % of revenue and a position-based journey over three partners (40 / 20 / 40)
    _program, (priya, marco, nina) = _three_touch_journey(
        world, pipe, rules_doc(referrer=[{"kind": "percent_of_revenue", "percent_bp": 1_000}])
    )

    # When the customer pays 1,200.00
    event = pipe.pay("pay_quanta_1", customer="cus_quanta", amount=120_000)

    # Then 120.00 is split 48 / 24 / 48 and each reward says how
    amounts = {r.participant_id: r.amount_minor for r in _rewards(conversion_event=event)}
    assert amounts == {priya.pk: 4_800, marco.pk: 2_400, nina.pk: 4_800}
    assert sum(amounts.values()) == 12_000
    priya_reward = Reward.objects.get(participant=priya)
    assert priya_reward.explanation_text.endswith(
        "10 % of 1,200.00 USD = 120.00 USD \N{MULTIPLICATION SIGN} 40 % share = 48.00 USD"
    )
    assert priya_reward.explanation["share"] == "0.400000"
    assert priya_reward.explanation["attribution"] == Attribution.objects.get(participant=priya).pk


def test_multi_touch_parts_sum_exactly_to_the_rule_amount(world, pipe):
    # Given 100.01 per conversion and a linear split over three partners (1/3 each, not exact in cents)
    _program, people = _three_touch_journey(
        world, pipe, rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 10_001}]), model="linear"
    )

    event = pipe.pay("pay_quanta_1", customer="cus_quanta", amount=50_000)

    rewards = _rewards(conversion_event=event)
    shares = sorted(Attribution.objects.filter(conversion_event=event).values_list("share", flat=True))
    assert shares == [Decimal("0.333333"), Decimal("0.333333"), Decimal("0.333334")]
    assert sum(r.amount_minor for r in rewards) == 10_001
    assert sorted(r.amount_minor for r in rewards) == [3_333, 3_334, 3_334]
    assert {r.participant_id for r in rewards} == {p.pk for p in people}


@given(
    weights=st.lists(st.integers(min_value=1, max_value=1_000), min_size=1, max_size=12),
    amount=st.integers(min_value=0, max_value=10**9),
)
def test_split_by_share_of_one_amount_is_exact_and_matches_the_attribution_split(weights, amount):
    from fractions import Fraction

    shares = exact_shares([Fraction(w) for w in weights])
    parts = split_by_share([amount] * len(shares), shares)
    assert sum(parts) == amount
    assert parts == split_amount(amount, shares)
    assert all(abs(part - amount * share) < 1 for part, share in zip(parts, shares, strict=True))


def test_an_item_reward_cannot_be_split_and_goes_to_the_largest_share(world, pipe):
    _program, (_priya, _marco, nina) = _three_touch_journey(
        world, pipe, rules_doc(referrer=[{"kind": "gift", "gift": "Hoodie", "value_minor": 3_500, "on": "conversion"}])
    )

    event = pipe.pay("pay_quanta_1", customer="cus_quanta", amount=120_000)

    [reward] = _rewards(conversion_event=event)
    assert reward.participant_id == nina.pk  # 40 % ties with Priya; the later touch wins, as in attribution
    assert (reward.kind, reward.description, reward.amount_minor) == (RewardKind.MANUAL, "Gift: Hoodie", 3_500)


def test_the_referred_company_gets_its_reward_once_and_unsplit(world, pipe):
    _program, _people = _three_touch_journey(
        world,
        pipe,
        rules_doc(
            referrer=[{"kind": "percent_of_revenue", "percent_bp": 1_000}],
            referred=[{"kind": "account_credit", "amount_minor": 2_000, "per_seat": True, "max_seats": 50}],
        ),
    )

    event = pipe.pay("pay_quanta_1", customer="cus_quanta", amount=120_000, seats=3)

    [referred] = _rewards(conversion_event=event, beneficiary_side=BeneficiarySide.REFERRED)
    assert (referred.kind, referred.amount_minor) == (RewardKind.CREDIT, 6_000)
    assert referred.participant.external_id == "cus_quanta" and referred.participant.source == "referred"
    assert referred.participant.status == ParticipantStatus.ACTIVE
    assert "20.00 USD account credit \N{MULTIPLICATION SIGN} 3 seats = 60.00 USD" in referred.explanation_text
    assert len(_rewards(conversion_event=event, beneficiary_side=BeneficiarySide.REFERRER)) == 3


def test_lead_rewards_pay_on_the_qualified_event(world, pipe):
    program = program_with_rules(world.a, rules_doc(referrer=[{"kind": "flat_per_lead", "amount_minor": 2_500}]))
    marco, link = referrer(program, "Marco Rossi")
    pipe.sign_up(email="it@brightpath.example", customer="cus_bright", code=link.code)

    event = pipe.event("q_bright", "qualified", customer="cus_bright")

    [reward] = _rewards(participant=marco)
    assert (reward.amount_minor, reward.conversion_event_id) == (2_500, event.pk)
    assert reward.explanation["event_kind"] == "qualified"
    assert not _rewards(participant=marco, conversion_event__kind="payment")


@pytest.mark.parametrize(
    ("seats", "expected", "words"),
    [(3, 3_000, "3 seats = 30.00 USD"), (8, 5_000, "5 seats (seats capped at 5 of 8) = 50.00 USD")],
    ids=["three-seats", "capped-at-five"],
)
def test_per_seat_rewards_multiply_by_the_seats_bought(world, pipe, seats, expected, words):
    program = program_with_rules(
        world.a,
        rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 1_000, "per_seat": True, "max_seats": 5}]),
    )
    dana, link = referrer(program, "Dana Whitfield")
    pipe.sign_up(email="cto@orbit.example", customer="cus_orbit", code=link.code)

    pipe.pay("pay_orbit_1", customer="cus_orbit", amount=49_900, seats=seats)

    [reward] = _rewards(participant=dana)
    assert reward.amount_minor == expected and words in reward.explanation_text


def test_recurring_share_pays_each_invoice_inside_the_period_only(world, pipe):
    # Given 20 % of every payment for 2 months, counted from the first payment
    program = program_with_rules(
        world.a, rules_doc(referrer=[{"kind": "recurring_percent", "percent_bp": 2_000, "months": 2}])
    )
    priya, link = referrer(program, "Priya Sharma")
    start = timezone.now() - timedelta(days=80)
    pipe.sign_up(email="ops@quanta.example", customer="cus_quanta", code=link.code, at=start - timedelta(days=1))

    # When invoices are paid in months 1, 2 and 3
    first = pipe.pay("inv_1", customer="cus_quanta", amount=10_000, at=start)
    second = pipe.pay("inv_2", customer="cus_quanta", amount=12_000, at=start + timedelta(days=31))
    third = pipe.pay("inv_3", customer="cus_quanta", amount=12_000, at=start + timedelta(days=62))

    # Then the first two earn a reward each, the third (after the period) nothing
    assert [r.amount_minor for r in _rewards(participant=priya)] == [2_000, 2_400]
    assert "(payment in month 2 of 2)" in Reward.objects.get(conversion_event=second).explanation_text
    assert not Reward.objects.filter(conversion_event=third).exists()
    assert RewardEvaluation.objects.get(conversion_event=third).status == "done"
    assert Reward.objects.get(conversion_event=first).explanation["event_kind"] == "payment"


def _two_conversions(world, pipe, rules):
    program = program_with_rules(world.a, rules)
    dana, link = referrer(program, "Dana Whitfield")
    for index, company in enumerate(("orbit", "quanta"), start=1):
        pipe.sign_up(email=f"cto@{company}.example", customer=f"cus_{company}", code=link.code, company=company.title())
        pipe.pay(
            f"pay_{company}",
            customer=f"cus_{company}",
            amount=10_000,
            at=timezone.now() - timedelta(minutes=10 - index),
        )
    return dana


def test_tiers_count_the_referrers_rewarded_referrals(world, pipe):
    tiers = [{"min_referrals": 1, "amount_minor": 5_000}, {"min_referrals": 2, "amount_minor": 7_500}]

    dana = _two_conversions(world, pipe, rules_doc(referrer=[{"kind": "tiered", "tiers": tiers}]))

    first, second = _rewards(participant=dana)
    assert (first.amount_minor, second.amount_minor) == (5_000, 7_500)
    assert first.explanation["previous_successful_referrals"] == 0
    assert second.explanation["previous_successful_referrals"] == 1
    assert "2nd successful referral this year: tier from 2 referrals pays 75.00 USD" in second.explanation_text


def test_the_period_cap_counts_rewards_already_granted_and_spares_the_referred_side(world, pipe):
    rules = rules_doc(
        referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}],
        referred=[{"kind": "account_credit", "amount_minor": 1_000}],
        caps={"referrer_rewarded_referrals": {"max": 1, "period": "year"}},
    )

    dana = _two_conversions(world, pipe, rules)

    assert [r.amount_minor for r in _rewards(participant=dana)] == [5_000]
    second_event = Reward.objects.filter(beneficiary_side="referred").order_by("pk").last().conversion_event
    evaluation = RewardEvaluation.objects.get(conversion_event=second_event)
    assert any("Referrer cap reached: 1 referrals already rewarded this year" in note for note in evaluation.notes)
    assert Reward.objects.filter(beneficiary_side="referred").count() == 2


def test_a_partner_tier_listed_in_the_rules_overrides_the_default_referrer_rule(world, pipe):
    rules = rules_doc(
        referrer=[{"kind": "percent_of_revenue", "percent_bp": 1_000}],
        partner_tiers={"gold": {"referrer": [{"kind": "percent_of_revenue", "percent_bp": 3_000}]}},
    )
    program = program_with_rules(world.a, rules)
    gold, gold_link = referrer(program, "Gold Partner")
    participant_tier_set(participant=gold, tier="Gold", actor=system_actor(world.a))
    plain, plain_link = referrer(program, "Plain Partner")
    pipe.sign_up(email="a@alpha.example", customer="cus_alpha", code=gold_link.code, company="Alpha")
    pipe.sign_up(email="b@beta.example", customer="cus_beta", code=plain_link.code, company="Beta")

    pipe.pay("pay_alpha", customer="cus_alpha", amount=100_000)
    pipe.pay("pay_beta", customer="cus_beta", amount=100_000)

    [gold_reward] = _rewards(participant=gold)
    [plain_reward] = _rewards(participant=plain)
    assert (gold_reward.amount_minor, plain_reward.amount_minor) == (30_000, 10_000)
    assert gold_reward.explanation["tier"] == "gold" and "partner tier 'gold' rule 1" in gold_reward.explanation_text
    assert gold_reward.slot_key.endswith(":gold:0:conversion") and plain_reward.slot_key.endswith(
        ":default:0:conversion"
    )


def test_a_participant_who_is_not_active_gets_no_reward(world, pipe):
    program = program_with_rules(world.a, rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}]))
    dana, link = referrer(program, "Dana Whitfield")
    pipe.sign_up(email="cto@orbit.example", customer="cus_orbit", code=link.code)
    dana.status = ParticipantStatus.REMOVED
    dana.save(update_fields=["status"])

    event = pipe.pay("pay_orbit_1", customer="cus_orbit", amount=49_900)

    assert not Reward.objects.exists()
    notes = RewardEvaluation.objects.get(conversion_event=event).notes
    assert any("Dana Whitfield was removed from the program: no reward." in note for note in notes)


def test_evaluating_again_creates_nothing_new(world, pipe):
    program = program_with_rules(world.a, rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}]))
    _dana, link = referrer(program, "Dana Whitfield")
    pipe.sign_up(email="cto@orbit.example", customer="cus_orbit", code=link.code)
    event = pipe.pay("pay_orbit_1", customer="cus_orbit", amount=49_900)
    before = (Reward.objects.count(), LedgerTransaction.objects.count())

    again = reward_evaluate(event_id=event.pk)
    from rewards.tasks import evaluate_conversion

    evaluate_conversion.run(event.pk)

    # Each evaluation settles the referral again from its events: nothing new is created or posted.
    assert again.status == "done" and again.rewards_created == 1
    assert (Reward.objects.count(), LedgerTransaction.objects.count()) == before


def test_period_bounds_are_calendar_periods_in_utc():
    from datetime import UTC, datetime

    moment = datetime(2026, 11, 26, 2, 37, tzinfo=UTC)
    assert period_bounds(moment, "month") == (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    assert period_bounds(moment, "quarter") == (datetime(2026, 10, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert period_bounds(moment, "year") == (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    december = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert period_bounds(december, "month")[1] == datetime(2027, 1, 1, tzinfo=UTC)
