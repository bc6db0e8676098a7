"""The pure reward calculation: exact amounts for every rule kind and cap, and the explanations."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from programs import rules
from programs.rules import TIMES, ConversionContext, compute_rewards
from referral_platform.money import format_money, format_percent, percent_of


def doc(referrer=(), referred=(), **extra):
    return {"schema_version": 1, "currency": "USD", "referrer": list(referrer), "referred": list(referred), **extra}


def pay(amount_minor=12_000, **kwargs):
    return ConversionContext(kind="payment", amount_minor=amount_minor, currency="USD", **kwargs)


# --- money -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (12_345, "USD", "123.45 USD"),
        (1_234_567, "EUR", "12,345.67 EUR"),
        (5, "USD", "0.05 USD"),
        (500, "JPY", "500 JPY"),
        (1_234, "KWD", "1.234 KWD"),
        (-250, "USD", "-2.50 USD"),
    ],
)
def test_format_money_uses_the_currency_exponent(amount, currency, text):
    assert format_money(amount, currency) == text


@pytest.mark.parametrize(("bp", "text"), [(1000, "10 %"), (1250, "12.5 %"), (125, "1.25 %"), (10_000, "100 %")])
def test_format_percent(bp, text):
    assert format_percent(bp) == text


@pytest.mark.parametrize(
    ("amount", "bp", "expected"),
    [(12_000, 1000, 1_200), (999, 1000, 100), (994, 1000, 99), (995, 1000, 100), (1, 5000, 1), (1, 4999, 0)],
    ids=["exact", "half-up-99.9", "down-99.4", "half-up-99.5", "half-of-1-rounds-up", "under-half"],
)
def test_percent_of_rounds_half_up_once(amount, bp, expected):
    assert percent_of(amount, bp) == expected


@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=0, max_value=10_000))
def test_percent_of_never_exceeds_the_amount_and_is_within_half_a_unit(amount, bp):
    result = percent_of(amount, bp)
    assert 0 <= result <= amount
    assert abs(result * 10_000 - amount * bp) <= 5_000


# --- each rule kind ----------------------------------------------------------------------------
def test_flat_per_lead_pays_on_the_qualified_event_only():
    rule_set = doc(referrer=[{"kind": "flat_per_lead", "amount_minor": 2_500}])

    qualified = compute_rewards(rule_set, ConversionContext(kind="qualified"))
    signed_up = compute_rewards(rule_set, ConversionContext(kind="sign_up"))
    paid = compute_rewards(rule_set, pay())

    assert [r.amount_minor for r in qualified.referrer] == [2_500]
    assert qualified.referrer[0].explanation == "Flat 25.00 USD per qualified lead"
    assert qualified.referrer[0].form == "cash"
    assert signed_up.referrer == () and paid.referrer == ()


def test_flat_per_lead_can_pay_on_sign_up():
    outcome = compute_rewards(
        doc(referrer=[{"kind": "flat_per_lead", "amount_minor": 1_000, "on": "sign_up"}]),
        ConversionContext(kind="sign_up"),
    )
    assert outcome.referrer_total_minor == 1_000
    assert outcome.referrer[0].explanation == "Flat 10.00 USD per sign-up"


def test_flat_per_conversion_pays_on_the_first_payment_only():
    rule_set = doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 50_000}])

    first = compute_rewards(rule_set, pay())
    renewal = compute_rewards(rule_set, pay(months_since_first_payment=1))
    same_month_second_charge = compute_rewards(rule_set, pay(is_first_payment=False))

    assert first.referrer_total_minor == 50_000
    assert first.referrer[0].explanation == "Flat 500.00 USD per new paying customer"
    assert renewal.referrer == () and same_month_second_charge.referrer == ()


def test_flat_per_conversion_per_seat_multiplies_and_respects_max_seats():
    rule_set = doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 1_000, "per_seat": True, "max_seats": 10}])

    five = compute_rewards(rule_set, pay(seats=5)).referrer[0]
    thirty = compute_rewards(rule_set, pay(seats=30)).referrer[0]

    assert five.amount_minor == 5_000
    assert five.explanation == f"10.00 USD per new paying customer {TIMES} 5 seats = 50.00 USD"
    assert thirty.amount_minor == 10_000
    assert (
        thirty.explanation
        == f"10.00 USD per new paying customer {TIMES} 10 seats (seats capped at 10 of 30) = 100.00 USD"
    )


def test_percent_of_revenue_is_exact_and_explained():
    outcome = compute_rewards(doc(referrer=[{"kind": "percent_of_revenue", "percent_bp": 1_000}]), pay(12_000))

    assert outcome.referrer_total_minor == 1_200
    assert outcome.referrer[0].explanation == "10 % of 120.00 USD = 12.00 USD"
    assert outcome.referrer[0].percent_bp == 1_000


def test_percent_of_revenue_is_capped_by_the_rule_maximum():
    outcome = compute_rewards(
        doc(referrer=[{"kind": "percent_of_revenue", "percent_bp": 1_000, "max_amount_minor": 1_000}]), pay(12_000)
    )

    assert outcome.referrer_total_minor == 1_000
    assert outcome.referrer[0].capped is True
    assert outcome.referrer[0].explanation == "10 % of 120.00 USD = 12.00 USD, capped at 10.00 USD (rule maximum)"


@pytest.mark.parametrize(
    ("month", "expected"),
    [(0, 1_980), (5, 1_980), (11, 1_980), (12, 0), (30, 0)],
    ids=["first-month", "month-6", "last-month", "month-13-ended", "long-after"],
)
def test_recurring_percent_pays_every_payment_for_n_months(month, expected):
    outcome = compute_rewards(
        doc(referrer=[{"kind": "recurring_percent", "percent_bp": 2_000, "months": 12}]),
        pay(9_900, months_since_first_payment=month),
    )

    assert outcome.referrer_total_minor == expected
    if expected:
        assert outcome.referrer[0].explanation == f"20 % of 99.00 USD (payment in month {month + 1} of 12) = 19.80 USD"


TIERS = {
    "kind": "tiered",
    "tiers": [
        {"min_referrals": 1, "amount_minor": 5_000},
        {"min_referrals": 6, "amount_minor": 7_500},
        {"min_referrals": 11, "percent_bp": 2_000},
    ],
}


@pytest.mark.parametrize(
    ("previous", "expected"),
    [(0, 5_000), (4, 5_000), (5, 7_500), (9, 7_500), (10, 2_400), (40, 2_400)],
    ids=["1st", "5th", "6th", "10th", "11th-percent-tier", "41st"],
)
def test_tiered_reward_grows_with_successful_referrals(previous, expected):
    outcome = compute_rewards(doc(referrer=[TIERS]), pay(12_000, previous_successful_referrals=previous))
    assert outcome.referrer_total_minor == expected


def test_tiered_explanation_names_the_tier():
    reward = compute_rewards(doc(referrer=[TIERS]), pay(12_000, previous_successful_referrals=5)).referrer[0]
    assert reward.explanation == "6th successful referral this year: tier from 6 referrals pays 75.00 USD = 75.00 USD"


def test_tiered_before_the_first_tier_pays_nothing():
    rule_set = doc(referrer=[{"kind": "tiered", "tiers": [{"min_referrals": 3, "amount_minor": 10_000}]}])

    second = compute_rewards(rule_set, pay(previous_successful_referrals=1)).referrer[0]
    third = compute_rewards(rule_set, pay(previous_successful_referrals=2)).referrer[0]

    assert second.amount_minor == 0 and "tiers start at 3 referrals" in second.explanation
    assert third.amount_minor == 10_000


def test_tiered_per_seat_amount_tier():
    rule_set = doc(
        referrer=[{"kind": "tiered", "per_seat": True, "tiers": [{"min_referrals": 1, "amount_minor": 500}]}]
    )
    assert compute_rewards(rule_set, pay(seats=7)).referrer_total_minor == 3_500


def test_free_months_are_valued_at_the_bill():
    rule_set = doc(referred=[{"kind": "free_months", "months": 2}])

    with_bill = compute_rewards(rule_set, pay(4_900)).referred[0]
    explicit_bill = compute_rewards(rule_set, pay(4_900, bill_amount_minor=9_900)).referred[0]

    assert (with_bill.amount_minor, with_bill.months, with_bill.form) == (9_800, 2, "free_months")
    assert with_bill.explanation == f"2 free months {TIMES} 49.00 USD monthly bill = 98.00 USD"
    assert explicit_bill.amount_minor == 19_800


def test_referrer_free_month_without_a_known_bill_has_no_computed_value():
    reward = compute_rewards(doc(referrer=[{"kind": "free_months", "months": 1}]), pay()).referrer[0]
    assert reward.amount_minor == 0 and reward.months == 1
    assert reward.explanation == "1 free month (value set by the next bill)"


def test_renewal_discount_is_a_percentage_of_the_bill():
    reward = compute_rewards(
        doc(referrer=[{"kind": "renewal_discount", "percent_bp": 2_500}]), pay(referrer_bill_minor=120_000)
    ).referrer[0]

    assert reward.amount_minor == 30_000
    assert reward.form == "discount"
    assert reward.explanation == "25 % off the next renewal of 1,200.00 USD = 300.00 USD"


def test_account_credit_flat_and_per_seat():
    flat = compute_rewards(doc(referrer=[{"kind": "account_credit", "amount_minor": 10_000}]), pay()).referrer[0]
    per_seat = compute_rewards(
        doc(referred=[{"kind": "account_credit", "amount_minor": 1_500, "per_seat": True}]), pay(seats=4)
    ).referred[0]

    assert (flat.amount_minor, flat.form, flat.explanation) == (10_000, "credit", "100.00 USD account credit")
    assert per_seat.amount_minor == 6_000
    assert per_seat.explanation == f"15.00 USD account credit {TIMES} 4 seats = 60.00 USD"


def test_feature_unlock_has_no_cash_value():
    reward = compute_rewards(
        doc(referred=[{"kind": "feature_unlock", "feature": "SSO", "months": 6, "on": "sign_up"}]),
        ConversionContext(kind="sign_up"),
    ).referred[0]

    assert (reward.amount_minor, reward.item, reward.form) == (0, "SSO", "feature")
    assert reward.explanation == "Feature unlocked: SSO for 6 months (no cash value)"


def test_gift_carries_its_cost_when_declared():
    with_cost = compute_rewards(doc(referrer=[{"kind": "gift", "gift": "Hoodie", "value_minor": 3_000}]), pay())
    without = compute_rewards(doc(referrer=[{"kind": "gift", "gift": "Thank-you card"}]), pay())

    assert with_cost.referrer[0].amount_minor == 3_000
    assert with_cost.referrer[0].explanation == "Gift: Hoodie (cost 30.00 USD)"
    assert without.referrer[0].amount_minor == 0 and without.referrer[0].explanation == "Gift: Thank-you card"


# --- double-sided and caps ---------------------------------------------------------------------
def test_double_sided_rules_reward_both_sides_independently():
    outcome = compute_rewards(
        doc(
            referrer=[{"kind": "percent_of_revenue", "percent_bp": 1_500}],
            referred=[{"kind": "renewal_discount", "percent_bp": 2_000}, {"kind": "free_months", "months": 1}],
        ),
        pay(10_000),
    )

    assert outcome.referrer_total_minor == 1_500
    assert [r.amount_minor for r in outcome.referred] == [2_000, 10_000]
    assert outcome.total_minor == 13_500
    assert outcome.as_dict()["referred_total_minor"] == 12_000


@pytest.mark.parametrize(
    ("previous", "referrer_total"), [(0, 5_000), (11, 5_000), (12, 0), (20, 0)], ids=["1st", "12th", "13th", "21st"]
)
def test_referrer_cap_per_period_stops_referrer_rewards_but_not_the_referred(previous, referrer_total):
    rule_set = doc(
        referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}],
        referred=[{"kind": "account_credit", "amount_minor": 2_000}],
        caps={"referrer_rewarded_referrals": {"max": 12, "period": "year"}},
    )

    outcome = compute_rewards(rule_set, pay(previous_successful_referrals=previous))

    assert outcome.referrer_total_minor == referrer_total
    assert outcome.referred_total_minor == 2_000
    if not referrer_total:
        assert outcome.notes == (
            f"Referrer cap reached: {previous} referrals already rewarded this year (at most 12); "
            "50.00 USD not granted.",
        )


def test_bill_discounts_together_never_exceed_the_per_bill_cap():
    rule_set = doc(
        referred=[
            {"kind": "renewal_discount", "percent_bp": 6_000},
            {"kind": "renewal_discount", "percent_bp": 6_000},
        ]
    )

    outcome = compute_rewards(rule_set, pay(10_000))

    assert [r.percent_bp for r in outcome.referred] == [5_000, 5_000]
    assert outcome.referred_total_minor == 10_000  # exactly 100 % of the bill
    assert all(r.capped for r in outcome.referred)
    assert outcome.referred[0].explanation == (
        "60 % off the next renewal of 100.00 USD = 60.00 USD, capped at 100 % of one bill in total → 50 % = 50.00 USD"
    )


def test_a_lower_bill_cap_scales_discounts_and_keeps_the_sum_exact():
    rule_set = doc(
        referred=[
            {"kind": "renewal_discount", "percent_bp": 3_000},
            {"kind": "renewal_discount", "percent_bp": 2_000},
        ],
        caps={"max_bill_discount_bp": 3_333},
    )

    outcome = compute_rewards(rule_set, pay(9_999))

    assert sum(r.percent_bp for r in outcome.referred) == 3_333
    assert outcome.referred_total_minor == percent_of(9_999, 3_333)


def test_refunds_and_cancellations_earn_nothing():
    rule_set = doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}])
    for kind in ("refund", "cancellation"):
        outcome = compute_rewards(rule_set, ConversionContext(kind=kind, amount_minor=5_000, currency="USD"))
        assert outcome.total_minor == 0
        assert "cancellation policy (clawback)" in outcome.notes[0]


def test_an_event_in_another_currency_is_refused():
    with pytest.raises(rules.CurrencyMismatch):
        compute_rewards(
            doc(referrer=[{"kind": "percent_of_revenue", "percent_bp": 1_000}]),
            ConversionContext(kind="payment", amount_minor=100, currency="EUR"),
        )


def test_a_parsed_rule_set_gives_the_same_result_as_the_document():
    document = doc(referrer=[TIERS], referred=[{"kind": "free_months", "months": 1}])
    context = pay(previous_successful_referrals=7)
    assert compute_rewards(rules.parse_rules(document), context) == compute_rewards(document, context)


@pytest.mark.parametrize(
    "kwargs",
    [{"kind": "bonus"}, {"kind": "payment", "seats": 0}, {"kind": "payment", "amount_minor": -1}],
    ids=["unknown-kind", "zero-seats", "negative-amount"],
)
def test_an_invalid_context_is_refused(kwargs):
    with pytest.raises(ValueError):
        ConversionContext(**kwargs)


# --- validation --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("document", "path"),
    [
        (doc(referrer=[{"kind": "percent_of_revenue", "percent_bp": 10_001}]), "referrer[0].percent_bp"),
        (doc(referrer=[{"kind": "percent_of_revenue", "percent_bp": 12.5}]), "referrer[0].percent_bp"),
        (doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": -5}]), "referrer[0].amount_minor"),
        (doc(referrer=[{"kind": "flat_per_conversion"}]), "referrer[0].amount_minor"),
        (doc(referrer=[{"kind": "recurring_percent", "percent_bp": 100}]), "referrer[0].months"),
        (doc(referred=[{"kind": "cashback"}]), "referred[0].kind"),
        (
            doc(referrer=[{"kind": "recurring_percent", "percent_bp": 1, "months": 1, "on": "sign_up"}]),
            "referrer[0].on",
        ),
        (doc(referrer=[{"kind": "gift", "gift": "Mug", "colour": "red"}]), "referrer[0]"),
        (
            doc(referrer=[{"kind": "tiered", "tiers": [{"min_referrals": 1, "amount_minor": 1, "percent_bp": 1}]}]),
            "referrer[0].tiers[0]",
        ),
        (
            doc(
                referrer=[
                    {
                        "kind": "tiered",
                        "tiers": [{"min_referrals": 5, "amount_minor": 1}, {"min_referrals": 5, "amount_minor": 2}],
                    }
                ]
            ),
            "referrer[0].tiers[1].min_referrals",
        ),
        (doc(referrer=[{"kind": "account_credit", "amount_minor": 1, "max_seats": 3}]), "referrer[0].max_seats"),
        (doc(), "referrer"),
        (
            doc(referrer=[{"kind": "gift", "gift": "Mug"}], caps={"max_bill_discount_bp": 15_000}),
            "caps.max_bill_discount_bp",
        ),
        (
            doc(
                referrer=[{"kind": "gift", "gift": "Mug"}],
                caps={"referrer_rewarded_referrals": {"max": 0, "period": "year"}},
            ),
            "caps.referrer_rewarded_referrals.max",
        ),
        (
            doc(
                referrer=[{"kind": "gift", "gift": "Mug"}],
                caps={"referrer_rewarded_referrals": {"max": 3, "period": "fortnight"}},
            ),
            "caps.referrer_rewarded_referrals.period",
        ),
        (
            doc(referrer=[{"kind": "gift", "gift": "Mug"}], eligibility={"company_size": {"min": 500, "max": 10}}),
            "eligibility.company_size.max",
        ),
        (doc(referrer=[{"kind": "gift", "gift": "Mug"}], qualification={"budget": "yes"}), "qualification.budget"),
        (doc(referrer=[{"kind": "gift", "gift": "Mug"}], cancellation={"policy": "never"}), "cancellation.policy"),
        ({**doc(referrer=[{"kind": "gift", "gift": "Mug"}]), "currency": "usd"}, "currency"),
        ({**doc(referrer=[{"kind": "gift", "gift": "Mug"}]), "schema_version": 2}, "schema_version"),
        ({"currency": "USD", "referrer": [], "referred": []}, "schema_version"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_invalid_rules_name_the_field(document, path):
    with pytest.raises(rules.RulesError) as caught:
        rules.validate_rules(document)
    assert path in caught.value.errors, caught.value.errors


def test_rules_must_be_an_object():
    with pytest.raises(rules.RulesError) as caught:
        rules.validate_rules([1, 2])
    assert caught.value.errors == {"rules": "Rules must be a JSON object."}


def test_validation_fills_in_defaults_so_stored_versions_are_explicit():
    normalised = rules.validate_rules(
        doc(
            referrer=[{"kind": "flat_per_lead", "amount_minor": 100}], eligibility={"industries": [" Fintech ", "SaaS"]}
        )
    )

    assert normalised["referrer"][0]["on"] == "qualified"
    assert normalised["caps"] == {"referrer_rewarded_referrals": None, "max_bill_discount_bp": 10_000}
    assert normalised["cancellation"] == {"policy": "clawback", "within_days": 60}
    assert normalised["eligibility"]["industries"] == ["fintech", "saas"]
    assert rules.validate_rules(normalised) == normalised


# --- eligibility and qualification -------------------------------------------------------------
ICP = doc(
    referrer=[{"kind": "gift", "gift": "Mug"}],
    eligibility={
        "industries": ["software", "fintech"],
        "company_size": {"min": 20, "max": 500},
        "annual_revenue_minor": {"min": 100_000_000},
    },
    qualification={"budget": True, "authority": True, "need": False, "timeline": True},
)


def test_a_company_inside_the_profile_is_eligible():
    profile = rules.CompanyProfile(industry="Software", employees=120, annual_revenue_minor=500_000_000)
    assert rules.eligibility_problems(ICP, profile) == []


def test_a_company_outside_the_profile_is_told_why():
    profile = rules.CompanyProfile(industry="Retail", employees=5, annual_revenue_minor=10_000_000)
    assert rules.eligibility_problems(ICP, profile) == [
        "industry 'Retail' is not one of: fintech, software",
        "5 employees is below the minimum of 20",
        "annual revenue 100,000.00 USD is below 1,000,000.00 USD",
    ]


def test_unknown_company_facts_do_not_disqualify():
    assert rules.eligibility_problems(ICP, rules.CompanyProfile()) == []


def test_qualification_lists_the_unconfirmed_required_criteria():
    assert rules.qualification_missing(ICP, {"budget": True, "need": True}) == ["authority", "timeline"]
    assert rules.qualification_missing(ICP, {"budget": True, "authority": True, "timeline": True}) == []


def test_integral_floats_are_stored_as_integers():
    normalised = rules.validate_rules(doc(referrer=[{"kind": "percent_of_revenue", "percent_bp": 1000.0}]))

    assert type(normalised["referrer"][0]["percent_bp"]) is int
    assert compute_rewards(normalised, pay(12_345)).referrer[0].amount_minor == 1_235


def test_the_documented_schema_file_matches_the_code():
    import json
    from pathlib import Path

    documented = json.loads((Path(__file__).resolve().parents[2] / "docs" / "programs-rules.schema.json").read_text())
    assert documented == json.loads(json.dumps(rules.RULES_JSON_SCHEMA)), (
        "regenerate docs/programs-rules.schema.json from programs.rules.RULES_JSON_SCHEMA"
    )


def test_the_documented_example_is_valid():
    import json
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "programs.md").read_text()
    example = re.search(r"```json\n(.*?)```", text, re.S).group(1)
    assert rules.validate_rules(json.loads(example))["caps"]["referrer_rewarded_referrals"]["max"] == 12


# --- partner tiers -------------------------------------------------------------------------------
GOLD = {"gold": {"referrer": [{"kind": "percent_of_revenue", "percent_bp": 3_000}]}}


def test_a_partner_tier_replaces_the_referrer_rules_for_its_participants_only():
    document = doc(referrer=[{"kind": "percent_of_revenue", "percent_bp": 1_000}], partner_tiers=GOLD)
    context = {"kind": "payment", "amount_minor": 100_000, "currency": "USD"}

    gold = rules.compute_rewards(document, rules.ConversionContext(**context, participant_tier="gold"))
    silver = rules.compute_rewards(document, rules.ConversionContext(**context, participant_tier="silver"))
    plain = rules.compute_rewards(document, rules.ConversionContext(**context))

    assert [r.amount_minor for r in gold.referrer] == [30_000]
    assert gold.notes == ("Partner tier 'gold': that tier's referrer rules apply.",)
    assert [r.amount_minor for r in silver.referrer] == [r.amount_minor for r in plain.referrer] == [10_000]
    assert silver.notes == ()


def test_documents_without_partner_tiers_normalise_as_before():
    assert "partner_tiers" not in rules.validate_rules(doc(referrer=[{"kind": "flat_per_lead", "amount_minor": 1}]))
    normalised = rules.validate_rules(doc(referrer=[{"kind": "flat_per_lead", "amount_minor": 1}], partner_tiers=GOLD))
    assert normalised["partner_tiers"]["gold"]["referrer"][0]["on"] == "conversion"
    assert rules.validate_rules(normalised) == normalised


@pytest.mark.parametrize(
    ("partner_tiers", "path", "message"),
    [
        ({"Gold!": {"referrer": []}}, "partner_tiers", "Partner tier 'Gold!': use 1-40 lower-case letters"),
        ({"gold": {}}, "partner_tiers.gold.referrer", "This field is required."),
        (
            {"gold": {"referrer": [{"kind": "percent_of_revenue", "percent_bp": 0}]}},
            "partner_tiers.gold.referrer[0].percent_bp",
            "0 is less than the minimum of 1",
        ),
        (
            {
                "gold": {
                    "referrer": [
                        {
                            "kind": "tiered",
                            "tiers": [{"min_referrals": 3, "amount_minor": 1}, {"min_referrals": 2, "amount_minor": 2}],
                        }
                    ]
                }
            },
            "partner_tiers.gold.referrer[0].tiers[1].min_referrals",
            "strictly increasing",
        ),
    ],
    ids=["bad-name", "no-rules", "bad-rule", "tiers-out-of-order"],
)
def test_invalid_partner_tiers_name_the_field(partner_tiers, path, message):
    with pytest.raises(rules.RulesError) as caught:
        rules.validate_rules(doc(referrer=[{"kind": "flat_per_lead", "amount_minor": 1}], partner_tiers=partner_tiers))
    assert message in caught.value.errors[path]


@pytest.mark.django_db
def test_the_terms_list_what_each_partner_tier_earns():
    from programs.services import program_rules_change
    from programs.terms import render_terms
    from referral_platform.tenancy.actors import system_actor
    from tests.factories import ProgramFactory

    program = ProgramFactory(currency="USD")
    document = doc(referrer=[{"kind": "percent_of_revenue", "percent_bp": 1_000}], partner_tiers=GOLD)
    version = program_rules_change(program=program, actor=system_actor(program.tenant), rules=document).version

    terms = render_terms(program, version)

    [section] = [s for s in terms.sections if s.key == "tier:gold"]
    assert section.title == "What you earn as a gold partner (instead of the above)"
    assert section.items == ("30 % of the first payment when a company you referred becomes a paying customer.",)
