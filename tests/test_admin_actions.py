"""Admin actions carry permissions: every registered action declares the permission it needs, a viewer is
offered only read-only ones, and a viewer posting any other action is refused with nothing changed.

The harness walks every ModelAdmin registered on the product's admin site (tenancy's included), so a new
action without ``permissions=[...]`` fails here by itself. (Django's default ``admin.site``, where
third-party apps such as django-celery-beat register themselves, is routed nowhere.)"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.messages import get_messages
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from programs.models import ParticipantStatus, Program, ProgramStatus
from referral_platform.tenancy.actors import Actor
from referral_platform.tenancy.admin_base import site
from referral_platform.tenancy.models import ApiKey, AuditEvent, Role
from referrals.models import ConversionEventStatus, ReviewStatus
from rewards.models import PayoutStatus, StripeWebhookEvent, WebhookEventStatus
from tests import factories as f
from tests import isolation

pytestmark = pytest.mark.django_db

SITES = (site,)
READ_ONLY = ("view",)


def registered_actions(sites=SITES):
    """(site, model, model admin, action name, allowed permissions) of every action an admin offers."""
    for admin_site in sites:
        for model, model_admin in admin_site._registry.items():
            for func, name, _ in model_admin._get_base_actions():
                yield admin_site, model, model_admin, name, tuple(getattr(func, "allowed_permissions", ()) or ())


def actions_without_permissions(sites=SITES) -> list[str]:
    return [
        f"{model._meta.label}: {name}"
        for _, model, _, name, permissions in registered_actions(sites)
        if not permissions
    ]


PROJECT_ACTIONS = sorted(
    (f"{model._meta.label}.{name}", model, name, permissions)
    for admin_site, model, _, name, permissions in registered_actions((site,))
    if name != "delete_selected" and permissions != READ_ONLY
)


# --- the harness -----------------------------------------------------------------------------------


def test_every_registered_admin_action_declares_the_permissions_it_needs():
    assert PROJECT_ACTIONS, "the walk found no actions: is the admin registered?"
    assert actions_without_permissions() == []


def test_every_declared_permission_is_one_the_admin_can_answer():
    unknown = [
        f"{model._meta.label}: {name} needs {permission!r}"
        for _, model, model_admin, name, permissions in registered_actions()
        for permission in permissions
        if not callable(getattr(model_admin, f"has_{permission}_permission", None))
    ]
    assert unknown == []


def test_the_harness_catches_an_action_without_permissions():
    fake_site = admin.AdminSite(name="fake")

    @admin.action(description="Unguarded")
    def unguarded(modeladmin, request, queryset):
        pass

    @admin.action(description="Guarded", permissions=["change"])
    def guarded(modeladmin, request, queryset):
        pass

    class FakeProgramAdmin(admin.ModelAdmin):
        actions = [unguarded, guarded]

    fake_site.register(Program, FakeProgramAdmin)

    assert actions_without_permissions((fake_site,)) == ["programs.Program: unguarded"]


def _request(user, tenant, role):
    request = RequestFactory().get("/admin/")
    request.user = user
    request.actor = Actor(kind="member", tenant=tenant, user=user, role=role)
    return request


def test_a_viewer_is_offered_only_read_only_actions_and_an_editor_the_others(world):
    viewer = _request(world.viewer_a, world.a, Role.VIEWER)
    marketer = _request(world.marketer_a, world.a, Role.MARKETER)

    offered_to_viewer = {
        f"{model._meta.label}.{name}": permissions
        for admin_site, model, model_admin, name, permissions in registered_actions((site,))
        if name in model_admin.get_actions(viewer)
    }
    offered_to_marketer = {
        f"{model._meta.label}.{name}"
        for admin_site, model, model_admin, name, permissions in registered_actions((site,))
        if name in model_admin.get_actions(marketer)
    }

    assert {label: p for label, p in offered_to_viewer.items() if p != READ_ONLY} == {}
    assert {label for label, _, _, _ in PROJECT_ACTIONS} <= offered_to_marketer


# --- a viewer posting a mutating action: refused, nothing changes -------------------------------------


@pytest.fixture
def rows(world):
    """One row of tenant A for every model that has a mutating action, in a state the action could move."""
    program = f.ProgramFactory(tenant=world.a, status=ProgramStatus.DRAFT, hold_days=0)
    f.ProgramVersionFactory(program=program)
    participant = f.ParticipantFactory(program=program, status=ParticipantStatus.PENDING)
    f.ReferralFactory(referrer=participant)
    f.ReferralFactory(referrer=participant, review_status=ReviewStatus.FLAGGED)
    event = f.ConversionEventFactory(tenant=world.a, status=ConversionEventStatus.RECEIVED)
    f.RewardEvaluationFactory(conversion_event=event)
    f.make_ledger_reward(participant, now=timezone.now() - timedelta(days=1))
    f.PayoutFactory(participant=participant, status=PayoutStatus.FAILED, attempts=1)
    f.ParticipantStripeProfileFactory(participant=participant)
    f.StripeWebhookEventFactory(tenant=world.a, status=WebhookEventStatus.FAILED, attempts=1)
    # engagement: a message template (test send), an endpoint (rotate secret) and a delivery to it (re-send).
    isolation._message_template_admin(world)
    isolation._webhook_delivery_admin(world)


def _snapshot(model):
    return list(model._base_manager.order_by("pk").values())


FORM_FIELDS = {"apply": "1", "reason": "a reason", "note": "a note", "reference": "tr_1"}


@pytest.mark.parametrize(
    ("model", "name"), [(model, name) for _, model, name, _ in PROJECT_ACTIONS], ids=[p[0] for p in PROJECT_ACTIONS]
)
def test_a_viewer_posting_a_mutating_action_is_refused_and_nothing_changes(client, world, rows, model, name):
    selected = list(model._default_manager.filter(tenant=world.a).values_list("pk", flat=True))
    assert selected, f"add a {model._meta.label} row to the fixture"
    before, audit_rows = _snapshot(model), AuditEvent.objects.count()
    client.force_login(world.viewer_a)
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")

    response = client.post(url, {"action": name, ACTION_CHECKBOX_NAME: selected, **FORM_FIELDS}, follow=True)

    assert response.status_code in (200, 403)
    assert _snapshot(model) == before
    assert AuditEvent.objects.count() == audit_rows
    assert not any(message.level_tag == "success" for message in get_messages(response.wsgi_request))


def test_a_viewer_cannot_revoke_api_keys_but_an_owner_can(client, world):
    key = ApiKey.objects.get(tenant=world.a)
    url = reverse("admin:tenancy_apikey_changelist")
    client.force_login(world.viewer_a)

    client.post(url, {"action": "revoke_keys", ACTION_CHECKBOX_NAME: [key.pk]})

    key.refresh_from_db()
    assert key.revoked_at is None and not AuditEvent.objects.filter(action="api_key.revoked").exists()
    assert world.api(world.key_a).get("/api/v1/me").status_code == 200

    client.force_login(world.owner_a)
    page = client.post(url, {"action": "revoke_keys", ACTION_CHECKBOX_NAME: [key.pk]}, follow=True)

    key.refresh_from_db()
    assert key.revoked_at is not None and "1 API key(s) revoked." in page.content.decode()


def test_a_viewer_cannot_reprocess_webhook_events_but_a_marketer_can(client, world):
    event = f.StripeWebhookEventFactory(tenant=world.a, status=WebhookEventStatus.FAILED, attempts=1)
    url = reverse("admin:rewards_stripewebhookevent_changelist")
    client.force_login(world.viewer_a)

    client.post(url, {"action": "reprocess_events", ACTION_CHECKBOX_NAME: [event.pk]})

    stored = StripeWebhookEvent.objects.get(pk=event.pk)
    assert (stored.status, stored.attempts, stored.processed_at) == (WebhookEventStatus.FAILED, 1, None)

    client.force_login(world.marketer_a)
    client.post(url, {"action": "reprocess_events", ACTION_CHECKBOX_NAME: [event.pk]})

    stored.refresh_from_db()
    assert (stored.status, stored.attempts) == (WebhookEventStatus.PROCESSED, 2)


# --- bulk_apply: one service call per row, successes and refusals reported ------------------------------


def test_a_bulk_action_reports_what_it_did_and_what_was_refused_and_why(client, world):
    ready = f.ProgramFactory(tenant=world.a, status=ProgramStatus.DRAFT, name="Ready")
    f.ProgramVersionFactory(program=ready)
    no_rules = f.ProgramFactory(tenant=world.a, status=ProgramStatus.DRAFT, name="No rules")
    archived = f.ProgramFactory(tenant=world.a, status=ProgramStatus.ARCHIVED, name="Archived")
    client.force_login(world.marketer_a)

    response = client.post(
        reverse("admin:programs_program_changelist"),
        {"action": "activate_programs", ACTION_CHECKBOX_NAME: [ready.pk, no_rules.pk, archived.pk]},
        follow=True,
    )

    [message] = [str(m) for m in get_messages(response.wsgi_request)]
    assert message.startswith("1 program(s) activated, 2 refused: ")
    assert f"#{no_rules.pk}: Set the program's rules before activating it." in message
    assert f"#{archived.pk}: A archived program cannot become active." in message
    statuses = dict(Program.objects.filter(tenant=world.a).values_list("name", "status"))
    assert statuses == {"Ready": "active", "No rules": "draft", "Archived": "archived"}
    assert AuditEvent.objects.filter(action="program.activated").count() == 1


def test_a_move_the_machine_does_not_allow_is_refused_before_the_service_runs(client, world):
    removed = f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a), status=ParticipantStatus.REMOVED)
    client.force_login(world.marketer_a)

    response = client.post(
        reverse("admin:programs_participant_changelist"),
        {"action": "participants_remove", ACTION_CHECKBOX_NAME: [removed.pk]},
        follow=True,
    )

    [message] = [str(m) for m in get_messages(response.wsgi_request)]
    assert (
        message
        == f"0 participant(s) removed, 1 refused: #{removed.pk}: A removed participant cannot become removed this way."
    )
    assert not AuditEvent.objects.filter(object_id=str(removed.pk), action="participant.removed").exists()


def test_a_refusal_by_the_service_rolls_back_only_that_row(client, world):
    program = f.ProgramFactory(tenant=world.a, hold_days=0)
    reward = f.make_ledger_reward(f.ParticipantFactory(program=program), now=timezone.now() - timedelta(days=1))
    held = f.make_ledger_reward(f.ParticipantFactory(program=program), now=timezone.now() + timedelta(days=1))
    client.force_login(world.marketer_a)

    response = client.post(
        reverse("admin:rewards_reward_changelist"),
        {"action": "approve_rewards", ACTION_CHECKBOX_NAME: [reward.pk, held.pk]},
        follow=True,
    )

    [message] = [str(m) for m in get_messages(response.wsgi_request)]
    assert message.startswith(f"1 reward(s) approved, 1 refused: #{held.pk}: The reward is on hold until ")
    reward.refresh_from_db()
    held.refresh_from_db()
    assert (reward.status, held.status) == ("approved", "pending")
    assert not AuditEvent.objects.filter(object_id=str(held.pk), action="reward.approved").exists()
