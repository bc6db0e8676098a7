"""Screening runs inside referral creation: through the real sign-up and lead APIs."""

from __future__ import annotations

import pytest
from django.utils import timezone

from referral_platform.tenancy.models import AuditEvent
from referrals.fraud import referral_is_rewardable
from referrals.models import FraudFlag, Referral, ReferralStatus, ReviewStatus
from rewards.models import LedgerTransaction, Reward
from rewards.tests.pipeline import Pipeline, program_with_rules, rules_doc
from tests import factories as f

from .builders import conversion_payload, program_for, referrer_with_link

pytestmark = pytest.mark.django_db


def signup(world, code, email, **extra):
    return world.api(world.key_a).post(
        "/api/v1/signups", {"referral_code": code, "email": email, **extra}, format="json"
    )


def test_a_self_referral_signed_up_through_the_api_is_flagged_in_the_same_request(world):
    program = program_for(world.a)
    dana, link = referrer_with_link(program, email="Dana.W@Northwind.example")

    response = signup(world, link.code, "dana.w+trial@northwind.example", visitor_id="vis-dana")

    assert response.status_code == 201, response.content
    referral = Referral.objects.get(pk=response.json()["referral"]["id"])
    assert referral.review_status == ReviewStatus.FLAGGED and referral.fraud_screened_at is not None
    flag = FraudFlag.objects.get(referral=referral)
    assert flag.code == "self_referral_email" and flag.tenant == world.a
    assert flag.evidence["compared"][1] == {
        "field": "E-mail normalised",
        "referral": "dana.w@northwind.example",
        "other": "dana.w@northwind.example",
        "other_source": f"referrer (participant #{dana.pk})",
    }
    actions = list(
        AuditEvent.objects.filter(object_type="referrals.referral", object_id=str(referral.pk))
        .order_by("pk")
        .values_list("action", flat=True)
    )
    assert actions[:2] == ["referral.created", "referral.review.flagged"]
    fraud = world.api(world.key_a).get(f"/api/v1/referrals/{referral.pk}/fraud").json()
    assert [s["code"] for s in fraud["signals"]] == ["self_referral_email"]


def test_a_clean_sign_up_is_screened_and_stays_clear(world):
    _, link = referrer_with_link(program_for(world.a))

    response = signup(world, link.code, "jane@globalbank.example", company="Global Bank")

    referral = Referral.objects.get(pk=response.json()["referral"]["id"])
    assert referral.review_status == ReviewStatus.CLEAR and referral.fraud_screened_at is not None
    assert not FraudFlag.objects.exists()


def test_a_burst_of_sign_ups_trips_the_programs_velocity_limit(world):
    program = program_for(world.a)
    f.FraudPolicyFactory(program=program, velocity_max_per_hour=2)
    _, link = referrer_with_link(program)

    ids = [
        signup(world, link.code, f"buyer@company{n}.example", company=f"Company {n}").json()["referral"]["id"]
        for n in range(3)
    ]

    assert [Referral.objects.get(pk=pk).review_status for pk in ids] == ["clear", "clear", "flagged"]
    flag = FraudFlag.objects.get(referral_id=ids[2])
    assert flag.code == "velocity" and [row["id"] for row in flag.evidence["rows"]] == ids


def test_a_partner_lead_for_an_already_referred_company_is_flagged(world):
    program = program_for(world.a)
    _priya, link = referrer_with_link(program, name="Priya Sharma", company="Growth Agency")
    marco, _ = referrer_with_link(program, name="Marco Rossi", company="ResellPro")
    first = signup(world, link.code, "cto@initech.example", company="Initech, Inc.").json()["referral"]["id"]

    response = world.api(world.key_a).post(
        "/api/v1/leads",
        {"participant": marco.pk, "name": "Bill L.", "email": "bill@initech.example", "company": "INITECH"},
        format="json",
    )

    assert response.status_code == 201, response.content
    lead = Referral.objects.get(pk=response.json()["id"])
    flag = FraudFlag.objects.get(referral=lead)
    assert flag.code == "duplicate_company"
    assert [(row["id"], row["details"]["matched_on"]) for row in flag.evidence["rows"]] == [(first, ["name", "domain"])]


