"""Issue 7, item 1 ("What the terms say is what is paid"): the five findings, replayed through the public
surfaces (API key, signed Stripe webhooks) against the semantics of /work/wt/issue7-spec.md.

1. Long sales cycles: the cookie window decides whether the sign-up counts; every later payment of that
   customer is judged against the referral, however late.
2. Touches after the sign-up never move the credit; the referral's referrer is the credited participant.
3. A participant's coupon code alone establishes a referral (sign-ups, conversions, leads).
4. Multi-touch splits are exact: from exact shares, by the largest remainder.
5. Referring your own company (registrable e-mail domain or company name) is held for fraud review.
"""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from referrals.models import ConversionEvent
from rewards.tests.test_webhooks import deliver, event
from tests import factories as f
from tests.driver import Driver, rules_doc

pytestmark = pytest.mark.django_db

FIFTY_PER_CUSTOMER = rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}])


@pytest.fixture
def drive(world, django_capture_on_commit_callbacks, client):
    return Driver(world, django_capture_on_commit_callbacks, client=client)


# --- 1. long sales cycles ----------------------------------------------------------------------------
@pytest.mark.parametrize("way_in", ["code-then-api-payment", "click-then-api-payment", "code-then-stripe-invoice"])
def test_a_payment_long_after_a_counted_sign_up_is_attributed_and_rewarded(drive, client, way_in):
    # Given a 30-day cookie window, and a company that signed up 40 days ago through Dana
    # (with her code, or by visitor id 20 days after clicking her link)
    program = drive.program(FIFTY_PER_CUSTOMER, cookie_window_days=30)
    dana = drive.enrol(program, "Dana Whitfield", company="Northwind Traders")
    if way_in.startswith("click"):
        drive.click(dana, visitor="v-orbit", when=drive.days_ago(60))
        signed = drive.sign_up(
            email="cto@orbit.example", customer="cus_orbit", visitor="v-orbit", when=drive.days_ago(40)
        )
    else:
        signed = drive.sign_up(email="cto@orbit.example", customer="cus_orbit", code=dana.code, when=drive.days_ago(40))
    assert signed["referral"] is not None and signed["referral"]["referrer"] == dana.id

    # When it pays for the first time 5 days ago (35 days after signing up)
    if way_in.endswith("stripe-invoice"):
        f.StripeCredentialsFactory(tenant=drive.tenant)
        paid_at = int(drive.days_ago(5).timestamp())
        invoice = {
            "id": "in_orbit_1",
            "object": "invoice",
            "amount_paid": 49_900,
            "currency": "usd",
            "customer": "cus_orbit",
            "charge": "ch_orbit_1",
            "status_transitions": {"paid_at": paid_at},
        }
        response = deliver(
            client, drive.tenant, event("evt_orbit_paid", "invoice.paid", invoice), capture=drive.capture
        )
        assert response.status_code == 200
        payment = ConversionEvent.objects.get(external_event_id="evt_orbit_paid")
        drive.event_ids["evt_orbit_paid"] = payment.pk
        shown = drive.get(f"/api/v1/conversions/{payment.pk}")
        payment_id = "evt_orbit_paid"
    else:
        shown = drive.pay("pay_orbit_1", customer="cus_orbit", amount=49_900, when=drive.days_ago(5))
        payment_id = "pay_orbit_1"

    # Then the payment is attributed to Dana's referral, and Dana earns her 50.00
    assert (shown["status"], shown["referral"]) == ("processed", signed["referral"]["id"]), shown["error"]
    [attribution] = drive.get(f"/api/v1/attributions?conversion={shown['id']}")["results"]
    assert (attribution["participant"], attribution["share"], attribution["amount_minor"]) == (
        dana.id,
        "1.000000",
        49_900,
    )
    assert drive.earned(dana) == [(payment_id, 5_000)]


