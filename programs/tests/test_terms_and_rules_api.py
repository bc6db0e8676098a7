"""Plain-language terms (renderer, API, public page), the rules API and the public application form."""

from __future__ import annotations

import re

import pytest
from django.core import mail

from programs import selectors
from programs.models import Participant, ProgramAccess, ProgramStatus, ProgramVersion
from programs.rules import example_rules
from programs.terms import render_terms
from tests import factories as f

pytestmark = pytest.mark.django_db

RICH = {
    "schema_version": 1,
    "currency": "USD",
    "referrer": [
        {"kind": "flat_per_lead", "amount_minor": 2_500},
        {
            "kind": "tiered",
            "tiers": [
                {"min_referrals": 1, "amount_minor": 5_000},
                {"min_referrals": 6, "amount_minor": 7_500},
                {"min_referrals": 11, "percent_bp": 2_000},
            ],
        },
        {"kind": "recurring_percent", "percent_bp": 1_500, "months": 12, "max_amount_minor": 50_000},
        {"kind": "gift", "gift": "a company hoodie", "on": "qualified"},
    ],
    "referred": [
        {"kind": "renewal_discount", "percent_bp": 2_000},
        {"kind": "free_months", "months": 1, "on": "sign_up"},
        {"kind": "feature_unlock", "feature": "SSO", "months": 6},
        {"kind": "account_credit", "amount_minor": 1_000, "per_seat": True, "max_seats": 50},
    ],
    "caps": {"referrer_rewarded_referrals": {"max": 12, "period": "year"}, "max_bill_discount_bp": 10_000},
    "eligibility": {
        "industries": ["software", "fintech"],
        "company_size": {"min": 20, "max": 2_000},
        "annual_revenue_minor": {"min": 100_000_000},
    },
    "qualification": {"budget": True, "authority": True, "need": True, "timeline": False},
    "cancellation": {"policy": "clawback", "within_days": 90},
}


def program_with(world, rules=RICH, **kwargs):
    program = f.ProgramFactory(tenant=world.a, hold_days=30, auto_approve_limit_minor=50_000, **kwargs)
    f.ProgramVersionFactory(program=program, number=1, rules=rules)
    return program


def section(terms, key):
    return next(s for s in terms.sections if s.key == key).items


def test_terms_state_what_counts_when_paid_caps_and_cancellation_plainly(world):
    program = program_with(world, cookie_window_days=60, attribution_model="position_based")

    terms = render_terms(program, selectors.program_latest_version(program))

    assert section(terms, "referrer") == (
        "25.00 USD when a company you referred becomes a qualified lead.",
        "A reward that grows with your successful referrals this year, paid when each becomes a paying customer "
        "(the 1st to the 5th: 50.00 USD; the 6th to the 10th: 75.00 USD; from the 11th on: 20 % of the first payment).",
        "15 % of every payment the referred company makes in its first 12 months, at most 500.00 USD each time.",
        "A gift (a company hoodie) when a company you referred becomes a qualified lead.",
    )
    assert section(terms, "referred") == (
        "20 % off their next renewal when they become a paying customer.",
        "1 free month of their subscription when they sign up.",
        "SSO unlocked for 6 months when they become a paying customer.",
        "10.00 USD account credit for every seat the referred company buys (up to 50 seats) when they become a "
        "paying customer.",
    )
    counts = section(terms, "counts")
    assert counts[0] == (
        "A referral counts when the company you refer signs up within 60 days of opening your referral link "
        "(or with your referral code)."
    )
    assert "40 % of the credit each" in counts[1]
    assert "The referred company must work in one of these industries: fintech, software." in counts
    assert "The referred company must have 20 to 2,000 employees." in counts
    assert "Its annual revenue must be at least 1,000,000.00 USD." in counts
    assert "A lead is qualified once the team has confirmed its budget, authority and need." in counts
    assert section(terms, "paid") == (
        "Rewards are held for 30 days after the payment that earned them, so refunds can be settled, then paid out.",
        "Rewards up to 500.00 USD are approved automatically; larger ones are reviewed by the team first.",
        "Cash rewards are paid in USD; credits, discounts and free months are applied to the account's next bills.",
    )
    assert section(terms, "limits") == (
        "At most 12 referrals per referrer are rewarded each year.",
        "Discounts never take more than 100 % off one bill.",
    )
    assert section(terms, "cancellation") == (
        "If the referred company cancels within 90 days of becoming a customer, all rewards for it are withdrawn: "
        "rewards not yet paid out are cancelled, and rewards already paid out are deducted from your next payout.",
        "If a payment is refunded, the rewards that payment earned are reduced in proportion to the amount refunded, "
        "and a full refund withdraws them (an amount already paid out is deducted from your next payout); rewards "
        "earned by other payments are not affected.",
        "Recurring shares stop when the referred company stops paying.",
    )
    assert "Version 1" in terms.text and "- At most 12 referrals per referrer are rewarded each year." in terms.text


