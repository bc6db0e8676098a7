"""A Stripe refund handled while its payment is being matched and settled (issue 15; the CHARGE LOCK comment in
``rewards.evaluation``). Seen once in the pipeline benchmark with two workers: the charge.refunded webhook
updated the charge and found the payment without a referral yet (its matching had not committed), so it
settled nothing; the settlement that followed the matching read the charge before the refund's update
committed and settled the payment unreduced — a refund never applied. Real threads, real PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from referral_platform.celery import TaskCollector, collect_tasks
from referral_platform.tenancy import rls
from referrals.models import ConversionEvent
from rewards.ledger import unbalanced_transactions
from rewards.models import Reward, StripeCharge
from rewards.pipeline import FOLLOW_UP_TASKS, run_follow_ups
from rewards.webhooks import stripe_events_process_chunk

from .pipeline import program_with_rules, referrer, rules_doc
from .test_webhook_drain import hold_drains, receive
from .test_webhooks import charge_refunded, invoice_paid

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("path", ["set-based", "per-referral"])
def test_a_refund_handled_while_its_payment_is_matched_and_settled_still_reduces_its_reward(
    tenant, other_tenant_charge, path, monkeypatch
):
    if path == "per-referral":
        from rewards import settlement_sets

        monkeypatch.setattr(settlement_sets, "_settle_chunk", lambda ids, now, unlocked=None: {})
    hold_drains(tenant)
    program = program_with_rules(tenant, rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}]))
    _rae, link = referrer(program, "Rae Race")
    paid = invoice_paid(event_id="evt_paid", amount=20_000, charge="ch_race", invoice="in_race", customer="cus_race")
    paid["data"]["object"]["metadata"] = {"referral_code": link.code}
    receive(tenant, paid)
    rls.bind(tenant.pk)
    invoice_follow_ups = TaskCollector(FOLLOW_UP_TASKS)
    with collect_tasks(*FOLLOW_UP_TASKS) as collector:  # the invoice handled; its matching held back
        assert len(stripe_events_process_chunk(tenant=tenant)) == 1
        invoice_follow_ups.calls = collector.take()
    assert [task.name for task, _args, _kwargs in invoice_follow_ups.calls] == ["referrals.process_conversion_event"]
    payment = ConversionEvent.objects.get(tenant=tenant, kind="payment")
    assert payment.referral_id is None
    receive(tenant, charge_refunded(event_id="evt_refund", refunded=10_000, amount=20_000, charge="ch_race"))

    updated, go, errors = threading.Event(), threading.Event(), []

    def refund_drain():  # handles the refund and holds its transaction open until told to commit
        from django.db import connection, transaction

        try:
            rls.bind(tenant.pk)
            with collect_tasks(*FOLLOW_UP_TASKS) as collector:
                with transaction.atomic():
                    assert len(stripe_events_process_chunk(tenant=tenant)) == 1
                    updated.set()
                    go.wait(10)
                run_follow_ups(collector)  # what the refund queued, if anything
        except Exception as error:  # reported by the test below
            errors.append(error)
            updated.set()
        finally:
            connection.close()

    def matching_and_settlement():  # the invoice's follow-ups: the payment matched, its referral settled
        from django.db import connection

        try:
            rls.bind(tenant.pk)
            run_follow_ups(invoice_follow_ups)
        except Exception as error:  # reported by the test below
            errors.append(error)
        finally:
            connection.close()

    refund = threading.Thread(target=refund_drain)
    refund.start()
    assert updated.wait(10)
    settle = threading.Thread(target=matching_and_settlement)
    settle.start()
    settle.join(3)  # without the charge lock it settles here, unreduced; with it, it waits for the refund
    go.set()
    refund.join(20)
    settle.join(20)
    assert errors == []
    assert not refund.is_alive() and not settle.is_alive()

    reward = Reward.objects.get(tenant=tenant, beneficiary_side="referrer")
    assert reward.conversion_event_id == payment.pk
    assert (reward.amount_minor, reward.reversed_minor) == (5_000, 2_500), "half the payment refunded: half reduced"
    assert StripeCharge.objects.get(tenant=tenant, stripe_charge_id="ch_race").amount_refunded_minor == 10_000
    assert unbalanced_transactions(tenant) == []
    # Another workspace's charge with the same id was never read nor changed.
    other_tenant_charge.refresh_from_db()
    assert other_tenant_charge.amount_refunded_minor == 0


@pytest.fixture
def other_tenant_charge(world):
    return StripeCharge.objects.create(tenant=world.b, stripe_charge_id="ch_race", amount_minor=20_000, currency="USD")


@pytest.fixture
def tenant(world):
    from tests import factories as f

    f.StripeCredentialsFactory(tenant=world.a)
    return world.a
