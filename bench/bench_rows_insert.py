"""What writing a settlement chunk's rows costs with ``rows_insert`` (one prepared ``INSERT … SELECT * FROM
UNNEST``, plain values not passed through their fields) against the ORM's ``bulk_create`` — the baseline,
measured in the same run, rounds interleaved (issue 15).

Each round writes, in one transaction, what a chunk of CHUNK first payments writes on settlement: a reward per
payment, its audit row, its accrual (a ledger transaction and its two entries) — once with each writer. Printed:
rows per second and CPU microseconds of this process per row for each, and the ratio.

    BENCH_ROWS_CHUNK=50 BENCH_ROWS_ROUNDS=60 python bench/bench_rows_insert.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "referral_platform.settings.test")

from bench.scratch import in_scratch_database, progress  # noqa: E402

CHUNK = int(os.environ.get("BENCH_ROWS_CHUNK", "50"))
ROUNDS = int(os.environ.get("BENCH_ROWS_ROUNDS", "60"))


def main() -> None:
    in_scratch_database("bench_rows_insert", run)


def run() -> None:
    from django.db import transaction
    from django.utils import timezone

    from programs.models import Participant, Program
    from referral_platform.db.sql import rows_insert
    from referral_platform.tenancy import rls
    from referral_platform.tenancy.models import AuditEvent, Tenant
    from referral_platform.tenancy.services import audit_row
    from rewards.models import AccountKind, LedgerAccount, LedgerEntry, LedgerTransaction, Reward

    with rls.bypass("bench: set-up"):
        tenant = Tenant.objects.create(slug="bench", name="Bench", allowed_landing_domains=["bench.example"])
    with rls.tenant(tenant.pk):
        program = Program.objects.create(
            tenant=tenant, name="Bench", slug="bench", landing_url="https://bench.example/", currency="USD"
        )
        people = [
            Participant.objects.create(
                tenant=tenant, program=program, email=f"p{n}@bench.example", name=f"P {n}", external_id=f"p{n}"
            )
            for n in range(10)
        ]
        expense = LedgerAccount.objects.create(tenant=tenant, program=program, kind=AccountKind.EXPENSE, currency="USD")
        pending = {
            person.pk: LedgerAccount.objects.create(
                tenant=tenant, program=program, participant=person, kind=AccountKind.PENDING, currency="USD"
            )
            for person in people
        }
    now = timezone.now()

    def chunk(write, tag: str, round_: int) -> int:
        """One chunk's rows written with ``write`` (bulk_create of the model, or rows_insert); returns the rows."""
        rewards = [
            Reward(
                tenant=tenant,
                program=program,
                participant=people[n % len(people)],
                amount_minor=4_900 + n,
                currency="USD",
                source_key=f"{tag}:{round_}:{n}",
                slot_key=f"{tag}:{round_}:{n}:referrer",
                hold_until=now + timedelta(days=30),
                converted_at=now,
                explanation={"rule": "flat_per_conversion", "amount_minor": 4_900 + n, "steps": ["paid", n]},
                explanation_text="Flat reward per conversion.",
            )
            for n in range(CHUNK)
        ]
        rewards = write(Reward, rewards)
        write(
            AuditEvent,
            [
                audit_row(tenant=tenant, actor="system", action="reward.created", obj=reward, to_state=reward.status)
                for reward in rewards
            ],
        )
        headers = write(
            LedgerTransaction,
            [
                LedgerTransaction(
                    tenant=tenant,
                    idempotency_key=f"reward:{reward.pk}:accrual",
                    kind="accrual",
                    memo=f"Reward #{reward.pk} accrued",
                    lines_fingerprint="0" * 64,
                    reward=reward,
                )
                for reward in rewards
            ],
        )
        write(
            LedgerEntry,
            [
                LedgerEntry(tenant=tenant, transaction=header, account=account, amount_minor=amount, posted_at=now)
                for header, reward in zip(headers, rewards, strict=True)
                for account, amount in (
                    (expense, reward.amount_minor),
                    (pending[reward.participant_id], -reward.amount_minor),
                )
            ],
        )
        return CHUNK * 5

    writers = {
        "bulk_create (ORM)": lambda model, rows: model.objects.bulk_create(rows),
        "rows_insert": lambda model, rows: rows_insert(rows),
    }
    wall: dict[str, list[float]] = {name: [] for name in writers}
    cpu: dict[str, list[float]] = {name: [] for name in writers}
    rows = 0
    with rls.tenant(tenant.pk):
        for round_ in range(-2, ROUNDS):  # two warm-up rounds (statements prepared, caches filled), not counted
            for index, (name, write) in enumerate(writers.items() if round_ % 2 else reversed(writers.items())):
                started, cpu_started = time.perf_counter(), time.process_time()
                with transaction.atomic():
                    rows = chunk(write, f"{index}{name[:4]}", round_)
                if round_ >= 0:
                    wall[name].append(time.perf_counter() - started)
                    cpu[name].append(time.process_time() - cpu_started)
            if round_ >= 0:
                progress("rounds", round_ + 1, ROUNDS)

    print(
        f"\nA settlement chunk's rows: {CHUNK} rewards + {CHUNK} audit rows + {CHUNK} ledger transactions + "
        f"{2 * CHUNK} entries ({rows} rows) per transaction, {ROUNDS} rounds per writer, interleaved"
    )
    print(f"  {'writer':20s} {'rows/s':>9s} {'CPU µs/row':>11s} {'median ms/chunk':>16s}")
    for name in writers:
        median_wall = statistics.median(wall[name])
        print(
            f"  {name:20s} {rows / median_wall:9.0f} {1e6 * statistics.median(cpu[name]) / rows:11.1f} "
            f"{1e3 * median_wall:16.1f}"
        )
    base, ours = (statistics.median(cpu[name]) for name in writers)
    base_wall, ours_wall = (statistics.median(wall[name]) for name in writers)
    print(f"  rows_insert / bulk_create: CPU {ours / base:.2f}x, wall {ours_wall / base_wall:.2f}x")


if __name__ == "__main__":
    main()