def test_a_flagged_referral_that_converts_is_rewarded_only_after_clearing(
    world, celery_eager, django_capture_on_commit_callbacks
):
    program = program_for(world.a)
    _, link = referrer_with_link(program)
    created = signup(world, link.code, "ceo@mailinator.com", customer_external_id="cus_77").json()
    payment = conversion_payload(
        external_event_id="evt_pay_77", customer_external_id="cus_77", occurred_at=timezone.now().isoformat()
    )

    with django_capture_on_commit_callbacks(execute=True):
        world.api(world.key_a).post("/api/v1/conversions", payment, format="json")

    referral = Referral.objects.get(pk=created["referral"]["id"])
    assert referral.status == ReferralStatus.CONVERTED and referral.review_status == ReviewStatus.FLAGGED
    assert referral_is_rewardable(referral) is False

    cleared = world.api(world.key_a).post(
        f"/api/v1/referrals/{referral.pk}/fraud", {"decision": "clear", "reason": "Known founder"}, format="json"
    )

    assert cleared.status_code == 200 and cleared.json()["is_rewardable"] is True
    referral.refresh_from_db()
    assert referral_is_rewardable(referral) is True


# --- own company: the terms say referring yourself or your own company does not count ---------------
def _flagged_audit_rows(referral_id) -> int:
    return AuditEvent.objects.filter(
        object_type="referrals.referral", object_id=str(referral_id), action="referral.review.flagged"
    ).count()


@pytest.mark.parametrize(
    ("email", "company", "matched_on", "compared"),
    [
        (
            "sam@sales.northwind.co.uk",
            "",
            "domain",
            {"field": "Company e-mail domain", "referral": "sales.northwind.co.uk", "other": "northwind.co.uk",
             "normalised": "northwind.co.uk"},
        ),
        (
            "buyer@northwind-traders.example",
            "NORTHWIND TRADERS, LTD.",
            "name",
            {"field": "Company", "referral": "NORTHWIND TRADERS, LTD.", "other": "Northwind Traders",
             "normalised": "northwindtraders"},
        ),
    ],
    ids=["colleague-by-email-domain", "by-company-name"],
)  # fmt: skip
def test_a_sign_up_of_the_referrers_own_company_is_flagged_and_not_rewardable(
    world, email, company, matched_on, compared
):
    # Given Dana of Northwind Traders and her link
    program = program_for(world.a)
    dana, link = referrer_with_link(program, email="dana@northwind.co.uk", company="Northwind Traders")

    # When someone of her own company signs up through her code
    response = signup(world, link.code, email, **({"company": company} if company else {}))

    # Then the referral is flagged in the same request, with the own-company evidence
    assert response.status_code == 201, response.content
    referral = Referral.objects.get(pk=response.json()["referral"]["id"])
    assert referral.referrer == dana and referral.review_status == ReviewStatus.FLAGGED
    flag = FraudFlag.objects.get(referral=referral)
    assert (flag.code, flag.tenant) == ("own_company", world.a)
    assert flag.evidence["compared"] == [compared | {"other_source": f"referrer (participant #{dana.pk})"}]
    assert flag.evidence["params"]["matched_on"] == [matched_on]
    assert _flagged_audit_rows(referral.pk) == 1
    fraud = world.api(world.key_a).get(f"/api/v1/referrals/{referral.pk}/fraud").json()
    assert [signal["code"] for signal in fraud["signals"]] == ["own_company"]
    assert (fraud["review_status"], fraud["is_rewardable"]) == ("flagged", False)


