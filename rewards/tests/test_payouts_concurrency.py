"""Concurrent payout runs in separate processes against PostgreSQL and the fake Stripe server.

The worker processes (rewards/tests/payout_worker.py) are forked once from a Django process and run one
command per round, so every round starts twenty ``payouts_run`` calls at the same moment, next to
processes that handle refund webhooks and approve new rewards of the same tenant.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from referral_platform.tenancy.actors import system_actor
from rewards.ledger import participant_balances, unbalanced_transactions
from rewards.models import (
    LedgerTransaction,
    ParticipantStripeProfile,
    Payout,
    PayoutMethod,
    PayoutStatus,
    Reward,
    RewardStatus,
    StripeCharge,
    StripeWebhookEvent,
)
from rewards.payouts import UNFINISHED, payouts_run
from rewards.services import reward_approve, reward_create
from tests import factories as f

from .conftest import connected_participant

ROOT = Path(__file__).resolve().parents[2]
PAYOUT_RUNS = 20
ROUNDS = 5
PARTICIPANTS = 6
EARLIER = timezone.now() - timedelta(hours=1)


class Workers:
    """``count`` worker processes forked from one Django process (rewards/tests/payout_worker.py)."""

    def __init__(self, count: int, env: dict):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rewards.tests.payout_worker", str(count)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = self.process.stdout.readline()
        assert json.loads(ready) == {"ready": count}, ready

    def run(self, commands: list[dict]) -> list[dict]:
        """One command per worker, all started at the same moment; their answers in the same order."""
        self.process.stdin.write(json.dumps(commands) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def stop(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)
        self.process.stdout.close()


def _approved(participant, amount: int, key: str, **kwargs) -> Reward:
    actor = system_actor(participant.tenant)
    reward = reward_create(
        tenant=participant.tenant,
        program=participant.program,
        participant=participant,
        amount_minor=amount,
        source_key=key,
        actor=actor,
        now=EARLIER,
        **kwargs,
    )
    return reward_approve(reward=reward, actor=actor)


def _refund_webhook(tenant, participant, key: str) -> StripeWebhookEvent:
    """A paid conversion with its approved reward and charge, and a stored (unhandled) partial refund."""
    conversion = f.ConversionEventFactory(tenant=tenant, external_event_id=f"evt-{key}", amount_minor=10_000)
    _approved(participant, 2_000, f"refunded-{key}", conversion_event=conversion)
    StripeCharge.objects.create(
        tenant=tenant, stripe_charge_id=f"ch_{key}", amount_minor=10_000, currency="USD", conversion_event=conversion
    )
    payload = {
        "id": f"evt_refund_{key}",
        "type": "charge.refunded",
        "data": {"object": {"id": f"ch_{key}", "amount": 10_000, "amount_refunded": 2_500, "currency": "usd"}},
    }
    return StripeWebhookEvent.objects.create(
        tenant=tenant, stripe_event_id=payload["id"], type=payload["type"], payload=payload
    )


@pytest.fixture
def worker_env(stripe_server):
    db = connection.settings_dict
    return dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="referral_platform.settings.test",
        DATABASE_URL=f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        # The test settings prefer DATABASE_OWNER_URL (set by the embedded devstack): it must name this database too.
        DATABASE_OWNER_URL=f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        STRIPE_API_BASE=stripe_server.url,
    )


@pytest.mark.heavy(46)
@pytest.mark.django_db(transaction=True)
def test_twenty_simultaneous_payout_runs_in_processes_never_deadlock_and_pay_each_payout_once(
    stripe, world, worker_env
):
    # Given: one tenant, participants with Connect accounts, and processes ready to run
    f.StripeCredentialsFactory(tenant=world.a)
    program = f.ProgramFactory(tenant=world.a, hold_days=0, auto_approve_limit_minor=50_000, currency="USD")
    participants = [connected_participant(program, stripe) for _ in range(PARTICIPANTS)]
    workers = Workers(PAYOUT_RUNS + 2, worker_env)
    skipped = 0
    try:
        for round_number in range(ROUNDS):
            # fresh due rewards for every participant, and refunds waiting in the webhook inbox
            for index, participant in enumerate(participants):
                _approved(participant, 1_000 + 100 * index, f"r{round_number}-p{participant.pk}")
            events = [_refund_webhook(world.a, p, f"{round_number}-{p.pk}") for p in participants[:3]]

            # When: twenty payout runs start at once, next to webhook handling and reward approvals
            commands = [{"do": "payouts_run"}] * PAYOUT_RUNS + [
                {"do": "webhooks", "event_ids": [e.pk for e in events]},
                {"do": "rewards", "participant_ids": [p.pk for p in participants[::2]], "key": f"new-{round_number}"},
            ]
            answers = workers.run(commands)
            next_run = payouts_run()  # the next scheduled run pays whatever is left (e.g. approved meanwhile)

            # Then (each round): no process failed (no deadlock), nothing is left to pay
            failures = [a for a in answers if not a["ok"]]
            assert failures == [], "\n".join(a["traceback"] for a in failures)
            skipped += sum(a["result"]["skipped"] for a in answers[:PAYOUT_RUNS])
            assert next_run["failed"] == next_run["skipped"] == 0
            assert not Payout.objects.filter(status__in=UNFINISHED).exists(), round_number
            assert not Reward.objects.filter(status=RewardStatus.APPROVED).exists(), round_number
    finally:
        workers.stop()

    transfers = stripe.objects("transfer")
    per_payout = Counter(t["metadata"]["payout"] for t in transfers)
    paid_by_transfer = Payout.objects.filter(method=PayoutMethod.TRANSFER)
    assert set(per_payout) == {str(p.pk) for p in paid_by_transfer}
    assert set(per_payout.values()) == {1}, "a payout was sent more than once"
    assert {(p.stripe_object_id, p.amount_minor) for p in paid_by_transfer} == {
        (t["id"], t["amount"]) for t in transfers
    }
    executed = [r for r in stripe.requests("/v1/transfers", "POST") if r["status"] == 200 and not r["replayed"]]
    assert len(executed) == len(transfers)
    assert not Payout.objects.exclude(status=PayoutStatus.PAID).exists()
    assert LedgerTransaction.objects.filter(payout__isnull=False).count() == Payout.objects.count()
    assert unbalanced_transactions(world.a) == []
    for participant in participants:
        account = ParticipantStripeProfile.objects.get(participant=participant).connected_account_id
        sent = sum(t["amount"] for t in transfers if t["destination"] == account)
        balances = participant_balances(world.a, participant=participant, currency="USD")
        assert (balances["pending"], balances["payable"], balances["paid"]) == (0, 0, sent)
    assert StripeWebhookEvent.objects.exclude(status="processed").count() == 0
    print(f"{ROUNDS} rounds x {PAYOUT_RUNS} runs, {len(transfers)} transfers, {skipped} skips (held by another run)")
