"""seed_demo's rewards: evaluated from the demo conversions, in every state, with a review waiting, a paid
payout and a clawback, on a balanced ledger; the demo participants have messages and a dashboard."""

from __future__ import annotations

import json

from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from programs.models import Participant
from referral_platform.tenancy.models import Tenant
from rewards.ledger import unbalanced_transactions
from rewards.models import LedgerTransaction, ParticipantMessage, Payout, Reward, RewardEvaluation
from rewards.selectors import rewards_pending_review


def test_seed_demo_shows_the_ledger_at_work(db, tmp_path):
    info_file = tmp_path / "demo.json"
    call_command("seed_demo", clicks=10, stdout=open("/dev/null", "w"))  # noqa: SIM115
    counts = (Reward.objects.count(), ParticipantMessage.objects.count(), LedgerTransaction.objects.count())
    call_command("seed_demo", clicks=10, json=str(info_file), stdout=open("/dev/null", "w"))  # noqa: SIM115
    acme = Tenant.objects.get(slug="acme")

    # Idempotent: the second run adds nothing
    assert (Reward.objects.count(), ParticipantMessage.objects.count(), LedgerTransaction.objects.count()) == counts
    rewards = Reward.objects.filter(tenant=acme)
    # Every reward comes from evaluating a demo conversion, except the commission of the demo's won partner deal
    assert rewards.exists() and all(
        key.startswith("ref:") or key.startswith("deal:") for key in rewards.values_list("slot_key", flat=True)
    )
    assert rewards.filter(slot_key__startswith="deal:").count() == 1
    assert RewardEvaluation.objects.filter(tenant=acme, status="done").count() >= 8
    assert set(rewards.values_list("status", flat=True)) == {"pending", "approved", "paid", "rejected", "reversed"}
    assert rewards_pending_review(acme, now=timezone.now()).count() == 1
    assert Payout.objects.filter(tenant=acme, status="paid", stripe_object_id="demo").exists()
    assert LedgerTransaction.objects.filter(tenant=acme, kind="clawback").count() == 1
    multi = rewards.filter(conversion_event__external_event_id="seed_pay_quanta_1", beneficiary_side="referrer")
    assert sorted(multi.values_list("amount_minor", flat=True)) == [9_600, 19_200, 19_200]  # 480.00 split 20/40/40
    assert unbalanced_transactions(acme) == []
    assert Reward.objects.filter(tenant__slug="globex").exists()

    # Dana, the demo participant of the banner, has messages and her dashboard link works
    dana = Participant.objects.get(tenant=acme, external_id="cus_1001")
    kinds = set(ParticipantMessage.objects.filter(participant=dana).values_list("kind", flat=True))
    assert {"referral_received", "referral_converted"} <= kinds
    path = json.loads(info_file.read_text())["participant_dashboard"]
    page = Client().get(path)
    assert page.status_code == 200 and "Orbit Labs" in page.content.decode()