def test_a_recurring_share_pays_every_payment_of_its_months_however_long_after_the_sign_up(drive):
    # Given 10 % of every payment for 12 months, a 30-day window, and a sign-up with Dana's code 70 days ago
    program = drive.program(
        rules_doc(referrer=[{"kind": "recurring_percent", "percent_bp": 1_000, "months": 12}]), cookie_window_days=30
    )
    dana = drive.enrol(program, "Dana Whitfield", company="Northwind Traders")
    drive.sign_up(email="cto@orbit.example", customer="cus_orbit", code=dana.code, when=drive.days_ago(70))

    # When the customer pays 65, 35 and 5 days ago
    for days, name in ((65, "pay_1"), (35, "pay_2"), (5, "pay_3")):
        drive.pay(name, customer="cus_orbit", amount=20_000, when=drive.days_ago(days))

    # Then each payment earns 10 %
    assert drive.earned(dana) == [("pay_1", 2_000), ("pay_2", 2_000), ("pay_3", 2_000)]


# --- 2. touches after the sign-up ------------------------------------------------------------------
def test_a_click_after_the_sign_up_does_not_take_the_credit_under_last_touch(drive):
    # Given a last-touch program; a visitor clicks Priya's link and signs up (visitor id only)
    program = drive.program(FIFTY_PER_CUSTOMER, attribution_model="last_touch")
    priya = drive.enrol(program, "Priya Sharma", company="Sharma Consulting")
    marco = drive.enrol(program, "Marco Rossi", company="Rossi Partners")
    drive.click(priya, visitor="v-quanta", when=drive.days_ago(10))
    signed = drive.sign_up(
        email="ops@quanta.example", customer="cus_quanta", visitor="v-quanta", when=drive.days_ago(9)
    )

    # When the same visitor then clicks Marco's link, and the company pays
    drive.click(marco, visitor="v-quanta", when=drive.days_ago(5))
    payment = drive.pay("pay_quanta_1", customer="cus_quanta", amount=120_000, when=drive.days_ago(1))

    # Then Priya keeps the whole credit and the reward; Marco gets nothing
    assert signed["referral"]["referrer"] == priya.id
    rows = drive.get(f"/api/v1/attributions?conversion={payment['id']}")["results"]
    assert [(row["participant"], row["share"], row["amount_minor"]) for row in rows] == [
        (priya.id, "1.000000", 120_000)
    ]
    assert drive.earned(priya) == [("pay_quanta_1", 5_000)]
    assert drive.earned(marco) == []


def test_under_first_touch_the_first_clicker_is_the_referrer_and_is_paid(drive):
    # Given a first-touch program; a visitor clicks Priya's link, then Marco's, then signs up by visitor id
    program = drive.program(FIFTY_PER_CUSTOMER, attribution_model="first_touch")
    priya = drive.enrol(program, "Priya Sharma", company="Sharma Consulting")
    marco = drive.enrol(program, "Marco Rossi", company="Rossi Partners")
    drive.click(priya, visitor="v-quanta", when=drive.days_ago(10))
    drive.click(marco, visitor="v-quanta", when=drive.days_ago(5))
    signed = drive.sign_up(
        email="ops@quanta.example", customer="cus_quanta", visitor="v-quanta", when=drive.days_ago(4)
    )

    # When the company pays
    drive.pay("pay_quanta_1", customer="cus_quanta", amount=120_000, when=drive.days_ago(1))

    # Then the referral's referrer is the credited participant, Priya, and she alone is paid
    assert signed["referral"]["referrer"] == priya.id
    assert drive.referral(signed["referral"]["id"])["referrer"] == priya.id
    assert drive.earned(priya) == [("pay_quanta_1", 5_000)]
    assert drive.earned(marco) == []


# --- 3. coupon codes -------------------------------------------------------------------------------
def _coupon_of(person) -> str:
    assert person.coupon_code, f"the participants API shows no coupon_code for {person.name}"
    return person.coupon_code.swapcase()  # matched case-insensitively