def test_a_landing_page_lead_of_the_referrers_own_company_is_flagged(world, client):
    program = program_for(world.a)
    dana, link = referrer_with_link(program, email="dana@northwind.co.uk", company="Northwind Traders")

    response = client.post(
        f"/join/{link.code}/",
        {"name": "Sam Lee", "email": "Sam@Northwind.co.uk", "company": "Northwind Traders Ltd",
         "company_size": "11-50", "visitor_id": "vis-sam"},
    )  # fmt: skip

    assert response.status_code == 200, response.content
    referral = Referral.objects.get(referrer=dana)
    assert (referral.source, referral.review_status) == ("landing_form", ReviewStatus.FLAGGED)
    flag = FraudFlag.objects.get(referral=referral)
    assert flag.code == "own_company" and flag.evidence["params"]["matched_on"] == ["domain", "name"]
    assert [(row["referral"], row["other"], row["normalised"]) for row in flag.evidence["compared"]] == [
        ("northwind.co.uk", "northwind.co.uk", "northwind.co.uk"),
        ("Northwind Traders Ltd", "Northwind Traders", "northwindtraders"),
    ]


@pytest.mark.parametrize(
    ("referrer_email", "referrer_company", "email", "company"),
    [
        ("dana@acme.com", "Acme", "pat@acme.co.uk", "Globex"),
        ("dana@gmail.com", "Northwind Traders", "pat@gmail.com", "Contoso"),
        ("dana@northwind.example", "Northwind Traders", "pat@contoso.example", "Northwind Labs"),
    ],
    ids=["same-name-other-suffix", "both-on-gmail", "similar-company-name"],
)
def test_a_sign_up_that_only_resembles_the_referrers_company_stays_clear(
    world, referrer_email, referrer_company, email, company
):
    program = program_for(world.a)
    _, link = referrer_with_link(program, email=referrer_email, company=referrer_company)

    response = signup(world, link.code, email, company=company)

    assert response.status_code == 201, response.content
    referral = Referral.objects.get(pk=response.json()["referral"]["id"])
    assert referral.review_status == ReviewStatus.CLEAR and referral.fraud_screened_at is not None
    assert not FraudFlag.objects.exists()
    assert _flagged_audit_rows(referral.pk) == 0


def test_a_landing_page_lead_on_a_similar_domain_stays_clear(world, client):
    program = program_for(world.a)
    dana, link = referrer_with_link(program, email="dana@acme.com", company="Acme")

    response = client.post(
        f"/join/{link.code}/",
        {"name": "Pat Kim", "email": "pat@acme.co.uk", "company": "Acme Trading UK", "company_size": "11-50"},
    )

    assert response.status_code == 200, response.content
    referral = Referral.objects.get(referrer=dana)
    assert referral.review_status == ReviewStatus.CLEAR and referral.fraud_screened_at is not None
    assert not FraudFlag.objects.exists()


def test_an_own_company_referral_that_pays_earns_nothing_until_a_marketer_clears_it(
    world, django_capture_on_commit_callbacks
):
    # Given Dana's program paying 50.00 USD per conversion, and a colleague signed up through her code
    pipe = Pipeline(world, django_capture_on_commit_callbacks)
    program = program_with_rules(world.a, rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}]))
    dana, link = referrer_with_link(program, email="dana@northwind.co.uk", company="Northwind Traders")
    referral = pipe.sign_up(email="sam@northwind.co.uk", customer="cus_sam", code=link.code, company="Sam's desk")
    assert referral.review_status == ReviewStatus.FLAGGED

    # When the colleague's company pays
    pipe.pay("pay_sam_1", customer="cus_sam", amount=49_900)

    # Then the referral converted but earns nothing while flagged
    referral.refresh_from_db()
    assert referral.status == ReferralStatus.CONVERTED and referral_is_rewardable(referral) is False
    assert not Reward.objects.filter(participant=dana).exists()
    assert not LedgerTransaction.objects.exists()

    # When a marketer clears it, the reward it earned meanwhile appears, once
    pipe.post(f"/api/v1/referrals/{referral.pk}/fraud", {"decision": "clear", "reason": "Separate business unit"})

    [reward] = Reward.objects.filter(participant=dana)
    assert (reward.amount_minor, reward.referral_id) == (5_000, referral.pk)
