"""The rewards API (with each amount's explanation), the evaluations API, bad input naming the field,
partner tiers in the admin, and the time-to-reward figures."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from programs.services import participant_tier_set
from referral_platform.tenancy.actors import system_actor
from referral_platform.tenancy.models import AuditEvent
from referrals.models import ConversionEvent
from rewards.models import Reward, RewardStatus
from rewards.selectors import time_to_reward_by_program
from tests import factories as f

from .pipeline import Pipeline, program_with_rules, referrer, rules_doc

pytestmark = pytest.mark.django_db


@pytest.fixture
def pipe(world, django_capture_on_commit_callbacks):
    return Pipeline(world, django_capture_on_commit_callbacks)


@pytest.fixture
def rewarded(world, pipe):
    program = program_with_rules(world.a, rules_doc(referrer=[{"kind": "percent_of_revenue", "percent_bp": 1_000}]))
    dana, link = referrer(program, "Dana Whitfield")
    pipe.sign_up(email="cto@orbit.example", customer="cus_orbit", code=link.code)
    event = pipe.pay("pay_orbit_1", customer="cus_orbit", amount=120_000)
    return dana, event


def test_the_rewards_api_shows_how_each_amount_was_computed(world, rewarded):
    dana, event = rewarded
    client = world.api(world.key_a)

    listing = client.get("/api/v1/rewards", {"conversion": event.pk}).json()
    [row] = listing["results"]
    detail = client.get(f"/api/v1/rewards/{row['id']}").json()

    assert detail == row
    assert (row["participant"], row["amount_minor"], row["net_minor"], row["status"]) == (
        dana.pk,
        12_000,
        12_000,
        "pending",
    )
    assert row["explanation_text"] == (
        "Rule version 1, referrer rule 1 (percent of revenue): 10 % of 1,200.00 USD = 120.00 USD"
    )
    assert row["explanation"]["share"] == "1.000000" and row["explanation"]["rule_kind"] == "percent_of_revenue"
    assert client.get("/api/v1/rewards", {"participant": dana.pk + 1000}).json()["results"] == []


def test_the_evaluations_api_says_what_was_decided_and_why(world, rewarded):
    _dana, event = rewarded

    [row] = world.api(world.key_a).get("/api/v1/reward-evaluations", {"conversion": event.pk}).json()["results"]

    assert (row["status"], row["rewards_created"], row["conversion"]) == ("done", 1, event.pk)
    assert row["rewards"] == list(Reward.objects.filter(conversion_event=event).values_list("pk", flat=True))
    assert row["detail"]["referrer"][0]["rewards"][0]["amount_minor"] == 12_000


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/rewards", {"status": "lost"}, "status"),
        ("/api/v1/rewards", {"participant": "dana"}, "participant"),
        ("/api/v1/reward-evaluations", {"conversion": "x"}, "conversion"),
    ],
    ids=["reward-status", "reward-participant", "evaluation-conversion"],
)
def test_bad_filters_are_a_400_naming_the_field(world, path, params, field):
    response = world.api(world.key_a).get(path, params)

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"seats": 0}, "seats"),
        ({"seats": "many"}, "seats"),
        ({"refunded_event_id": "pay_1"}, "refunded_event_id"),
        ({"kind": "refund", "refunded_event_id": "x" * 201}, "refunded_event_id"),
    ],
    ids=["seats-zero", "seats-text", "refund-id-on-a-payment", "refund-id-too-long"],
)
def test_bad_evaluation_fields_of_a_conversion_are_a_400_and_nothing_is_stored(world, change, field):
    payload = {
        "external_event_id": "evt_bad",
        "kind": "payment",
        "amount_minor": 100,
        "currency": "USD",
        "occurred_at": timezone.now().isoformat(),
        "customer_external_id": "cus_1",
        **change,
    }

    response = world.api(world.key_a).post("/api/v1/conversions", payload, format="json")

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"] and field in response.json()["error"]["message"]
    assert not ConversionEvent.objects.exists()


def test_a_bad_partner_tier_is_refused_naming_the_field(world):
    participant = f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))

    with pytest.raises(ValidationError) as caught:
        participant_tier_set(participant=participant, tier="Gold Partner!", actor=system_actor(world.a))

    assert "tier" in caught.value.message_dict
    participant.refresh_from_db()
    assert participant.tier == ""
    assert not AuditEvent.objects.filter(action="participant.tier_changed").exists()


def test_a_marketer_sets_a_partner_tier_in_the_admin_and_it_is_audited(world, client):
    participant = f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))
    client.force_login(world.marketer_a)
    url = reverse("admin:programs_participant_change", args=[participant.pk])

    response = client.post(
        url,
        {
            "name": participant.name,
            "email": participant.email,
            "company": "",
            "tier": "Gold",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    participant.refresh_from_db()
    assert participant.tier == "gold"
    row = AuditEvent.objects.get(action="participant.tier_changed", object_id=str(participant.pk))
    assert (row.from_state, row.to_state) == ("", "gold")


def test_time_to_reward_median_and_p90_per_program(world):
    program = f.ProgramFactory(tenant=world.a, name="Customers")
    other = f.ProgramFactory(tenant=world.b, name="Globex customers")
    for days in (1, 2, 3, 4, 10):
        f.RewardFactory(
            participant=f.ParticipantFactory(program=program),
            status=RewardStatus.PAID,
            time_to_reward=timedelta(days=days),
        )
    f.RewardFactory(participant=f.ParticipantFactory(program=program), status=RewardStatus.PENDING)
    f.RewardFactory(
        participant=f.ParticipantFactory(program=other), status=RewardStatus.PAID, time_to_reward=timedelta(days=40)
    )

    [row] = time_to_reward_by_program(world.a)

    assert (row.program_name, row.paid, row.median) == ("Customers", 5, timedelta(days=3))
    assert row.p90 == timedelta(days=7, hours=14, minutes=24)  # 4 + 0.6 * (10 - 4) days, interpolated
    assert row.within_target is True


def test_the_reward_list_in_the_admin_shows_time_to_reward(world, client):
    program = f.ProgramFactory(tenant=world.a, name="Customers")
    f.RewardFactory(
        participant=f.ParticipantFactory(program=program), status=RewardStatus.PAID, time_to_reward=timedelta(days=9)
    )
    other = f.ProgramFactory(tenant=world.b, name="Globex secret program")
    f.RewardFactory(
        participant=f.ParticipantFactory(program=other), status=RewardStatus.PAID, time_to_reward=timedelta(days=2)
    )
    client.force_login(world.marketer_a)

    page = client.get(reverse("admin:rewards_reward_changelist")).content.decode()

    assert 'id="time-to-reward"' in page and "9.0 days" in page and "above target" in page
    assert "Globex secret program" not in page
