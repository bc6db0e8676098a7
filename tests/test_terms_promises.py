"""What the terms say is what is paid (issue 7, item 1).

One row per sentence the terms renderer (programs/terms.py) can write. Each row builds a program with its
rules document through the API, asserts that the rendered terms (``GET /api/v1/programs/<id>/terms``)
contain the sentence in the expected section, then plays the events the sentence describes through the
public surfaces (tests/driver.py) and checks that the rewards are exactly what the sentence says: how much,
to whom, how many. The semantics are those of /work/wt/issue7-spec.md.

``test_every_sentence_the_renderer_writes_has_a_row`` renders programs using every rule kind on both sides,
every ``on``, every attribution model, cancellation policy, cap and eligibility shape, and fails when a
sentence (compared by its shape: amounts, numbers and names stripped) has no row here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from programs.models import AttributionModel
from programs.rules import ALLOWED_ON, CANCELLATION_POLICIES, RULE_KINDS
from programs.services import participant_tier_set, program_pause
from referral_platform.tenancy.actors import system_actor
from referral_platform.tenancy.models import AuditEvent
from rewards.ledger import participant_balances
from rewards.models import Reward
from tests import factories as f
from tests.driver import Driver, Person, at, rules_doc

pytestmark = pytest.mark.django_db

PAYMENT = 100_000  # 1,000.00 USD


@pytest.fixture
def drive(world, django_capture_on_commit_callbacks, client):
    return Driver(world, django_capture_on_commit_callbacks, client=client)


# --- small steps shared by the rows ----------------------------------------------------------------
def dana(drive: Driver, program) -> Person:
    return drive.enrol(program, "Dana Whitfield", company="Northwind Traders", email="dana@northwind.example")


def refer(drive: Driver, person: Person, company: str, *, when: datetime, **extra) -> int:
    """``cto@<company>.example`` (customer ``cus_<company>``) signs up with the person's referral code."""
    signed = drive.sign_up(
        email=f"cto@{company}.example", customer=f"cus_{company}", code=person.code, when=when, **extra
    )
    assert signed["referral"] is not None and signed["referral"]["referrer"] == person.id, signed
    return signed["referral"]["id"]


def sign_up_event(drive: Driver, person: Person, company: str, *, when: datetime) -> dict:
    """The tenant's product reports the sign-up as a ``sign_up`` conversion event carrying the code."""
    return drive.event(
        f"signup_{company}",
        "sign_up",
        customer=f"cus_{company}",
        email=f"cto@{company}.example",
        referral_code=person.code,
        when=when,
    )


def referred_items(drive: Driver, referral_id: int) -> list[tuple[str, int, str]]:
    """(kind, net amount, description) of the referred company's live rewards."""
    return [(r["kind"], r["net_minor"], r["description"]) for r in drive.referred_rewards(referral_id)]


def coupon(reward_id: int) -> tuple[int | None, int | None]:
    reward = Reward.objects.get(pk=reward_id)
    return reward.coupon_percent_off, reward.coupon_duration_months


def rejection_reason(referral_id: int) -> str:
    row = AuditEvent.objects.filter(object_id=str(referral_id), to_state="rejected").order_by("pk").last()
    return row.reason if row else ""


# --- what you earn ---------------------------------------------------------------------------------
def play_referrer_flat_per_lead_qualified(drive, program):
    # Given Dana's referral signed up with her code
    person = dana(drive, program)
    refer(drive, person, "orbit", when=drive.days_ago(5))
    # When it is reported qualified (the delivery repeated), then it pays
    drive.event("qualified_orbit", "qualified", customer="cus_orbit", when=drive.days_ago(4))
    drive.event("qualified_orbit", "qualified", customer="cus_orbit", when=drive.days_ago(4))
    drive.pay("pay_orbit", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(2))
    # Then Dana earns 25.00 once, for the qualified lead
    assert drive.earned(person) == [("qualified_orbit", 2_500)]


def play_referrer_flat_per_lead_sign_up(drive, program):
    person = dana(drive, program)
    sign_up_event(drive, person, "orbit", when=drive.days_ago(4))
    drive.pay("pay_orbit", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(2))
    assert drive.earned(person) == [("signup_orbit", 2_500)]


def play_referrer_flat_per_conversion(drive, program):
    person = dana(drive, program)
    refer(drive, person, "orbit", when=drive.days_ago(10))
    drive.pay("pay_orbit_1", customer="cus_orbit", amount=49_900, when=drive.days_ago(5))
    drive.pay("pay_orbit_2", customer="cus_orbit", amount=49_900, when=drive.days_ago(2))
    assert drive.earned(person) == [("pay_orbit_1", 5_000)]


def play_referrer_flat_per_conversion_a_year_later(drive, program):
    # Given a company that signed up with Dana's code 400 days ago (the cookie window is 30 days)
    person = dana(drive, program)
    refer(drive, person, "orbit", when=drive.days_ago(400))
    # When it becomes a paying customer a year later
    drive.pay("pay_orbit_1", customer="cus_orbit", amount=49_900, when=drive.days_ago(20))
    # Then Dana is paid for it
    assert drive.earned(person) == [("pay_orbit_1", 5_000)]


def play_referrer_per_seat(drive, program):
    person = dana(drive, program)
    refer(drive, person, "orbit", when=drive.days_ago(5))
    drive.pay("pay_orbit", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(2), seats=12)
    assert drive.earned(person) == [("pay_orbit", 12_000)]


def play_referrer_per_seat_up_to_max(drive, program):
    person = dana(drive, program)
    refer(drive, person, "orbit", when=drive.days_ago(5))
    drive.pay("pay_orbit", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(2), seats=8)
    assert drive.earned(person) == [("pay_orbit", 5_000)]


def play_referrer_per_seat_at_most(drive, program):
    person = dana(drive, program)
    refer(drive, person, "orbit", when=drive.days_ago(5))
    drive.pay("pay_orbit", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(2), seats=5)  # 150.00
    assert drive.earned(person) == [("pay_orbit", 10_000)]


def play_referrer_percent_of_first_payment(drive, program):
    person = dana(drive, program)
    refer(drive, person, "orbit", when=drive.days_ago(12))
    drive.pay("pay_orbit_1", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(10))
    drive.pay("pay_orbit_2", customer="cus_orbit", amount=3 * PAYMENT, when=drive.days_ago(5))
    assert drive.earned(person) == [("pay_orbit_1", 10_000)]


def play_referrer_percent_first_payment_reported_late(drive, program):
    # Given Dana's referral; its second payment (3,000.00, 5 days ago) is reported before its first
    person = dana(drive, program)
    refer(drive, person, "orbit", when=drive.days_ago(12))
    drive.pay("pay_orbit_2", customer="cus_orbit", amount=3 * PAYMENT, when=drive.days_ago(5))
    # When the first payment (1,000.00, 10 days ago) arrives
    drive.pay("pay_orbit_1", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(10))
    # Then what stands is 10 % of the first payment, once
    assert drive.earned(person) == [("pay_orbit_1", 10_000)]


def play_referrer_percent_at_most(drive, program):
    person = dana(drive, program)
    refer(drive, person, "orbit", when=drive.days_ago(5))
    drive.pay("pay_orbit", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(2))
    assert drive.earned(person) == [("pay_orbit", 5_000)]


def play_referrer_recurring_first_twelve_months(drive, program):
    # Given a company that signed up with Dana's code and first paid on 2024-01-10
    person = dana(drive, program)
    refer(drive, person, "orbit", when=at(2024, 1, 5))
    # When it pays in its 1st, 2nd and 12th month, and in its 13th
    for name, when, amount in (
        ("pay_m1", at(2024, 1, 10), 10_000),
        ("pay_m2", at(2024, 2, 10), 20_000),
        ("pay_m12", at(2024, 12, 9), 30_000),
        ("pay_m13", at(2025, 1, 10), 40_000),
    ):
        drive.pay(name, customer="cus_orbit", amount=amount, when=when)
    # Then each payment of the first 12 months earns 10 %, the 13th month's nothing
    assert drive.earned(person) == [("pay_m1", 1_000), ("pay_m2", 2_000), ("pay_m12", 3_000)]


def play_referrer_recurring_at_most(drive, program):
    person = dana(drive, program)
    refer(drive, person, "orbit", when=drive.days_ago(12))
    drive.pay("pay_1", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(11))
    drive.pay("pay_2", customer="cus_orbit", amount=20_000, when=drive.days_ago(2))
    assert drive.earned(person) == [("pay_1", 5_000), ("pay_2", 2_000)]


def _three_customers_in_march(drive, person, *, seats=(1, 1, 1)):
    for day, company, count in zip((1, 2, 3), ("orbit", "quanta", "helix"), seats, strict=True):
        refer(drive, person, company, when=at(2024, 3, day))
        drive.pay(f"pay_{company}", customer=f"cus_{company}", amount=PAYMENT, when=at(2024, 3, day + 4), seats=count)


