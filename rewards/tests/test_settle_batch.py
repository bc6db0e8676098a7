"""Settling referrals in batches (issue 15, item 3): a batch that fails halfway commits the good
referrals exactly once and marks the bad one failed with its reason; reruns and concurrent batches
give every reward exactly once. Real commits (transactional_db) and real threads against Postgres."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from programs.services import program_rules_change
from referral_platform.tenancy.actors import system_actor
from referrals.models import ConversionEvent, Referral
from rewards import evaluation
from rewards.evaluation import referral_rewards_settle_batch
from rewards.ledger import unbalanced_transactions
from rewards.models import EntryKind, LedgerTransaction, Reward, RewardEvaluation
from rewards.tasks import settle_referrals
from tests import factories as f

pytestmark = pytest.mark.django_db(transaction=True)

BATCH = 100


def converted_referrals(count: int = BATCH, *, rules: dict | None = None, at=None):
    """``count`` converted referrals of one program (by default 50.00 per conversion), each with one
    processed payment; the referrers of record are credited (no touchpoints), spread over five participants."""
    tenant = f.TenantFactory()
    program = f.ProgramFactory(tenant=tenant, currency="USD", hold_days=0)
    rules = rules or {
        "schema_version": 1,
        "currency": "USD",
        "referrer": [{"kind": "flat_per_conversion", "amount_minor": 5_000}],
        "referred": [],
    }
    version = program_rules_change(program=program, actor=system_actor(tenant), rules=rules).version
    people = [f.ParticipantFactory(program=program) for _ in range(5)]
    at = at or timezone.now() - timedelta(hours=1)
    referrals = Referral.objects.bulk_create(
        Referral(
            tenant=tenant,
            program=program,
            referrer=people[i % len(people)],
            referred_email=f"buyer{i}@company{i}.example",
            referred_company=f"Company {i}",
            referred_external_id=f"cus_{i}",
            status="converted",
            converted_at=at + timedelta(seconds=i),
            established_at=at,
            rule_version=version,
        )
        for i in range(count)
    )
    ConversionEvent.objects.bulk_create(
        ConversionEvent(
            tenant=tenant,
            external_event_id=f"pay_{i}",
            kind="payment",
            amount_minor=10_000,
            currency="USD",
            occurred_at=at + timedelta(seconds=i),
            referral=referral,
            status="processed",
        )
        for i, referral in enumerate(referrals)
    )
    return tenant, [referral.pk for referral in referrals]


def accruals_per_referral(tenant) -> dict[int, int]:
    return dict(
        LedgerTransaction.objects.filter(tenant=tenant, kind=EntryKind.ACCRUAL)
        .values_list("reward__referral_id")
        .annotate(n=Count("pk"))
        .values_list("reward__referral_id", "n")
    )


def rewards_per_referral(tenant) -> dict[int, int]:
    return dict(
        Reward.objects.filter(tenant=tenant)
        .values_list("referral_id")
        .annotate(n=Count("pk"))
        .values_list("referral_id", "n")
    )


def per_referral_path_only(monkeypatch):
    """The per-referral path of a batch (the set-based one, rewards/settlement_sets.py, leaves it everything
    it does not settle itself; its own failures are tested in test_settlement_sets.py)."""
    from rewards import settlement_sets

    monkeypatch.setattr(settlement_sets, "_settle_chunk", lambda ids, now, unlocked=None: {})


@pytest.mark.heavy(32)
def test_one_bad_conversion_among_100_fails_alone_and_the_99_commit_exactly_once(monkeypatch):
    per_referral_path_only(monkeypatch)
    tenant, ids = converted_referrals()
    bad = ids[BATCH // 2]
    settle_locked = evaluation._settle_locked

    def corrupt(*, referral, actor, now):
        if referral.pk == bad:
            # Halfway through its settlement: a reward row is already written when it fails.
            settle_locked(referral=referral, actor=actor, now=now)
            raise RuntimeError("corrupt payment row: amount unreadable")
        return settle_locked(referral=referral, actor=actor, now=now)

    monkeypatch.setattr(evaluation, "_settle_locked", corrupt)
    result = settle_referrals.run(ids)

    assert result == {
        "settled": BATCH - 1,
        "failed": {str(bad): "RuntimeError: corrupt payment row: amount unreadable"},
    }
    good = set(ids) - {bad}
    assert rewards_per_referral(tenant) == dict.fromkeys(good, 1), "each good referral rewarded once, the bad one not"
    assert accruals_per_referral(tenant) == dict.fromkeys(good, 1)
    failed = RewardEvaluation.objects.get(tenant=tenant, referral_id=bad)
    assert failed.status == "failed"
    assert "RuntimeError: corrupt payment row: amount unreadable" in " ".join(failed.notes)
    assert set(
        RewardEvaluation.objects.filter(tenant=tenant).exclude(referral_id=bad).values_list("status", flat=True)
    ) == {"done"}
    assert unbalanced_transactions(tenant) == []

    # The batch runs again (a redelivered task; the bad row repaired): the 99 gain nothing, the bad one
    # is settled now, each reward still exactly once.
    monkeypatch.setattr(evaluation, "_settle_locked", settle_locked)
    again = referral_rewards_settle_batch(referral_ids=ids)
    assert again.failed == {}
    assert again.settled == dict.fromkeys(ids, "done")
    assert rewards_per_referral(tenant) == dict.fromkeys(ids, 1)
    assert accruals_per_referral(tenant) == dict.fromkeys(ids, 1)
    assert RewardEvaluation.objects.get(tenant=tenant, referral_id=bad).status == "done"


def test_a_transient_database_error_retries_the_batch_and_commits_nothing_twice(monkeypatch):
    from django.db import OperationalError

    per_referral_path_only(monkeypatch)
    tenant, ids = converted_referrals(20)
    settle_locked = evaluation._settle_locked
    calls = {"n": 0}

    def deadlock_once(*, referral, actor, now):
        calls["n"] += 1
        if calls["n"] == 11:
            raise OperationalError("deadlock detected")
        return settle_locked(referral=referral, actor=actor, now=now)

    monkeypatch.setattr(evaluation, "_settle_locked", deadlock_once)
    with pytest.raises(OperationalError):
        referral_rewards_settle_batch(referral_ids=ids)
    assert rewards_per_referral(tenant) == dict.fromkeys(ids[:10], 1), "the first ten committed before the error"
    referral_rewards_settle_batch(referral_ids=ids)  # the retry
    assert rewards_per_referral(tenant) == dict.fromkeys(ids, 1)
    assert accruals_per_referral(tenant) == dict.fromkeys(ids, 1)


def test_concurrent_overlapping_batches_reward_each_referral_once():
    tenant, ids = converted_referrals(40)
    batches = [ids[:30], ids[10:], list(reversed(ids))]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(batches))

    def work(batch):
        try:
            barrier.wait()
            result = referral_rewards_settle_batch(referral_ids=batch)
            assert result.failed == {}
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert rewards_per_referral(tenant) == dict.fromkeys(ids, 1)
    assert accruals_per_referral(tenant) == dict.fromkeys(ids, 1)
    assert unbalanced_transactions(tenant) == []
