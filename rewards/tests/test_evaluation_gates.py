"""Who gets nothing (fraud review, stages) and how refunds and cancellations reach evaluated rewards, through
the conversion API and the Stripe webhook path alike."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from referral_platform.tenancy.actors import system_actor
from referrals.models import ReviewStatus
from rewards.models import LedgerTransaction, ParticipantMessage, Reward, RewardEvaluation, RewardStatus
from rewards.payouts import payout_mark_fulfilled, payout_prepare
from rewards.services import reward_approve, reward_create
from tests import factories as f

from .pipeline import Pipeline, program_with_rules, referrer, rules_doc
from .test_webhooks import charge_refunded, deliver, invoice_paid

pytestmark = pytest.mark.django_db

TEN_PERCENT = rules_doc(referrer=[{"kind": "percent_of_revenue", "percent_bp": 1_000}])


@pytest.fixture
def pipe(world, django_capture_on_commit_callbacks):
    return Pipeline(world, django_capture_on_commit_callbacks)


def _self_referral(world, pipe):
    """Dana refers her own mailbox: screening flags the referral at sign-up."""
    program = program_with_rules(world.a, rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}]))
    dana, link = referrer(program, "Dana Whitfield")
    dana.email = "dana@northwind.example"
    dana.save(update_fields=["email"])
    referral = pipe.sign_up(email="dana+trial@northwind.example", customer="cus_dana", code=link.code)
    assert referral.review_status == ReviewStatus.FLAGGED
    return dana, referral


def test_a_flagged_referral_earns_nothing_until_a_marketer_clears_it(world, pipe):
    # Given a flagged referral whose customer pays
    dana, referral = _self_referral(world, pipe)
    event = pipe.pay("pay_dana_1", customer="cus_dana", amount=49_900)

    # Then no reward, and the evaluation says why
    assert not Reward.objects.exists() and not LedgerTransaction.objects.exists()
    evaluation = RewardEvaluation.objects.get(conversion_event=event)
    assert evaluation.status == "blocked"
    assert evaluation.notes == [
        f"Referral #{referral.pk} is flagged for fraud review: it earns no reward until a marketer clears it."
    ]

    # When a marketer clears it through the review API
    pipe.post(f"/api/v1/referrals/{referral.pk}/fraud", {"decision": "clear", "reason": "Checked: a colleague"})

    # Then the reward it earned meanwhile appears, once
    [reward] = Reward.objects.filter(participant=dana)
    assert (reward.amount_minor, reward.conversion_event_id) == (5_000, event.pk)
    evaluation.refresh_from_db()
    assert evaluation.status == "done" and evaluation.attempts == 2


def test_a_referral_rejected_in_review_never_earns(world, pipe):
    _dana, referral = _self_referral(world, pipe)
    pipe.post(f"/api/v1/referrals/{referral.pk}/fraud", {"decision": "reject", "reason": "Own company"})

    event = pipe.pay("pay_dana_1", customer="cus_dana", amount=49_900)

    assert not Reward.objects.exists()
    assert "rejected as fraud" in RewardEvaluation.objects.get(conversion_event=event).notes[0]


def test_reward_create_refuses_a_referral_that_fraud_review_holds(world, pipe):
    dana, referral = _self_referral(world, pipe)
    pipe.pay("pay_dana_1", customer="cus_dana", amount=49_900)

    with pytest.raises(ValidationError) as caught:
        reward_create(
            tenant=world.a,
            program=dana.program,
            participant=dana,
            amount_minor=1_000,
            source_key="manual:1",
            actor=system_actor(world.a),
            referral=referral,
        )

    assert "is flagged for fraud review" in caught.value.message_dict["referral"][0]
    assert not Reward.objects.exists()


def test_reward_create_refuses_a_referral_that_has_not_converted(world, pipe):
    program = program_with_rules(world.a, TEN_PERCENT)
    dana, link = referrer(program, "Dana Whitfield")
    referral = pipe.sign_up(email="cto@orbit.example", customer="cus_orbit", code=link.code)

    with pytest.raises(ValidationError) as caught:
        reward_create(
            tenant=world.a,
            program=program,
            participant=dana,
            amount_minor=1_000,
            source_key="manual:2",
            actor=system_actor(world.a),
            referral=referral,
        )

    assert caught.value.message_dict["referral"] == [
        f"Referral #{referral.pk} has not converted (become a paying customer) yet: it is signed up."
    ]
    assert not Reward.objects.exists()


def _paid_customer(world, pipe, rules=TEN_PERCENT):
    program = program_with_rules(world.a, rules)
    dana, link = referrer(program, "Dana Whitfield")
    pipe.sign_up(email="cto@orbit.example", customer="cus_orbit", code=link.code, at=timezone.now() - timedelta(days=3))
    payment = pipe.pay("pay_orbit_1", customer="cus_orbit", amount=20_000, at=timezone.now() - timedelta(days=2))
    [reward] = Reward.objects.filter(participant=dana)
    assert reward.amount_minor == 2_000
    return dana, payment, reward


def test_a_refund_through_the_conversion_api_shrinks_the_reward_of_the_payment(world, pipe):
    dana, _payment, reward = _paid_customer(world, pipe)

    # A quarter refunded, naming the payment; then the rest, defaulting to the customer's latest payment
    pipe.event("refund_1", "refund", customer="cus_orbit", amount=5_000, refunded_event_id="pay_orbit_1")
    reward.refresh_from_db()
    assert (reward.reversed_minor, reward.net_minor, reward.status) == (500, 1_500, RewardStatus.PENDING)
    assert LedgerTransaction.objects.filter(reward=reward, idempotency_key=f"reward:{reward.pk}:reduce-to:500").exists()

    pipe.event("refund_2", "refund", customer="cus_orbit", amount=15_000)
    reward.refresh_from_db()
    assert (reward.reversed_minor, reward.status) == (2_000, RewardStatus.REVERSED)
    assert ParticipantMessage.objects.filter(participant=dana, kind="reward_reduced").count() == 2


def test_a_refund_after_payout_is_clawed_back(world, pipe):
    dana, _payment, reward = _paid_customer(world, pipe)
    f.ParticipantStripeProfileFactory(participant=dana)
    actor = system_actor(world.a)
    reward_approve(reward=reward, actor=actor)
    [payout] = payout_prepare(participant=dana)
    payout_mark_fulfilled(payout=payout, actor=actor, reference="tr_by_hand")
    reward.refresh_from_db()
    assert reward.status == RewardStatus.PAID

    pipe.event("refund_1", "refund", customer="cus_orbit", amount=10_000, refunded_event_id="pay_orbit_1")

    reward.refresh_from_db()
    assert (reward.clawed_back_minor, reward.status) == (1_000, RewardStatus.PAID)
    assert LedgerTransaction.objects.get(reward=reward, kind="clawback").idempotency_key.endswith("reduce-to:1000")


def test_a_refund_that_arrives_before_its_payment_is_applied_when_the_payment_is_rewarded(world, pipe):
    program = program_with_rules(world.a, TEN_PERCENT)
    dana, link = referrer(program, "Dana Whitfield")
    pipe.sign_up(email="cto@orbit.example", customer="cus_orbit", code=link.code, at=timezone.now() - timedelta(days=3))

    refund = pipe.event("refund_1", "refund", customer="cus_orbit", amount=10_000, refunded_event_id="pay_orbit_1")
    assert RewardEvaluation.objects.get(conversion_event=refund).status == "nothing_yet"
    pipe.pay("pay_orbit_1", customer="cus_orbit", amount=20_000, at=timezone.now() - timedelta(days=2))

    [reward] = Reward.objects.filter(participant=dana)
    assert (reward.amount_minor, reward.reversed_minor, reward.net_minor) == (2_000, 1_000, 1_000)


def test_a_cancellation_inside_the_window_withdraws_the_rewards_under_a_clawback_policy(world, pipe):
    rules = {**TEN_PERCENT, "cancellation": {"policy": "clawback", "within_days": 60}}
    _dana, _payment, reward = _paid_customer(world, pipe, rules)

    event = pipe.event("cancel_1", "cancellation", customer="cus_orbit")

    reward.refresh_from_db()
    assert (reward.status, reward.net_minor) == (RewardStatus.REVERSED, 0)
    assert "policy 'clawback' withdraws" in RewardEvaluation.objects.get(conversion_event=event).notes[0]


def test_a_cancellation_keeps_paid_rewards_under_forfeit_unpaid(world, pipe):
    rules = {**TEN_PERCENT, "cancellation": {"policy": "forfeit_unpaid", "within_days": 60}}
    dana, _payment, reward = _paid_customer(world, pipe, rules)
    f.ParticipantStripeProfileFactory(participant=dana)
    actor = system_actor(world.a)
    reward_approve(reward=reward, actor=actor)
    [payout] = payout_prepare(participant=dana)
    payout_mark_fulfilled(payout=payout, actor=actor, reference="tr_by_hand")

    pipe.event("cancel_1", "cancellation", customer="cus_orbit")

    reward.refresh_from_db()
    assert (reward.status, reward.net_minor, reward.clawed_back_minor) == (RewardStatus.PAID, 2_000, 0)


def test_payments_after_the_customer_churned_earn_nothing(world, pipe):
    rules = rules_doc(referrer=[{"kind": "recurring_percent", "percent_bp": 1_000, "months": 12}])
    rules["cancellation"] = {"policy": "keep", "within_days": 0}
    _dana, _payment, reward = _paid_customer(world, pipe, rules)
    pipe.event("cancel_1", "cancellation", customer="cus_orbit", at=timezone.now() - timedelta(days=1))

    late = pipe.pay("pay_orbit_2", customer="cus_orbit", amount=20_000, at=timezone.now() - timedelta(hours=2))

    assert not Reward.objects.filter(conversion_event=late).exists()
    assert "churned" in RewardEvaluation.objects.get(conversion_event=late).notes[0]
    reward.refresh_from_db()
    assert reward.status == RewardStatus.PENDING  # policy keep: the earned reward stays


def test_the_stripe_webhook_path_reaches_evaluation_and_the_refund_shrinks_the_reward(
    world, client, django_capture_on_commit_callbacks
):
    # Given tenant A's Stripe wiring and Dana's link code carried in the invoice metadata
    f.StripeCredentialsFactory(tenant=world.a)
    program = program_with_rules(world.a, TEN_PERCENT)
    dana, link = referrer(program, "Dana Whitfield")
    payload = invoice_paid(amount=20_000)
    payload["data"]["object"]["metadata"] = {"referral_code": link.code}

    # When Stripe reports the paid invoice, then a 30 % refund of its charge
    deliver(client, world.a, payload, capture=django_capture_on_commit_callbacks)
    [reward] = Reward.objects.filter(participant=dana)
    assert (reward.amount_minor, reward.conversion_event.source) == (2_000, "stripe")
    deliver(client, world.a, charge_refunded(refunded=6_000, amount=20_000), capture=django_capture_on_commit_callbacks)

    # Then the reward shrank in proportion
    reward.refresh_from_db()
    assert (reward.reversed_minor, reward.net_minor) == (600, 1_400)


def test_a_full_refund_also_withdraws_an_item_without_cash_value(world, pipe):
    rules = rules_doc(
        referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}],
        referred=[{"kind": "feature_unlock", "feature": "SSO", "months": 6}],
    )
    program = program_with_rules(world.a, rules)
    _dana, link = referrer(program, "Dana Whitfield")
    pipe.sign_up(email="cto@orbit.example", customer="cus_orbit", code=link.code)
    pipe.pay("pay_orbit_1", customer="cus_orbit", amount=20_000)
    unlock = Reward.objects.get(beneficiary_side="referred")
    assert (unlock.kind, unlock.amount_minor, unlock.description) == ("manual", 0, "SSO unlocked for 6 months")

    pipe.event("refund_half", "refund", customer="cus_orbit", amount=10_000)
    unlock.refresh_from_db()
    assert unlock.status == RewardStatus.PENDING  # a partial refund leaves the item

    pipe.event("refund_rest", "refund", customer="cus_orbit", amount=10_000)
    unlock.refresh_from_db()
    assert unlock.status == RewardStatus.REVERSED
    message = ParticipantMessage.objects.get(participant=unlock.participant, kind="reward_reduced")
    assert message.subject == "Your reward of SSO unlocked for 6 months was withdrawn"
    assert not LedgerTransaction.objects.filter(reward=unlock).exists()


def test_reward_create_refuses_an_inactive_participant_for_a_referral(world, pipe):
    _dana, _payment, reward = _paid_customer(world, pipe)
    ravi = f.ParticipantFactory(program=reward.program, status="removed")

    with pytest.raises(ValidationError) as caught:
        reward_create(
            tenant=world.a,
            program=reward.program,
            participant=ravi,
            amount_minor=1_000,
            source_key="manual:3",
            actor=system_actor(world.a),
            referral=reward.referral,
        )

    assert caught.value.message_dict["participant"] == [f"{ravi.name} is not an active participant: no reward."]
    assert not Reward.objects.filter(participant=ravi).exists()
