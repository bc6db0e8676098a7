"""Reward lifecycle: accrue on creation, hold, approve (auto within the limit, review above it), reject,
shrink or claw back on refunds. Every transition is audited and mirrored in the ledger."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from referral_platform.tenancy.actors import system_actor
from referral_platform.tenancy.models import AuditEvent
from rewards.ledger import participant_balances, unbalanced_transactions
from rewards.models import LedgerTransaction, Reward, RewardStatus
from rewards.payouts import payouts_run
from rewards.selectors import rewards_pending_review
from rewards.services import (
    refund_target,
    reward_approve,
    reward_create,
    reward_reduce_for_refund,
    reward_reject,
    rewards_release_holds,
)
from tests import factories as f

NOW = timezone.now()


@pytest.fixture
def program(db):
    return f.ProgramFactory(hold_days=30, auto_approve_limit_minor=50_000, currency="USD")


@pytest.fixture
def participant(program):
    return f.ParticipantFactory(program=program)


def _create(participant, amount=10_000, key="conv-1", **kwargs):
    return reward_create(
        tenant=participant.tenant,
        program=participant.program,
        participant=participant,
        amount_minor=amount,
        source_key=key,
        actor=system_actor(participant.tenant),
        now=kwargs.pop("now", NOW),
        **kwargs,
    )


def _balances(participant):
    return participant_balances(participant.tenant, participant=participant, currency="USD")


def test_creating_a_reward_accrues_it_as_pending_and_holds_it_for_the_program_hold(participant):
    reward = _create(participant, explanation={"rule": "flat", "amount_minor": 10_000}, explanation_text="Flat $100")

    assert reward.status == RewardStatus.PENDING
    assert reward.hold_until == NOW + timedelta(days=30)
    assert _balances(participant) == {"pending": 10_000, "payable": 0, "paid": 0, "receivable": 0}
    assert LedgerTransaction.objects.get(reward=reward).kind == "accrual"
    assert AuditEvent.objects.filter(action="reward.created", object_id=str(reward.pk), to_state="pending").exists()


def test_creating_twice_with_one_source_key_gives_one_reward_and_one_accrual(participant):
    first = _create(participant)

    again = _create(participant)

    assert again.pk == first.pk
    assert Reward.objects.count() == 1 and LedgerTransaction.objects.count() == 1


def test_a_source_key_reused_for_a_different_reward_is_refused(participant):
    _create(participant)

    with pytest.raises(ValidationError) as error:
        _create(participant, amount=1)

    assert "source_key" in error.value.message_dict
    assert Reward.objects.count() == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"amount": -5}, "amount_minor"),
        ({"amount": 0}, "amount_minor"),
        ({"currency": "EUR"}, "currency"),
        ({"kind": "bitcoin"}, "kind"),
        ({"beneficiary_side": "neighbour"}, "beneficiary_side"),
        ({"key": ""}, "source_key"),
    ],
    ids=["negative", "zero-cash", "wrong-currency", "unknown-kind", "unknown-side", "no-source-key"],
)
def test_bad_input_names_the_field_and_writes_nothing(participant, kwargs, field):
    with pytest.raises(ValidationError) as error:
        _create(participant, **kwargs)

    assert field in error.value.message_dict
    assert not Reward.objects.exists() and not LedgerTransaction.objects.exists()


def test_a_participant_of_another_program_or_tenant_is_refused(participant):
    stranger = f.ParticipantFactory()

    with pytest.raises(ValidationError) as error:
        reward_create(
            tenant=participant.tenant,
            program=participant.program,
            participant=stranger,
            amount_minor=100,
            source_key="x",
            actor=system_actor(participant.tenant),
        )

    assert "participant" in error.value.message_dict
    assert not Reward.objects.exists()


def test_approval_waits_for_the_hold_to_end(participant):
    reward = _create(participant)

    with pytest.raises(ValidationError) as error:
        reward_approve(reward=reward, actor=system_actor(participant.tenant), now=NOW + timedelta(days=29))

    assert "hold_until" in error.value.message_dict
    reward.refresh_from_db()
    assert reward.status == RewardStatus.PENDING and _balances(participant)["payable"] == 0


def test_holds_release_into_approval_only_within_the_auto_approve_limit(participant):
    small = _create(participant, amount=50_000, key="small")
    large = _create(participant, amount=50_001, key="large")
    later = NOW + timedelta(days=30)

    approved = rewards_release_holds(now=later)

    small.refresh_from_db()
    large.refresh_from_db()
    assert approved == 1
    assert small.status == RewardStatus.APPROVED and large.status == RewardStatus.PENDING
    assert list(rewards_pending_review(participant.tenant, now=later)) == [large]
    assert _balances(participant) == {"pending": 50_001, "payable": 50_000, "paid": 0, "receivable": 0}
    assert AuditEvent.objects.filter(
        action="reward.approved", object_id=str(small.pk), from_state="pending", to_state="approved"
    ).exists()


def test_nothing_is_released_before_the_hold_ends(participant):
    _create(participant, amount=100)

    assert rewards_release_holds(now=NOW + timedelta(days=29, hours=23)) == 0


def test_an_approved_reward_cannot_be_approved_again(participant):
    reward = _create(participant, amount=100)
    reward_approve(reward=reward, actor=system_actor(participant.tenant), now=NOW + timedelta(days=31))

    with pytest.raises(ValidationError) as error:
        reward_approve(reward=reward, actor=system_actor(participant.tenant), now=NOW + timedelta(days=31))

    assert "status" in error.value.message_dict
    assert LedgerTransaction.objects.filter(kind="approval").count() == 1


def test_rejection_needs_a_reason_and_reverses_the_accrual(participant):
    reward = _create(participant)

    with pytest.raises(ValidationError) as error:
        reward_reject(reward=reward, actor=system_actor(participant.tenant), reason="  ")
    assert "reason" in error.value.message_dict

    reward_reject(reward=reward, actor=system_actor(participant.tenant), reason="self-referral")

    reward.refresh_from_db()
    assert reward.status == RewardStatus.REJECTED and reward.status_reason == "self-referral"
    assert _balances(participant) == {"pending": 0, "payable": 0, "paid": 0, "receivable": 0}
    assert AuditEvent.objects.get(action="reward.rejected").reason == "self-referral"


@pytest.mark.parametrize(
    ("amount", "refunded", "paid", "expected"),
    [
        (10_000, 5_000, 10_000, 5_000),
        (10_000, 1, 3, 3_333),
        (10_001, 1, 2, 5_001),
        (100, 500, 100, 100),
        (100, 0, 100, 0),
    ],
    ids=["half", "third-rounds-down", "half-rounds-up", "over-refund-capped", "nothing"],
)
def test_refund_target_is_proportional_and_exact(amount, refunded, paid, expected):
    assert refund_target(amount, refunded, paid) == expected


def test_a_refund_before_payout_shrinks_the_reward_and_a_full_one_reverses_it(participant):
    reward = _create(participant)
    actor = system_actor(participant.tenant)

    reward_reduce_for_refund(reward=reward, refunded_minor=2_500, paid_minor=10_000, actor=actor)
    reward_reduce_for_refund(reward=reward, refunded_minor=2_500, paid_minor=10_000, actor=actor)  # repeat: no-op
    reward.refresh_from_db()
    assert reward.status == RewardStatus.PENDING and reward.net_minor == 7_500
    assert _balances(participant)["pending"] == 7_500

    reward_reduce_for_refund(reward=reward, refunded_minor=10_000, paid_minor=10_000, actor=actor)
    reward_reduce_for_refund(reward=reward, refunded_minor=5_000, paid_minor=10_000, actor=actor)  # late: no-op

    reward.refresh_from_db()
    assert reward.status == RewardStatus.REVERSED and reward.net_minor == 0
    assert _balances(participant) == {"pending": 0, "payable": 0, "paid": 0, "receivable": 0}
    assert unbalanced_transactions(participant.tenant) == []


def test_reward_above_the_limit_is_not_paid_until_approved(world, stripe):
    from rewards.tests.conftest import connected_participant

    f.StripeCredentialsFactory(tenant=world.a)
    program = f.ProgramFactory(tenant=world.a, hold_days=0, auto_approve_limit_minor=50_000, currency="USD")
    participant = connected_participant(program, stripe)
    reward = _create(participant, amount=75_000, key="big", now=NOW - timedelta(minutes=1))

    rewards_release_holds(now=NOW)
    payouts_run(now=NOW)

    reward.refresh_from_db()
    assert reward.status == RewardStatus.PENDING and reward.payout_id is None
    assert stripe.requests("/v1/transfers") == []

    reward_approve(reward=reward, actor=system_actor(world.a), reason="checked the deal", now=NOW)
    payouts_run(now=NOW)

    reward.refresh_from_db()
    assert reward.status == RewardStatus.PAID
    assert [t["amount"] for t in stripe.objects("transfer")] == [75_000]
