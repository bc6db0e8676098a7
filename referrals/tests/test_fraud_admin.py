"""The admin review queue: evidence shown readably, bulk decisions need a reason, tenants stay apart."""

from __future__ import annotations

import re

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

from referral_platform.tenancy.models import AuditEvent
from referrals.fraud_services import referral_screen
from referrals.models import FraudPolicy, Referral, ReviewStatus
from tests import factories as f

pytestmark = pytest.mark.django_db

QUEUE = "/admin/referrals/fraudreview/"
POLICIES = "/admin/referrals/fraudpolicy/"


def screened(program, **fields):
    referral = f.ReferralFactory(referrer=f.ParticipantFactory(program=program), **fields)
    referral_screen(referral=referral)
    return Referral.objects.get(pk=referral.pk)


@pytest.fixture
def flagged_pair(world):
    program = f.ProgramFactory(tenant=world.a)
    return [
        screened(program, referred_email="one@mailinator.com", referred_company="One <b>Corp</b>"),
        screened(program, referred_email="two@yopmail.com", referred_company="Two Ltd"),
    ]


def decide(client, action, referrals, follow=False, **extra):
    return client.post(
        f"{QUEUE}?review=all",
        {"action": action, ACTION_CHECKBOX_NAME: [r.pk for r in referrals], **extra},
        follow=follow,
    )


def statuses(referrals):
    return [Referral.objects.get(pk=r.pk).review_status for r in referrals]


def decision_audits():
    return AuditEvent.objects.filter(action__in=["referral.review.cleared", "referral.review.rejected"])


def test_the_queue_lists_flagged_referrals_with_their_signals(client, world, flagged_pair):
    clean = f.ReferralFactory(referrer=flagged_pair[0].referrer, referred_email="fine@globex.example")
    client.force_login(world.marketer_a)

    page = client.get(QUEUE).content.decode()

    assert "one@mailinator.com" in page and "two@yopmail.com" in page
    assert "Disposable e-mail domain" in page
    assert "fine@globex.example" not in page and f"/{clean.pk}/change/" not in page


def test_the_detail_page_renders_the_evidence_as_a_table(client, world, flagged_pair):
    referral = flagged_pair[0]
    client.force_login(world.marketer_a)

    page = client.get(f"{QUEUE}{referral.pk}/change/").content.decode()

    assert '<table class="fraud-compared">' in page
    assert "<code>mailinator.com</code>" in page
    assert "disposable domain list (referrals/data/disposable_domains.txt)" in page
    assert "One &lt;b&gt;Corp&lt;/b&gt;" in page and "One <b>Corp</b>" not in page
    assert "Clear this referral" in page and 'name="_save"' not in page


@pytest.mark.parametrize(
    ("review_status", "buttons"),
    [
        (ReviewStatus.FLAGGED, ["Clear this referral", "Reject as fraud"]),
        (ReviewStatus.CLEARED, []),
        (ReviewStatus.REJECTED, []),
    ],
    ids=["flagged", "cleared", "rejected"],
)
def test_the_detail_page_offers_only_the_decisions_the_review_machine_allows(client, world, review_status, buttons):
    referral = f.ReferralFactory(
        referrer=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)), review_status=review_status
    )
    client.force_login(world.marketer_a)

    page = client.get(f"{QUEUE}{referral.pk}/change/").content.decode()

    assert [label for label in ("Clear this referral", "Reject as fraud") if label in page] == buttons


def test_a_viewer_gets_no_decision_buttons(client, world, flagged_pair):
    client.force_login(world.viewer_a)

    page = client.get(f"{QUEUE}{flagged_pair[0].pk}/change/").content.decode()

    assert "one@mailinator.com" in page and "Clear this referral" not in page and "Reject as fraud" not in page


