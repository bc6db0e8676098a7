"""Set-based settlement (issue 15, ``rewards.settlement_sets``): it settles exactly as the per-referral path
does, a bad conversion among 100 fails alone, a failure while writing commits nothing of the chunk and the
per-referral path settles it, the statements per referral stay flat, concurrent batches give every reward
once, and a batch never reaches another workspace's referrals.

The equivalence property builds the same generated workspace twice — referrals of flat double-sided,
tiered, capped and recurring programs, several payments each, partial refunds, held and rejected referrals,
an inactive referrer — and settles one with the per-referral path only and the other with the set path
(in a shuffled order of ids, in two rounds: first payments, then the later ones and the refunds). The
money (live rewards, ledger balances by account), every event's evaluation status and the participant
messages must be the same (8 generated worlds by default; ``SETTLEMENT_SETS_EXAMPLES=200`` searches
longer). Real commits (transactional_db) against PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.db import OperationalError, connection, transaction
from django.db.models import Count
from django.test.utils import CaptureQueriesContext
from hypothesis import given
from hypothesis import strategies as st

from programs.models import ParticipantStatus
from programs.services import program_current_version
from referral_platform.tenancy import rls
from referral_platform.tenancy.models import AuditEvent
from referrals.models import ConversionEvent, Referral
from rewards import evaluation, settlement_sets
from rewards.evaluation import referral_rewards_settle_batch
from rewards.ledger import unbalanced_transactions
from rewards.models import EntryKind, LedgerTransaction, ParticipantMessage, Reward, RewardEvaluation
from rewards.services import reward_approve
from tests import factories as f
from tests.hypothesis_db import database_examples

from .pipeline import program_with_rules, rules_doc
from .test_order_independence import snapshot
from .test_settle_batch import converted_referrals as batch_referrals

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _chunks_of_fifty(settings):
    """Chunks of 50 referrals (settings.SETTLEMENT_CHUNK; 200 by default): the tests of a batch of several chunks
    stay quick, and what they show does not depend on the size."""
    settings.SETTLEMENT_CHUNK = 50


BASE = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
PROGRAMS = {
    "flat": rules_doc(
        referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}],
        referred=[{"kind": "account_credit", "amount_minor": 2_000}],
    ),
    "tiered": rules_doc(
        referrer=[
            {
                "kind": "tiered",
                "tiers": [{"min_referrals": 1, "percent_bp": 1_000}, {"min_referrals": 3, "percent_bp": 1_500}],
            }
        ]
    ),
    "capped": rules_doc(
        referrer=[{"kind": "flat_per_conversion", "amount_minor": 3_000}],
        caps={"referrer_rewarded_referrals": {"max": 2, "period": "month"}},
    ),
    "recurring": rules_doc(referrer=[{"kind": "recurring_percent", "percent_bp": 1_000, "months": 12}]),
}
REFERRERS = 3


# --- the generated world -----------------------------------------------------------------------------
referral_specs = st.fixed_dictionaries(
    {
        "program": st.sampled_from(sorted(PROGRAMS)),
        "referrer": st.integers(0, REFERRERS - 1),
        "converted_hours": st.integers(0, 24 * 40),
        "payments": st.lists(st.tuples(st.integers(0, 80), st.integers(1_000, 60_000)), min_size=1, max_size=3),
        "refund": st.one_of(st.none(), st.tuples(st.integers(0, 2), st.integers(1, 100))),
        "review": st.sampled_from(["clear"] * 8 + ["flagged", "rejected"]),
    }
)
worlds = st.fixed_dictionaries(
    {
        "referrals": st.lists(referral_specs, min_size=2, max_size=10),
        "inactive": st.one_of(st.none(), st.integers(0, REFERRERS - 1)),
        "seed": st.integers(0, 2**16),
    }
)


def world_build(world: dict):
    """One workspace of ``world``; returns (tenant, referral ids, the events of round two to add later)."""
    tenant = f.TenantFactory()
    programs = {name: program_with_rules(tenant, rules, slug=name) for name, rules in PROGRAMS.items()}
    people = {
        name: [
            f.ParticipantFactory(program=program, external_id=f"{name}-p{i}", name=f"{name} P{i}")
            for i in range(REFERRERS)
        ]
        for name, program in programs.items()
    }
    ids, later = [], []
    for n, spec in enumerate(world["referrals"]):
        program = programs[spec["program"]]
        converted_at = BASE + timedelta(hours=spec["converted_hours"])
        referral = Referral.objects.create(
            tenant=tenant,
            program=program,
            referrer=people[spec["program"]][spec["referrer"]],
            referred_email=f"buyer{n}@company{n}.example",
            referred_company=f"Company {n}",
            referred_external_id=f"cus_{n}",
            status="converted",
            converted_at=converted_at,
            established_at=converted_at,
            rule_version=program_current_version(program=program),
            review_status="clear" if spec["review"] == "rejected" else spec["review"],
        )
        if spec["review"] == "rejected":
            Referral.objects.filter(pk=referral.pk).update(review_status="rejected")
        ids.append(referral.pk)
        payments = sorted(spec["payments"])
        for k, (days, amount) in enumerate(payments):
            event = ConversionEvent(
                tenant=tenant,
                external_event_id=f"pay_{n}_{k}",
                kind="payment",
                amount_minor=amount,
                currency="USD",
                occurred_at=converted_at + timedelta(days=days, minutes=k),
                referral=referral,
                status="processed",
            )
            if k:
                later.append(event)  # round two
            else:
                event.save()
        if spec["refund"] is not None:
            index, percent = spec["refund"]
            index = min(index, len(payments) - 1)
            days, amount = payments[index]
            later.append(
                ConversionEvent(
                    tenant=tenant,
                    external_event_id=f"refund_{n}",
                    kind="refund",
                    amount_minor=max(1, amount * percent // 100),
                    currency="USD",
                    occurred_at=converted_at + timedelta(days=days + 1, minutes=index),
                    referral=referral,
                    raw={"refunded_event_id": f"pay_{n}_{index}"},
                    status="processed",
                )
            )
    if world["inactive"] is not None:
        for name in programs:
            people[name][world["inactive"]].status = ParticipantStatus.REMOVED
            people[name][world["inactive"]].save(update_fields=["status"])
    return tenant, ids, later


def per_referral_only(monkeypatch):
    """Every settlement (the later referrals' ones queued on commit too) takes the per-referral path."""
    monkeypatch.setattr(settlement_sets, "_settle_chunk", lambda ids, now, unlocked=None: {})


@contextlib.contextmanager
def settling_by(path: str):
    """Within the block every settlement takes ``path`` ("per-referral": the set path settles nothing, as
    ``per_referral_only``; "set-based": as in production); yields the referral ids the per-referral path settled."""
    with pytest.MonkeyPatch.context() as patch:
        if path == "per-referral":
            per_referral_only(patch)
        calls: list[int] = []
        settle_one = evaluation.referral_rewards_settle
        patch.setattr(
            evaluation,
            "referral_rewards_settle",
            lambda settle=settle_one, **kw: calls.append(kw["referral_id"]) or settle(**kw),
        )
        yield calls


def outcome(tenant):
    evaluations = Counter(
        RewardEvaluation.objects.filter(tenant=tenant).values_list("conversion_event__external_event_id", "status")
    )
    messages = Counter(ParticipantMessage.objects.filter(tenant=tenant).values_list("participant__external_id", "kind"))
    # What each reward says earned it (re-described in bulk by the set path: rewards.settlement_sets._describe_many).
    descriptions = Counter(
        (
            reward.referral.referred_external_id,
            reward.participant.external_id,
            reward.beneficiary_side,
            reward.is_current,
            reward.conversion_event.external_event_id if reward.conversion_event else None,
            reward.converted_at,
            reward.hold_until,
            reward.explanation_text,
            tuple(sorted((k, str(v)) for k, v in reward.explanation.items() if k not in ("event", "slot"))),
        )
        for reward in Reward.objects.filter(tenant=tenant).select_related("referral", "participant", "conversion_event")
    )
    rewards = {
        reward.pk: (reward.referral.referred_external_id, reward.participant.external_id, reward.beneficiary_side)
        for reward in Reward.objects.filter(tenant=tenant).select_related("referral", "participant")
    }
    # Every ledger transaction and reward audit row, named without ids: the set path writes the reductions of
    # partial refunds as the per-referral path's reward_reduce_for_refund writes them (same keys, memos, data).
    ledger = Counter(
        (
            rewards.get(row.reward_id),
            row.kind,
            row.idempotency_key.split(":", 2)[-1],
            row.memo.split(" ", 2)[-1],
            tuple(sorted(entry.amount_minor for entry in row.entries.all())),
        )
        for row in LedgerTransaction.objects.filter(tenant=tenant).prefetch_related("entries")
    )
    audits = Counter(
        (
            rewards.get(int(row.object_id)),
            row.action,
            row.from_state,
            row.to_state,
            row.reason,
            tuple(sorted((k, str(v)) for k, v in (row.data or {}).items())),
        )
        for row in AuditEvent.objects.filter(tenant=tenant, object_type="rewards.reward")
    )
    return snapshot(tenant), evaluations, messages, descriptions, ledger, audits


def settle_rounds(tenant, ids, later, rng: random.Random) -> None:
    first = ids[:]
    rng.shuffle(first)
    # Round one in small batches: a referral settled after a later-converted one of the same referrer moves
    # that one's standing, which is settled again and re-described (its count of earlier successes changes).
    while first:
        size = rng.randint(1, 4)
        referral_rewards_settle_batch(referral_ids=first[:size])
        del first[:size]
    ConversionEvent.objects.bulk_create(later)
    second = ids[:]
    rng.shuffle(second)
    referral_rewards_settle_batch(referral_ids=second)


def settled_both_ways(world: dict):
    """``world`` built twice, settled per referral and set-based in the same rounds: (the set-based workspace,
    the per-referral outcome, the set-based outcome); the money must be the same."""
    with pytest.MonkeyPatch.context() as patch:
        per_referral_only(patch)
        tenant_a, ids_a, later_a = world_build(world)
        settle_rounds(tenant_a, ids_a, later_a, random.Random(world["seed"]))
    tenant_b, ids_b, later_b = world_build(world)
    settle_rounds(tenant_b, ids_b, later_b, random.Random(world["seed"]))
    expected, got = outcome(tenant_a), outcome(tenant_b)
    assert got[0] == expected[0], "money differs (- per referral, + set-based):\n" + expected[0].diff(got[0])
    return tenant_b, expected, got


@pytest.mark.heavy(23)
@database_examples(int(os.environ.get("SETTLEMENT_SETS_EXAMPLES", "8")))
@given(world=worlds)
def test_the_set_based_path_settles_exactly_like_the_per_referral_path(world):
    tenant_b, expected, got = settled_both_ways(world)
    assert got[1] == expected[1], "evaluations differ"
    assert got[2] == expected[2], "participant messages differ"
    assert got[3] == expected[3], "reward descriptions differ"
    assert got[4] == expected[4], "ledger transactions differ"
    assert got[5] == expected[5], "reward audit rows differ"
    assert unbalanced_transactions(tenant_b) == []


def test_a_referral_whose_count_of_earlier_successes_moved_is_re_described_set_based(world, monkeypatch):
    """Settled before an earlier conversion of the same referrer, a tiered referral counted no earlier success;
    when that earlier one is settled, the later one is settled again: the same money, a new description
    ("previous successful referrals" 0 -> 1), written by the set path as the per-referral path writes it."""
    outcomes = {}
    for path in ("per-referral", "set-based"):
        with settling_by(path) as per_referral_calls:
            tenant, ids, _later = world_build(
                {
                    "referrals": [
                        {**spec, "program": "tiered", "referrer": 0, "payments": [(0, 10_000)], "refund": None}
                        for spec in (
                            {"converted_hours": 1, "review": "clear"},
                            {"converted_hours": 5, "review": "clear"},
                        )
                    ],
                    "inactive": None,
                    "seed": 0,
                }
            )
            earlier, later = ids
            referral_rewards_settle_batch(referral_ids=[later])  # no earlier success yet
            before = Reward.objects.get(referral_id=later)
            referral_rewards_settle_batch(referral_ids=[earlier])  # ... and the later one is settled again
            after = Reward.objects.get(referral_id=later)
        assert (before.pk, before.amount_minor) == (after.pk, after.amount_minor), "the same reward, the same money"
        assert (
            before.explanation["previous_successful_referrals"],
            after.explanation["previous_successful_referrals"],
        ) == (0, 1)
        if path == "set-based":
            assert per_referral_calls == [], "settled and re-described by the set path"
        outcomes[path] = outcome(tenant)
    assert outcomes["set-based"][3] == outcomes["per-referral"][3], "reward descriptions differ"
    assert outcomes["set-based"][0] == outcomes["per-referral"][0], "money differs"


# --- refunds --------------------------------------------------------------------------------------
def refunded_world(percent: int, *, refund_first_round: bool = False):
    """A flat double-sided referral and a recurring one, each paid 10,000 and refunded ``percent`` %; the
    refunds come in round two unless ``refund_first_round`` (then the rewards are created and reduced at once)."""
    tenant, ids, later = world_build(
        {
            "referrals": [
                {
                    "program": name,
                    "referrer": 0,
                    "converted_hours": hours,
                    "payments": [(0, 10_000)],
                    "refund": (0, percent),
                    "review": "clear",
                }
                for name, hours in (("flat", 1), ("recurring", 2))
            ],
            "inactive": None,
            "seed": 0,
        }
    )
    if refund_first_round:
        ConversionEvent.objects.bulk_create(later)
        later = []
    return tenant, ids, later


def settle_both_paths(percent: int, *, refund_first_round: bool = False) -> dict:
    """The refunded world settled per referral and set-based: {path: (outcome, per-referral calls)}."""
    results = {}
    for path in ("per-referral", "set-based"):
        with settling_by(path) as calls:
            tenant, ids, later = refunded_world(percent, refund_first_round=refund_first_round)
            referral_rewards_settle_batch(referral_ids=ids)
            if later:
                ConversionEvent.objects.bulk_create(later)
                calls.clear()
                referral_rewards_settle_batch(referral_ids=ids)
            results[path] = (tenant, outcome(tenant), calls)
    return results


@pytest.mark.parametrize("refund_first_round", [False, True], ids=["refund-later", "refund-with-the-payment"])
def test_a_partial_refund_is_reduced_set_based_exactly_as_the_per_referral_path_reduces_it(refund_first_round):
    results = settle_both_paths(40, refund_first_round=refund_first_round)
    tenant, got, calls = results["set-based"]
    _tenant, expected, _calls = results["per-referral"]
    assert calls == [], "the reductions were written by the set path"
    for index, what in enumerate(("money", "evaluations", "messages", "descriptions", "ledger", "audit rows")):
        assert got[index] == expected[index], f"{what} differ"
    reductions = LedgerTransaction.objects.filter(tenant=tenant, kind=EntryKind.REVERSAL)
    # 40 % of the referrer's 5,000 and the referred company's 2,000 (flat), of 10 % of 10,000 (recurring)
    assert sorted(entry.amount_minor for row in reductions for entry in row.entries.filter(amount_minor__gt=0)) == [
        400,
        800,
        2_000,
    ]
    for reward in Reward.objects.filter(tenant=tenant):
        assert reward.status == "pending"
        assert reward.reversed_minor == (2 * reward.amount_minor * 4_000 + 10_000) // 20_000, "40 %, rounded half up"
    kinds = Counter(ParticipantMessage.objects.filter(tenant=tenant).values_list("kind", flat=True))
    assert kinds["reward_reduced"] == 3
    assert unbalanced_transactions(tenant) == []


@pytest.mark.parametrize("refund_first_round", [False, True], ids=["refund-later", "refund-with-the-payment"])
def test_a_full_refund_reverses_the_rewards_set_based_exactly_as_the_per_referral_path(refund_first_round):
    results = settle_both_paths(100, refund_first_round=refund_first_round)
    tenant, got, calls = results["set-based"]
    _tenant, expected, _calls = results["per-referral"]
    if refund_first_round:  # created and reversed at once: a new reward withdrawn whole stays per referral
        assert sorted(calls) == sorted(Referral.objects.filter(tenant=tenant).values_list("pk", flat=True))
    else:
        assert calls == [], "the reversals were written by the set path"
    for index, what in enumerate(("money", "evaluations", "messages", "descriptions", "ledger", "audit rows")):
        assert got[index] == expected[index], f"{what} differ"
    assert set(Reward.objects.filter(tenant=tenant).values_list("status", flat=True)) == {"reversed"}
    reversed_audits = AuditEvent.objects.filter(tenant=tenant, object_type="rewards.reward", action="reward.reversed")
    assert reversed_audits.count() == 3
    assert all(row.data["refunded_minor"] == row.data["paid_minor"] == 10_000 for row in reversed_audits)
    assert unbalanced_transactions(tenant) == []


# --- caps and tiers settled out of order: withdrawn and corrected set-based -------------------------
def counting_world(program: str, count: int) -> dict:
    """``count`` referrals of one referrer in ``program``, a day apart, each paid 20,000."""
    return {
        "referrals": [
            {
                "program": program,
                "referrer": 0,
                "converted_hours": 24 * i,
                "payments": [(0, 20_000)],
                "refund": None,
                "review": "clear",
            }
            for i in range(count)
        ],
        "inactive": None,
        "seed": 0,
    }


@pytest.mark.parametrize(
    ("program", "reason", "current_amounts"),
    [
        # max 2 rewarded referrals a month: the two latest, settled first, are rewarded; then the earlier ones
        # are, and the later ones count them: no longer earned, withdrawn and retired
        ("capped", "no longer earned: recomputed from the referral's events", [3_000, 3_000]),
        # 10 % from the first referral, 15 % from the third: settled latest first, each counted no earlier
        # success (10 %); the earlier ones' settlement moves the later ones to 15 %: corrected (replaced)
        ("tiered", "corrected: recomputed from the referral's events", [2_000, 2_000, 3_000, 3_000]),
    ],
)
def test_caps_and_tiers_settled_out_of_order_are_withdrawn_and_corrected_set_based(program, reason, current_amounts):
    results = {}
    for path in ("per-referral", "set-based"):
        with settling_by(path) as calls:
            tenant, ids, _later = world_build(counting_world(program, 4))
            for referral_id in reversed(ids):  # the latest conversion first
                referral_rewards_settle_batch(referral_ids=[referral_id])
            results[path] = (tenant, outcome(tenant), list(calls))
    tenant, got, calls = results["set-based"]
    _tenant, expected, _calls = results["per-referral"]
    assert calls == [], "the withdrawals and corrections were written by the set path"
    for index, what in enumerate(("money", "evaluations", "messages", "descriptions", "ledger", "audit rows")):
        assert got[index] == expected[index], f"{what} differ"
    live = Reward.objects.filter(tenant=tenant, is_current=True, status="pending").order_by("referral__converted_at")
    assert [reward.amount_minor for reward in live] == current_amounts
    reversed_ = AuditEvent.objects.filter(tenant=tenant, object_type="rewards.reward", action="reward.reversed")
    assert reversed_.exists() and {row.reason for row in reversed_} == {reason}
    retired = Reward.objects.filter(tenant=tenant, is_current=False)
    assert retired.count() == reversed_.count() and set(retired.values_list("status", flat=True)) == {"reversed"}
    assert all(row.data["reduced_by_minor"] == row.data["total_reduction_minor"] > 0 for row in reversed_)
    assert unbalanced_transactions(tenant) == []


counting_specs = st.fixed_dictionaries(
    {
        "program": st.sampled_from(["capped", "capped", "tiered", "tiered", "flat"]),
        "referrer": st.integers(0, 1),
        "converted_hours": st.integers(0, 24 * 20),
        "payments": st.lists(st.tuples(st.integers(0, 40), st.integers(1_000, 60_000)), min_size=1, max_size=2),
        "refund": st.one_of(st.none(), st.tuples(st.integers(0, 1), st.sampled_from([30, 100]))),
        "review": st.sampled_from(["clear"] * 8 + ["flagged", "rejected"]),
    }
)
counting_worlds = st.fixed_dictionaries(
    {
        "referrals": st.lists(counting_specs, min_size=3, max_size=9),
        "inactive": st.one_of(st.none(), st.none(), st.integers(0, REFERRERS - 1)),
        "seed": st.integers(0, 2**16),
    }
)


@pytest.mark.heavy(25)
@database_examples(int(os.environ.get("SETTLEMENT_SETS_EXAMPLES", "8")))
@given(world=counting_worlds)
def test_caps_tiers_and_full_refunds_in_any_order_settle_set_based_exactly_like_the_per_referral_path(world):
    """Referrals crowding the same referrers' caps and tiers, full and partial refunds, settled in a shuffled
    order a few at a time: the set path withdraws, corrects and reverses rewards, and ends with the same money,
    evaluations and current rewards as the per-referral path. (Not the same history: within a batch the
    per-referral path settles in id order, the set path in conversion order, so one may create and then
    withdraw a capped reward the other never creates — extra ledger pairs, messages and retired rows, the
    same balances. Both are orders the events may arrive in; what is owed depends only on the set.)"""
    tenant_b, expected, got = settled_both_ways(world)
    assert got[1] == expected[1], "evaluations differ"
    current = [
        Counter({described: n for described, n in found[3].items() if described[3]}) for found in (got, expected)
    ]
    assert current[0] == current[1], "the current rewards' descriptions differ"
    assert unbalanced_transactions(tenant_b) == []


@pytest.mark.parametrize("percent", [40, 100], ids=["reduced", "reversed-whole"])
def test_a_reward_approved_between_the_chunks_read_and_its_reduction_rolls_the_chunk_back(monkeypatch, percent):
    """Another transaction approves a reward (it locks the reward, not the referral) after the chunk read it:
    the chunk's guarded UPDATE finds the row moved, nothing of the chunk is committed, and the per-referral path
    reduces the approved reward from the payable account. (The approval's message is left out here: its
    foreign-key check on the referral waits at commit for the chunk's referral lock — in production the two
    then deadlock and PostgreSQL aborts one, a retried ``OperationalError``, as with the per-referral path.)"""
    monkeypatch.setattr("rewards.services.messages.message_reward_approved", lambda **kwargs: None)
    tenant, ids, later = refunded_world(percent)
    referral_rewards_settle_batch(referral_ids=ids)
    ConversionEvent.objects.bulk_create(later)
    approved = Reward.objects.filter(tenant=tenant, referral_id=ids[0], beneficiary_side="referrer").get()
    read_credits = settlement_sets.BatchReads.read_credits

    def approve_meanwhile(self, referrals):  # the rewards are read, the participants not locked yet

        def approve():
            try:
                rls.bind(tenant.pk)
                reward_approve(reward=approved, actor="test", reason="approved meanwhile")
            finally:
                connection.close()

        thread = threading.Thread(target=approve)
        thread.start()
        thread.join()
        return read_credits(self, referrals)

    monkeypatch.setattr(settlement_sets.BatchReads, "read_credits", approve_meanwhile)
    outcome_ = settlement_sets.referrals_settle_sets(referral_ids=ids)
    assert outcome_.settled == {} and outcome_.left == ids, "the whole chunk was rolled back"
    assert not LedgerTransaction.objects.filter(tenant=tenant, kind=EntryKind.REVERSAL).exists()

    monkeypatch.setattr(settlement_sets.BatchReads, "read_credits", read_credits)
    result = referral_rewards_settle_batch(referral_ids=ids)
    assert result.failed == {}
    approved.refresh_from_db()
    reduced = 5_000 * percent // 100  # of the referrer's 5,000
    assert (approved.status, approved.reversed_minor) == ("approved" if percent < 100 else "reversed", reduced)
    reversal = LedgerTransaction.objects.get(tenant=tenant, kind=EntryKind.REVERSAL, reward=approved)
    debit = reversal.entries.get(amount_minor__gt=0)
    assert (debit.account.kind, debit.amount_minor) == ("payable", reduced)
    assert LedgerTransaction.objects.filter(tenant=tenant, kind=EntryKind.REVERSAL).count() == 3
    assert unbalanced_transactions(tenant) == []


# --- failures --------------------------------------------------------------------------------------
def converted_referrals(count: int):
    """``count`` converted referrals of the flat double-sided program, one processed payment each."""
    return batch_referrals(count, rules=PROGRAMS["flat"], at=BASE)


def per_referral(tenant) -> dict[int, int]:
    """{referral id: how many rewards it has}."""
    rows = Reward.objects.filter(tenant=tenant).values_list("referral_id").annotate(n=Count("pk"))
    return dict(rows.values_list("referral_id", "n"))


def accruals(tenant) -> dict[int, int]:
    """{referral id: how many accrual transactions its rewards have}."""
    rows = LedgerTransaction.objects.filter(tenant=tenant, kind=EntryKind.ACCRUAL).values_list("reward__referral_id")
    return dict(rows.annotate(n=Count("pk")).values_list("reward__referral_id", "n"))


def test_one_bad_conversion_among_100_fails_alone_and_the_99_are_settled_set_based_exactly_once(monkeypatch):
    tenant, ids = converted_referrals(100)
    bad = ids[50]
    evaluate = evaluation._evaluate
    per_referral_calls = []

    def corrupt(*, referral, actor, reads):
        if referral.pk == bad:
            raise RuntimeError("corrupt payment row: amount unreadable")
        return evaluate(referral=referral, actor=actor, reads=reads)

    settle_one = evaluation.referral_rewards_settle

    def counted(*, referral_id, now=None):
        per_referral_calls.append(referral_id)
        return settle_one(referral_id=referral_id, now=now)

    monkeypatch.setattr(evaluation, "_evaluate", corrupt)
    monkeypatch.setattr(evaluation, "referral_rewards_settle", counted)
    result = referral_rewards_settle_batch(referral_ids=ids)

    assert per_referral_calls == [bad], "the 99 were settled set-based, only the bad one one by one"
    assert result.failed == {bad: "RuntimeError: corrupt payment row: amount unreadable"}
    assert result.settled == dict.fromkeys(set(ids) - {bad}, "done")
    good = set(ids) - {bad}
    assert per_referral(tenant) == dict.fromkeys(good, 2), "referrer and referred company, once each"
    assert accruals(tenant) == dict.fromkeys(good, 2)
    failed = RewardEvaluation.objects.get(tenant=tenant, referral_id=bad)
    assert failed.status == "failed"
    assert "RuntimeError: corrupt payment row: amount unreadable" in " ".join(failed.notes)
    assert unbalanced_transactions(tenant) == []

    # Repaired and run again (a redelivered task): the 99 gain nothing, the bad one is settled now.
    monkeypatch.setattr(evaluation, "_evaluate", evaluate)
    again = referral_rewards_settle_batch(referral_ids=ids)
    assert again.failed == {}
    assert per_referral(tenant) == dict.fromkeys(ids, 2)
    assert accruals(tenant) == dict.fromkeys(ids, 2)
    assert RewardEvaluation.objects.get(tenant=tenant, referral_id=bad).status == "done"
    assert set(RewardEvaluation.objects.filter(tenant=tenant).values_list("attempts", flat=True)) <= {1, 2}


def test_a_failure_while_writing_commits_nothing_of_the_chunk_and_the_per_referral_path_settles_it(monkeypatch):
    tenant, ids = converted_referrals(60)  # two chunks of the set path (50 and 10)
    post = settlement_sets._post
    calls = {"n": 0}

    def fail_second_chunk(tenant_, rewards, reduced):
        calls["n"] += 1
        post(tenant_, rewards, reduced)  # the rewards and their accruals are written, then the chunk fails
        if calls["n"] == 2:
            raise RuntimeError("disk full")

    monkeypatch.setattr(settlement_sets, "_post", fail_second_chunk)
    outcome_ = settlement_sets.referrals_settle_sets(referral_ids=ids)
    first, second = ids[: settlement_sets.chunk_size()], ids[settlement_sets.chunk_size() :]
    assert set(outcome_.settled) == set(first)
    assert outcome_.left == second
    assert set(per_referral(tenant)) == set(first), "nothing of the failed chunk was committed"

    result = referral_rewards_settle_batch(referral_ids=ids)  # a batch: the set path, then the per-referral one
    assert result.failed == {}
    assert per_referral(tenant) == dict.fromkeys(ids, 2)
    assert accruals(tenant) == dict.fromkeys(ids, 2)
    assert unbalanced_transactions(tenant) == []


def test_a_transient_database_error_in_a_chunk_is_raised_and_the_retry_settles_each_once(monkeypatch):
    tenant, ids = converted_referrals(20)
    evaluate = evaluation._evaluate
    calls = {"n": 0}

    def deadlock_once(*, referral, actor, reads):
        calls["n"] += 1
        if calls["n"] == 11:
            raise OperationalError("deadlock detected")
        return evaluate(referral=referral, actor=actor, reads=reads)

    monkeypatch.setattr(evaluation, "_evaluate", deadlock_once)
    with pytest.raises(OperationalError):
        referral_rewards_settle_batch(referral_ids=ids)
    assert per_referral(tenant) == {}, "the chunk is one transaction: nothing of it committed"
    referral_rewards_settle_batch(referral_ids=ids)  # the task's retry
    assert per_referral(tenant) == dict.fromkeys(ids, 2)
    assert accruals(tenant) == dict.fromkeys(ids, 2)


# --- cost, concurrency, tenancy -------------------------------------------------------------------------
def test_statements_per_referral_stay_flat_however_large_the_batch():
    """The writes and most reads are one statement per chunk: what grows with the batch is each referral's
    credit (its identity cluster and touchpoints) and the first ledger account of each referred company."""
    costs = {}
    for count in (10, 50):
        tenant, ids = converted_referrals(count)
        with CaptureQueriesContext(connection) as captured:
            result = referral_rewards_settle_batch(referral_ids=ids)
        assert result.settled == dict.fromkeys(ids, "done")
        assert per_referral(tenant) == dict.fromkeys(ids, 2)
        costs[count] = len(captured) / count
    assert costs[50] <= costs[10], costs
    assert costs[50] < 5, f"{costs[50]:.1f} statements per referral (the per-referral path takes ~70)"


def settle_at_once(orders: list[list[int]], *, batch_size: int | None = None, tenant=None) -> list[BaseException]:
    """One thread per order, started together, each settling its order in batches of ``batch_size`` (all at once
    when None), bound to ``tenant`` when given; a deadlock between overlapping chunks is retried, as the task
    does. Returns what the threads raised (a batch with failed referrals counts)."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(orders))

    def work(order):
        try:
            if tenant is not None:
                rls.bind(tenant.pk)
            barrier.wait()
            size = batch_size or len(order)
            for start in range(0, len(order), size):
                for _attempt in range(5):
                    try:
                        result = referral_rewards_settle_batch(referral_ids=order[start : start + size])
                        break
                    except OperationalError:
                        continue
                assert result.failed == {}
        except BaseException as error:  # reported to the caller
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(order,)) for order in orders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    return errors


def test_concurrent_overlapping_set_batches_reward_each_referral_once():
    tenant, ids = converted_referrals(60)
    assert settle_at_once([ids[:45], ids[15:], list(reversed(ids)), ids[::2]]) == []
    assert per_referral(tenant) == dict.fromkeys(ids, 2)
    assert accruals(tenant) == dict.fromkeys(ids, 2)
    assert unbalanced_transactions(tenant) == []


@pytest.mark.parametrize("released", [True, False], ids=["released-before-the-retry", "still-held"])
def test_a_referral_another_transaction_holds_is_tried_again_set_based_after_the_batchs_other_chunks(
    monkeypatch, released
):
    """Another transaction holds one referral's lock while the batch's chunks run (``SKIP LOCKED`` passes it
    over). Released before the retry: the set path settles it then, no per-referral settlement. Still held: it is
    left to the per-referral path, which waits for the lock and settles it. Either way every referral is settled
    once (two accruals each) and the ledger balances."""
    tenant, ids = converted_referrals(3 * settlement_sets.chunk_size() // 2)  # two chunks
    target = ids[len(ids) // 3]
    taken, release = threading.Event(), threading.Event()

    def hold():
        try:
            rls.bind(tenant.pk)
            with transaction.atomic():
                Referral.objects.select_for_update().get(pk=target)
                taken.set()
                release.wait(60)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert taken.wait(30)
    settle_chunk, passes = settlement_sets._settle_chunk, []

    def chunk(ids_, now, unlocked=None):
        passes.append(list(ids_))
        if len(passes) == 3 and released:  # the retry of the held one: the holder has committed meanwhile
            release.set()
            holder.join(30)
        outcome = settle_chunk(ids_, now=now, unlocked=unlocked)
        if len(passes) == 3 and not released:
            # The retry passed it over again (held): the per-referral path waits for the lock next; let it go then.
            # (Released from here, not after a fixed time: on a loaded machine a timer fired before the retry.)
            threading.Timer(0.5, release.set).start()
        return outcome

    monkeypatch.setattr(settlement_sets, "_settle_chunk", chunk)
    with settling_by("set-based") as per_referral_calls:
        result = referral_rewards_settle_batch(referral_ids=ids)
    holder.join(30)
    assert passes[2] == [target], "one more set-based pass, for the held referral only"
    assert per_referral_calls == ([] if released else [target])
    assert result.failed == {} and set(result.settled) == set(ids)
    assert per_referral(tenant) == dict.fromkeys(ids, 2)
    assert accruals(tenant) == dict.fromkeys(ids, 2)
    assert unbalanced_transactions(tenant) == []


def test_concurrent_overlapping_batches_withdraw_and_correct_caps_and_tiers_to_what_one_by_one_settling_gives(
    monkeypatch,
):
    """Four threads settle overlapping batches of capped and tiered referrals of the same referrers, in different
    orders, at once (withdrawals, retirements and replacements set-based, held referrals retried): after one more
    settlement of all of them the money is what settling them one by one, per referral and in conversion order,
    gives — one current reward per slot (the database's constraint would refuse a second), a balanced ledger."""
    world = {
        "referrals": [
            {**spec, "referrer": i % 2, "converted_hours": 7 * i, "review": "clear"}
            for i, spec in enumerate(
                [{"program": "capped", "payments": [(0, 20_000)], "refund": None}] * 6
                + [{"program": "tiered", "payments": [(0, 20_000), (3, 10_000)], "refund": None}] * 6
            )
        ],
        "inactive": None,
        "seed": 0,
    }
    with pytest.MonkeyPatch.context() as patch:
        per_referral_only(patch)
        tenant_a, ids_a, later_a = world_build(world)
        ConversionEvent.objects.bulk_create(later_a)
        for referral_id in ids_a:  # one by one, in conversion order (the ids are in it)
            referral_rewards_settle_batch(referral_ids=[referral_id])
    tenant_b, ids, later_b = world_build(world)
    ConversionEvent.objects.bulk_create(later_b)
    # Each thread settles small batches, the latest conversions first in two of them: a later referral is
    # rewarded before an earlier one fills the cap or moves the tier, then withdrawn or corrected.
    latest_first = list(reversed(ids))
    rng = random.Random(7)
    orders = [latest_first, latest_first[1:] + latest_first[:1], rng.sample(ids, len(ids)), rng.sample(ids, len(ids))]
    withdrawn_set_based: list[int] = []
    withdraw_many = settlement_sets._withdraw_many

    def counting(tenant, actor, withdrawals, reads):
        out = withdraw_many(tenant, actor, withdrawals, reads)
        withdrawn_set_based.extend(withdrawal.read.pk for _plan, withdrawal in withdrawals)
        return out

    monkeypatch.setattr(settlement_sets, "_withdraw_many", counting)

    assert settle_at_once(orders, batch_size=2, tenant=tenant_b) == []
    referral_rewards_settle_batch(referral_ids=ids)
    expected, got = snapshot(tenant_a), snapshot(tenant_b)
    assert got == expected, "money differs (- one by one, + concurrent):\n" + expected.diff(got)
    retired = set(Reward.objects.filter(tenant=tenant_b, is_current=False).values_list("pk", flat=True))
    assert retired and retired & set(withdrawn_set_based), "caps and tiers moved rewards, set-based too"
    assert unbalanced_transactions(tenant_b) == []


def test_a_batch_bound_to_one_workspace_never_settles_another_workspaces_referrals():
    tenant_a, ids_a = converted_referrals(5)
    tenant_b, ids_b = converted_referrals(5)
    with rls.tenant(tenant_a.pk):
        result = referral_rewards_settle_batch(referral_ids=ids_a + ids_b)
    assert set(result.settled) == set(ids_a)
    assert per_referral(tenant_a) == dict.fromkeys(ids_a, 2)
    assert per_referral(tenant_b) == {}, "tenant B's referrals are invisible to a batch bound to A"
    # Unbound (a cross-tenant job), one batch with both: each referral settled within its own workspace.
    result = referral_rewards_settle_batch(referral_ids=ids_a + ids_b)
    assert set(result.settled) == set(ids_a + ids_b)
    assert per_referral(tenant_b) == dict.fromkeys(ids_b, 2)
    for tenant in (tenant_a, tenant_b):
        rewards = Reward.objects.filter(tenant=tenant)
        assert set(rewards.values_list("participant__tenant_id", flat=True)) == {tenant.pk}
        assert set(rewards.values_list("referral__tenant_id", flat=True)) == {tenant.pk}
        assert unbalanced_transactions(tenant) == []


def test_bad_referral_ids_are_refused_before_anything_is_written_and_unknown_ones_settle_nothing():
    tenant, ids = converted_referrals(3)
    with pytest.raises(ValueError, match="referral_ids"):
        referral_rewards_settle_batch(referral_ids=[ids[0], "1; DROP TABLE x", None])
    assert per_referral(tenant) == {}, "nothing half-written: the good id was not settled either"
    result = referral_rewards_settle_batch(referral_ids=[999_999_999])  # no such referral
    assert (result.settled, result.failed) == ({}, {})
    assert not Reward.objects.exists() and not RewardEvaluation.objects.exists()