@pytest.mark.parametrize("way_in", ["signups", "conversions", "leads"])
def test_a_coupon_code_alone_establishes_a_referral_credited_to_its_participant(drive, way_in):
    # Given Dana's coupon code, as the participants API shows it, and nobody clicked any link
    program = drive.program(FIFTY_PER_CUSTOMER)
    dana = drive.enrol(program, "Dana Whitfield", company="Northwind Traders")
    ravi = drive.enrol(program, "Ravi Kumar", company="Kumar Digital")
    coupon = _coupon_of(dana)
    assert _coupon_of(ravi).upper() != coupon.upper()  # unique per tenant

    # When the company arrives with the coupon only (a sign-up, a lead, or straight away a payment), then pays
    if way_in == "signups":
        signed = drive.sign_up(email="cto@orbit.example", customer="cus_orbit", coupon=coupon, when=drive.days_ago(3))
        assert signed["status_code"] == 201 and signed["referral"] is not None
        referral_id = signed["referral"]["id"]
    elif way_in == "leads":
        lead = drive.lead(email="cto@orbit.example", company="Orbit Labs", coupon_code=coupon, when=drive.days_ago(3))
        referral_id = lead["id"]
    payment = drive.pay(
        "pay_orbit_1",
        customer="cus_orbit",
        email="cto@orbit.example",
        amount=49_900,
        when=drive.days_ago(1),
        **({"coupon_code": coupon} if way_in == "conversions" else {}),
    )
    if way_in == "conversions":
        assert payment["referral"] is not None, payment["error"]
        referral_id = payment["referral"]

    # Then the referral is Dana's, the payment is credited to her and rewarded
    assert drive.referral(referral_id)["referrer"] == dana.id
    assert (payment["status"], payment["referral"]) == ("processed", referral_id), payment["error"]
    assert drive.earned(dana) == [("pay_orbit_1", 5_000)]
    assert drive.earned(ravi) == []


def test_a_referral_code_given_as_a_coupon_code_counts(drive):
    program = drive.program(FIFTY_PER_CUSTOMER)
    dana = drive.enrol(program, "Dana Whitfield", company="Northwind Traders")

    signed = drive.sign_up(email="cto@orbit.example", customer="cus_orbit", coupon=dana.code, when=drive.days_ago(3))
    drive.pay("pay_orbit_1", customer="cus_orbit", amount=49_900, when=drive.days_ago(1))

    assert signed["status_code"] == 201 and signed["referral"]["referrer"] == dana.id
    assert drive.earned(dana) == [("pay_orbit_1", 5_000)]


def test_an_unknown_coupon_code_is_kept_as_evidence_and_is_no_error(drive):
    program = drive.program(FIFTY_PER_CUSTOMER)
    dana = drive.enrol(program, "Dana Whitfield", company="Northwind Traders")

    signed = drive.sign_up(email="cto@orbit.example", customer="cus_orbit", coupon="SPRING24", when=drive.days_ago(3))
    payment = drive.pay("pay_orbit_1", customer="cus_orbit", amount=49_900, when=drive.days_ago(1), coupon_code="X1")

    assert (signed["status_code"], signed["referral"]) == (200, None)
    assert [(t["kind"], t["participant"], t["label"]) for t in signed["touchpoints"]] == [
        ("coupon_code", None, "SPRING24")
    ]
    assert (payment["status"], payment["referral"]) == ("unattributed", None)
    assert drive.rewards() == [] and drive.earned(dana) == []