@pytest.mark.parametrize(
    ("policy", "phrase"),
    [
        ("clawback", "already paid out are deducted from your next payout"),
        ("forfeit_unpaid", "already paid out are yours to keep"),
        ("keep", "even if the referred company cancels"),
    ],
)
def test_each_cancellation_policy_is_spelled_out(world, policy, phrase):
    program = program_with(world, rules={**example_rules("USD"), "cancellation": {"policy": policy}})

    items = section(render_terms(program, selectors.program_latest_version(program)), "cancellation")

    assert phrase in items[0] and "refunded" not in items[0]
    assert items[1].startswith("If a payment is refunded, the rewards that payment earned are reduced in proportion")


def test_terms_api_returns_sections_and_text(world):
    program = program_with(world)

    response = world.api(world.key_a).get(f"/api/v1/programs/{program.pk}/terms")

    body = response.json()
    assert response.status_code == 200
    assert body["program_id"] == program.pk and body["version"] == 1
    assert [s["key"] for s in body["sections"]] == [
        "referrer",
        "referred",
        "counts",
        "paid",
        "limits",
        "cancellation",
        "changes",
    ]
    assert "When you are paid" in body["text"]


def test_terms_api_of_a_program_without_rules_says_so(world):
    program = f.ProgramFactory(tenant=world.a)
    body = world.api(world.key_a).get(f"/api/v1/programs/{program.pk}/terms").json()
    assert (body["version"], body["sections"], body["notice"]) == (None, [], "This program has no rules yet.")


# --- rules API ---------------------------------------------------------------------------------
def test_put_rules_creates_a_version_then_is_idempotent(world):
    program = program_with(world, rules=example_rules("USD"))
    api = world.api(world.key_a)

    created = api.put(f"/api/v1/programs/{program.pk}/rules", {"rules": RICH, "note": "launch tiers"}, format="json")
    again = api.put(f"/api/v1/programs/{program.pk}/rules", {"rules": RICH}, format="json")
    current = api.get(f"/api/v1/programs/{program.pk}/rules")

    assert (created.status_code, again.status_code) == (201, 200)
    assert created.json()["version"] == again.json()["version"] == current.json()["version"] == 2
    assert created.json()["note"] == "launch tiers" and created.json()["created_by"].startswith("api_key:")
    assert current.json()["rules"]["caps"]["referrer_rewarded_referrals"] == {"max": 12, "period": "year"}
    assert world.api(world.key_a).get(f"/api/v1/programs/{program.pk}").json()["current_version"] == 2


def test_the_program_list_names_each_programs_current_version(world):
    versioned = program_with(world, rules=example_rules("USD"))
    world.api(world.key_a).put(f"/api/v1/programs/{versioned.pk}/rules", {"rules": RICH}, format="json")
    bare = f.ProgramFactory(tenant=world.a)

    rows = world.api(world.key_a).get("/api/v1/programs").json()["results"]

    assert {row["id"]: row["current_version"] for row in rows} == {versioned.pk: 2, bare.pk: None}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "rules"),
        ({"rules": "text"}, "rules"),
        ({"rules": {**RICH, "referrer": [{"kind": "tiered", "tiers": []}]}}, "rules.referrer[0].tiers"),
        ({"rules": {**RICH, "caps": {"max_bill_discount_bp": 10_001}}}, "rules.caps.max_bill_discount_bp"),
        ({"rules": {**RICH, "currency": "EUR"}}, "rules.currency"),
        ({"rules": RICH, "note": "x" * 301}, "note"),
    ],
    ids=["missing", "not-an-object", "empty-tiers", "bill-cap-over-100", "wrong-currency", "long-note"],
)
def test_put_rules_bad_input_names_the_field_and_creates_no_version(world, body, field):
    program = program_with(world, rules=example_rules("USD"))

    response = world.api(world.key_a).put(f"/api/v1/programs/{program.pk}/rules", body, format="json")

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"], response.json()
    assert ProgramVersion.objects.filter(program=program).count() == 1


