"""Issue 13, item 5: rejecting a referral after its reward exists reverses the reward through the ledger;
the ideal-customer-profile eligibility rules are enforced at sign-up, lead and conversion time with the
reason recorded on the referral."""

from __future__ import annotations

import pytest

from referral_platform.tenancy.actors import system_actor
from referral_platform.tenancy.models import AuditEvent
from referrals.models import ConversionEventStatus, Referral, ReferralStatus
from referrals.services import referral_reject
from rewards.ledger import participant_balances
from rewards.models import EntryKind, LedgerTransaction, Reward, RewardStatus

from .pipeline import Pipeline, program_with_rules, referrer, rules_doc

pytestmark = pytest.mark.django_db

FLAT_50 = {"kind": "flat_per_conversion", "amount_minor": 5_000}
SOFTWARE_ONLY = rules_doc(referrer=[FLAT_50], eligibility={"industries": ["Software"]})


def _rejection_reason(referral: Referral) -> str:
    """The reason of the referral's rejection, as its state machine recorded it (audit row of the move)."""
    return (
        AuditEvent.objects.filter(tenant=referral.tenant, object_id=str(referral.pk), to_state="rejected")
        .values_list("reason", flat=True)
        .get()
    )


@pytest.fixture
def pipe(world, django_capture_on_commit_callbacks):
    return Pipeline(world, django_capture_on_commit_callbacks)


def test_rejecting_a_referral_after_its_reward_exists_reverses_the_reward_through_the_ledger(
    world, pipe, django_capture_on_commit_callbacks
):
    # A lead bounty: the reward exists as soon as the referred company signs up (a converted referral is
    # final: its stage machine allows no rejection).
    program = program_with_rules(
        world.a, rules_doc(referrer=[{"kind": "flat_per_lead", "amount_minor": 2_500, "on": "sign_up"}])
    )
    dana, link = referrer(program, "Dana Whitfield")
    referral = pipe.sign_up(email="buyer@prospect.example", customer="cus_1", code=link.code)
    [reward] = Reward.objects.filter(participant=dana)
    earned = participant_balances(world.a, participant=dana, currency="USD")

    with django_capture_on_commit_callbacks(execute=True):
        referral_reject(referral=referral, actor=system_actor(world.a), reason="Duplicate of an existing customer")

    reward.refresh_from_db()
    assert reward.status in (RewardStatus.REVERSED, RewardStatus.REJECTED)
    reversal = LedgerTransaction.objects.filter(reward=reward, kind__in=[EntryKind.REVERSAL, EntryKind.CLAWBACK])
    assert reversal.count() == 1
    assert sum(earned.values()) != 0 and all(
        amount == 0 for amount in participant_balances(world.a, participant=dana, currency="USD").values()
    )


def test_an_ineligible_company_is_rejected_at_sign_up_with_the_reason(world, pipe):
    program = program_with_rules(world.a, SOFTWARE_ONLY)
    _, link = referrer(program, "Dana Whitfield")

    referral = pipe.sign_up(email="buyer@bakery.example", customer="cus_b", code=link.code, industry="Bakery")

    assert referral.status == ReferralStatus.REJECTED
    assert "Not eligible" in _rejection_reason(referral) and "industr" in _rejection_reason(referral).lower()


def test_an_eligible_company_is_kept_at_sign_up(world, pipe):
    program = program_with_rules(world.a, SOFTWARE_ONLY)
    _, link = referrer(program, "Dana Whitfield")

    referral = pipe.sign_up(email="buyer@saas.example", customer="cus_s", code=link.code, industry="Software")

    assert referral.status == ReferralStatus.SIGNED_UP


def test_an_ineligible_lead_is_rejected_with_the_reason(world, pipe):
    program = program_with_rules(world.a, SOFTWARE_ONLY)
    dana, _ = referrer(program, "Dana Whitfield")

    response = pipe.post(
        "/api/v1/leads",
        {
            "participant": dana.pk,
            "name": "Ann Baker",
            "email": "ann@bakery.example",
            "company": "Bakery Ltd",
            "industry": "Bakery",
        },
    )

    referral = Referral.objects.get(pk=response.json()["id"])
    assert referral.status == ReferralStatus.REJECTED and "Not eligible" in _rejection_reason(referral)


def test_an_ineligible_company_revealed_by_a_conversion_earns_nothing_and_the_reason_is_recorded(world, pipe):
    program = program_with_rules(world.a, SOFTWARE_ONLY)
    dana, link = referrer(program, "Dana Whitfield")
    pipe.sign_up(email="buyer@bakery.example", customer="cus_b", code=link.code)

    event = pipe.event("qual_1", "qualified", customer="cus_b", industry="Bakery")

    referral = Referral.objects.get(pk=event.referral_id)
    assert referral.status == ReferralStatus.REJECTED and "Not eligible" in _rejection_reason(referral)
    assert event.status == ConversionEventStatus.UNATTRIBUTED and "not eligible" in event.error
    assert not Reward.objects.filter(participant=dana).exists()


def test_a_stripe_webhook_keeps_the_exact_body_bytes(client, world):
    from django.urls import reverse

    from rewards.models import StripeCredentials, StripeWebhookEvent
    from tests import factories as f

    from .test_webhooks import invoice_paid, sign

    f.StripeCredentialsFactory(tenant=world.a)
    secret = StripeCredentials.objects.get(tenant=world.a).webhook_secret
    body, header = sign(invoice_paid(), secret)
    body_bytes = body.encode() if isinstance(body, str) else body

    response = client.post(
        reverse("stripe_webhook", kwargs={"tenant_slug": world.a.slug}),
        data=body_bytes,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=header,
    )

    assert response.status_code == 200, response.content
    stored = StripeWebhookEvent.objects.get(tenant=world.a)
    assert bytes(stored.body) == body_bytes