def play_referrer_tiered_amounts(drive, program):
    person = dana(drive, program)
    _three_customers_in_march(drive, person)
    assert drive.earned(person) == [("pay_orbit", 5_000), ("pay_quanta", 7_500), ("pay_helix", 7_500)]


def play_referrer_tiered_out_of_order(drive, program):
    # Given two of Dana's referrals; the one that converted later (March 8) is reported first
    person = dana(drive, program)
    refer(drive, person, "orbit", when=at(2024, 3, 1))
    refer(drive, person, "quanta", when=at(2024, 3, 2))
    drive.pay("pay_quanta", customer="cus_quanta", amount=PAYMENT, when=at(2024, 3, 8))
    # When the earlier conversion (March 5) arrives
    drive.pay("pay_orbit", customer="cus_orbit", amount=PAYMENT, when=at(2024, 3, 5))
    # Then the earlier one is the 1st successful referral and the later one the 2nd
    assert sorted(drive.earned(person)) == [("pay_orbit", 5_000), ("pay_quanta", 7_500)]


def play_referrer_tiered_counted_per_year(drive, program):
    person = dana(drive, program)
    refer(drive, person, "orbit", when=at(2024, 12, 15))
    drive.pay("pay_orbit", customer="cus_orbit", amount=PAYMENT, when=at(2024, 12, 20))
    refer(drive, person, "quanta", when=at(2025, 1, 2))
    drive.pay("pay_quanta", customer="cus_quanta", amount=PAYMENT, when=at(2025, 1, 5))
    assert drive.earned(person) == [("pay_orbit", 5_000), ("pay_quanta", 5_000)]


def play_referrer_tiered_percents(drive, program):
    person = dana(drive, program)
    _three_customers_in_march(drive, person)
    assert drive.earned(person) == [("pay_orbit", 10_000), ("pay_quanta", 10_000), ("pay_helix", 20_000)]


def play_referrer_tiered_per_seat(drive, program):
    person = dana(drive, program)
    _three_customers_in_march(drive, person, seats=(3, 2, 1))
    assert drive.earned(person) == [("pay_orbit", 3_000), ("pay_quanta", 3_000), ("pay_helix", 1_500)]


def _one_item_for_dana(drive, program, trigger: str) -> dict:
    """Dana's referral signs up, is qualified and pays; returns Dana's one reward (and checks it is one)."""
    person = dana(drive, program)
    if trigger == "sign_up":
        sign_up_event(drive, person, "orbit", when=drive.days_ago(5))
    else:
        refer(drive, person, "orbit", when=drive.days_ago(5))
    drive.event("qualified_orbit", "qualified", customer="cus_orbit", when=drive.days_ago(4))
    drive.pay("pay_orbit", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(2))
    [reward] = [r for r in drive.rewards(participant=person.id) if r["status"] in ("pending", "approved", "paid")]
    expected_event = {"sign_up": "signup_orbit", "qualified": "qualified_orbit", "conversion": "pay_orbit"}[trigger]
    assert drive.external_id(reward["conversion_event"]) == expected_event
    assert (reward["beneficiary_side"], reward["currency"]) == ("referrer", "USD")
    return reward


def play_referrer_free_months(drive, program):
    reward = _one_item_for_dana(drive, program, "conversion")
    assert (reward["kind"], reward["description"]) == ("coupon", "2 free months")
    assert coupon(reward["id"]) == (100, 2)


def play_referrer_renewal_discount(drive, program):
    reward = _one_item_for_dana(drive, program, "conversion")
    assert (reward["kind"], coupon(reward["id"])[0]) == ("coupon", 20)


def play_referrer_account_credit_on_sign_up(drive, program):
    reward = _one_item_for_dana(drive, program, "sign_up")
    assert (reward["kind"], reward["net_minor"]) == ("credit", 3_000)


def play_referrer_feature_unlock_on_qualified(drive, program):
    reward = _one_item_for_dana(drive, program, "qualified")
    assert (reward["kind"], reward["description"]) == ("manual", "SSO unlocked for 6 months")


def play_referrer_feature_unlock_without_duration(drive, program):
    reward = _one_item_for_dana(drive, program, "conversion")
    assert (reward["kind"], reward["description"]) == ("manual", "Priority support unlocked")


def play_referrer_gift_on_qualified(drive, program):
    reward = _one_item_for_dana(drive, program, "qualified")
    assert (reward["kind"], reward["description"], reward["net_minor"]) == ("manual", "Gift: a company hoodie", 3_500)


def _gold_silver_and_plain(drive, program):
    gold = drive.enrol(program, "Gia Gold", company="Gold Resellers")
    silver = drive.enrol(program, "Sam Silver", company="Silver Agency")
    plain = dana(drive, program)
    participant_tier_set(participant=gold.participant, tier="gold", actor=system_actor(drive.tenant))
    participant_tier_set(participant=silver.participant, tier="silver", actor=system_actor(drive.tenant))
    for person, company in ((gold, "orbit"), (silver, "quanta"), (plain, "helix")):
        refer(drive, person, company, when=drive.days_ago(5))
        drive.pay(f"pay_{company}", customer=f"cus_{company}", amount=PAYMENT, when=drive.days_ago(2))
    return gold, silver, plain


def play_partner_tier_rules_replace_the_default(drive, program):
    gold, _silver, plain = _gold_silver_and_plain(drive, program)
    assert drive.earned(gold) == [("pay_orbit", 30_000)]
    assert drive.earned(plain) == [("pay_helix", 10_000)]


def play_partner_tier_without_rewards(drive, program):
    _gold, silver, plain = _gold_silver_and_plain(drive, program)
    assert drive.earned(silver) == []
    assert drive.earned(plain) == [("pay_helix", 10_000)]


# --- what the company you refer gets ---------------------------------------------------------------
def _referred_company_journey(drive, program, *, trigger: str, payments=((5, PAYMENT), (2, PAYMENT)), seats=1):
    person = dana(drive, program)
    if trigger == "sign_up":
        referral_id = sign_up_event(drive, person, "orbit", when=drive.days_ago(8))["referral"]
    else:
        referral_id = refer(drive, person, "orbit", when=drive.days_ago(8))
    drive.event("qualified_orbit", "qualified", customer="cus_orbit", when=drive.days_ago(7))
    for index, (days, amount) in enumerate(payments, start=1):
        drive.pay(f"pay_{index}", customer="cus_orbit", amount=amount, when=drive.days_ago(days), seats=seats)
    assert drive.earned(person) == []  # these rows grant the referred company only
    rewards = drive.referred_rewards(referral_id)
    for reward in rewards:
        participant = reward["participant"]
        assert drive.get(f"/api/v1/participants/{participant}")["external_id"] == "cus_orbit"
    return [(drive.external_id(r["conversion_event"]), r["kind"], r["net_minor"], r["description"]) for r in rewards]


def play_referred_flat_per_lead_qualified(drive, program):
    assert _referred_company_journey(drive, program, trigger="qualified") == [("qualified_orbit", "cash", 2_500, "")]


def play_referred_flat_per_lead_sign_up(drive, program):
    assert _referred_company_journey(drive, program, trigger="sign_up") == [("signup_orbit", "cash", 2_500, "")]


def play_referred_flat_per_conversion(drive, program):
    assert _referred_company_journey(drive, program, trigger="conversion") == [("pay_1", "cash", 5_000, "")]


def play_referred_percent_at_most(drive, program):
    assert _referred_company_journey(drive, program, trigger="conversion") == [("pay_1", "cash", 5_000, "")]


def play_referred_recurring(drive, program):
    person = dana(drive, program)
    referral_id = refer(drive, person, "orbit", when=at(2024, 1, 5))
    for name, when, amount in (
        ("pay_m1", at(2024, 1, 10), 10_000),
        ("pay_m2", at(2024, 2, 10), 20_000),
        ("pay_m13", at(2025, 1, 10), 30_000),
    ):
        drive.pay(name, customer="cus_orbit", amount=amount, when=when)
    rewards = drive.referred_rewards(referral_id)
    assert [(drive.external_id(r["conversion_event"]), r["net_minor"]) for r in rewards] == [
        ("pay_m1", 1_000),
        ("pay_m2", 2_000),
    ]


def play_referred_tiered(drive, program):
    person = dana(drive, program)
    orbit = refer(drive, person, "orbit", when=at(2024, 3, 1))
    drive.pay("pay_orbit", customer="cus_orbit", amount=PAYMENT, when=at(2024, 3, 5))
    quanta = refer(drive, person, "quanta", when=at(2024, 3, 2))
    drive.pay("pay_quanta", customer="cus_quanta", amount=PAYMENT, when=at(2024, 3, 6))
    assert referred_items(drive, orbit) == [("cash", 5_000, "")]
    assert referred_items(drive, quanta) == [("cash", 7_500, "")]


