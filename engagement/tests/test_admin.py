"""Marketer admin of engagement: policies, templates (preview, test send), webhook endpoints (secret shown
once, then its last four; rotation), the delivery log (re-send), the send log and the NPS responses."""

from __future__ import annotations

import pytest
from django.urls import reverse

from engagement.models import DeliveryStatus, MessageTemplate, TriggerPolicy, WebhookDelivery, WebhookEndpoint
from tests import factories as f
from tests.isolation import ADMIN_FACTORIES

pytestmark = pytest.mark.django_db

NEW_MODELS = ["triggerpolicy", "messagetemplate", "webhookendpoint", "webhookdelivery", "communication", "moment"]


def _url(model: str, action: str, *args) -> str:
    return reverse(f"admin:engagement_{model}_{action}", args=args)


def _factory(name: str):
    return next(factory for model, factory in ADMIN_FACTORIES.items() if model._meta.model_name == name)


@pytest.mark.parametrize("name", NEW_MODELS)
def test_a_viewer_sees_the_engagement_pages_but_cannot_add_change_or_delete(world, client, name):
    obj = _factory(name)(world)
    client.force_login(world.viewer_a)

    page = client.get(_url(name, "change", obj.pk))
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert client.get(_url(name, "add")).status_code == 403
    assert client.post(_url(name, "delete", obj.pk), {"post": "yes"}).status_code == 403
    assert type(obj).objects.filter(pk=obj.pk).exists()


def test_the_engagement_pages_sit_in_the_admins_task_sections(world, client):
    client.force_login(world.owner_a)
    sections = {section["name"]: section for section in client.get(reverse("admin:index")).context["app_list"]}

    def names(section):
        return {model["object_name"] for model in sections[section]["models"]}

    assert {"TriggerPolicy", "MessageTemplate"} <= names("Programs")
    assert {"Communication", "NpsImport"} <= names("People")
    assert {"WebhookDelivery", "Moment"} <= names("Activity")
    assert "WebhookEndpoint" in names("Settings")


def test_a_trigger_policy_is_saved_by_the_service_and_a_second_one_for_the_same_trigger_is_refused(world, client):
    program = f.ProgramFactory(tenant=world.a)
    client.force_login(world.marketer_a)
    form = {
        "program": program.pk,
        "trigger": "nps",
        "is_enabled": "on",
        "delay_minutes": 30,
        "suppression_days": 60,
        "daily_cap": 10,
        "review_url": "",
        "quiet_hours_start": "22:00",
        "quiet_hours_end": "",
    }
    half_quiet = client.post(_url("triggerpolicy", "add"), form)
    assert half_quiet.status_code == 200 and "Give both ends of the quiet hours" in half_quiet.content.decode()

    form["quiet_hours_end"] = "07:00"
    assert client.post(_url("triggerpolicy", "add"), form).status_code == 302
    again = client.post(_url("triggerpolicy", "add"), form)

    assert "already has a policy for this trigger" in again.content.decode()
    policy = TriggerPolicy.objects.get(tenant=world.a)
    assert (policy.delay_minutes, policy.suppression_days, str(policy.quiet_hours_end)) == (30, 60, "07:00:00")


def test_a_template_that_does_not_compile_is_refused_and_preview_and_test_send_reuse_the_services(
    world, client, smtp_inbox
):
    program = f.ProgramFactory(tenant=world.a)
    client.force_login(world.marketer_a)
    form = {"program": program.pk, "kind": "launch", "subject": "Hi {{ participant.name }}", "body": "{% if %}"}
    broken = client.post(_url("messagetemplate", "add"), form)
    assert broken.status_code == 200 and "Template error" in broken.content.decode()
    form["body"] = "Your link: {{ referral_link }}"
    assert client.post(_url("messagetemplate", "add"), form).status_code == 302
    template = MessageTemplate.objects.get(tenant=world.a, program=program, kind="launch")

    preview = client.post(
        _url("messagetemplate", "changelist"), {"action": "preview_templates", "_selected_action": [template.pk]}
    )
    assert "Hi Sam Sample" in preview.content.decode()
    assert "Your link: https://example.com/r/SAMPLE" in preview.content.decode()

    client.post(_url("messagetemplate", "changelist"), {"action": "send_test_to_me", "_selected_action": [template.pk]})
    sent = smtp_inbox.to(world.marketer_a.email)
    assert len(sent) == 1 and sent[0]["Subject"] == "[TEST] Hi Sam Sample"


def test_a_webhook_secret_is_shown_once_at_creation_and_rotation_then_only_its_last_four(world, client):
    client.force_login(world.marketer_a)
    created = client.post(
        _url("webhookendpoint", "add"),
        {
            "url": "https://crm.example/hooks",
            "description": "CRM",
            "event_types": ["referral.created"],
            "is_active": "on",
        },
    )
    endpoint = WebhookEndpoint.objects.get(tenant=world.a)
    assert created.status_code == 200 and endpoint.secret in created.content.decode()
    assert "no-store" in created["Cache-Control"]
    assert endpoint.event_types == ["referral.created"]

    later = client.get(_url("webhookendpoint", "change", endpoint.pk)).content.decode()
    assert endpoint.secret not in later and f"…{endpoint.secret[-4:]}" in later
    assert endpoint.secret not in client.get(_url("webhookendpoint", "changelist")).content.decode()

    rotated = client.post(
        _url("webhookendpoint", "changelist"), {"action": "rotate_secret", "_selected_action": [endpoint.pk]}
    )
    endpoint.refresh_from_db()
    assert endpoint.previous_secret and endpoint.secret != endpoint.previous_secret
    assert endpoint.secret in rotated.content.decode()


def test_a_marketer_re_sends_a_delivery_and_a_viewer_cannot(world, client):
    delivery = _factory("webhookdelivery")(world)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.GAVE_UP, attempt_count=8)

    client.force_login(world.viewer_a)
    client.post(_url("webhookdelivery", "changelist"), {"action": "resend", "_selected_action": [delivery.pk]})
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.GAVE_UP

    client.force_login(world.marketer_a)
    client.post(_url("webhookdelivery", "changelist"), {"action": "resend", "_selected_action": [delivery.pk]})
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and delivery.next_attempt_at is not None
