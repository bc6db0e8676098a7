"""GET/POST /api/v1/referrals/<id>/fraud: signals with evidence, and review decisions."""

from __future__ import annotations

import pytest

from referral_platform.tenancy.models import AuditEvent
from referrals.fraud_services import referral_screen
from referrals.models import FraudFlag, Referral, ReviewStatus
from tests import factories as f

pytestmark = pytest.mark.django_db


@pytest.fixture
def flagged(world):
    program = f.ProgramFactory(tenant=world.a)
    referrer = f.ParticipantFactory(program=program, email="pat@acme.example")
    referral = f.ReferralFactory(referrer=referrer, referred_email="pat+x@acme.example")
    referral_screen(referral=referral)
    return Referral.objects.get(pk=referral.pk)


def url(referral_or_pk):
    return f"/api/v1/referrals/{getattr(referral_or_pk, 'pk', referral_or_pk)}/fraud"


def test_get_returns_the_signals_with_their_evidence(world, flagged):
    flag = FraudFlag.objects.get(referral=flagged)

    response = world.api(world.key_a).get(url(flagged))

    assert response.status_code == 200
    body = response.json()
    assert body == {
        "referral": flagged.pk,
        "referral_status": flagged.status,
        "review_status": "flagged",
        "reviewed_by": None,
        "reviewed_at": None,
        "review_reason": "",
        "fraud_screened_at": body["fraud_screened_at"],
        "is_rewardable": False,
        "signals": [
            {
                "code": "self_referral_email",
                "label": "Self-referral: same e-mail as the referrer",
                "message": flag.message,
                "evidence": flag.evidence,
                "created_at": body["signals"][0]["created_at"],
            }
        ],
    }
    assert body["signals"][0]["evidence"]["compared"][1] == {
        "field": "E-mail normalised",
        "referral": "pat@acme.example",
        "other": "pat@acme.example",
        "other_source": f"referrer (participant #{flagged.referrer_id})",
    }
    assert body["fraud_screened_at"] is not None


def test_a_clean_referral_has_no_signals(world):
    referral = f.ReferralFactory(referrer=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)))

    body = world.api(world.key_a).get(url(referral)).json()

    assert (body["review_status"], body["signals"], body["fraud_screened_at"]) == ("clear", [], None)


@pytest.mark.parametrize(("decision", "outcome"), [("clear", "cleared"), ("reject", "rejected")])
def test_post_decides_a_flagged_referral(world, flagged, decision, outcome):
    response = world.api(world.key_a).post(url(flagged), {"decision": decision, "reason": "Checked"}, format="json")

    assert response.status_code == 200
    assert response.json()["review_status"] == outcome and response.json()["review_reason"] == "Checked"
    audit = AuditEvent.objects.get(action=f"referral.review.{outcome}", object_id=str(flagged.pk))
    assert audit.actor.startswith("api_key:") and audit.reason == "Checked"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"decision": "clear"}, "reason"),
        ({"decision": "clear", "reason": "   "}, "reason"),
        ({"decision": "approve", "reason": "ok"}, "decision"),
        ({"reason": "ok"}, "decision"),
    ],
    ids=["missing-reason", "blank-reason", "unknown-decision", "missing-decision"],
)
def test_bad_input_is_a_400_naming_the_field_and_changes_nothing(world, flagged, payload, field):
    response = world.api(world.key_a).post(url(flagged), payload, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert list(error["fields"]) == [field] and error["message"].startswith(field)
    assert Referral.objects.get(pk=flagged.pk).review_status == ReviewStatus.FLAGGED
    assert not AuditEvent.objects.filter(action__in=["referral.review.cleared", "referral.review.rejected"]).exists()


def test_deciding_an_unflagged_referral_is_a_409_naming_the_review_status(world):
    """A move the review state machine does not allow is a conflict with the referral's state (409), like every
    refused status move in the API, and names the field."""
    referral = f.ReferralFactory(referrer=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)))

    response = world.api(world.key_a).post(url(referral), {"decision": "clear", "reason": "ok"}, format="json")

    assert response.status_code == 409
    assert list(response.json()["error"]["fields"]) == ["review_status"]
    assert Referral.objects.get(pk=referral.pk).review_status == ReviewStatus.CLEAR


def test_tenant_bs_key_gets_404_and_changes_nothing(world, flagged):
    client = world.api(world.key_b)

    read = client.get(url(flagged))
    write = client.post(url(flagged), {"decision": "clear", "reason": "mine"}, format="json")

    assert read.status_code == 404 and write.status_code == 404
    assert "self_referral" not in read.content.decode()
    assert Referral.objects.get(pk=flagged.pk).review_status == ReviewStatus.FLAGGED


def test_an_unknown_referral_is_404(world):
    assert world.api(world.key_a).get(url(999_999)).status_code == 404


def test_without_credentials_the_api_answers_401(world, flagged):
    assert world.api(None).get(url(flagged)).status_code == 401
