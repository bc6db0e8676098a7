"""seed_demo's rewards: every state, a review waiting, a paid payout and a clawback, on a balanced ledger."""

from __future__ import annotations

from django.core.management import call_command
from django.utils import timezone

from referral_platform.tenancy.models import Tenant
from rewards.ledger import unbalanced_transactions
from rewards.models import LedgerTransaction, Payout, Reward
from rewards.selectors import rewards_pending_review


def test_seed_demo_shows_the_ledger_at_work(db):
    call_command("seed_demo", clicks=10, stdout=open("/dev/null", "w"))  # noqa: SIM115
    call_command("seed_demo", clicks=10, stdout=open("/dev/null", "w"))  # noqa: SIM115 - idempotent
    acme = Tenant.objects.get(slug="acme")

    statuses = set(Reward.objects.filter(tenant=acme).values_list("status", flat=True))
    assert statuses == {"pending", "approved", "paid", "rejected", "reversed"}
    assert rewards_pending_review(acme, now=timezone.now()).count() == 1
    assert Payout.objects.filter(tenant=acme, status="paid", stripe_object_id="demo").exists()
    assert LedgerTransaction.objects.filter(tenant=acme, kind="clawback").count() == 1
    assert Reward.objects.filter(tenant=acme).count() == 7
    assert unbalanced_transactions(acme) == []
