"""Tenant B's key can neither attribute to nor read tenant A's referrals, events or attributions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from referral_platform.tenancy.models import AuditEvent
from referrals import services
from referrals.models import (
    Attribution,
    ConversionEventStatus,
    IdentityLink,
    Referral,
    ReferralStatus,
    Touchpoint,
)

from .builders import click, conversion_payload, program_for, referrer_with_link

pytestmark = pytest.mark.django_db


@pytest.fixture
def a_world(world):
    """Tenant A: Dana's link clicked by vis-1, who signed up as jane / cus_1, and a paid event."""
    program = program_for(world.a)
    dana, link = referrer_with_link(program)
    click(link, visitor_id="vis-1", at=timezone.now() - timedelta(days=2))
    services.signup_record(
        tenant=world.a, actor="test", email="jane@globalbank.example", visitor_id="vis-1", customer_external_id="cus_1"
    )
    received = services.conversion_event_receive(
        tenant=world.a,
        external_event_id="evt_a",
        kind="payment",
        amount_minor=100_00,
        currency="USD",
        occurred_at=timezone.now(),
        customer_external_id="cus_1",
        raw={"external_event_id": "evt_a"},
    )
    event = services.conversion_event_process(event_id=received.event.pk)
    assert event.status == ConversionEventStatus.PROCESSED
    return dana, link, event


def _a_snapshot(world):
    return (
        list(Referral.objects.filter(tenant=world.a).values("id", "status", "converted_at", "referred_external_id")),
        list(Attribution.objects.filter(tenant=world.a).values("id", "share", "amount_minor")),
        Touchpoint.objects.filter(tenant=world.a).count(),
        IdentityLink.objects.filter(tenant=world.a).count(),
    )


def test_tenant_b_cannot_sign_up_with_tenant_a_code(world, a_world):
    _, link, _ = a_world
    before = (_a_snapshot(world), Referral.objects.count(), Touchpoint.objects.count(), AuditEvent.objects.count())

    response = world.api(world.key_b).post(
        "/api/v1/signups", {"referral_code": link.code, "email": "x@prospect.example"}, format="json"
    )

    assert response.status_code == 400 and "referral_code" in response.json()["error"]["fields"]
    assert (
        _a_snapshot(world),
        Referral.objects.count(),
        Touchpoint.objects.count(),
        AuditEvent.objects.count(),
    ) == before


def test_tenant_b_cannot_submit_a_lead_for_tenant_a_participant(world, a_world):
    dana, _, _ = a_world
    before = (_a_snapshot(world), Referral.objects.count())

    response = world.api(world.key_b).post(
        "/api/v1/leads",
        {"participant": dana.pk, "name": "Eva", "email": "eva@logistix.example", "company": "Logistix"},
        format="json",
    )

    assert response.status_code == 400 and "participant" in response.json()["error"]["fields"]
    assert (_a_snapshot(world), Referral.objects.count()) == before


def test_tenant_b_events_with_tenant_a_identities_never_touch_tenant_a(world, a_world):
    _, link, _ = a_world
    before = _a_snapshot(world)

    response = world.api(world.key_b).post(
        "/api/v1/conversions",
        conversion_payload(
            external_event_id="evt_a",
            referral_code=link.code,
            email="jane@globalbank.example",
            visitor_id="vis-1",
            customer_external_id="cus_1",
            occurred_at=timezone.now().isoformat(),
        ),
        format="json",
    )
    event = services.conversion_event_process(event_id=response.json()["id"])

    assert response.status_code == 201  # B's own event id space
    assert event.tenant == world.b and event.status == ConversionEventStatus.UNATTRIBUTED and event.referral is None
    assert "not a code of this workspace" in event.error
    assert not Attribution.objects.filter(tenant=world.b).exists()
    assert not Referral.objects.filter(tenant=world.b).exists()
    assert _a_snapshot(world) == before
    assert Referral.objects.get(tenant=world.a).status == ReferralStatus.CONVERTED


def test_tenant_b_cannot_read_tenant_a_events_or_attributions(world, a_world):
    _, _, event = a_world
    row = Attribution.objects.get(conversion_event=event)
    b = world.api(world.key_b)

    assert b.get(f"/api/v1/conversions/{event.pk}").status_code == 404
    assert b.get(f"/api/v1/attributions/{row.pk}").status_code == 404
    assert b.get(f"/api/v1/attributions?conversion={event.pk}").json()["results"] == []
    assert b.get("/api/v1/conversions").json()["results"] == []
    a = world.api(world.key_a)
    assert [r["id"] for r in a.get(f"/api/v1/attributions?conversion={event.pk}").json()["results"]] == [row.pk]


def test_tenant_b_rerunning_attribution_through_the_admin_cannot_reach_tenant_a(world, a_world, client):
    _, _, event = a_world
    computed_at = Attribution.objects.get(conversion_event=event).computed_at
    client.force_login(world.marketer_b)

    response = client.post(
        "/admin/referrals/conversionevent/",
        {"action": "rerun_attribution", "_selected_action": [event.pk]},
    )

    assert response.status_code in (200, 302)
    assert Attribution.objects.get(conversion_event=event).computed_at == computed_at  # not recomputed by B


def test_the_admin_explains_an_attribution_to_its_own_tenant_only(world, a_world, client):
    _, _, event = a_world
    row = Attribution.objects.get(conversion_event=event)
    url = f"/admin/referrals/attribution/{row.pk}/change/"

    client.force_login(world.marketer_a)
    own = client.get(url)
    client.force_login(world.marketer_b)
    other = client.get(url)

    assert own.status_code == 200
    assert "Why this participant got credit" in own.content.decode()
    assert "Dana Whitfield therefore receives 100.0000 %" in own.content.decode()
    assert other.status_code in (302, 403, 404)


def test_the_processing_task_takes_an_id_and_stays_in_the_events_tenant(world, a_world):
    from referrals.tasks import process_conversion_event

    _, _, event = a_world

    assert process_conversion_event.apply(args=[event.pk]).get() == "processed"  # a repeat does nothing new
    assert process_conversion_event.apply(args=[10**9]).get() == "missing"
    assert Attribution.objects.filter(tenant=world.b).count() == 0