def play_referred_free_month_on_sign_up(drive, program):
    [(event, kind, _amount, description)] = _referred_company_journey(drive, program, trigger="sign_up")
    assert (event, kind, description) == ("signup_orbit", "coupon", "1 free month")
    [reward] = Reward.objects.filter(beneficiary_side="referred")
    assert coupon(reward.pk) == (100, 1)


def play_referred_renewal_discount(drive, program):
    [(event, kind, _amount, _description)] = _referred_company_journey(drive, program, trigger="conversion")
    assert (event, kind) == ("pay_1", "coupon")
    [reward] = Reward.objects.filter(beneficiary_side="referred")
    assert coupon(reward.pk)[0] == 20


def play_referred_account_credit_per_seat(drive, program):
    rewards = _referred_company_journey(drive, program, trigger="conversion", seats=60)
    assert rewards == [("pay_1", "credit", 50_000, "")]


def play_referred_feature_unlock(drive, program):
    rewards = _referred_company_journey(drive, program, trigger="conversion")
    assert rewards == [("pay_1", "manual", 0, "SSO unlocked for 6 months")]


def play_referred_feature_unlock_on_sign_up(drive, program):
    rewards = _referred_company_journey(drive, program, trigger="sign_up")
    assert rewards == [("signup_orbit", "manual", 0, "Onboarding call unlocked")]


def play_referred_gift_on_qualified(drive, program):
    rewards = _referred_company_journey(drive, program, trigger="qualified")
    assert rewards == [("qualified_orbit", "manual", 0, "Gift: a welcome hamper")]


# --- what counts -----------------------------------------------------------------------------------
def play_click_inside_the_window(drive, program):
    person = dana(drive, program)
    drive.click(person, visitor="v-orbit", when=drive.days_ago(40))
    signed = drive.sign_up(email="cto@orbit.example", customer="cus_orbit", visitor="v-orbit", when=drive.days_ago(11))
    drive.pay("pay_orbit", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(10))
    assert signed["status_code"] == 201 and signed["referral"]["referrer"] == person.id
    assert drive.earned(person) == [("pay_orbit", 5_000)]


def play_click_outside_the_window(drive, program):
    person = dana(drive, program)
    drive.click(person, visitor="v-orbit", when=drive.days_ago(45))
    signed = drive.sign_up(email="cto@orbit.example", customer="cus_orbit", visitor="v-orbit", when=drive.days_ago(14))
    payment = drive.pay("pay_orbit", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(10))
    assert (signed["status_code"], signed["referral"]) == (200, None)
    assert payment["referral"] is None and drive.rewards() == []


def play_referral_code_without_a_click(drive, program):
    person = dana(drive, program)
    signed = drive.sign_up(email="cto@orbit.example", customer="cus_orbit", code=person.code, when=drive.days_ago(3))
    drive.pay("pay_orbit", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(2))
    assert signed["status_code"] == 201 and signed["referral"]["referrer"] == person.id
    assert drive.earned(person) == [("pay_orbit", 5_000)]


def _visitor_journey(drive, program, clicks_days_ago, *, sign_up_days_ago=2, amount=3_000_000, after=()):
    people = [
        drive.enrol(program, name, company=f"{name.split()[1]} Partners")
        for name in ("Priya Sharma", "Marco Rossi", "Nina Petrova", "Ola Berg")[: len(clicks_days_ago) + len(after)]
    ]
    for person, days in zip(people, clicks_days_ago, strict=False):
        drive.click(person, visitor="v-quanta", when=drive.days_ago(days))
    signed = drive.sign_up(
        email="ops@quanta.example", customer="cus_quanta", visitor="v-quanta", when=drive.days_ago(sign_up_days_ago)
    )
    for person, days in zip(people[len(clicks_days_ago) :], after, strict=True):
        drive.click(person, visitor="v-quanta", when=drive.days_ago(days))
    drive.pay("pay_quanta", customer="cus_quanta", amount=amount, when=drive.days_ago(1))
    return signed["referral"], people, [drive.earned(person) for person in people]


def play_first_touch(drive, program):
    referral, (priya, _marco), earned = _visitor_journey(drive, program, (10, 5))
    assert referral["referrer"] == priya.id
    assert earned == [[("pay_quanta", 5_000)], []]


def play_last_touch(drive, program):
    # Priya and Marco's links before the sign-up, Nina's after it
    referral, (_priya, marco, _nina), earned = _visitor_journey(drive, program, (10, 6), sign_up_days_ago=5, after=(3,))
    assert referral["referrer"] == marco.id
    assert earned == [[], [("pay_quanta", 5_000)], []]


def play_linear(drive, program):
    _referral, _people, earned = _visitor_journey(drive, program, (10, 6, 3))
    assert earned == [[("pay_quanta", 1_000_000)]] * 3


def play_time_decay(drive, program):
    # Clicks 14 and 7 days before the sign-up: weights 1/4 and 1/2 with a 7-day half-life
    _referral, _people, earned = _visitor_journey(drive, program, (16, 9))
    assert earned == [[("pay_quanta", 1_000_000)], [("pay_quanta", 2_000_000)]]


def play_position_based(drive, program):
    _referral, _people, earned = _visitor_journey(drive, program, (12, 9, 6, 3))
    assert earned == [[("pay_quanta", amount)] for amount in (1_200_000, 300_000, 300_000, 1_200_000)]


def _outside_and_inside(drive, program, outside: dict, inside: list[dict], way: str = "signups") -> tuple[int, Person]:
    """One referral with facts outside the rules' profile and others inside (or unknown); all pay.
    Returns the rejected referral's id."""
    person = dana(drive, program)
    companies = ("orbit", "quanta", "helix")
    ids = []
    for company, facts in zip(companies, [outside, *inside], strict=False):
        customer, email = f"cus_{company}", f"cto@{company}.example"
        if way == "signups":
            ids.append(refer(drive, person, company, when=drive.days_ago(5), **facts))
            drive.pay(f"pay_{company}", customer=customer, amount=PAYMENT, when=drive.days_ago(2))
        elif way == "leads":
            lead = drive.lead(
                email=email, company=company.title(), participant=person.id, when=drive.days_ago(5), **facts
            )
            ids.append(lead["id"])
            drive.pay(f"pay_{company}", customer=customer, email=email, amount=PAYMENT, when=drive.days_ago(2))
        else:  # a payment is the first the platform hears of the company
            payment = drive.pay(
                f"pay_{company}",
                customer=customer,
                email=email,
                referral_code=person.code,
                amount=PAYMENT,
                when=drive.days_ago(2),
                **facts,
            )
            ids.append(payment["referral"])
    assert drive.referral(ids[0])["status"] == "rejected"
    assert [drive.referral(pk)["status"] for pk in ids[1:]] == ["converted"] * (len(ids) - 1)
    assert drive.earned(person) == [(f"pay_{company}", 5_000) for company in companies[1 : len(ids)]]
    return ids[0], person


def play_industries(drive, program):
    rejected, _person = _outside_and_inside(drive, program, {"industry": "Retail"}, [{"industry": "software"}, {}])
    assert "industry 'retail' is not one of: fintech, software" in rejection_reason(rejected).lower()


def play_company_size_range(drive, program):
    _outside_and_inside(drive, program, {"employees": 10}, [{"employees": 500}, {"employees": 2_000}])


def play_company_size_at_least(drive, program):
    _outside_and_inside(drive, program, {"employees": 19}, [{"employees": 20}, {}], way="leads")


def play_company_size_at_most(drive, program):
    _outside_and_inside(drive, program, {"employees": 2_001}, [{"employees": 2_000}], way="conversions")


def play_revenue_range(drive, program):
    _outside_and_inside(
        drive, program, {"annual_revenue_minor": 5_000_000_001}, [{"annual_revenue_minor": 100_000_000}]
    )


def play_revenue_at_least(drive, program):
    _outside_and_inside(
        drive, program, {"annual_revenue_minor": 99_999_999}, [{"annual_revenue_minor": 100_000_000}], way="leads"
    )


def play_revenue_at_most(drive, program):
    _outside_and_inside(drive, program, {"annual_revenue_minor": 5_000_000_001}, [{}], way="conversions")


def play_qualification_checklist(drive, program):
    # Given two partner leads: one with budget, authority and need answered, one with only a budget
    person = dana(drive, program)
    complete = drive.lead(
        email="cto@orbit.example",
        company="Orbit",
        participant=person.id,
        budget="40k approved",
        authority="CTO signs",
        need="Replacing spreadsheets",
        when=drive.days_ago(5),
    )
    partial = drive.lead(
        email="cto@quanta.example", company="Quanta", participant=person.id, budget="tbd", when=drive.days_ago(5)
    )
    # When a marketer qualifies both in the admin
    drive.client.force_login(drive.world.marketer_a)
    with drive.capture(execute=True):
        page = drive.client.post(
            "/admin/referrals/referral/",
            {"action": "mark_qualified", "_selected_action": [complete["id"], partial["id"]]},
            follow=True,
        ).content.decode()
    # Then only the lead whose checklist is confirmed is qualified
    assert drive.referral(complete["id"])["status"] == "qualified"
    assert drive.referral(partial["id"])["status"] == "signed_up"
    assert "missing authority, need" in page