# --- 4. exact splits -------------------------------------------------------------------------------
@pytest.mark.parametrize("amount", [3_000_000, 100_000_000], ids=["30,000.00", "1,000,000.00"])
def test_a_linear_split_over_three_participants_is_exact(drive, amount):
    # Given a linear program paying 100 % of the first payment, and three participants' clicks
    program = drive.program(
        rules_doc(referrer=[{"kind": "percent_of_revenue", "percent_bp": 10_000}]), attribution_model="linear"
    )
    people = [
        drive.enrol(program, name, company=f"{name.split()[1]} Partners")
        for name in ("Priya Sharma", "Marco Rossi", "Nina Petrova")
    ]
    for days, person in zip((10, 6, 3), people, strict=True):
        drive.click(person, visitor="v-quanta", when=drive.days_ago(days))
    drive.sign_up(email="ops@quanta.example", customer="cus_quanta", visitor="v-quanta", when=drive.days_ago(2))

    # When the company pays
    payment = drive.pay("pay_quanta_1", customer="cus_quanta", amount=amount, when=drive.days_ago(1))

    # Then every part is within one minor unit of the exact third, the parts sum to the whole
    # (30,000.00 → 10,000.00 three times), for the rewards and for the attributed amounts alike
    exact = Fraction(amount, 3)
    rewards = [amount_minor for person in people for _event, amount_minor in drive.earned(person)]
    attributed = [
        row["amount_minor"] for row in drive.get(f"/api/v1/attributions?conversion={payment['id']}")["results"]
    ]
    for parts in (rewards, attributed):
        assert len(parts) == 3 and sum(parts) == amount, parts
        assert all(abs(part - exact) < 1 for part in parts), parts
    if amount == 3_000_000:
        assert rewards == [1_000_000] * 3


# --- 5. own company ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("email", "company", "evidence"),
    [
        ("colleague@northwind.example", "Northwind Traders", "northwind.example"),
        ("colleague@northwind.example", "NW Logistics", "northwind.example"),
        ("jo.colleague@gmail.com", "Northwind Traders, Inc.", "Northwind Traders"),
    ],
    ids=["same-domain-and-name", "same-domain", "same-company-name"],
)
def test_a_referral_of_the_referrers_own_company_is_held_for_review_until_cleared(drive, email, company, evidence):
    # Given Dana of Northwind Traders (dana@northwind.example)
    program = drive.program(FIFTY_PER_CUSTOMER)
    dana = drive.enrol(program, "Dana Whitfield", company="Northwind Traders", email="dana@northwind.example")

    # When a colleague signs up with her code, and pays
    signed = drive.sign_up(email=email, customer="cus_nw", code=dana.code, company=company, when=drive.days_ago(3))
    referral_id = signed["referral"]["id"]
    payment = drive.pay("pay_nw_1", customer="cus_nw", amount=49_900, when=drive.days_ago(1))

    # Then the referral is flagged with the evidence of her own company, and the payment earns nothing
    review = drive.get(f"/api/v1/referrals/{referral_id}/fraud")
    assert (review["review_status"], review["is_rewardable"]) == ("flagged", False)
    assert any(evidence in json.dumps(signal["evidence"]) for signal in review["signals"]), review["signals"]
    assert drive.earned(dana) == []
    [evaluation] = drive.get(f"/api/v1/reward-evaluations?conversion={payment['id']}")["results"]
    assert evaluation["status"] == "blocked"

    # When a marketer clears it, the reward it earned meanwhile appears
    drive.clear_review(referral_id)
    assert drive.earned(dana) == [("pay_nw_1", 5_000)]


def test_sharing_only_a_free_mail_domain_with_the_referrer_is_not_their_own_company(drive):
    program = drive.program(FIFTY_PER_CUSTOMER)
    dana = drive.enrol(program, "Dana Whitfield", company="Northwind Traders", email="dana.whitfield@gmail.com")

    signed = drive.sign_up(
        email="founder.orbit@gmail.com",
        customer="cus_orbit",
        code=dana.code,
        company="Orbit Labs",
        when=drive.days_ago(3),
    )
    drive.pay("pay_orbit_1", customer="cus_orbit", amount=49_900, when=drive.days_ago(1))

    assert drive.get(f"/api/v1/referrals/{signed['referral']['id']}/fraud")["review_status"] == "clear"
    assert drive.earned(dana) == [("pay_orbit_1", 5_000)]
