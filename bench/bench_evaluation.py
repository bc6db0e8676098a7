"""How many rewards per second the reward evaluation task produces over N attributed conversions.

Runs in a throw-away database (created with migrations, dropped at the end). The conversions are
double-sided and half of them are multi-touch, so one run exercises the rules, the share split, the
referred company's reward, tier/cap counting, the ledger accrual and the participant messages.
The same conversions are settled twice, in two workspaces: one at a time by the evaluation task (the
per-referral path) and in batches by ``rewards.settle_referrals`` (the set-based path of issue 15,
rewards/settlement_sets.py); both must give the same rewards. Baseline, measured in the same run:
``reward_create`` called directly for the same number of rewards (same participants and amounts, ledger
included); "x baseline" is each step's rewards per second over the baseline's. Statements per conversion
are counted with an execute wrapper (every round trip to PostgreSQL).

    BENCH_CONVERSIONS=500 BENCH_PARTICIPANTS=25 python bench/bench_evaluation.py
"""

from __future__ import annotations

import os
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "referral_platform.settings.test"

from bench.scratch import in_scratch_database, progress  # noqa: E402

CONVERSIONS = int(os.environ.get("BENCH_CONVERSIONS", "500"))
PARTICIPANTS = int(os.environ.get("BENCH_PARTICIPANTS", "25"))


def main() -> None:
    in_scratch_database("bench_evaluation", run)


def seed(slug: str):
    """A workspace of CONVERSIONS attributed conversions; returns (tenant, program, actor, events)."""
    from django.utils import timezone

    from programs.models import Participant, Program
    from programs.services import program_rules_change
    from referral_platform.tenancy.actors import system_actor
    from referral_platform.tenancy.models import Tenant
    from referrals.models import Attribution, ConversionEvent, Referral

    tenant = Tenant.objects.create(slug=slug, name=slug.title(), allowed_landing_domains=["bench.example"])
    program = Program.objects.create(
        tenant=tenant,
        name="Bench",
        slug="bench",
        landing_url="https://bench.example/",
        hold_days=0,
        currency="USD",
        status="active",
    )
    actor = system_actor(tenant)
    rules = {
        "schema_version": 1,
        "currency": "USD",
        "referrer": [
            {
                "kind": "tiered",
                "tiers": [{"min_referrals": 1, "percent_bp": 1_000}, {"min_referrals": 5, "percent_bp": 1_500}],
            }
        ],
        "referred": [{"kind": "account_credit", "amount_minor": 2_000}],
        "caps": {"referrer_rewarded_referrals": {"max": 1_000, "period": "year"}},
    }
    version = program_rules_change(program=program, actor=actor, rules=rules).version
    people = Participant.objects.bulk_create(
        Participant(tenant=tenant, program=program, external_id=f"p{i}", name=f"P {i}", email=f"p{i}@b.example")
        for i in range(PARTICIPANTS)
    )
    now = timezone.now()
    referrals = Referral.objects.bulk_create(
        Referral(
            tenant=tenant,
            program=program,
            referrer=people[i % PARTICIPANTS],
            referred_email=f"buyer{i}@company{i}.example",
            referred_company=f"Company {i}",
            referred_external_id=f"cus_{i}",
            status="converted",
            converted_at=now,
            rule_version=version,
        )
        for i in range(CONVERSIONS)
    )
    events = ConversionEvent.objects.bulk_create(
        ConversionEvent(
            tenant=tenant,
            external_event_id=f"pay_{i}",
            kind="payment",
            amount_minor=10_000 + i,
            currency="USD",
            occurred_at=now,
            referral=referral,
            status="processed",
        )
        for i, referral in enumerate(referrals)
    )
    rows = []
    for i, (event, referral) in enumerate(zip(events, referrals, strict=True)):
        credited = [referral.referrer_id]
        if i % 2:  # every other conversion is shared 60/40 with the next participant
            credited.append(people[(i + 1) % PARTICIPANTS].pk)
        shares = [Decimal("1.000000")] if len(credited) == 1 else [Decimal("0.600000"), Decimal("0.400000")]
        for participant_id, share in zip(credited, shares, strict=True):
            rows.append(
                Attribution(
                    tenant=tenant,
                    conversion_event=event,
                    referral=referral,
                    program=program,
                    participant_id=participant_id,
                    rule_version=version,
                    model="linear",
                    share=share,
                    amount_minor=int(event.amount_minor * share),
                    currency="USD",
                )
            )
    Attribution.objects.bulk_create(rows)
    print(
        f"[bench_evaluation] {CONVERSIONS} attributed conversions ({len(rows)} attributions), {PARTICIPANTS} referrers"
    )
    return tenant, program, actor, events


