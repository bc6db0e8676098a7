"""What a drain chunk of new invoices costs in a workspace that already has many charges (issue 15).

Every ``invoice.paid`` of a drain chunk inserts its conversion and its charge together
(``rewards.webhooks._invoices_paid_together``) — each charge only when no charge of the workspace has any of its
three Stripe ids. Ours: one NOT EXISTS per id, each an anti-join on that id's index (``stripe_charge_intent_idx``
new for the payment intent). Baseline, measured in the same run on the same rows: the statement as it was — one
NOT EXISTS over the OR of the three ids (PostgreSQL hashed every charge of the workspace and compared each with
every row of the chunk), without the payment intent's index (dropped in a savepoint rolled back after it). Both
must store the same conversions and charges.

Runs in a throw-away database with row-level security in force (the test settings' restricted role).

    BENCH_STRIPE_CHARGES=100000 BENCH_STRIPE_CHUNKS=20 python bench/bench_stripe_keys.py
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "referral_platform.settings.test"

from bench.scratch import as_owner, in_scratch_database, progress  # noqa: E402

CHARGES = int(os.environ.get("BENCH_STRIPE_CHARGES", "100000"))
CHUNKS = int(os.environ.get("BENCH_STRIPE_CHUNKS", "20"))
BATCH = 10_000
NOW = int(time.time())
SECRET = "whsec_bench"  # noqa: S105 - a scratch database's signing secret


def main() -> None:
    in_scratch_database("bench_stripe_keys", run)


def seed():
    """A workspace with CHARGES charges of earlier invoices (each with its three ids) and its Stripe account."""

    from programs.models import Program
    from referral_platform.tenancy.models import Tenant
    from rewards.models import StripeCharge, StripeCredentials

    tenant = Tenant.objects.create(slug="bench-stripe", name="Bench Stripe", allowed_landing_domains=["bench.example"])
    Program.objects.create(
        tenant=tenant, name="Bench", slug="bench", landing_url="https://bench.example/", currency="USD", status="active"
    )
    StripeCredentials.objects.create(
        tenant=tenant,
        secret_key="sk_test_bench",  # noqa: S106 - a scratch database's placeholder
        webhook_secret=SECRET,
    )
    for low in range(0, CHARGES, BATCH):
        numbers = range(low, min(low + BATCH, CHARGES))
        StripeCharge.objects.bulk_create(
            StripeCharge(
                tenant=tenant,
                stripe_charge_id=f"ch_old_{n}",
                stripe_invoice_id=f"in_old_{n}",
                stripe_payment_intent_id=f"pi_old_{n}",
                amount_minor=10_000,
                currency="USD",
            )
            for n in numbers
        )
        progress("seeding the workspace's charges", numbers[-1] + 1, CHARGES)
    as_owner("ANALYZE rewards_stripecharge")  # statistics, as autovacuum would gather them
    return tenant


def store_chunk(tenant, index: int) -> None:
    """A drain chunk's worth of new invoices (``drain_chunk()``), signed and stored by the door itself
    (``webhook_receive``: verified, stored raw, its drain left to after a commit that never comes)."""
    from rewards.webhooks import drain_chunk, webhook_receive

    for n in range(drain_chunk()):
        key = f"{index}_{n}"
        invoice = {
            "id": f"in_{key}",
            "object": "invoice",
            "amount_paid": 4_900,
            "currency": "usd",
            "customer": f"cus_{key}",
            "customer_email": f"buyer{key}@customer.example",
            "charge": f"ch_{key}",
            "payment_intent": f"pi_{key}",
            "status_transitions": {"paid_at": NOW - 60},
            "metadata": {},
        }
        payload = {
            "id": f"evt_{key}",
            "object": "event",
            "type": "invoice.paid",
            "created": NOW,
            "livemode": False,
            "data": {"object": invoice},
        }
        body = json.dumps(payload).encode()
        stamp = int(time.time())
        signature = hmac.new(SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        webhook_receive(tenant_slug=tenant.slug, payload=body, signature=f"t={stamp},v1={signature}")


_UNSEEN = re.compile(r"WHERE (NOT EXISTS \(SELECT 1 FROM \"rewards_stripecharge\" s .*?\)) ON CONFLICT", re.S)


def former_sql(sql: str) -> str:
    """The chunk's statement as it was: its three NOT EXISTS (one per id) as one NOT EXISTS over their OR."""
    match = _UNSEEN.search(sql)
    assert match, "the chunk's statement has changed shape: update the benchmark's baseline"
    arms = re.findall(r"c\.(k_\w+) <> '' AND s\.(\w+) = c\.k_\w+\)", match.group(1))
    assert len(arms) == 3, arms
    either = " OR ".join(f"(c.{key} <> '' AND s.{column} = c.{key})" for key, column in arms)
    unseen = f'NOT EXISTS (SELECT 1 FROM "rewards_stripecharge" s WHERE s.tenant_id = c.c_tenant_id AND ({either}))'  # noqa: S608
    return sql[: match.start(1)] + unseen + sql[match.end(1) :]