@pytest.mark.parametrize("action", ["clear_referrals", "reject_referrals"])
def test_a_bulk_decision_first_asks_for_a_reason_and_writes_nothing(client, world, flagged_pair, action):
    client.force_login(world.marketer_a)

    asked = decide(client, action, flagged_pair)
    empty = decide(client, action, flagged_pair, apply="1", reason="   ")

    assert asked.status_code == 200 and 'name="reason"' in asked.content.decode()
    assert "one@mailinator.com" in asked.content.decode()
    assert empty.status_code == 200 and "nothing has been changed" in empty.content.decode()
    assert statuses(flagged_pair) == [ReviewStatus.FLAGGED, ReviewStatus.FLAGGED]
    assert not decision_audits().exists()


@pytest.mark.parametrize(
    ("action", "outcome"),
    [("clear_referrals", ReviewStatus.CLEARED), ("reject_referrals", ReviewStatus.REJECTED)],
    ids=["clear", "reject"],
)
def test_a_bulk_decision_with_a_reason_moves_each_referral_and_audits_it(client, world, flagged_pair, action, outcome):
    client.force_login(world.marketer_a)

    response = decide(client, action, flagged_pair, apply="1", reason="Called both buyers")

    assert response.status_code == 302
    assert statuses(flagged_pair) == [outcome, outcome]
    audits = decision_audits().order_by("object_id")
    assert [(a.object_id, a.from_state, a.to_state, a.reason) for a in audits] == [
        (str(r.pk), "flagged", outcome, "Called both buyers") for r in sorted(flagged_pair, key=lambda r: str(r.pk))
    ]
    assert all(a.actor == f"user:{world.marketer_a.pk}:{world.marketer_a.email}" for a in audits)


def test_a_bulk_decision_reports_referrals_it_could_not_move(client, world, flagged_pair):
    client.force_login(world.marketer_a)
    decide(client, "reject_referrals", flagged_pair[:1], apply="1", reason="Fake")

    response = decide(client, "clear_referrals", flagged_pair, apply="1", reason="Real", follow=True)

    assert statuses(flagged_pair) == [ReviewStatus.REJECTED, ReviewStatus.CLEARED]
    assert "rejected as fraud; it cannot be cleared" in response.content.decode()


def test_tenant_b_cannot_see_or_decide_tenant_as_flags(client, world, flagged_pair):
    client.force_login(world.marketer_b)

    listing = client.get(f"{QUEUE}?review=all").content.decode()
    detail = client.get(f"{QUEUE}{flagged_pair[0].pk}/change/")
    flag_listing = client.get("/admin/referrals/fraudflag/").content.decode()
    response = decide(client, "clear_referrals", flagged_pair, apply="1", reason="Not mine but hey")

    assert "mailinator" not in listing and "mailinator" not in flag_listing
    assert detail.status_code in (302, 404)
    assert response.status_code in (200, 302)
    assert statuses(flagged_pair) == [ReviewStatus.FLAGGED, ReviewStatus.FLAGGED]
    assert not decision_audits().exists()


def test_a_viewer_sees_the_queue_but_cannot_decide(client, world, flagged_pair):
    client.force_login(world.viewer_a)

    page = client.get(QUEUE).content.decode()
    response = decide(client, "clear_referrals", flagged_pair, apply="1", reason="Looks fine")

    assert "one@mailinator.com" in page and "clear_referrals" not in page
    assert response.status_code in (200, 302, 403)
    assert statuses(flagged_pair) == [ReviewStatus.FLAGGED, ReviewStatus.FLAGGED]
    assert not decision_audits().exists()


# --- per-program fraud settings --------------------------------------------------------------------
POLICY_FORM = {
    "self_referral_enabled": "on",
    "self_referral_activity_days": "30",
    "velocity_enabled": "on",
    "velocity_max_per_hour": "2",
    "duplicate_company_window_days": "60",
}