def test_get_rules_without_any_version_is_a_clear_404(world):
    program = f.ProgramFactory(tenant=world.a)
    response = world.api(world.key_a).get(f"/api/v1/programs/{program.pk}/rules")
    assert response.status_code == 404 and response.json()["error"]["code"] == "no_rules"


def test_tenant_b_cannot_change_tenant_a_rules(world):
    program = program_with(world, rules=example_rules("USD"))
    response = world.api(world.key_b).put(f"/api/v1/programs/{program.pk}/rules", {"rules": RICH}, format="json")
    assert response.status_code == 404
    assert ProgramVersion.objects.filter(program=program).count() == 1


def test_program_api_creates_with_rules_and_patches_configuration(world):
    api = world.api(world.key_a)

    created = api.post(
        "/api/v1/programs",
        {
            "name": "Partners",
            "kind": "partner",
            "access": "gated",
            "landing_url": "https://tenant-a.example/partners",
            "attribution_model": "time_decay",
            "time_decay_half_life_days": 14,
            "rules": RICH,
        },
        format="json",
    )
    patched = api.patch(f"/api/v1/programs/{created.json()['id']}", {"hold_days": 45}, format="json")
    refused = api.patch(
        f"/api/v1/programs/{created.json()['id']}", {"landing_url": "https://evil.example/"}, format="json"
    )

    assert created.status_code == 201 and created.json()["current_version"] == 1
    assert created.json()["time_decay_half_life_days"] == 14 and created.json()["status"] == "draft"
    assert patched.status_code == 200 and patched.json()["hold_days"] == 45
    assert refused.status_code == 400 and "landing_url" in refused.json()["error"]["fields"]