@contextlib.contextmanager
def as_it_was():
    """The chunk's statement in its former shape and the payment intent's index dropped, for the block (the index
    in a savepoint rolled back after it: DDL is transactional in PostgreSQL; the owner's right)."""
    from django.db import transaction

    from rewards import webhooks

    ours = webhooks._paid_together_sql
    sid = transaction.savepoint()
    as_owner("DROP INDEX stripe_charge_intent_idx")
    webhooks._paid_together_sql = lambda parts: (lambda sql, params: (former_sql(sql), params))(*ours(parts))
    try:
        yield
    finally:
        webhooks._paid_together_sql = ours
        transaction.savepoint_rollback(sid)


def chunk_once(tenant, index: int) -> tuple[float, list]:
    """One chunk of new invoices handled (in a savepoint rolled back): seconds, and what it stored."""
    from django.db import transaction

    from referrals.models import ConversionEvent
    from rewards.models import StripeCharge
    from rewards.webhooks import stripe_events_process_chunk

    sid = transaction.savepoint()
    store_chunk(tenant, index)
    at = time.perf_counter()
    handled = stripe_events_process_chunk(tenant=tenant)
    took = time.perf_counter() - at
    stored = sorted(
        StripeCharge.objects.for_tenant(tenant)
        .filter(stripe_charge_id__startswith=f"ch_{index}_")
        .values_list("stripe_charge_id", "stripe_invoice_id", "stripe_payment_intent_id", "amount_minor")
    ) + sorted(
        ConversionEvent.objects.for_tenant(tenant)
        .filter(external_event_id__startswith=f"evt_{index}_")
        .values_list("external_event_id", "amount_minor", "customer_external_id")
    )
    assert len(handled) > 1 and len(stored) == 2 * len(handled), (len(handled), len(stored))
    transaction.savepoint_rollback(sid)
    return took, stored


def run() -> None:
    from django.db import transaction

    from referral_platform.tenancy import rls
    from rewards.webhooks import drain_chunk

    started = time.perf_counter()
    tenant = seed()
    print(f"[bench_stripe_keys] seeded {CHARGES:,} charges in {time.perf_counter() - started:.1f}s", flush=True)
    timings = {"ours": [], "former": []}
    same = True
    with transaction.atomic(), rls.tenant(tenant.pk):
        for index in range(CHUNKS):  # interleaved: ours, then the former on the same chunk
            took, ours = chunk_once(tenant, index)
            timings["ours"].append(took)
            with as_it_was():
                took, former = chunk_once(tenant, index)
            timings["former"].append(took)
            same = same and ours == former
            progress("chunks of new invoices (ours, then as it was)", index + 1, CHUNKS)
        transaction.set_rollback(True)
    per = {name: sorted(values)[len(values) // 2] * 1000 for name, values in timings.items()}
    print(f"\nA drain chunk of {drain_chunk()} new invoices, workspace of {CHARGES:,} charges (row-level security on)")
    print(f"  ours    one NOT EXISTS per id, on its index        {per['ours']:9.2f} ms per chunk (median)")
    print(f"  former  one NOT EXISTS over the OR of the ids      {per['former']:9.2f} ms per chunk (baseline)")
    print(f"  ours/former time                                   {per['ours'] / per['former']:9.3f}x")
    print(f"  the same conversions and charges stored both ways: {same}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