def play_self_referral(drive, program):
    person = dana(drive, program)
    signed = drive.sign_up(
        email="dana+trial@northwind.example", customer="cus_dana", code=person.code, when=drive.days_ago(5)
    )
    drive.pay("pay_dana", customer="cus_dana", amount=PAYMENT, when=drive.days_ago(2))
    assert drive.get(f"/api/v1/referrals/{signed['referral']['id']}/fraud")["review_status"] == "flagged"
    assert drive.rewards() == []


def play_own_company(drive, program):
    person = dana(drive, program)
    signed = drive.sign_up(
        email="colleague@northwind.example",
        customer="cus_nw",
        code=person.code,
        company="Northwind Traders Ltd",
        when=drive.days_ago(5),
    )
    drive.pay("pay_nw", customer="cus_nw", amount=PAYMENT, when=drive.days_ago(2))
    assert drive.get(f"/api/v1/referrals/{signed['referral']['id']}/fraud")["review_status"] == "flagged"
    assert drive.rewards() == []


def play_company_already_referred(drive, program):
    # Given Priya referred Orbit (cto@orbit.example signed up with her code)
    priya = drive.enrol(program, "Priya Sharma", company="Sharma Consulting")
    marco = drive.enrol(program, "Marco Rossi", company="Rossi Partners")
    refer(drive, priya, "orbit", when=drive.days_ago(6))
    # When the same person signs up again with Marco's code, and a colleague at Orbit uses it too
    again = drive.sign_up(email="cto@orbit.example", customer="cus_orbit", code=marco.code, when=drive.days_ago(5))
    drive.sign_up(
        email="ops@orbit.example", customer="cus_orbit_ops", code=marco.code, company="Orbit", when=drive.days_ago(4)
    )
    # And both pay
    drive.pay("pay_orbit", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(2))
    drive.pay("pay_orbit_ops", customer="cus_orbit_ops", amount=PAYMENT, when=drive.days_ago(2))
    # Then Orbit stays Priya's referral and Marco earns nothing for it
    assert again["referral"]["referrer"] == priya.id
    assert drive.earned(priya) == [("pay_orbit", 5_000)]
    assert drive.earned(marco) == []


# --- when you are paid -----------------------------------------------------------------------------
def play_hold(drive, program):
    # Given two of Dana's customers, paying 40 and 10 days ago (30-day hold)
    person = dana(drive, program)
    refer(drive, person, "orbit", when=drive.days_ago(41))
    refer(drive, person, "quanta", when=drive.days_ago(11))
    drive.pay("pay_orbit", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(40))
    drive.pay("pay_quanta", customer="cus_quanta", amount=PAYMENT, when=drive.days_ago(10))
    rewards = {drive.external_id(r["conversion_event"]): r for r in drive.rewards(participant=person.id)}
    for name, days in (("pay_orbit", 40), ("pay_quanta", 10)):
        held_until = datetime.fromisoformat(rewards[name]["hold_until"].replace("Z", "+00:00"))
        assert held_until == drive.days_ago(days) + timedelta(days=30)
    # When the quanta payment is refunded during its hold, and the holds are released
    drive.refund("refund_quanta", customer="cus_quanta", amount=PAYMENT, when=drive.days_ago(5), refunds="pay_quanta")
    drive.release_holds()
    # Then the reward whose hold ended is approved for payout, the refunded one never is
    statuses = {drive.external_id(r["conversion_event"]): r["status"] for r in drive.rewards(participant=person.id)}
    assert statuses == {"pay_orbit": "approved", "pay_quanta": "reversed"}


def play_no_hold(drive, program):
    from rewards.payouts import payout_prepare

    person = dana(drive, program)
    refer(drive, person, "orbit", when=drive.days_ago(3))
    drive.pay("pay_orbit", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(1))
    drive.release_holds()
    [reward] = drive.rewards(participant=person.id)
    assert reward["status"] == "approved"
    f.ParticipantStripeProfileFactory(participant=person.participant)
    [payout] = payout_prepare(participant=person.participant)
    assert list(payout.rewards.values_list("pk", flat=True)) == [reward["id"]]


def play_auto_approve_limit(drive, program):
    person = dana(drive, program)
    refer(drive, person, "orbit", when=drive.days_ago(3))
    refer(drive, person, "quanta", when=drive.days_ago(3))
    drive.pay("pay_orbit", customer="cus_orbit", amount=50_000, when=drive.days_ago(1))
    drive.pay("pay_quanta", customer="cus_quanta", amount=50_001, when=drive.days_ago(1))
    drive.release_holds()
    statuses = {drive.external_id(r["conversion_event"]): (r["net_minor"], r["status"]) for r in drive.rewards()}
    assert statuses == {"pay_orbit": (50_000, "approved"), "pay_quanta": (50_001, "pending")}


def play_every_reward_reviewed(drive, program):
    person = dana(drive, program)
    refer(drive, person, "orbit", when=drive.days_ago(3))
    drive.pay("pay_orbit", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(1))
    drive.release_holds()
    assert [(r["net_minor"], r["status"]) for r in drive.rewards()] == [(100, "pending")]


def play_currency_and_forms(drive, program):
    person = dana(drive, program)
    referral_id = refer(drive, person, "orbit", when=drive.days_ago(3))
    drive.pay("pay_orbit", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(1))
    assert sorted((r["kind"], r["currency"], r["net_minor"]) for r in drive.rewards(participant=person.id)) == [
        ("cash", "USD", 5_000),
        ("credit", "USD", 1_000),
    ]
    assert sorted((kind, description) for kind, _net, description in referred_items(drive, referral_id)) == [
        ("coupon", "1 free month"),
        ("coupon", "20 % off the next renewal"),
    ]


# --- limits ----------------------------------------------------------------------------------------
def play_rewarded_referrals_cap(drive, program):
    person = dana(drive, program)
    _three_customers_in_march(drive, person)
    assert drive.earned(person) == [("pay_orbit", 5_000), ("pay_quanta", 5_000)]


def play_rewarded_referrals_cap_out_of_order(drive, program):
    person = dana(drive, program)
    refer(drive, person, "orbit", when=at(2024, 3, 1))
    refer(drive, person, "quanta", when=at(2024, 3, 2))
    drive.pay("pay_quanta", customer="cus_quanta", amount=PAYMENT, when=at(2024, 3, 8))
    drive.pay("pay_orbit", customer="cus_orbit", amount=PAYMENT, when=at(2024, 3, 5))
    assert drive.earned(person) == [("pay_orbit", 5_000)]


def play_discount_cap(drive, program):
    person = dana(drive, program)
    referral_id = refer(drive, person, "orbit", when=drive.days_ago(3))
    drive.pay("pay_orbit", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(1))
    discounts = referred_items(drive, referral_id)
    assert [kind for kind, _net, _description in discounts] == ["coupon", "coupon"]
    assert sum(net for _kind, net, _description in discounts) == PAYMENT // 2


# --- if the customer cancels or is refunded --------------------------------------------------------
def _paid_then_pending(drive, program, *, converted_days_ago: int):
    """Dana's customer pays twice (10 days apart); the first payment's rewards are paid out, the second's held."""
    person = dana(drive, program)
    refer(drive, person, "orbit", when=drive.days_ago(converted_days_ago + 1))
    drive.pay("pay_1", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(converted_days_ago))
    drive.pay_out(person)
    drive.pay("pay_2", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(converted_days_ago - 10))
    assert drive.earned(person) == [("pay_1", 5_000), ("pay_1", 10_000), ("pay_2", 10_000)]
    assert {r["status"] for r in drive.rewards(participant=person.id)} == {"paid", "pending"}
    return person


def _receivable(drive, person) -> int:
    return participant_balances(drive.tenant, participant=person.participant, currency="USD")["receivable"]


def play_clawback_inside(drive, program):
    person = _paid_then_pending(drive, program, converted_days_ago=30)
    drive.cancel("cancel_orbit", customer="cus_orbit", when=drive.days_ago(10))  # 20 days after converting
    assert drive.earned(person) == []
    assert _receivable(drive, person) == 15_000  # what was paid out comes off the next payout


def play_clawback_outside(drive, program):
    person = _paid_then_pending(drive, program, converted_days_ago=100)
    drive.cancel("cancel_orbit", customer="cus_orbit", when=drive.days_ago(30))  # 70 days after converting
    assert drive.earned(person) == [("pay_1", 5_000), ("pay_1", 10_000), ("pay_2", 10_000)]
    assert _receivable(drive, person) == 0


