"""Outbound webhooks (R-30): Standard Webhooks signatures (checked with the reference library), retries with
backoff, one delivered record, the delivery log, re-send, rotation, give-up and auto-disable."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from engagement.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookMessage
from engagement.services import (
    webhook_deliver,
    webhook_emit,
    webhook_endpoint_create,
    webhook_endpoint_rotate_secret,
)
from engagement.services.webhooks import MAX_ATTEMPTS
from tests import factories as f

pytestmark = pytest.mark.django_db(transaction=True)


def make_referral(world):
    from referrals.services import referral_create

    program = f.ProgramVersionFactory(program=f.ProgramFactory(tenant=world.a)).program
    referrer = f.ParticipantFactory(program=program, email="ann@customer.example")
    return referral_create(
        tenant=world.a, program=program, referrer=referrer, email="lead@prospect.example", source="api", actor="t"
    )


def test_a_receiver_failing_twice_then_succeeding_gets_one_delivery_that_verifies(world, receiver):
    endpoint = webhook_endpoint_create(tenant=world.a, url=receiver.url, event_types=["referral.created"])
    receiver.statuses = [500, 503]

    referral = make_referral(world)

    [delivery] = WebhookDelivery.objects.all()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempt_count == 3
    assert [attempt["status"] for attempt in delivery.attempts] == [500, 503, 200]
    assert delivery.attempts[0]["response"] == "receiver is down"
    assert WebhookDelivery.objects.filter(status=DeliveryStatus.DELIVERED).count() == 1
    last = receiver.requests[-1]
    payload = Webhook(endpoint.secret).verify(last["body"], last["headers"])
    assert payload["type"] == "referral.created"
    assert payload["data"]["referral"]["id"] == referral.pk
    assert payload["data"]["lead_score_boost"] == 20
    assert len({request["headers"]["webhook-id"] for request in receiver.requests}) == 1  # one message, retried


def test_a_signature_with_another_secret_does_not_verify(world, receiver):
    webhook_endpoint_create(tenant=world.a, url=receiver.url)

    make_referral(world)

    request = receiver.requests[0]
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "B" * 32).verify(request["body"], request["headers"])


def test_during_rotation_both_secrets_verify_until_the_old_one_expires(world, receiver):
    endpoint = webhook_endpoint_create(tenant=world.a, url=receiver.url)
    old_secret = endpoint.secret
    endpoint = webhook_endpoint_rotate_secret(endpoint=endpoint)

    make_referral(world)

    request = next(r for r in receiver.requests if '"referral.created"' in r["body"])
    Webhook(old_secret).verify(request["body"], request["headers"])
    Webhook(endpoint.secret).verify(request["body"], request["headers"])

    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(previous_secret_expires_at=timezone.now())
    webhook_emit(tenant_id=world.a.pk, event_type="referral.created", dedupe_key="later", data={})
    later = receiver.requests[-1]
    Webhook(endpoint.secret).verify(later["body"], later["headers"])
    with pytest.raises(WebhookVerificationError):
        Webhook(old_secret).verify(later["body"], later["headers"])


def test_the_event_filter_sends_only_the_types_asked_for(world, receiver):
    webhook_endpoint_create(tenant=world.a, url=receiver.url, event_types=["reward.paid"])

    make_referral(world)

    assert receiver.requests == [] and not WebhookMessage.objects.exists()


def test_a_repeated_hook_call_sends_one_message(world, receiver):
    from referral_platform.hooks import hooks

    webhook_endpoint_create(tenant=world.a, url=receiver.url, event_types=["referral.created"])
    referral = make_referral(world)

    hooks.referral_created(referral=referral)

    assert len(receiver.requests) == 1 and WebhookMessage.objects.count() == 1


def test_a_receiver_that_never_answers_is_given_up_and_the_endpoint_disabled_with_a_notice(world, receiver, settings):
    settings.WEBHOOK_DISABLE_AFTER_HOURS = 0
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    endpoint = webhook_endpoint_create(tenant=world.a, url=receiver.url)
    receiver.statuses = [500] * MAX_ATTEMPTS

    webhook_emit(tenant_id=world.a.pk, event_type="deal.registered", dedupe_key="d1", data={"deal": {}})

    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.GAVE_UP and delivery.attempt_count == MAX_ATTEMPTS
    endpoint.refresh_from_db()
    assert not endpoint.is_active and endpoint.disabled_reason
    assert any("disabled" in message.subject for message in mail.outbox)
    webhook_emit(tenant_id=world.a.pk, event_type="deal.registered", dedupe_key="d2", data={})
    assert WebhookDelivery.objects.count() == 1  # a disabled endpoint gets nothing new


def test_backoff_grows_between_attempts(world, receiver, monkeypatch):
    from engagement.services import webhooks as module

    queued = []
    monkeypatch.setattr(module, "enqueue_on_commit", lambda task, *args, **kw: queued.append(kw.get("countdown")))
    endpoint = webhook_endpoint_create(tenant=world.a, url=receiver.url)
    receiver.statuses = [500] * 4
    webhook_emit(tenant_id=world.a.pk, event_type="deal.registered", dedupe_key="d1", data={})
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)

    for _ in range(3):
        webhook_deliver(delivery_id=delivery.pk)

    assert queued == [None, 5, 300, 1800]
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and delivery.next_attempt_at > timezone.now() + timedelta(
        seconds=1700
    )


def test_the_delivery_log_and_manual_resend_through_the_api(world, receiver):
    webhook_endpoint_create(tenant=world.a, url=receiver.url)
    webhook_emit(tenant_id=world.a.pk, event_type="reward.paid", dedupe_key="r1", data={"reward": {"id": 1}})
    api = world.api(world.key_a)

    [row] = api.get("/api/v1/webhook-deliveries").json()["results"]
    assert row["status"] == "delivered" and row["attempts"][0]["request_headers"]["webhook-id"] == row["msg_id"]

    response = api.post(f"/api/v1/webhook-deliveries/{row['id']}")

    assert response.status_code == 202
    assert len(receiver.requests) == 2 and receiver.requests[0]["body"] == receiver.requests[1]["body"]
    assert len(WebhookDelivery.objects.get().attempts) == 2


@pytest.mark.parametrize(
    "payload, field",
    [({"url": "not a url"}, "url"), ({"url": "https://crm.example/x", "event_types": ["nope"]}, "event_types")],
    ids=["bad-url", "unknown-event"],
)
def test_bad_endpoint_input_is_a_400_naming_the_field(world, payload, field):
    response = world.api(world.key_a).post("/api/v1/webhook-endpoints", payload, format="json")

    assert response.status_code == 400 and field in response.json()["error"]["fields"]
    assert not WebhookEndpoint.objects.exists()


def test_reward_and_enrolment_events_reach_the_receiver(world, receiver):
    from programs.services import participant_enroll
    from referral_platform.tenancy.actors import system_actor
    from rewards.services import reward_approve, reward_create

    webhook_endpoint_create(tenant=world.a, url=receiver.url)
    program = f.ProgramVersionFactory(program=f.ProgramFactory(tenant=world.a)).program
    actor = system_actor(world.a)
    participant = participant_enroll(
        tenant=world.a, program=program, external_id="c1", name="Cy", email="cy@c.example", actor=actor
    )
    reward = reward_create(
        tenant=world.a, program=program, participant=participant, amount_minor=1_000, source_key="t", actor=actor
    )

    reward_approve(reward=reward, actor=actor, now=reward.hold_until + timedelta(seconds=1))

    types = [event_type_of(request) for request in receiver.requests]
    assert "participant.enrolled" in types and "reward.approved" in types


def event_type_of(request) -> str:
    import json

    return json.loads(request["body"])["type"]


def test_the_secret_is_shown_in_full_only_when_created_or_rotated(world):
    api = world.api(world.key_a)

    created = api.post("/api/v1/webhook-endpoints", {"url": "https://crm.example/hook"}, format="json").json()
    listed = api.get("/api/v1/webhook-endpoints").json()["results"][0]
    rotated = api.post(f"/api/v1/webhook-endpoints/{created['id']}/rotate-secret").json()

    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 20
    assert listed["secret"] == "…" + created["secret"][-4:]
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]


@pytest.mark.parametrize(
    "change, clawed_back_minor, expected",
    [
        ("approved", 0, "reward.approved"),
        ("paid", 0, "reward.paid"),
        ("clawed_back", 500, "reward.clawed_back"),
        ("reversed", 500, "reward.clawed_back"),
        ("reversed", 0, None),
        ("created", 0, None),
    ],
    ids=["approved", "paid", "clawed-back", "reversed-after-payout", "reversed-before-payout", "created"],
)
def test_reward_changes_map_to_webhook_events(monkeypatch, change, clawed_back_minor, expected):
    from types import SimpleNamespace

    from engagement import hooks as engagement_hooks
    from engagement import services

    sent = []
    monkeypatch.setattr(services, "webhook_emit", lambda **kwargs: sent.append(kwargs["event_type"]))
    participant = SimpleNamespace(pk=1, external_id="c", email="c@x.example", name="C", program_id=1)
    reward = SimpleNamespace(
        pk=7, tenant_id=1, status="x", amount_minor=1_000, reversed_minor=0, clawed_back_minor=clawed_back_minor,
        currency="USD", referral_id=None, participant=participant,
    )  # fmt: skip

    engagement_hooks.on_reward_changed(reward=reward, change=change)

    assert sent == ([expected] if expected else [])
