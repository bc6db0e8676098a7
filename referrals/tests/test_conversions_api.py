"""POST /api/v1/conversions: stored raw first, once per external event id, then processed by a task."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from referrals.models import Attribution, ConversionEvent, ConversionEventStatus, Referral, ReferralStatus
from referrals.services import signup_record

from .builders import click, conversion_payload, program_for, referrer_with_link


def _post(client, payload):
    return client.post("/api/v1/conversions", payload, format="json")


@pytest.mark.django_db
def test_first_delivery_is_201_and_a_repeat_is_200_with_the_same_body(world, django_capture_on_commit_callbacks):
    client = world.api(world.key_a)

    with django_capture_on_commit_callbacks() as first_callbacks:
        first = _post(client, conversion_payload())
    with django_capture_on_commit_callbacks() as repeat_callbacks:
        repeat = _post(client, conversion_payload())

    assert (first.status_code, repeat.status_code) == (201, 200)
    assert first.json() == repeat.json()
    assert first.json()["external_event_id"] == "evt_1001" and first.json()["amount_minor"] == 12000
    assert ConversionEvent.objects.filter(tenant=world.a).count() == 1
    assert len(first_callbacks) == 1  # the processing task is queued once, after commit
    assert len(repeat_callbacks) == 0


@pytest.mark.django_db
def test_the_raw_body_is_kept_byte_for_byte(world):
    body = (
        '{"external_event_id": "evt_raw",  "kind": "sign_up", "occurred_at": "2026-03-01T12:00:00+02:00",\n'
        ' "email": "Jane@GlobalBank.example", "extra": {"plan": "pro"}}'
    )

    response = world.api(world.key_a).post("/api/v1/conversions", body, content_type="application/json")

    assert response.status_code == 201, response.content
    event = ConversionEvent.objects.get(tenant=world.a)
    assert event.raw_body == body
    assert event.raw == json.loads(body)
    assert event.email == "jane@globalbank.example"
    assert event.occurred_at.isoformat() == "2026-03-01T10:00:00+00:00"
    assert event.status == ConversionEventStatus.RECEIVED


@pytest.mark.django_db
def test_a_repeat_with_a_different_payload_is_a_409_naming_the_external_event_id(world):
    client = world.api(world.key_a)
    _post(client, conversion_payload())

    response = _post(client, conversion_payload(amount_minor=99_00))

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "conflict" and "external_event_id" in error["message"] and "evt_1001" in error["message"]
    assert "external_event_id" in error["fields"]
    assert ConversionEvent.objects.get().amount_minor == 120_00


@pytest.mark.django_db
def test_the_same_external_id_in_another_tenant_is_another_event(world):
    assert _post(world.api(world.key_a), conversion_payload()).status_code == 201
    assert _post(world.api(world.key_b), conversion_payload(amount_minor=5)).status_code == 201
    assert ConversionEvent.objects.count() == 2


BAD = [
    ({"kind": "upsell"}, "kind"),
    ({"kind": None}, "kind"),
    ({"external_event_id": ""}, "external_event_id"),
    ({"external_event_id": "x" * 201}, "external_event_id"),
    ({"amount_minor": -5}, "amount_minor"),
    ({"amount_minor": "12.50"}, "amount_minor"),
    ({"currency": "usd"}, "currency"),
    ({"currency": None}, "currency"),
    ({"occurred_at": "last tuesday"}, "occurred_at"),
    ({"occurred_at": None}, "occurred_at"),
    ({"email": "not-an-email"}, "email"),
    ({"customer_external_id": None}, "identity"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("change", "field"), BAD, ids=[f"{field}-{i}" for i, (_, field) in enumerate(BAD)])
def test_bad_input_is_a_400_naming_the_field_and_nothing_is_stored(world, change, field):
    response = _post(world.api(world.key_a), conversion_payload(**change))

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert field in response.json()["error"]["message"]
    assert not ConversionEvent.objects.exists()


@pytest.mark.django_db
def test_a_viewer_session_cannot_post_conversions(world, client):
    client.force_login(world.viewer_a)
    response = client.post("/api/v1/conversions", conversion_payload(), content_type="application/json")
    assert response.status_code == 403
    assert not ConversionEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_identical_events_give_one_event_and_one_set_of_attributions(world, celery_eager):
    # Given a referred customer with two touches (linear: half each)
    program = program_for(world.a, attribution_model="linear")
    dana, dana_link = referrer_with_link(program)
    ravi, ravi_link = referrer_with_link(program, name="Ravi Menon", company="Contoso")
    now = timezone.now()
    click(dana_link, visitor_id="vis-1", at=now - timedelta(days=6))
    click(ravi_link, visitor_id="vis-1", at=now - timedelta(days=2))
    signup_record(
        tenant=world.a, actor="test", email="jane@globalbank.example", visitor_id="vis-1", customer_external_id="cus_42"
    )
    payload = conversion_payload(occurred_at=now.isoformat())
    barrier = threading.Barrier(50)
    responses, errors = [], []

    def deliver():
        try:
            client = world.api(world.key_a)
            barrier.wait()
            responses.append(_post(client, payload))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    # When the same event arrives 50 times at once
    threads = [threading.Thread(target=deliver) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then one event is stored and processed once, with one set of attribution rows
    assert not errors
    codes = sorted(response.status_code for response in responses)
    assert codes == [200] * 49 + [201]
    assert len({json.dumps(response.json(), sort_keys=True) for response in responses}) == 1
    event = ConversionEvent.objects.get(tenant=world.a)
    assert event.status == ConversionEventStatus.PROCESSED, event.error
    rows = Attribution.objects.filter(conversion_event=event)
    assert sorted((row.participant_id, str(row.share), row.amount_minor) for row in rows) == sorted(
        [(dana.pk, "0.500000", 60_00), (ravi.pk, "0.500000", 60_00)]
    )
    assert Referral.objects.get().status == ReferralStatus.CONVERTED


@pytest.mark.django_db(transaction=True)
def test_a_posted_event_is_processed_by_the_task_after_commit(world, celery_eager):
    program = program_for(world.a)
    dana, link = referrer_with_link(program)

    response = _post(
        world.api(world.key_a),
        conversion_payload(
            referral_code=link.code, customer_external_id="cus_9", occurred_at=timezone.now().isoformat()
        ),
    )

    event = ConversionEvent.objects.get(pk=response.json()["id"])
    assert event.status == ConversionEventStatus.PROCESSED, event.error
    assert event.referral.referrer == dana and event.referral.status == ReferralStatus.CONVERTED
    # The code in the event is the only touchpoint: all the credit goes to its owner.
    assert [(row.participant_id, str(row.share)) for row in event.attributions.all()] == [(dana.pk, "1.000000")]
