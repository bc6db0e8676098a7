"""The marketer admin for programs and participants: pages load, writes go through services, tenants stay apart."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from programs import selectors, services
from programs.models import Participant, ParticipantStatus, Program, ProgramAccess, ProgramStatus, ProgramVersion
from programs.rules import example_rules
from referral_platform.tenancy.models import AuditEvent
from tests import factories as f

pytestmark = pytest.mark.django_db


def program_form(**overrides):
    return {
        "name": "Customer referrals",
        "slug": "customer-referrals",
        "description": "",
        "kind": "customer",
        "access": "open",
        "landing_url": "https://tenant-a.example/signup",
        "cookie_window_days": "90",
        "attribution_model": "last_touch",
        "time_decay_half_life_days": "7",
        "currency": "USD",
        "hold_days": "30",
        "auto_approve_limit_minor": "50000",
        "rules_json": json.dumps(example_rules("USD")),
        "rules_note": "",
        "versions-TOTAL_FORMS": "0",
        "versions-INITIAL_FORMS": "0",
        "versions-MIN_NUM_FORMS": "0",
        "versions-MAX_NUM_FORMS": "1000",
        **overrides,
    }


def test_owner_opens_every_programs_admin_page(world, client):
    program = f.ProgramFactory(tenant=world.a)
    version = f.ProgramVersionFactory(program=program)
    participant = f.ParticipantFactory(program=program)
    job = f.ParticipantImportFactory(program=program)
    client.force_login(world.owner_a)

    urls = [
        reverse("admin:programs_program_changelist"),
        reverse("admin:programs_program_add"),
        reverse("admin:programs_program_change", args=[program.pk]),
        reverse("admin:programs_program_rules_preview", args=[program.pk]),
        reverse("admin:programs_programversion_changelist"),
        reverse("admin:programs_programversion_change", args=[version.pk]),
        reverse("admin:programs_participant_changelist"),
        reverse("admin:programs_participant_add"),
        reverse("admin:programs_participant_change", args=[participant.pk]),
        reverse("admin:programs_participantimport_changelist"),
        reverse("admin:programs_participantimport_add"),
        reverse("admin:programs_participantimport_change", args=[job.pk]),
        reverse("admin:programs_participantimport_progress", args=[job.pk]),
    ]
    for url in urls:
        assert client.get(url).status_code == 200, url


def test_program_change_page_shows_terms_versions_and_status_buttons(world, client):
    program = f.ProgramFactory(tenant=world.a, status=ProgramStatus.ACTIVE, slug="customers")
    version = f.ProgramVersionFactory(program=program, number=1)
    f.ProgramVersionFactory(program=f.ProgramFactory(tenant=world.b), number=1, note="tenant b note qq7")
    client.force_login(world.marketer_a)

    page = client.get(reverse("admin:programs_program_change", args=[program.pk])).content.decode()

    assert "Plain-language terms" in page and "At most 12 referrals per referrer are rewarded each year." in page
    assert "/t/tenant-a/customers/terms/" in page
    assert reverse("admin:programs_program_transition", args=[program.pk, "pause"]) in page
    assert reverse("admin:programs_program_transition", args=[program.pk, "archive"]) in page
    assert reverse("admin:programs_program_transition", args=[program.pk, "activate"]) not in page
    assert "tenant b note qq7" not in page
    assert "Preview these rules against the last 90 days" in page
    assert (
        "Rules versions (immutable" in page
        and reverse("admin:programs_programversion_change", args=[version.pk]) in page
    )


def test_adding_a_program_in_the_admin_creates_it_with_version_one(world, client):
    client.force_login(world.marketer_a)

    response = client.post(reverse("admin:programs_program_add"), program_form())

    program = Program.objects.get()
    assert response.status_code == 302
    assert (program.tenant, program.status) == (world.a, ProgramStatus.DRAFT)
    assert selectors.program_latest_version(program).rules == {
        **example_rules("USD"),
        **services.program_rules_snapshot(program=program),
    }
    assert AuditEvent.objects.filter(action="program.created", actor__startswith="user:").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"landing_url": "https://evil.example/"},
            "Add evil.example to your allowed landing domains: Settings → Domains",
        ),
        ({"rules_json": "{not json"}, "Not valid JSON"),
        (
            {"rules_json": json.dumps({**example_rules("USD"), "referrer": [{"kind": "percent_of_revenue"}]})},
            "rules.referrer[0].percent_bp: This field is required.",
        ),
        ({"rules_json": json.dumps(example_rules("EUR"))}, "rules.currency: Must be the program&#x27;s currency, USD."),
        ({"cookie_window_days": "0"}, "Enter a whole number from 1 to 365."),
    ],
    ids=["landing-url", "json", "rule-field", "rule-currency", "cookie-window"],
)
def test_bad_program_input_in_the_admin_is_shown_on_the_form_and_nothing_is_saved(world, client, overrides, message):
    client.force_login(world.marketer_a)

    response = client.post(reverse("admin:programs_program_add"), program_form(**overrides))

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Program.objects.exists() and not ProgramVersion.objects.exists()


def test_changing_rules_in_the_admin_adds_a_version_and_keeps_referrals_on_theirs(world, client):
    program = f.ProgramFactory(tenant=world.a, slug="customer-referrals", landing_url="https://tenant-a.example/signup")
    v1 = f.ProgramVersionFactory(program=program, number=1, rules=example_rules("USD"))
    referral = f.ReferralFactory(referrer=f.ParticipantFactory(program=program), rule_version=v1)
    new_rules = {**example_rules("USD"), "referrer": [{"kind": "flat_per_conversion", "amount_minor": 9_900}]}
    client.force_login(world.marketer_a)

    response = client.post(
        reverse("admin:programs_program_change", args=[program.pk]),
        program_form(rules_json=json.dumps(new_rules), rules_note="more for referrers", hold_days="14"),
    )

    program.refresh_from_db()
    current = selectors.program_latest_version(program)
    referral.refresh_from_db()
    assert response.status_code == 302
    assert (current.number, current.note) == (2, "more for referrers")
    assert current.rules["referrer"][0]["amount_minor"] == 9_900
    assert program.hold_days == 14
    assert referral.rule_version == v1
    assert ProgramVersion.objects.get(pk=v1.pk).rules == example_rules("USD")


def test_saving_unchanged_rules_in_the_admin_creates_no_version(world, client):
    program = f.ProgramFactory(tenant=world.a, slug="customer-referrals", landing_url="https://tenant-a.example/signup")
    f.ProgramVersionFactory(program=program, number=1, rules=example_rules("USD"))
    client.force_login(world.marketer_a)

    client.post(reverse("admin:programs_program_change", args=[program.pk]), program_form())

    assert program.versions.count() == 1


def test_status_buttons_run_the_transition_services(world, client):
    program = f.ProgramFactory(tenant=world.a, status=ProgramStatus.DRAFT)
    f.ProgramVersionFactory(program=program)
    client.force_login(world.marketer_a)

    activated = client.post(reverse("admin:programs_program_transition", args=[program.pk, "activate"]))
    program.refresh_from_db()
    status_after_activate = program.status
    again = client.post(reverse("admin:programs_program_transition", args=[program.pk, "activate"]), follow=True)

    program.refresh_from_db()
    assert activated.status_code == 302 and status_after_activate == ProgramStatus.ACTIVE
    assert "A active program cannot become active." in again.content.decode()
    assert AuditEvent.objects.filter(action="program.activated").count() == 1


def test_status_changes_are_refused_to_viewers_other_tenants_and_gets(world, client):
    program = f.ProgramFactory(tenant=world.a, status=ProgramStatus.ACTIVE)
    url = reverse("admin:programs_program_transition", args=[program.pk, "pause"])

    client.force_login(world.marketer_b)
    foreign = client.post(url)
    client.force_login(world.viewer_a)
    viewer = client.post(url)
    client.force_login(world.marketer_a)
    get = client.get(url)

    program.refresh_from_db()
    assert (foreign.status_code, viewer.status_code, get.status_code) == (404, 403, 405)
    assert program.status == ProgramStatus.ACTIVE
    assert not AuditEvent.objects.filter(action="program.paused").exists()


def test_bulk_status_actions_report_programs_that_cannot_move(world, client):
    draft_with_rules = f.ProgramFactory(tenant=world.a, status=ProgramStatus.DRAFT)
    f.ProgramVersionFactory(program=draft_with_rules)
    draft_without_rules = f.ProgramFactory(tenant=world.a, status=ProgramStatus.DRAFT)
    client.force_login(world.marketer_a)

    response = client.post(
        reverse("admin:programs_program_changelist"),
        {"action": "activate_programs", "_selected_action": [draft_with_rules.pk, draft_without_rules.pk]},
        follow=True,
    )

    draft_with_rules.refresh_from_db()
    draft_without_rules.refresh_from_db()
    assert draft_with_rules.status == ProgramStatus.ACTIVE
    assert draft_without_rules.status == ProgramStatus.DRAFT
    assert "Set the program&#x27;s rules before activating it." in response.content.decode()


# --- participants ------------------------------------------------------------------------------
def test_participant_form_offers_and_accepts_only_the_tenants_programs(world, client):
    own = f.ProgramFactory(tenant=world.a, name="Own program zz1")
    foreign = f.ProgramFactory(tenant=world.b, name="Foreign program zz2")
    client.force_login(world.marketer_a)

    form_page = client.get(reverse("admin:programs_participant_add")).content.decode()
    posted = client.post(
        reverse("admin:programs_participant_add"),
        {"program": foreign.pk, "external_id": "x1", "name": "Ann", "email": "ann@x.example", "company": ""},
    )

    # The program picker is an autocomplete: its choices come from the (tenant-scoped) autocomplete view.
    offered = client.get(
        "/admin/autocomplete/",
        {"app_label": "programs", "model_name": "participant", "field_name": "program", "term": "program zz"},
    ).json()["results"]

    assert foreign.name not in form_page
    assert [row["text"] for row in offered] == [own.name]
    assert posted.status_code == 200 and "Select a valid choice" in posted.content.decode()
    assert not Participant.objects.exists()


def test_enrolling_in_the_admin_goes_through_the_service_and_creates_links(world, client):
    program = f.ProgramFactory(tenant=world.a)
    client.force_login(world.marketer_a)

    response = client.post(
        reverse("admin:programs_participant_add"),
        {"program": program.pk, "external_id": "emp-7", "name": "Lena", "email": "LENA@stark.example", "company": ""},
    )

    participant = Participant.objects.get()
    assert response.status_code == 302
    assert (participant.email, participant.source, participant.tenant) == ("lena@stark.example", "admin", world.a)
    assert participant.links.count() == 5
    page = client.get(reverse("admin:programs_participant_change", args=[participant.pk])).content.decode()
    assert "data:image/png;base64," in page and "/r/" in page


def test_bad_participant_input_in_the_admin_is_named_and_nothing_saved(world, client):
    program = f.ProgramFactory(tenant=world.a)
    client.force_login(world.marketer_a)

    response = client.post(
        reverse("admin:programs_participant_add"),
        {"program": program.pk, "external_id": "  ", "name": "Lena", "email": "lena@stark.example", "company": ""},
    )

    assert response.status_code == 200 and "This field is required." in response.content.decode()
    assert not Participant.objects.exists()


def test_review_actions_approve_and_reject_applicants_with_audit_rows(world, client):
    program = f.ProgramFactory(tenant=world.a, access=ProgramAccess.GATED)
    applicants = [f.ParticipantFactory(program=program, status=ParticipantStatus.PENDING) for _ in range(3)]
    client.force_login(world.marketer_a)
    changelist = reverse("admin:programs_participant_changelist")

    client.post(
        changelist, {"action": "participants_approve", "_selected_action": [applicants[0].pk, applicants[1].pk]}
    )
    client.post(changelist, {"action": "participants_reject", "_selected_action": [applicants[2].pk]})

    statuses = [Participant.objects.get(pk=a.pk).status for a in applicants]
    assert statuses == ["active", "active", "rejected"]
    assert AuditEvent.objects.filter(action="participant.approved").count() == 2
    assert AuditEvent.objects.filter(action="participant.rejected").count() == 1
    assert applicants[0].links.count() == 5 and applicants[2].links.count() == 0


def test_a_viewer_cannot_run_review_actions(world, client):
    participant = f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a), status=ParticipantStatus.PENDING)
    client.force_login(world.viewer_a)

    client.post(
        reverse("admin:programs_participant_changelist"),
        {"action": "participants_approve", "_selected_action": [participant.pk]},
    )

    participant.refresh_from_db()
    assert participant.status == ParticipantStatus.PENDING


def test_tenant_b_cannot_approve_tenant_a_applicants_by_action(world, client):
    participant = f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a), status=ParticipantStatus.PENDING)
    client.force_login(world.marketer_b)

    client.post(
        reverse("admin:programs_participant_changelist"),
        {"action": "participants_approve", "_selected_action": [participant.pk]},
    )

    participant.refresh_from_db()
    assert participant.status == ParticipantStatus.PENDING


def test_versions_are_read_only_in_the_admin(world, client):
    version = f.ProgramVersionFactory(program=f.ProgramFactory(tenant=world.a))
    client.force_login(world.owner_a)

    page = client.get(reverse("admin:programs_programversion_change", args=[version.pk])).content.decode()
    posted = client.post(reverse("admin:programs_programversion_change", args=[version.pk]), {"note": "edited"})

    version.refresh_from_db()
    assert "Terms under this version" in page and 'name="_save"' not in page
    assert posted.status_code == 403 and version.note == ""


def test_platform_staff_can_preview_any_tenants_program(world, client):
    from django.contrib.auth import get_user_model

    staff = get_user_model().objects.create_superuser("ops@platform.example", "ops@platform.example", "pw-123456789")
    program = f.ProgramFactory(tenant=world.b)
    f.ProgramVersionFactory(program=program)
    client.force_login(staff)

    response = client.post(
        reverse("admin:programs_program_rules_preview", args=[program.pk]),
        {"rules_json": json.dumps(example_rules(program.currency)), "preview": "1"},
    )

    assert response.status_code == 200 and 'id="preview-totals"' in response.content.decode()


def test_admin_actor_is_used_for_enrolment_audit(world, client):
    program = f.ProgramFactory(tenant=world.a)
    client.force_login(world.marketer_a)
    client.post(
        reverse("admin:programs_participant_add"),
        {"program": program.pk, "external_id": "e1", "name": "Omar", "email": "omar@wayne.example", "company": ""},
    )
    row = AuditEvent.objects.get(action="participant.enrolled")
    assert row.actor == f"user:{world.marketer_a.pk}:{world.marketer_a.email}"


def test_currency_of_a_live_program_cannot_change_in_the_admin(world, client):
    program = f.ProgramFactory(
        tenant=world.a, slug="customer-referrals", landing_url="https://tenant-a.example/signup", status="active"
    )
    f.ProgramVersionFactory(program=program, number=1, rules=example_rules("USD"))
    client.force_login(world.marketer_a)

    response = client.post(
        reverse("admin:programs_program_change", args=[program.pk]),
        program_form(currency="EUR", rules_json=json.dumps(example_rules("EUR"))),
    )

    program.refresh_from_db()
    assert response.status_code == 200
    assert "The currency can only change while the program is a draft." in response.content.decode()
    assert program.currency == "USD" and program.versions.count() == 1


def test_an_archived_program_is_read_only_in_the_admin(world, client):
    program = f.ProgramFactory(tenant=world.a, status=ProgramStatus.ARCHIVED, hold_days=30)
    f.ProgramVersionFactory(program=program, number=1)
    client.force_login(world.marketer_a)
    url = reverse("admin:programs_program_change", args=[program.pk])

    page = client.get(url).content.decode()
    client.post(url, program_form(hold_days="1", rules_json=json.dumps({**example_rules("USD"), "referred": []})))

    program.refresh_from_db()
    assert 'name="rules_json"' not in page and 'name="hold_days"' not in page
    assert "&quot;schema_version&quot;: 1" in page
    assert program.hold_days == 30 and program.versions.count() == 1