class StatementCounter:
    """Statements sent to PostgreSQL in the block (an execute wrapper: no debug cursor overhead)."""

    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


def run() -> None:
    from django.db import connection

    from programs.models import Participant
    from rewards.models import Reward
    from rewards.services import reward_create
    from rewards.tasks import evaluate_conversion, settle_referrals

    # --- the evaluation task, one conversion at a time (the per-referral path) ----------------------
    tenant, program, actor, events = seed("bench-one")
    per_event = StatementCounter()
    started = time.perf_counter()
    with connection.execute_wrapper(per_event):
        for index, event in enumerate(events):
            evaluate_conversion.run(event.pk)
            if (index + 1) % 50 == 0 or index + 1 == len(events):
                progress("evaluation task", index + 1, len(events))
    evaluation_seconds = time.perf_counter() - started
    created = list(Reward.objects.filter(tenant=tenant).order_by("pk").values_list("participant_id", "amount_minor"))
    assert created, "evaluation created no rewards"

    # --- the same conversions settled as a batch (the set-based path, rewards/settlement_sets.py) -----
    tenant_b, _program_b, _actor_b, events_b = seed("bench-set")
    referral_ids = [event.referral_id for event in events_b]
    batch = StatementCounter()
    started = time.perf_counter()
    with connection.execute_wrapper(batch):
        step = 100
        for low in range(0, len(referral_ids), step):  # as the drain hands them over: a task per batch
            settle_referrals.run(referral_ids[low : low + step])
            progress("settle_referrals (set-based)", min(low + step, len(referral_ids)), len(referral_ids))
    batch_seconds = time.perf_counter() - started

    def owed(of) -> list:
        rows = Reward.objects.filter(tenant=of).values_list(
            "participant__external_id", "beneficiary_side", "amount_minor"
        )
        return sorted(rows)

    same = owed(tenant) == owed(tenant_b)

    # --- baseline: reward_create for the same rewards ---------------------------------------------
    participants = {p.pk: p for p in Participant.objects.filter(tenant=tenant)}
    started = time.perf_counter()
    for index, (participant_id, amount) in enumerate(created):
        reward_create(
            tenant=tenant,
            program=program,
            participant=participants[participant_id],
            amount_minor=amount,
            source_key=f"baseline-{index}",
            actor=actor,
        )
        if (index + 1) % 100 == 0 or index + 1 == len(created):
            progress("baseline reward_create", index + 1, len(created))
    baseline_seconds = time.perf_counter() - started

    count = len(created)
    print()
    print(
        f"  {'step':<44}{'seconds':>9}{'rewards':>9}{'rewards/s':>11}{'x baseline':>12}{'conv/s':>9}{'stmts/conv':>12}"
    )
    for label, seconds, statements in (
        ("baseline: reward_create directly", baseline_seconds, None),
        ("evaluation task, one conversion at a time", evaluation_seconds, per_event.count),
        ("settle_referrals, set-based batches of 100", batch_seconds, batch.count),
    ):
        per_conversion = f"{statements / len(events):>12.1f}" if statements is not None else f"{'':>12}"
        print(
            f"  {label:<44}{seconds:>9.2f}{count:>9}{count / seconds:>11.0f}{baseline_seconds / seconds:>12.2f}"
            f"{len(events) / seconds:>9.1f}{per_conversion}"
        )
    print(f"  set-based / one at a time: {evaluation_seconds / batch_seconds:.1f}x faster")
    print(f"  the same rewards both ways (participant, side, amount): {'yes' if same else 'NO'}")
    if not same:
        raise SystemExit("the set-based settlement disagrees with the per-referral one")


if __name__ == "__main__":
    main()
