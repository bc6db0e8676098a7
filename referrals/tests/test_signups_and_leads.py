"""POST /api/v1/signups and POST /api/v1/leads: referrals, identity links and touchpoints."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from referral_platform.tenancy.models import AuditEvent
from referrals.models import IdentityLink, Referral, ReferralStatus, Touchpoint

from .builders import click, program_for, referrer_with_link

pytestmark = pytest.mark.django_db


def _counts():
    return (
        Referral.objects.count(),
        Touchpoint.objects.count(),
        IdentityLink.objects.count(),
        AuditEvent.objects.count(),
    )


def test_signup_with_a_referral_code_creates_a_signed_up_referral(world):
    program = program_for(world.a)
    dana, link = referrer_with_link(program)

    response = world.api(world.key_a).post(
        "/api/v1/signups",
        {
            "referral_code": link.code,
            "email": "Jane@GlobalBank.example",
            "customer_external_id": "cus_900",
            "visitor_id": "vis-laptop",
            "company": "Global Bank",
            "company_size": "201-1000",
            "how_did_you_hear": "A colleague at Northwind",
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    referral = Referral.objects.get(pk=body["referral"]["id"])
    assert body["referral_created"] is True
    assert referral.status == ReferralStatus.SIGNED_UP and referral.signed_up_at is not None
    assert (referral.referrer, referral.referred_email, referral.referred_external_id) == (
        dana,
        "jane@globalbank.example",
        "cus_900",
    )
    assert referral.how_did_you_hear == "A colleague at Northwind"
    assert referral.rule_version.number == 1 and body["referral"]["rule_version"] == 1
    kinds = {tp.kind: tp for tp in Touchpoint.objects.filter(tenant=world.a)}
    assert kinds["referral_code"].participant == dana
    # The answer names no participant: recorded as an attribution source, without credit.
    assert kinds["self_reported"].participant is None and kinds["self_reported"].label == "A colleague at Northwind"
    assert IdentityLink.objects.filter(tenant=world.a).count() == 3  # visitor, e-mail, customer, pairwise


def test_signup_without_a_code_is_matched_to_the_latest_click_of_the_visitor(world):
    program = program_for(world.a)
    _, link_dana = referrer_with_link(program)
    ravi, link_ravi = referrer_with_link(program, name="Ravi Menon", company="Contoso Ltd")
    now = timezone.now()
    click(link_dana, visitor_id="vis-1", at=now - timedelta(days=10))
    click(link_ravi, visitor_id="vis-1", at=now - timedelta(days=2))
    click(link_dana, visitor_id="vis-1", at=now - timedelta(hours=1), is_bot=True)  # bots never count

    response = world.api(world.key_a).post(
        "/api/v1/signups", {"visitor_id": "vis-1", "email": "li@medicorp.example"}, format="json"
    )

    assert response.status_code == 201, response.content
    referral = Referral.objects.get(pk=response.json()["referral"]["id"])
    assert referral.referrer == ravi and referral.link == link_ravi
    assert referral.clicked_at == now - timedelta(days=10)  # the visitor's first click in the program


def test_signup_whose_only_click_is_outside_the_cookie_window_creates_no_referral(world):
    program = program_for(world.a, cookie_window_days=30)
    _, link = referrer_with_link(program)
    click(link, visitor_id="vis-old", at=timezone.now() - timedelta(days=31))

    response = world.api(world.key_a).post(
        "/api/v1/signups", {"visitor_id": "vis-old", "email": "late@prospect.example"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["referral"] is None
    assert not Referral.objects.exists()


def test_repeating_a_signup_changes_nothing(world):
    program = program_for(world.a)
    _, link = referrer_with_link(program)
    payload = {"referral_code": link.code, "email": "sam@retailhub.example", "coupon_code": link.code}
    client = world.api(world.key_a)
    first = client.post("/api/v1/signups", payload, format="json")
    before = _counts()

    again = client.post("/api/v1/signups", payload, format="json")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["referral"]["id"] == first.json()["referral"]["id"]
    assert _counts() == before


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"referral_code": "nope-nope"}, "referral_code"),
        ({"email": "not-an-email"}, "email"),
        ({"email": ""}, "email"),
        ({"company_size": "huge"}, "company_size"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"visitor_id": "v" * 65}, "visitor_id"),
    ],
    ids=["unknown-code", "bad-email", "blank-email", "bad-size", "bad-time", "long-visitor"],
)
def test_bad_signup_input_is_a_400_naming_the_field_and_writes_nothing(world, payload, field):
    program = program_for(world.a)
    _, link = referrer_with_link(program)
    before = _counts()

    response = world.api(world.key_a).post(
        "/api/v1/signups",
        {"referral_code": link.code, "email": "ok@prospect.example", "visitor_id": "v1", **payload},
        format="json",
    )

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert field in response.json()["error"]["message"]
    assert _counts() == before


def test_partner_lead_is_stored_with_its_qualifying_information(world):
    program = program_for(world.a, kind="partner")
    priya, _ = referrer_with_link(program, name="Priya Sharma", company="Growth Agency")

    response = world.api(world.key_a).post(
        "/api/v1/leads",
        {
            "participant": priya.pk,
            "name": "Eva Lind",
            "email": "eva@logistix.example",
            "company": "Logistix",
            "company_size": "51-200",
            "budget": "$30k a year",
            "authority": "Eva is the COO and signs",
            "need": "Replace spreadsheets",
            "timeline": "Q3",
            "notes": "Met at a trade fair",
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    referral = Referral.objects.get(pk=response.json()["id"])
    assert referral.referrer == priya and referral.source == "partner_lead"
    assert referral.status == ReferralStatus.SIGNED_UP
    assert referral.qualification == {
        "budget": "$30k a year",
        "authority": "Eva is the COO and signs",
        "need": "Replace spreadsheets",
        "timeline": "Q3",
        "notes": "Met at a trade fair",
    }
    assert response.json()["qualification"]["timeline"] == "Q3"
    touchpoint = Touchpoint.objects.get(kind="partner_lead")
    assert touchpoint.participant == priya and touchpoint.referral == referral


def test_a_lead_for_an_already_referred_email_is_refused_on_email(world):
    program = program_for(world.a, kind="partner")
    priya, _ = referrer_with_link(program, name="Priya Sharma", company="Growth Agency")
    marco, _ = referrer_with_link(program, name="Marco Rossi", company="ResellPro")
    client = world.api(world.key_a)
    lead = {"name": "Eva", "email": "eva@logistix.example", "company": "Logistix"}
    assert client.post("/api/v1/leads", {**lead, "participant": priya.pk}, format="json").status_code == 201
    before = _counts()

    second = client.post("/api/v1/leads", {**lead, "participant": marco.pk}, format="json")

    assert second.status_code == 400
    assert "email" in second.json()["error"]["fields"]
    assert _counts() == before
    assert Referral.objects.get().referrer == priya


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"participant": 999_999}, "participant"),
        ({"participant": "abc"}, "participant"),
        ({"email": "nope"}, "email"),
        ({"company": ""}, "company"),
        ({"company_size": "3"}, "company_size"),
        ({"budget": "x" * 501}, "budget"),
    ],
    ids=["unknown-participant", "non-id", "bad-email", "no-company", "bad-size", "long-budget"],
)
def test_bad_lead_input_is_a_400_naming_the_field_and_writes_nothing(world, payload, field):
    program = program_for(world.a, kind="partner")
    priya, _ = referrer_with_link(program, name="Priya Sharma", company="Growth Agency")
    before = _counts()

    response = world.api(world.key_a).post(
        "/api/v1/leads",
        {"participant": priya.pk, "name": "Eva", "email": "eva@logistix.example", "company": "Logistix", **payload},
        format="json",
    )

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert _counts() == before


def test_a_viewer_session_cannot_submit_signups_or_leads(world, client):
    client.force_login(world.viewer_a)
    assert client.post("/api/v1/signups", {"email": "x@y.example"}, content_type="application/json").status_code == 403
    assert not Referral.objects.exists()


@pytest.mark.parametrize("dead", ["paused-program", "inactive-link", "removed-referrer"])
def test_a_code_that_no_longer_accepts_referrals_is_a_400_on_referral_code(world, dead):
    program = program_for(world.a)
    dana, link = referrer_with_link(program)
    if dead == "paused-program":
        program.status = "paused"
        program.save()
    elif dead == "inactive-link":
        link.is_active = False
        link.save()
    else:
        dana.status = "removed"
        dana.save()
    before = _counts()

    response = world.api(world.key_a).post(
        "/api/v1/signups", {"referral_code": link.code, "email": "ok@prospect.example"}, format="json"
    )

    assert response.status_code == 400 and "referral_code" in response.json()["error"]["fields"]
    assert _counts() == before