def play_forfeit_unpaid_inside(drive, program):
    person = _paid_then_pending(drive, program, converted_days_ago=30)
    drive.cancel("cancel_orbit", customer="cus_orbit", when=drive.days_ago(10))
    assert drive.earned(person) == [("pay_1", 5_000), ("pay_1", 10_000)]
    assert _receivable(drive, person) == 0


def play_forfeit_unpaid_outside(drive, program):
    person = _paid_then_pending(drive, program, converted_days_ago=100)
    drive.cancel("cancel_orbit", customer="cus_orbit", when=drive.days_ago(30))
    assert drive.earned(person) == [("pay_1", 5_000), ("pay_1", 10_000), ("pay_2", 10_000)]


def play_keep(drive, program):
    person = _paid_then_pending(drive, program, converted_days_ago=30)
    drive.cancel("cancel_orbit", customer="cus_orbit", when=drive.days_ago(10))
    assert drive.earned(person) == [("pay_1", 5_000), ("pay_1", 10_000), ("pay_2", 10_000)]


def play_refund_in_proportion(drive, program):
    # Given two payments: the first one's rewards paid out, the second one's held
    person = _paid_then_pending(drive, program, converted_days_ago=30)
    # When a quarter of the second payment is refunded, then half of the first
    drive.refund("refund_2a", customer="cus_orbit", amount=PAYMENT // 4, when=drive.days_ago(9), refunds="pay_2")
    assert drive.earned(person) == [("pay_1", 5_000), ("pay_1", 10_000), ("pay_2", 7_500)]
    drive.refund("refund_1", customer="cus_orbit", amount=PAYMENT // 2, when=drive.days_ago(8), refunds="pay_1")
    assert drive.earned(person) == [("pay_1", 2_500), ("pay_1", 5_000), ("pay_2", 7_500)]
    assert _receivable(drive, person) == 7_500  # paid out, deducted from the next payout
    # When the rest of the second payment is refunded
    drive.refund("refund_2b", customer="cus_orbit", amount=3 * PAYMENT // 4, when=drive.days_ago(7), refunds="pay_2")
    # Then its rewards are withdrawn; the first payment's stay as they were
    assert drive.earned(person) == [("pay_1", 2_500), ("pay_1", 5_000)]


def play_refund_under_keep(drive, program):
    person = dana(drive, program)
    refer(drive, person, "orbit", when=drive.days_ago(5))
    drive.pay("pay_1", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(4))
    drive.refund("refund_1", customer="cus_orbit", amount=40_000, when=drive.days_ago(3), refunds="pay_1")
    assert drive.earned(person) == [("pay_1", 3_000), ("pay_1", 6_000)]


def _recurring_then_cancelled(drive, program, *, cancellation_reported_last: bool):
    person = dana(drive, program)
    refer(drive, person, "orbit", when=drive.days_ago(20))
    drive.pay("pay_1", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(19))
    drive.pay("pay_2", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(12))
    if not cancellation_reported_last:
        drive.cancel("cancel_orbit", customer="cus_orbit", when=drive.days_ago(8))
    drive.pay("pay_3", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(2))
    if cancellation_reported_last:
        drive.cancel("cancel_orbit", customer="cus_orbit", when=drive.days_ago(8))
    assert drive.earned(person) == [("pay_1", 10_000), ("pay_2", 10_000)]
    assert drive.referral(drive.get(f"/api/v1/conversions/{drive.event_ids['pay_3']}")["referral"])["status"] == (
        "churned"
    )


def play_recurring_stops(drive, program):
    _recurring_then_cancelled(drive, program, cancellation_reported_last=False)


def play_recurring_stops_cancellation_reported_late(drive, program):
    _recurring_then_cancelled(drive, program, cancellation_reported_last=True)


# --- changes to these terms ------------------------------------------------------------------------
def play_terms_of_when_made(drive, program):
    person = dana(drive, program)
    refer(drive, person, "orbit", when=drive.days_ago(5))
    assert drive.change_rules(program, rules_doc(referrer=[FLAT_75])) == 2
    refer(drive, person, "quanta", when=drive.days_ago(4))
    drive.pay("pay_orbit", customer="cus_orbit", amount=PAYMENT, when=drive.days_ago(2))
    drive.pay("pay_quanta", customer="cus_quanta", amount=PAYMENT, when=drive.days_ago(2))
    assert drive.earned(person) == [("pay_orbit", 5_000), ("pay_quanta", 7_500)]


def pause(drive, program):
    with drive.capture(execute=True):
        program_pause(program=program, actor=system_actor(drive.tenant), reason="test")


def play_paused(drive, program):
    person = dana(drive, program)
    refused = drive.sign_up(
        email="cto@orbit.example", customer="cus_orbit", code=person.code, when=drive.days_ago(1), expect=(400,)
    )
    assert "referral_code" in refused["error"]["fields"]
    assert drive.get("/api/v1/referrals")["count"] == 0


# --- the table -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Promise:
    section: str  # the terms section the sentence is in ("tier" for any partner tier; "notice")
    sentence: str
    rules: dict
    play: Callable[[Driver, object], None]
    settings: dict = field(default_factory=dict)
    setup: Callable[[Driver, object], None] | None = None


FLAT_50 = {"kind": "flat_per_conversion", "amount_minor": 5_000}
FLAT_75 = {"kind": "flat_per_conversion", "amount_minor": 7_500}
RECURRING_10 = {"kind": "recurring_percent", "percent_bp": 1_000, "months": 12}
TIERS_50_75 = [{"min_referrals": 1, "amount_minor": 5_000}, {"min_referrals": 2, "amount_minor": 7_500}]
TIERED_SENTENCE = (
    "A reward that grows with your successful referrals this year, paid when each becomes a paying customer "
    "(the 1st: 50.00 USD; from the 2nd on: 75.00 USD)."
)
ON_PAYING = "when a company you referred becomes a paying customer"
THEY_PAY = "when they become a paying customer"
COUNTS = "A referral counts when the company you refer signs up within 30 days of opening your referral link "
MANY = "If a company was referred by more than one participant, "
CLAWBACK_60 = (
    "If the referred company cancels within 60 days of becoming a customer, all rewards for it are withdrawn: rewards "
    "not yet paid out are cancelled, and rewards already paid out are deducted from your next payout."
)
FORFEIT_60 = (
    "If the referred company cancels within 60 days of becoming a customer, rewards for it that are not yet paid out "
    "are cancelled; rewards already paid out are yours to keep."
)
REFUNDS = (
    "If a payment is refunded, the rewards that payment earned are reduced in proportion to the amount refunded, and "
    "a full refund withdraws them (an amount already paid out is deducted from your next payout); rewards earned by "
    "other payments are not affected."
)
ELIGIBLE_FLAT = rules_doc(referrer=[FLAT_50])


def _eligibility(**profile) -> dict:
    return rules_doc(referrer=[FLAT_50], eligibility=profile)


def _cancelling(policy: str) -> dict:
    return rules_doc(referrer=[FLAT_50, RECURRING_10], cancellation={"policy": policy, "within_days": 60})


def _referrer(*rules, **extra) -> dict:
    return rules_doc(referrer=list(rules), **extra)


def _referred(*rules, **extra) -> dict:
    return rules_doc(referred=list(rules), **extra)


CASES: dict[str, Promise] = {
    # What you earn
    "referrer/flat-per-lead/qualified": Promise(
        "referrer",
        "25.00 USD when a company you referred becomes a qualified lead.",
        _referrer({"kind": "flat_per_lead", "amount_minor": 2_500}),
        play_referrer_flat_per_lead_qualified,
    ),
    "referrer/flat-per-lead/sign-up": Promise(
        "referrer",
        "25.00 USD when a company you referred signs up.",
        _referrer({"kind": "flat_per_lead", "amount_minor": 2_500, "on": "sign_up"}),
        play_referrer_flat_per_lead_sign_up,
    ),
    "referrer/flat-per-conversion": Promise(
        "referrer", f"50.00 USD {ON_PAYING}.", _referrer(FLAT_50), play_referrer_flat_per_conversion
    ),
    "referrer/flat-per-conversion/first-payment-a-year-after-sign-up": Promise(
        "referrer", f"50.00 USD {ON_PAYING}.", _referrer(FLAT_50), play_referrer_flat_per_conversion_a_year_later
    ),
    "referrer/flat-per-conversion/per-seat": Promise(
        "referrer",
        f"10.00 USD for every seat the referred company buys {ON_PAYING}.",
        _referrer({"kind": "flat_per_conversion", "amount_minor": 1_000, "per_seat": True}),
        play_referrer_per_seat,
    ),
    "referrer/flat-per-conversion/per-seat-up-to-max-seats": Promise(
        "referrer",
        f"10.00 USD for every seat the referred company buys (up to 5 seats) {ON_PAYING}.",
        _referrer({"kind": "flat_per_conversion", "amount_minor": 1_000, "per_seat": True, "max_seats": 5}),
        play_referrer_per_seat_up_to_max,
    ),
    "referrer/flat-per-conversion/at-most-each-time": Promise(
        "referrer",
        f"30.00 USD for every seat the referred company buys {ON_PAYING}, at most 100.00 USD each time.",
        _referrer({"kind": "flat_per_conversion", "amount_minor": 3_000, "per_seat": True, "max_amount_minor": 10_000}),
        play_referrer_per_seat_at_most,
    ),
    "referrer/percent-of-revenue": Promise(
        "referrer",
        f"10 % of the first payment {ON_PAYING}.",
        _referrer({"kind": "percent_of_revenue", "percent_bp": 1_000}),
        play_referrer_percent_of_first_payment,
    ),
    "referrer/percent-of-revenue/first-payment-reported-after-a-later-one": Promise(
        "referrer",
        f"10 % of the first payment {ON_PAYING}.",
        _referrer({"kind": "percent_of_revenue", "percent_bp": 1_000}),
        play_referrer_percent_first_payment_reported_late,
    ),
    "referrer/percent-of-revenue/at-most-each-time": Promise(
        "referrer",
        f"10 % of the first payment {ON_PAYING}, at most 50.00 USD each time.",
        _referrer({"kind": "percent_of_revenue", "percent_bp": 1_000, "max_amount_minor": 5_000}),
        play_referrer_percent_at_most,
    ),
    "referrer/recurring-percent": Promise(
        "referrer",
        "10 % of every payment the referred company makes in its first 12 months.",
        _referrer(RECURRING_10),
        play_referrer_recurring_first_twelve_months,
    ),
    "referrer/recurring-percent/at-most-each-time": Promise(
        "referrer",
        "10 % of every payment the referred company makes in its first 12 months, at most 50.00 USD each time.",
        _referrer({**RECURRING_10, "max_amount_minor": 5_000}),
        play_referrer_recurring_at_most,
    ),
    "referrer/tiered/amounts": Promise(
        "referrer", TIERED_SENTENCE, _referrer({"kind": "tiered", "tiers": TIERS_50_75}), play_referrer_tiered_amounts
    ),
    "referrer/tiered/conversions-reported-out-of-order": Promise(
        "referrer",
        TIERED_SENTENCE,
        _referrer({"kind": "tiered", "tiers": TIERS_50_75}),
        play_referrer_tiered_out_of_order,
    ),
    "referrer/tiered/counted-per-calendar-year": Promise(
        "referrer",
        TIERED_SENTENCE,
        _referrer({"kind": "tiered", "tiers": TIERS_50_75}),
        play_referrer_tiered_counted_per_year,
    ),
    "referrer/tiered/percents": Promise(
        "referrer",
        "A reward that grows with your successful referrals this year, paid when each becomes a paying customer "
        "(the 1st to the 2nd: 10 % of the first payment; from the 3rd on: 20 % of the first payment).",
        _referrer(
            {
                "kind": "tiered",
                "tiers": [{"min_referrals": 1, "percent_bp": 1_000}, {"min_referrals": 3, "percent_bp": 2_000}],
            }
        ),
        play_referrer_tiered_percents,
    ),
    "referrer/tiered/per-seat": Promise(
        "referrer",
        "A reward that grows with your successful referrals this year, paid when each becomes a paying customer "
        "(the 1st: 10.00 USD per seat; from the 2nd on: 15.00 USD per seat).",
        _referrer(
            {
                "kind": "tiered",
                "per_seat": True,
                "tiers": [{"min_referrals": 1, "amount_minor": 1_000}, {"min_referrals": 2, "amount_minor": 1_500}],
            }
        ),
        play_referrer_tiered_per_seat,
    ),
    "referrer/free-months": Promise(
        "referrer",
        f"2 free months of your subscription {ON_PAYING}.",
        _referrer({"kind": "free_months", "months": 2}),
        play_referrer_free_months,
    ),
    "referrer/renewal-discount": Promise(
        "referrer",
        f"20 % off your next renewal {ON_PAYING}.",
        _referrer({"kind": "renewal_discount", "percent_bp": 2_000}),
        play_referrer_renewal_discount,
    ),
    "referrer/account-credit/sign-up": Promise(
        "referrer",
        "30.00 USD account credit when a company you referred signs up.",
        _referrer({"kind": "account_credit", "amount_minor": 3_000, "on": "sign_up"}),
        play_referrer_account_credit_on_sign_up,
    ),
    "referrer/feature-unlock/qualified": Promise(
        "referrer",
        "SSO unlocked for 6 months when a company you referred becomes a qualified lead.",
        _referrer({"kind": "feature_unlock", "feature": "SSO", "months": 6, "on": "qualified"}),
        play_referrer_feature_unlock_on_qualified,
    ),
    "referrer/feature-unlock/without-duration": Promise(
        "referrer",
        f"Priority support unlocked {ON_PAYING}.",
        _referrer({"kind": "feature_unlock", "feature": "Priority support"}),
        play_referrer_feature_unlock_without_duration,
    ),
    "referrer/gift/qualified": Promise(
        "referrer",
        "A gift (a company hoodie) when a company you referred becomes a qualified lead.",
        _referrer({"kind": "gift", "gift": "a company hoodie", "value_minor": 3_500, "on": "qualified"}),
        play_referrer_gift_on_qualified,
    ),
    # What you earn as a partner of a tier
    "partner-tier/rules-instead-of-the-default": Promise(
        "tier",
        f"30 % of the first payment {ON_PAYING}.",
        _referrer(
            {"kind": "percent_of_revenue", "percent_bp": 1_000},
            partner_tiers={
                "gold": {"referrer": [{"kind": "percent_of_revenue", "percent_bp": 3_000}]},
                "silver": {"referrer": []},
            },
        ),
        play_partner_tier_rules_replace_the_default,
    ),
    "partner-tier/without-rewards": Promise(
        "tier",
        "No rewards for referrals in this tier.",
        _referrer(
            {"kind": "percent_of_revenue", "percent_bp": 1_000},
            partner_tiers={
                "gold": {"referrer": [{"kind": "percent_of_revenue", "percent_bp": 3_000}]},
                "silver": {"referrer": []},
            },
        ),
        play_partner_tier_without_rewards,
    ),
    # What the company you refer gets
    "referred/flat-per-lead/qualified": Promise(
        "referred",
        "25.00 USD when they are confirmed as a qualified lead.",
        _referred({"kind": "flat_per_lead", "amount_minor": 2_500}),
        play_referred_flat_per_lead_qualified,
    ),
    "referred/flat-per-lead/sign-up": Promise(
        "referred",
        "25.00 USD when they sign up.",
        _referred({"kind": "flat_per_lead", "amount_minor": 2_500, "on": "sign_up"}),
        play_referred_flat_per_lead_sign_up,
    ),
    "referred/flat-per-conversion": Promise(
        "referred", f"50.00 USD {THEY_PAY}.", _referred(FLAT_50), play_referred_flat_per_conversion
    ),
    "referred/percent-of-revenue/at-most-each-time": Promise(
        "referred",
        f"10 % of the first payment {THEY_PAY}, at most 50.00 USD each time.",
        _referred({"kind": "percent_of_revenue", "percent_bp": 1_000, "max_amount_minor": 5_000}),
        play_referred_percent_at_most,
    ),
    "referred/recurring-percent": Promise(
        "referred",
        "10 % of every payment the referred company makes in its first 12 months.",
        _referred(RECURRING_10),
        play_referred_recurring,
    ),
    "referred/tiered": Promise(
        "referred",
        TIERED_SENTENCE,
        rules_doc(
            referrer=[{"kind": "flat_per_conversion", "amount_minor": 1_000}],
            referred=[{"kind": "tiered", "tiers": TIERS_50_75}],
        ),
        play_referred_tiered,
    ),
    "referred/free-months/sign-up": Promise(
        "referred",
        "1 free month of their subscription when they sign up.",
        _referred({"kind": "free_months", "months": 1, "on": "sign_up"}),
        play_referred_free_month_on_sign_up,
    ),
    "referred/renewal-discount": Promise(
        "referred",
        f"20 % off their next renewal {THEY_PAY}.",
        _referred({"kind": "renewal_discount", "percent_bp": 2_000}),
        play_referred_renewal_discount,
    ),
    "referred/account-credit/per-seat-up-to-max-seats": Promise(
        "referred",
        f"10.00 USD account credit for every seat the referred company buys (up to 50 seats) {THEY_PAY}.",
        _referred({"kind": "account_credit", "amount_minor": 1_000, "per_seat": True, "max_seats": 50}),
        play_referred_account_credit_per_seat,
    ),
    "referred/feature-unlock": Promise(
        "referred",
        f"SSO unlocked for 6 months {THEY_PAY}.",
        _referred({"kind": "feature_unlock", "feature": "SSO", "months": 6}),
        play_referred_feature_unlock,
    ),
    "referred/feature-unlock/without-duration/sign-up": Promise(
        "referred",
        "Onboarding call unlocked when they sign up.",
        _referred({"kind": "feature_unlock", "feature": "Onboarding call", "on": "sign_up"}),
        play_referred_feature_unlock_on_sign_up,
    ),
    "referred/gift/qualified": Promise(
        "referred",
        "A gift (a welcome hamper) when they are confirmed as a qualified lead.",
        _referred({"kind": "gift", "gift": "a welcome hamper", "on": "qualified"}),
        play_referred_gift_on_qualified,
    ),
    # What counts
    "counts/cookie-window/click-inside": Promise(
        "counts", COUNTS + "(or with your referral code).", ELIGIBLE_FLAT, play_click_inside_the_window
    ),
    "counts/cookie-window/click-outside": Promise(
        "counts", COUNTS + "(or with your referral code).", ELIGIBLE_FLAT, play_click_outside_the_window
    ),
    "counts/cookie-window/by-code": Promise(
        "counts", COUNTS + "(or with your referral code).", ELIGIBLE_FLAT, play_referral_code_without_a_click
    ),
    "counts/attribution/first-touch": Promise(
        "counts",
        MANY + "the first participant whose link they used before signing up gets the credit.",
        ELIGIBLE_FLAT,
        play_first_touch,
        settings={"attribution_model": "first_touch"},
    ),
    "counts/attribution/last-touch": Promise(
        "counts",
        MANY + "the last participant whose link they used before signing up gets the credit.",
        ELIGIBLE_FLAT,
        play_last_touch,
        settings={"attribution_model": "last_touch"},
    ),
    "counts/attribution/linear": Promise(
        "counts",
        MANY + "the credit is split equally between everyone whose link they used before signing up.",
        _referrer({"kind": "percent_of_revenue", "percent_bp": 10_000}),
        play_linear,
        settings={"attribution_model": "linear"},
    ),
    "counts/attribution/time-decay": Promise(
        "counts",
        MANY + "the credit is split between everyone whose link they used before signing up, more for recent "
        "visits (a visit 7 days older counts half as much).",
        _referrer({"kind": "percent_of_revenue", "percent_bp": 10_000}),
        play_time_decay,
        settings={"attribution_model": "time_decay", "time_decay_half_life_days": 7},
    ),
    "counts/attribution/position-based": Promise(
        "counts",
        MANY + "the first and the last link they used before signing up get 40 % of the credit each, and the links "
        "in between share the other 20 % (two links: half each).",
        _referrer({"kind": "percent_of_revenue", "percent_bp": 10_000}),
        play_position_based,
        settings={"attribution_model": "position_based"},
    ),
    "counts/eligibility/industries": Promise(
        "counts",
        "The referred company must work in one of these industries: fintech, software.",
        _eligibility(industries=["Software", "fintech"]),
        play_industries,
    ),
    "counts/eligibility/company-size-range": Promise(
        "counts",
        "The referred company must have 20 to 2,000 employees.",
        _eligibility(company_size={"min": 20, "max": 2_000}),
        play_company_size_range,
    ),
    "counts/eligibility/company-size-at-least": Promise(
        "counts",
        "The referred company must have at least 20 employees.",
        _eligibility(company_size={"min": 20}),
        play_company_size_at_least,
    ),
    "counts/eligibility/company-size-at-most": Promise(
        "counts",
        "The referred company must have at most 2,000 employees.",
        _eligibility(company_size={"max": 2_000}),
        play_company_size_at_most,
    ),
    "counts/eligibility/revenue-range": Promise(
        "counts",
        "Its annual revenue must be between 1,000,000.00 USD and 50,000,000.00 USD.",
        _eligibility(annual_revenue_minor={"min": 100_000_000, "max": 5_000_000_000}),
        play_revenue_range,
    ),
    "counts/eligibility/revenue-at-least": Promise(
        "counts",
        "Its annual revenue must be at least 1,000,000.00 USD.",
        _eligibility(annual_revenue_minor={"min": 100_000_000}),
        play_revenue_at_least,
    ),
    "counts/eligibility/revenue-at-most": Promise(
        "counts",
        "Its annual revenue must be at most 50,000,000.00 USD.",
        _eligibility(annual_revenue_minor={"max": 5_000_000_000}),
        play_revenue_at_most,
    ),
    "counts/qualification-checklist": Promise(
        "counts",
        "A lead is qualified once the team has confirmed its budget, authority and need.",
        _referrer(
            {"kind": "flat_per_lead", "amount_minor": 2_500},
            qualification={"budget": True, "authority": True, "need": True, "timeline": False},
        ),
        play_qualification_checklist,
    ),
    "counts/not-yourself": Promise(
        "counts",
        "Referring yourself or your own company does not count, nor does a company someone already referred.",
        ELIGIBLE_FLAT,
        play_self_referral,
    ),
    "counts/not-your-own-company": Promise(
        "counts",
        "Referring yourself or your own company does not count, nor does a company someone already referred.",
        ELIGIBLE_FLAT,
        play_own_company,
    ),
    "counts/not-a-company-already-referred": Promise(
        "counts",
        "Referring yourself or your own company does not count, nor does a company someone already referred.",
        ELIGIBLE_FLAT,
        play_company_already_referred,
    ),
    # When you are paid
    "paid/hold": Promise(
        "paid",
        "Rewards are held for 30 days after the payment that earned them, so refunds can be settled, then paid out.",
        ELIGIBLE_FLAT,
        play_hold,
        settings={"hold_days": 30},
    ),
    "paid/no-hold": Promise("paid", "Rewards are paid out as soon as they are approved.", ELIGIBLE_FLAT, play_no_hold),
    "paid/auto-approve-limit": Promise(
        "paid",
        "Rewards up to 500.00 USD are approved automatically; larger ones are reviewed by the team first.",
        _referrer({"kind": "percent_of_revenue", "percent_bp": 10_000}),
        play_auto_approve_limit,
        settings={"auto_approve_limit_minor": 50_000},
    ),
    "paid/every-reward-reviewed": Promise(
        "paid",
        "Every reward is reviewed by the team before it is paid.",
        _referrer({"kind": "flat_per_conversion", "amount_minor": 100}),
        play_every_reward_reviewed,
        settings={"auto_approve_limit_minor": 0},
    ),
    "paid/currency-and-forms": Promise(
        "paid",
        "Cash rewards are paid in USD; credits, discounts and free months are applied to the account's next bills.",
        rules_doc(
            referrer=[FLAT_50, {"kind": "account_credit", "amount_minor": 1_000}],
            referred=[{"kind": "renewal_discount", "percent_bp": 2_000}, {"kind": "free_months", "months": 1}],
        ),
        play_currency_and_forms,
    ),
    # Limits
    "limits/rewarded-referrals-cap": Promise(
        "limits",
        "At most 2 referrals per referrer are rewarded each year.",
        _referrer(FLAT_50, caps={"referrer_rewarded_referrals": {"max": 2, "period": "year"}}),
        play_rewarded_referrals_cap,
    ),
    "limits/rewarded-referrals-cap/conversions-reported-out-of-order": Promise(
        "limits",
        "At most 1 referral per referrer is rewarded each year.",
        _referrer(FLAT_50, caps={"referrer_rewarded_referrals": {"max": 1, "period": "year"}}),
        play_rewarded_referrals_cap_out_of_order,
    ),
    "limits/discount-cap": Promise(
        "limits",
        "Discounts never take more than 50 % off one bill.",
        _referred(
            {"kind": "renewal_discount", "percent_bp": 4_000},
            {"kind": "renewal_discount", "percent_bp": 3_000},
            caps={"max_bill_discount_bp": 5_000},
        ),
        play_discount_cap,
    ),
    # If the customer cancels or is refunded
    "cancellation/clawback/inside-the-window": Promise(
        "cancellation", CLAWBACK_60, _cancelling("clawback"), play_clawback_inside
    ),
    "cancellation/clawback/outside-the-window": Promise(
        "cancellation", CLAWBACK_60, _cancelling("clawback"), play_clawback_outside
    ),
    "cancellation/forfeit-unpaid/inside-the-window": Promise(
        "cancellation", FORFEIT_60, _cancelling("forfeit_unpaid"), play_forfeit_unpaid_inside
    ),
    "cancellation/forfeit-unpaid/outside-the-window": Promise(
        "cancellation", FORFEIT_60, _cancelling("forfeit_unpaid"), play_forfeit_unpaid_outside
    ),
    "cancellation/keep": Promise(
        "cancellation",
        "Rewards you have earned are yours to keep, even if the referred company cancels later.",
        _cancelling("keep"),
        play_keep,
    ),
    "cancellation/refund-reduces-that-payments-rewards": Promise(
        "cancellation", REFUNDS, _cancelling("clawback"), play_refund_in_proportion
    ),
    "cancellation/refund-under-keep": Promise(
        "cancellation",
        REFUNDS,
        rules_doc(
            referrer=[FLAT_50, {"kind": "percent_of_revenue", "percent_bp": 1_000}], cancellation={"policy": "keep"}
        ),
        play_refund_under_keep,
    ),
    "cancellation/recurring-shares-stop": Promise(
        "cancellation",
        "Recurring shares stop when the referred company stops paying.",
        _referrer(RECURRING_10, cancellation={"policy": "keep"}),
        play_recurring_stops,
    ),
    "cancellation/recurring-shares-stop/cancellation-reported-after-a-later-payment": Promise(
        "cancellation",
        "Recurring shares stop when the referred company stops paying.",
        _referrer(RECURRING_10, cancellation={"policy": "keep"}),
        play_recurring_stops_cancellation_reported_late,
    ),
    # Changes to these terms
    "changes/referrals-keep-their-terms": Promise(
        "changes",
        "If these terms change, referrals you have already made keep the terms that were in effect when they were "
        "made.",
        ELIGIBLE_FLAT,
        play_terms_of_when_made,
    ),
    "notice/paused": Promise(
        "notice",
        "This program is paused: new referrals are not accepted right now.",
        ELIGIBLE_FLAT,
        play_paused,
        setup=pause,
    ),
}


def section_items(terms: dict, section: str) -> list[str]:
    if section == "notice":
        return [terms["notice"]]
    wanted = (lambda key: key.startswith("tier:")) if section == "tier" else (lambda key: key == section)
    return [item for s in terms["sections"] if wanted(s["key"]) for item in s["items"]]


@pytest.mark.parametrize("case_id", list(CASES))
def test_what_the_terms_say_is_what_is_paid(drive, case_id):
    promise = CASES[case_id]
    program = drive.program(promise.rules, **promise.settings)
    if promise.setup:
        promise.setup(drive, program)

    terms = drive.terms(program)

    assert promise.sentence in section_items(terms, promise.section), terms["sections"]
    promise.play(drive, program)


# --- the guard: every sentence the renderer writes has a row ---------------------------------------
_SUBSTITUTIONS = (
    (re.compile(r"\d[\d,]*(?:\.\d+)? [A-Z]{3}\b"), "<money>"),
    (re.compile(r"\d+(?:\.\d+)? %"), "<pct>"),
    (re.compile(r"\b\d+(?:st|nd|rd|th)\b"), "<nth>"),
    (re.compile(r"\b\d[\d,]*\b"), "<n>"),
    (re.compile(r"<n> (free month|day|month|referral)s\b"), r"<n> \1"),
    (re.compile(r"industries: [^.]+\."), "industries: <list>."),
    (re.compile(r"confirmed its [^.]+\."), "confirmed its <list>."),
    (re.compile(r"^A gift \([^)]*\)"), "A gift (<gift>)"),
    (re.compile(r"^.+? unlocked\b"), "<feature> unlocked"),
)
_WHEN = re.compile(r" (when (?:a company you referred|they) [^,.]+)")
_MODIFIERS = (
    " for every seat the referred company buys",
    " (up to <n> seats)",
    ", at most <money> each time",
)
_TIERS = re.compile(r" \(((?:the|from the) <nth>[^)]*)\)\.$")


def sentence_atoms(section: str, sentence: str) -> set[tuple]:
    """The template pieces a sentence is made of, with amounts, numbers, names and lists stripped: its
    main shape (per section), its "when …" phrase (per section), and the modifiers and tier spans it uses."""
    section = "tier" if section.startswith("tier:") else section
    shape = sentence
    for pattern, replacement in _SUBSTITUTIONS:
        shape = pattern.sub(replacement, shape)
    atoms: set[tuple] = set()
    for modifier in _MODIFIERS:
        if modifier in shape:
            atoms.add(("modifier", modifier))
            shape = shape.replace(modifier, "")
    tiers = _TIERS.search(shape)
    if tiers:
        atoms |= {("tier span", part) for part in tiers.group(1).split("; ")}
        shape = _TIERS.sub(" (<tiers>).", shape)
    when = _WHEN.search(shape) if section in ("referrer", "referred", "tier") else None
    if when:
        atoms.add(("when", section, when.group(1)))
        shape = _WHEN.sub(" <when>", shape)
    atoms.add(("sentence", section, shape))
    return atoms


RULE_EXAMPLES: dict[str, list[dict]] = {
    "flat_per_lead": [{"amount_minor": 2_500}],
    "flat_per_conversion": [
        {"amount_minor": 5_000},
        {"amount_minor": 1_000, "per_seat": True},
        {"amount_minor": 1_000, "per_seat": True, "max_seats": 5, "max_amount_minor": 4_000},
    ],
    "percent_of_revenue": [{"percent_bp": 1_000}, {"percent_bp": 1_000, "max_amount_minor": 5_000}],
    "recurring_percent": [{"percent_bp": 1_000, "months": 12}, {"percent_bp": 1_000, "months": 1}],
    "tiered": [
        {"tiers": TIERS_50_75},
        {"tiers": [{"min_referrals": 1, "percent_bp": 1_000}, {"min_referrals": 3, "percent_bp": 2_000}]},
        {"tiers": TIERS_50_75, "per_seat": True, "max_seats": 10, "max_amount_minor": 50_000},
    ],
    "free_months": [{"months": 2}, {"months": 1}],
    "renewal_discount": [{"percent_bp": 2_000}],
    "account_credit": [{"amount_minor": 3_000}, {"amount_minor": 1_000, "per_seat": True, "max_seats": 50}],
    "feature_unlock": [{"feature": "SSO", "months": 6}, {"feature": "Priority support"}],
    "gift": [{"gift": "a company hoodie"}, {"gift": "a welcome hamper", "value_minor": 2_000}],
}


def _every_rule() -> list[dict]:
    return [
        {"kind": kind, "on": on, **example}
        for kind in RULE_KINDS
        for example in RULE_EXAMPLES[kind]
        for on in ALLOWED_ON[kind]
    ]


def _guard_documents() -> list[tuple[dict, dict]]:
    """(rules, program settings) of programs that, together, make the renderer write every sentence it can."""
    rules = _every_rule()
    chunks = [rules[start : start + 10] for start in range(0, len(rules), 10)]
    documents = [(rules_doc(referrer=chunk, referred=chunk), {}) for chunk in chunks]
    documents[0][0]["partner_tiers"] = {
        "gold": {"referrer": [{"kind": "percent_of_revenue", "percent_bp": 3_000}]},
        "silver": {"referrer": []},
    }
    models = list(AttributionModel.values)
    policies = list(CANCELLATION_POLICIES)
    eligibility = [
        {"industries": ["software", "fintech"], "company_size": {"min": 20, "max": 2_000},
         "annual_revenue_minor": {"min": 100_000_000, "max": 5_000_000_000}},
        {"industries": ["software"], "company_size": {"min": 20}, "annual_revenue_minor": {"min": 100_000_000}},
        {"company_size": {"max": 2_000}, "annual_revenue_minor": {"max": 5_000_000_000}},
    ]  # fmt: skip
    qualification = [{"budget": True, "authority": True, "need": True}, {"budget": True}, {}]
    for index in range(max(len(models), len(policies), len(eligibility))):
        document = rules_doc(
            referrer=[FLAT_50, RECURRING_10] if index % 2 == 0 else [FLAT_50],
            caps={"referrer_rewarded_referrals": {"max": 1 + index, "period": "year"}} if index % 2 else {},
            eligibility=eligibility[index % len(eligibility)],
            qualification=qualification[index % len(qualification)],
            cancellation={"policy": policies[index % len(policies)], "within_days": 1 + index * 30},
        )
        settings = {
            "attribution_model": models[index % len(models)],
            "hold_days": 30 * (index % 2),
            "auto_approve_limit_minor": 50_000 * (index % 2),
            "cookie_window_days": 1 + index * 30,
        }
        documents.append((document, settings))
    return documents


def test_every_sentence_the_renderer_writes_has_a_row(drive):
    assert set(RULE_KINDS) <= set(RULE_EXAMPLES), "a new rule kind: add an example here and rows to CASES"
    covered = set().union(*(sentence_atoms(promise.section, promise.sentence) for promise in CASES.values()))

    rendered: set[tuple] = set()
    for rules, settings in _guard_documents():
        terms = drive.terms(drive.program(rules, **settings))
        for section in terms["sections"]:
            for item in section["items"]:
                rendered |= sentence_atoms(section["key"], item)

    missing = sorted(rendered - covered)
    assert not missing, "sentence templates the renderer writes without a row in CASES:\n" + "\n".join(
        map(str, missing)
    )
    assert len(rendered) > 60  # the guard programs really exercised the renderer
