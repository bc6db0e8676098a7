"""Concurrent evaluations against PostgreSQL: one set of rewards per event; caps hold across events."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from programs.selectors import program_latest_version
from referrals.models import ConversionEventStatus, ReferralStatus
from rewards.evaluation import reward_evaluate
from rewards.ledger import participant_balances, unbalanced_transactions
from rewards.models import LedgerTransaction, Reward, RewardEvaluation
from tests import factories as f

from .pipeline import program_with_rules, rules_doc


def _attributed_payment(program, participant, *, external_id: str, email: str):
    """A converted referral and its processed payment, attributed wholly to ``participant`` (not yet evaluated)."""
    now = timezone.now()
    referral = f.ReferralFactory(
        referrer=participant,
        referred_email=email,
        status=ReferralStatus.CONVERTED,
        converted_at=now,
        rule_version=program_latest_version(program),
    )
    event = f.ConversionEventFactory(
        tenant=program.tenant,
        external_event_id=external_id,
        referral=referral,
        status=ConversionEventStatus.PROCESSED,
        amount_minor=10_000,
        occurred_at=now,
    )
    f.AttributionFactory(
        participant=participant,
        conversion_event=event,
        referral=referral,
        share=Decimal("1.000000"),
        amount_minor=10_000,
    )
    return event


def _in_threads(targets):
    barrier = threading.Barrier(len(targets))
    errors = []

    def run(target):
        try:
            barrier.wait()
            target()
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


@pytest.mark.django_db(transaction=True)
def test_concurrent_evaluations_of_one_event_create_one_set_of_rewards(world):
    program = program_with_rules(
        world.a,
        rules_doc(
            referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}],
            referred=[{"kind": "account_credit", "amount_minor": 1_000}],
        ),
    )
    dana = f.ParticipantFactory(program=program)
    event = _attributed_payment(program, dana, external_id="pay_1", email="cto@orbit.example")

    _in_threads([lambda: reward_evaluate(event_id=event.pk) for _ in range(6)])

    rewards = list(Reward.objects.filter(conversion_event=event))
    assert sorted((r.beneficiary_side, r.amount_minor) for r in rewards) == [("referred", 1_000), ("referrer", 5_000)]
    assert LedgerTransaction.objects.filter(kind="accrual").count() == 2
    evaluation = RewardEvaluation.objects.get(conversion_event=event)
    # Each of the six evaluations settled the referral (serialised on its row); only the first created.
    assert (evaluation.status, evaluation.attempts, evaluation.rewards_created) == ("done", 6, 2)


@pytest.mark.django_db(transaction=True)
def test_concurrent_evaluations_of_one_referrers_conversions_respect_the_period_cap(world):
    program = program_with_rules(
        world.a,
        rules_doc(
            referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}],
            caps={"referrer_rewarded_referrals": {"max": 2, "period": "year"}},
        ),
    )
    dana = f.ParticipantFactory(program=program)
    events = [
        _attributed_payment(program, dana, external_id=f"pay_{n}", email=f"cto@company{n}.example") for n in range(5)
    ]

    _in_threads([lambda event=event: reward_evaluate(event_id=event.pk) for event in events])

    # Exactly two referrals keep a live reward — the two that converted first (same moment: the older
    # referrals) — whichever evaluation ran first; a reward granted before an earlier conversion was
    # counted is withdrawn through the ledger.
    live = Reward.objects.filter(participant=dana, is_current=True, status="pending")
    assert sorted(live.values_list("referral_id", flat=True)) == sorted(e.referral_id for e in events)[:2]
    assert participant_balances(world.a, participant=dana, currency="USD")["pending"] == 10_000
    assert unbalanced_transactions(world.a) == []
    assert RewardEvaluation.objects.filter(status="done").count() == 5
