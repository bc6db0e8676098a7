"""How many rewards per second accrual, approval and the payout run handle (Stripe server on loopback).

Runs in a throw-away database (created with migrations, dropped at the end) so the append-only ledger
of the dev database is left alone. Baseline, measured in the same run: the same number of balanced
ledger transactions written with raw INSERTs (one commit each, the database triggers active), so the
ratio shows what the services cost on top of the bare writes.

    BENCH_REWARDS=1000 BENCH_PARTICIPANTS=25 python bench/bench_rewards.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "referral_platform.settings.test"

from bench.scratch import progress  # noqa: E402

REWARDS = int(os.environ.get("BENCH_REWARDS", "1000"))
PARTICIPANTS = int(os.environ.get("BENCH_PARTICIPANTS", "25"))


def main() -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    connection.settings_dict["TEST"]["NAME"] = f"bench_rewards_{os.getpid()}"
    print(f"[bench_rewards] creating a scratch database ({connection.settings_dict['TEST']['NAME']})", flush=True)
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    from referral_platform.stripe_fake import StripeControl, start

    server = start()
    settings.STRIPE_API_BASE = server.url
    try:
        run(StripeControl(server.url))
    finally:
        server.stop()
        connection.creation.destroy_test_db(old_name, verbosity=0)


def run(control) -> None:
    import stripe
    from django.db import connection, transaction
    from django.utils import timezone

    from programs.models import Participant, Program
    from referral_platform.tenancy.actors import system_actor
    from referral_platform.tenancy.models import Tenant
    from rewards.ledger import expense_account, participant_account
    from rewards.models import AccountKind, ParticipantStripeProfile, Payout, StripeCredentials
    from rewards.payouts import payouts_run
    from rewards.services import reward_create, rewards_release_holds

    tenant = Tenant.objects.create(slug="bench", name="Bench", allowed_landing_domains=["bench.example"])
    credentials = StripeCredentials.objects.create(
        tenant=tenant,
        secret_key="sk_test_bench",  # noqa: S106 - fake server
        webhook_secret="whsec_b",  # noqa: S106 - fake server
    )
    program = Program.objects.create(
        tenant=tenant,
        name="Bench",
        slug="bench",
        landing_url="https://bench.example/",
        hold_days=0,
        auto_approve_limit_minor=10**9,
        currency="USD",
    )
    client = stripe.StripeClient(credentials.secret_key, base_addresses={"api": control.base_url})
    people = []
    for index in range(PARTICIPANTS):
        person = Participant.objects.create(
            tenant=tenant, program=program, external_id=f"p{index}", name=f"P {index}", email=f"p{index}@b.example"
        )
        account = client.v1.accounts.create({"type": "express", "email": person.email})
        ParticipantStripeProfile.objects.create(tenant=tenant, participant=person, connected_account_id=account.id)
        people.append(person)
    actor = system_actor(tenant)
    earlier = timezone.now() - timezone.timedelta(minutes=5)
    print(f"[bench_rewards] {REWARDS} rewards for {PARTICIPANTS} participants, fake Stripe at {control.base_url}")

    # --- baseline: raw balanced ledger transactions, one commit each -----------------------------
    expense = expense_account(program, "USD")
    pending = participant_account(people[0], AccountKind.PENDING, "USD")
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for index in range(REWARDS):
            with transaction.atomic():
                cursor.execute(
                    "INSERT INTO rewards_ledgertransaction (tenant_id, idempotency_key, kind, memo, "
                    "lines_fingerprint, posted_at) VALUES (%s, %s, 'adjustment', '', '', now()) RETURNING id",
                    [tenant.pk, f"baseline-{index}"],
                )
                tx_id = cursor.fetchone()[0]
                cursor.execute(
                    "INSERT INTO rewards_ledgerentry (tenant_id, transaction_id, account_id, amount_minor, posted_at) "
                    "VALUES (%s, %s, %s, 100, now()), (%s, %s, %s, -100, now())",
                    [tenant.pk, tx_id, expense.pk, tenant.pk, tx_id, pending.pk],
                )
            if (index + 1) % 200 == 0 or index + 1 == REWARDS:
                progress("baseline raw INSERT", index + 1, REWARDS)
    baseline = time.perf_counter() - started

    # --- accrual ------------------------------------------------------------------------------
    started = time.perf_counter()
    for index in range(REWARDS):
        reward_create(
            tenant=tenant,
            program=program,
            participant=people[index % PARTICIPANTS],
            amount_minor=1_000 + index,
            source_key=f"bench-{index}",
            actor=actor,
            now=earlier,
        )
        if (index + 1) % 200 == 0 or index + 1 == REWARDS:
            progress("accrual", index + 1, REWARDS)
    accrual = time.perf_counter() - started

    # --- approval (hold release) ----------------------------------------------------------------
    started = time.perf_counter()
    approved = rewards_release_holds(tenant=tenant)
    approval = time.perf_counter() - started
    progress("approval", approved, REWARDS)

    # --- payout run -----------------------------------------------------------------------------
    started = time.perf_counter()
    summary = payouts_run(tenant=tenant)
    payout = time.perf_counter() - started
    progress("payout run", summary["paid"], PARTICIPANTS)
    transfers = len(control.objects("transfer"))
    assert transfers == PARTICIPANTS == Payout.objects.filter(tenant=tenant, status="paid").count(), transfers

    print()
    print(f"  {'step':<34}{'seconds':>10}{'rewards/s':>12}{'x baseline':>12}")
    rows = [
        ("baseline: raw balanced INSERTs", baseline),
        ("accrual (reward_create)", accrual),
        ("approval (rewards_release_holds)", approval),
        (f"payout run ({transfers} transfers over HTTP)", payout),
    ]
    for label, seconds in rows:
        print(f"  {label:<34}{seconds:>10.2f}{REWARDS / seconds:>12.0f}{seconds / baseline:>12.2f}")
    print(f"  payouts per second: {summary['paid'] / payout:.1f}")


if __name__ == "__main__":
    main()