def test_a_marketer_sets_a_programs_checks_and_the_change_is_audited(client, world):
    program = f.ProgramFactory(tenant=world.a)
    client.force_login(world.marketer_a)

    response = client.post(f"{POLICIES}add/", {"program": program.pk, **POLICY_FORM})

    assert response.status_code == 302
    policy = FraudPolicy.objects.get(program=program)
    assert policy.tenant == world.a
    assert (policy.velocity_max_per_hour, policy.disposable_email_enabled, policy.duplicate_company_enabled) == (
        2,
        False,
        False,
    )
    audit = AuditEvent.objects.get(action="fraud_policy.created", object_id=str(policy.pk))
    assert audit.data["changed"]["velocity_max_per_hour"] == [None, 2]

    client.post(f"{POLICIES}{policy.pk}/change/", {**POLICY_FORM, "velocity_max_per_hour": "7"})

    assert FraudPolicy.objects.get(pk=policy.pk).velocity_max_per_hour == 7
    updated = AuditEvent.objects.get(action="fraud_policy.updated", object_id=str(policy.pk))
    assert updated.data["changed"] == {"velocity_max_per_hour": [2, 7]}


def test_a_marketer_turns_the_own_company_check_off_for_one_program_and_it_is_audited(client, world):
    # Given a program whose policy has every check on (the defaults)
    policy = f.FraudPolicyFactory(program=f.ProgramFactory(tenant=world.a))
    client.force_login(world.marketer_a)
    page = client.get(f"{POLICIES}{policy.pk}/change/").content.decode()
    assert re.search(r'<input[^>]*name="own_company_enabled"[^>]*checked', page)
    defaults_but_own_company = {
        "self_referral_enabled": "on",
        "self_referral_activity_days": "30",
        "disposable_email_enabled": "on",
        "velocity_enabled": "on",
        "velocity_max_per_hour": "5",
        "duplicate_company_enabled": "on",
        "duplicate_company_window_days": "90",
    }

    # When the marketer unticks "own company" (an unticked box is not posted) and saves
    response = client.post(f"{POLICIES}{policy.pk}/change/", defaults_but_own_company)

    # Then only that check is off, and the audit row says so
    assert response.status_code == 302
    policy.refresh_from_db()
    assert (policy.own_company_enabled, policy.self_referral_enabled, policy.duplicate_company_enabled) == (
        False,
        True,
        True,
    )
    updated = AuditEvent.objects.get(action="fraud_policy.updated", object_id=str(policy.pk))
    assert updated.data["changed"] == {"own_company_enabled": [True, False]}


@pytest.mark.parametrize(
    ("field", "value"),
    [("velocity_max_per_hour", "0"), ("duplicate_company_window_days", "-3"), ("self_referral_activity_days", "x")],
)
def test_bad_thresholds_are_refused_naming_the_field(client, world, field, value):
    program = f.ProgramFactory(tenant=world.a)
    client.force_login(world.marketer_a)

    response = client.post(f"{POLICIES}add/", {"program": program.pk, **POLICY_FORM, field: value})

    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert not FraudPolicy.objects.filter(program=program).exists()


def test_a_second_policy_for_a_program_is_a_form_error(client, world):
    policy = f.FraudPolicyFactory(program=f.ProgramFactory(tenant=world.a))
    client.force_login(world.marketer_a)

    response = client.post(f"{POLICIES}add/", {"program": policy.program.pk, **POLICY_FORM})

    assert response.status_code == 200
    assert "program" in response.context["adminform"].form.errors
    assert FraudPolicy.objects.filter(program=policy.program).count() == 1


def test_tenant_b_cannot_configure_tenant_as_program(client, world):
    program_a = f.ProgramFactory(tenant=world.a, name="A's secret program")
    client.force_login(world.marketer_b)

    form = client.get(f"{POLICIES}add/").content.decode()
    response = client.post(f"{POLICIES}add/", {"program": program_a.pk, **POLICY_FORM})

    assert "A&#x27;s secret program" not in form and "A's secret program" not in form
    assert response.status_code == 200 and "program" in response.context["adminform"].form.errors
    assert not FraudPolicy.objects.filter(program=program_a).exists()
