"""Hypothesis drives accrue / hold / approve / reject / pay / refund / clawback in any order and checks,
after every step, that the ledger stays balanced (PostgreSQL's own deferred checks are forced to run),
that balances derived from entries agree with the rewards and payouts, and that no payout exceeds the
payable balance. Payouts go through the stripe library to the fake Stripe server."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Sum
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from referral_platform.tenancy.actors import system_actor
from rewards.ledger import participant_balances, unbalanced_transactions
from rewards.models import LedgerAccount, Payout, PayoutStatus, Reward, RewardStatus
from rewards.payouts import payouts_run
from rewards.services import (
    reward_approve,
    reward_create,
    reward_reduce_for_refund,
    reward_reject,
    rewards_release_holds,
)
from tests import factories as f

from .conftest import connected_participant


class LedgerMachine(RuleBasedStateMachine):
    stripe = None  # the StripeControl of the running test

    rewards = Bundle("rewards")

    @initialize(hold_days=st.sampled_from([0, 1, 3]), minimum=st.sampled_from([0, 1_500]))
    def open_program(self, hold_days, minimum):
        self.tenant = f.TenantFactory()
        f.StripeCredentialsFactory(tenant=self.tenant)
        program = f.ProgramFactory(
            tenant=self.tenant, currency="USD", hold_days=hold_days, auto_approve_limit_minor=8_000
        )
        f.PayoutSettingsFactory(program=program, minimum_payout_minor=minimum)
        self.participant = connected_participant(program, self.stripe)
        self.actor = system_actor(self.tenant)
        self.now = timezone.now()

    # --- rules ---------------------------------------------------------------------------------
    @rule(target=rewards, amount=st.integers(min_value=1, max_value=20_000))
    def accrue(self, amount):
        reward = reward_create(
            tenant=self.tenant,
            program=self.participant.program,
            participant=self.participant,
            amount_minor=amount,
            source_key=uuid.uuid4().hex,
            actor=self.actor,
            now=self.now,
        )
        return reward.pk

    @rule(days=st.integers(min_value=1, max_value=4))
    def hold_passes(self, days):
        self.now += timedelta(days=days)

    @rule()
    def release_holds(self):
        rewards_release_holds(tenant=self.tenant, now=self.now)

    @rule(reward_id=rewards)
    def approve(self, reward_id):
        reward = Reward.objects.get(pk=reward_id)
        try:
            reward_approve(reward=reward, actor=self.actor, now=self.now)
        except ValidationError:
            after = Reward.objects.get(pk=reward_id)
            assert (after.status, after.approved_at) == (reward.status, reward.approved_at)

    @rule(reward_id=rewards)
    def reject(self, reward_id):
        reward = Reward.objects.get(pk=reward_id)
        try:
            reward_reject(reward=reward, actor=self.actor, reason="fraud check", now=self.now)
        except ValidationError:
            assert Reward.objects.get(pk=reward_id).status == reward.status

    @rule()
    def pay(self):
        payable_before = self._balances()["payable"]
        known = set(Payout.objects.filter(tenant=self.tenant).values_list("pk", flat=True))
        payouts_run(tenant=self.tenant, now=self.now)
        new = Payout.objects.filter(tenant=self.tenant).exclude(pk__in=known)
        assert sum(p.gross_minor for p in new) <= payable_before, "a payout exceeded the payable balance"
        assert all(0 <= p.amount_minor <= p.gross_minor for p in new)

    @rule(reward_id=rewards, percent=st.integers(min_value=1, max_value=100))
    def refund(self, reward_id, percent):
        """A refund of the payment behind the reward (before payout: reversal; after: clawback)."""
        reward_reduce_for_refund(
            reward=Reward.objects.get(pk=reward_id), refunded_minor=percent, paid_minor=100, actor=self.actor
        )

    @rule()
    def scheduled_run(self):
        """What the beat schedule does: release holds, then pay."""
        self.release_holds()
        self.pay()

    @rule(percent=st.integers(min_value=1, max_value=100))
    def clawback(self, percent):
        """A refund hitting a reward that was already paid out."""
        paid = Reward.objects.filter(tenant=self.tenant, status=RewardStatus.PAID).order_by("pk").first()
        if paid is not None:
            self.refund(paid.pk, percent)

    # --- invariants ----------------------------------------------------------------------------
    def _balances(self):
        return participant_balances(self.tenant, participant=self.participant, currency="USD")

    @invariant()
    def every_transaction_sums_to_zero(self):
        with connection.cursor() as cursor:  # make PostgreSQL run its deferred ledger checks now
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        assert unbalanced_transactions(self.tenant) == []

    @invariant()
    def balances_derive_from_entries_and_match_rewards_and_payouts(self):
        balances = self._balances()
        raw = {
            account.kind: account.entries.aggregate(total=Sum("amount_minor"))["total"] or 0
            for account in LedgerAccount.objects.filter(tenant=self.tenant, participant=self.participant)
        }
        assert balances["pending"] == -raw.get("pending", 0)
        assert balances["payable"] == -raw.get("payable", 0)
        assert balances["paid"] == -raw.get("paid", 0)
        assert balances["receivable"] == raw.get("receivable", 0)
        assert (
            sum(
                account.entries.aggregate(total=Sum("amount_minor"))["total"] or 0
                for account in LedgerAccount.objects.filter(tenant=self.tenant)
            )
            == 0
        )

        rewards = list(Reward.objects.filter(tenant=self.tenant))
        payouts = list(Payout.objects.filter(tenant=self.tenant, status=PayoutStatus.PAID))
        pending = sum(r.amount_minor - r.reversed_minor for r in rewards if r.status == RewardStatus.PENDING)
        payable = sum(r.amount_minor - r.reversed_minor for r in rewards if r.status == RewardStatus.APPROVED)
        clawed = sum(r.clawed_back_minor for r in rewards)
        assert balances["pending"] == pending
        assert balances["payable"] == payable
        assert balances["paid"] == sum(p.amount_minor for p in payouts)
        assert balances["receivable"] == clawed - sum(p.netted_minor for p in payouts)
        assert min(balances.values()) >= 0

    @invariant()
    def stripe_received_exactly_what_the_ledger_paid(self):
        destination = self.participant.pk
        transfers = [t for t in self.stripe.objects("transfer") if t["metadata"].get("participant") == str(destination)]
        assert sum(t["amount"] for t in transfers) == self._balances()["paid"]
        assert len(transfers) == Payout.objects.filter(tenant=self.tenant, status="paid", method="transfer").count()


@pytest.mark.heavy(64)
@pytest.mark.django_db
def test_ledger_state_machine(stripe):
    LedgerMachine.stripe = stripe
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