def test_program_api_patch_with_rules_and_settings_makes_one_version(world):
    program = f.ProgramFactory(tenant=world.a, hold_days=30)
    f.ProgramVersionFactory(program=program, number=1, rules=example_rules("USD"))
    richer = {**example_rules("USD"), "referrer": [{"kind": "flat_per_conversion", "amount_minor": 9_900}]}

    response = world.api(world.key_a).patch(
        f"/api/v1/programs/{program.pk}", {"hold_days": 14, "rules": richer, "note": "Q3 push"}, format="json"
    )
    bad = world.api(world.key_a).patch(
        f"/api/v1/programs/{program.pk}", {"hold_days": 1, "rules": {**richer, "referrer": "x"}}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["hold_days"] == 14 and response.json()["current_version"] == 2
    current = selectors.program_latest_version(program)
    assert (current.note, current.rules["hold_days"]) == ("Q3 push", 14)
    assert current.rules["referrer"][0]["amount_minor"] == 9_900
    assert bad.status_code == 400 and "rules.referrer" in bad.json()["error"]["fields"]
    program.refresh_from_db()
    assert program.hold_days == 14 and program.versions.count() == 2


def test_program_api_create_with_bad_rules_writes_nothing(world):
    response = world.api(world.key_a).post(
        "/api/v1/programs",
        {
            "name": "Partners",
            "kind": "partner",
            "landing_url": "https://tenant-a.example/partners",
            "rules": {**RICH, "referred": [{"kind": "gift"}]},
        },
        format="json",
    )
    assert response.status_code == 400
    assert "rules.referred[0].gift" in response.json()["error"]["fields"]
    assert not ProgramVersion.objects.exists()
    assert not f.ProgramFactory._meta.model.objects.exists()


def test_tenant_b_cannot_patch_tenant_a_program(world):
    program = f.ProgramFactory(tenant=world.a, hold_days=30)
    response = world.api(world.key_b).patch(f"/api/v1/programs/{program.pk}", {"hold_days": 1}, format="json")
    program.refresh_from_db()
    assert response.status_code == 404 and program.hold_days == 30


# --- public terms page -------------------------------------------------------------------------
def terms_url(tenant_slug, program_slug):
    return f"/t/{tenant_slug}/{program_slug}/terms/"


def test_public_terms_page_is_mobile_friendly_and_plain(world, client):
    program_with(world, slug="customers", description="Refer a friend, both of you win.")

    response = client.get(terms_url("tenant-a", "customers"))

    page = response.content.decode()
    assert response.status_code == 200
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "Refer a friend, both of you win." in page
    assert "At most 12 referrals per referrer are rewarded each year." in page
    assert "Terms version 1" in page
    assert "Join the program" in page


def test_paused_programs_show_their_terms_with_a_notice_and_no_join_button(world, client):
    program_with(world, slug="paused-one", status=ProgramStatus.PAUSED)
    page = client.get(terms_url("tenant-a", "paused-one")).content.decode()
    assert "This program is paused" in page and "Join the program" not in page


@pytest.mark.parametrize("status", [ProgramStatus.DRAFT, ProgramStatus.ARCHIVED])
def test_draft_and_archived_programs_have_no_public_terms(world, client, status):
    program_with(world, slug="hidden", status=status)
    response = client.get(terms_url("tenant-a", "hidden"))
    assert response.status_code == 404 and b"Customer" not in response.content


def test_unknown_or_mixed_tenant_slugs_are_404(world, client):
    program_with(world, slug="customers")
    f.ProgramFactory(tenant=world.b, slug="b-only")

    assert client.get(terms_url("tenant-a", "nope")).status_code == 404
    assert client.get(terms_url("no-such-tenant", "customers")).status_code == 404
    assert client.get(terms_url("tenant-b", "customers")).status_code == 404
    assert client.get(terms_url("tenant-a", "b-only")).status_code == 404


# --- public application ------------------------------------------------------------------------
def apply_url(program):
    return f"/t/{program.tenant.slug}/{program.slug}/apply/"


def application(**overrides):
    return {
        "name": "Marco Rossi",
        "email": "marco@resellpro.example",
        "company": "ResellPro",
        "note": "We resell CRMs",
        "accept_terms": "on",
        **overrides,
    }


def apply_and_confirm(client, program, captured, **overrides):
    """Post the form, then confirm from the link of the one e-mail it sends (the applicant's own step)."""
    with captured(execute=True):
        asked = client.post(apply_url(program), application(**overrides))
    assert asked.status_code == 200 and "Check your inbox" in asked.content.decode()
    assert not Participant.objects.exists(), "nothing is stored before the address is confirmed"
    confirmation = mail.outbox.pop()
    path = re.search(r"https?://[^/\s]+(/\S+/apply/confirm/\S+/)", confirmation.body).group(1)
    assert client.get(path).status_code == 200
    with captured(execute=True):
        return client.post(path)


def test_applying_to_a_gated_program_waits_for_review(world, client, django_capture_on_commit_callbacks):
    program = program_with(world, slug="partners", access=ProgramAccess.GATED)

    response = apply_and_confirm(client, program, django_capture_on_commit_callbacks)

    participant = Participant.objects.get()
    assert response.status_code == 200 and "review your application" in response.content.decode()
    assert (participant.status, participant.source, participant.application_note) == (
        "pending",
        "application",
        "We resell CRMs",
    )
    assert "within 24 hours" in mail.outbox[0].body
    assert not participant.links.exists()


def test_joining_an_open_program_sends_the_links(world, client, django_capture_on_commit_callbacks):
    program = program_with(world, slug="customers", access=ProgramAccess.OPEN)

    response = apply_and_confirm(client, program, django_capture_on_commit_callbacks)

    participant = Participant.objects.get()
    assert "You're in" in response.content.decode()
    assert participant.status == "active" and participant.links.count() == 5
    assert "/r/" in mail.outbox[0].body and "/terms/" in mail.outbox[0].body


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"email": "bad"}, "Enter a valid email address."),
        ({"accept_terms": ""}, "This field is required."),
        ({"name": ""}, "This field is required."),
    ],
    ids=["bad-email", "terms-not-accepted", "no-name"],
)
def test_a_bad_application_shows_the_error_and_writes_nothing(world, client, overrides, error):
    program = program_with(world, slug="partners", access=ProgramAccess.GATED)

    response = client.post(apply_url(program), application(**overrides))

    assert response.status_code == 200 and error in response.content.decode()
    assert not Participant.objects.exists()


def test_invite_only_and_paused_programs_have_no_application_form(world, client):
    invite_only = program_with(world, slug="vip", access=ProgramAccess.INVITE_ONLY)
    paused = program_with(world, slug="paused", status=ProgramStatus.PAUSED)

    assert client.get(apply_url(invite_only)).status_code == 404
    assert client.post(apply_url(paused), application()).status_code == 404
    assert client.get(terms_url("tenant-a", "vip")).status_code == 200
    assert not Participant.objects.exists()
