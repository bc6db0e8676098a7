"""Issue 13, item 1: nothing stays stuck. The reconciler (referral_platform/reconcile.py) re-queues work a
dead worker left in a non-final state; an event that fails for good is failed with its reason; a failed
event may be replaced by its corrected version under the same external id."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from referral_platform.reconcile import reconcile, registered_sweeps
from referrals.models import Attribution, ConversionEvent, ConversionEventStatus
from referrals.services import conversion_event_process, conversion_event_receive
from rewards.models import Payout, PayoutStatus, Reward, StripeWebhookEvent, WebhookEventStatus
from rewards.tests.pipeline import program_with_rules, referrer, rules_doc
from tests import factories as f

LONG_AGO = timedelta(minutes=10)


def _paying_program(tenant):
    return program_with_rules(tenant, rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}]))


def _left_by_a_dead_worker(tenant, link, external_id: str, **fields) -> ConversionEvent:
    """A payment stored and queued, whose worker died before processing it (the row stays ``received``)."""
    values = {
        "kind": "payment",
        "amount_minor": 120_00,
        "currency": "USD",
        "occurred_at": timezone.now() - timedelta(hours=1),
        "customer_external_id": f"cus_{external_id}",
        "referral_code": link.code,
    }
    values.update(fields)
    received = conversion_event_receive(
        tenant=tenant, external_event_id=external_id, raw={"id": external_id}, queue_processing=False, **values
    )
    ConversionEvent.objects.filter(pk=received.event.pk).update(queued_at=timezone.now() - LONG_AGO)
    return received.event


def test_every_app_registers_its_sweeps():
    assert {
        "referrals.conversion_events",
        "referrals.click_stream",
        "rewards.stripe_events",
        "rewards.payouts",
        "rewards.settlements",
    } <= set(registered_sweeps())


@pytest.mark.django_db
def test_an_event_a_dead_worker_left_received_is_processed_once_by_the_reconciler(
    world, django_capture_on_commit_callbacks
):
    program = _paying_program(world.a)
    _, link = referrer(program, "Dana Whitfield")
    stuck = _left_by_a_dead_worker(world.a, link, "evt_stuck")
    fresh = _left_by_a_dead_worker(world.a, link, "evt_fresh", customer_external_id="cus_fresh")
    ConversionEvent.objects.filter(pk=fresh.pk).update(queued_at=timezone.now())  # still within its period

    with django_capture_on_commit_callbacks(execute=True):
        first = reconcile()
    with django_capture_on_commit_callbacks(execute=True):
        second = reconcile()

    stuck.refresh_from_db()
    fresh.refresh_from_db()
    assert first["referrals.conversion_events"] == 1 and second["referrals.conversion_events"] == 0
    assert stuck.status == ConversionEventStatus.PROCESSED and stuck.requeues == 1
    assert fresh.status == ConversionEventStatus.RECEIVED  # not stale yet: left alone
    assert Attribution.objects.filter(conversion_event=stuck).count() == 1
    assert Reward.objects.filter(conversion_event=stuck).count() == 1


@pytest.mark.django_db
def test_an_event_still_stuck_after_the_last_requeue_is_failed_with_the_reason(
    world, settings, django_capture_on_commit_callbacks
):
    program = _paying_program(world.a)
    _, link = referrer(program, "Dana Whitfield")
    stuck = _left_by_a_dead_worker(world.a, link, "evt_poison")
    ConversionEvent.objects.filter(pk=stuck.pk).update(requeues=settings.RECONCILE_MAX_ATTEMPTS)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        reconcile()

    stuck.refresh_from_db()
    assert stuck.status == ConversionEventStatus.FAILED
    assert "re-queues" in stuck.error and "Send the event again" in stuck.error
    assert callbacks == []  # not queued again
    detail = world.api(world.key_a).get(f"/api/v1/conversions/{stuck.pk}").json()
    assert detail["status"] == "failed" and detail["error"] == stuck.error


@pytest.mark.django_db
def test_an_event_whose_date_cannot_be_computed_with_is_failed_with_the_reason_not_left_received(world):
    """Finding: occurred_at 0001-01-01 made the worker raise OverflowError and the event stayed ``received``
    with an empty error, for good. (The API now refuses such a date; an event stored another way fails.)"""
    program = _paying_program(world.a)
    _, link = referrer(program, "Dana Whitfield")
    from datetime import UTC, datetime

    event = _left_by_a_dead_worker(world.a, link, "evt_year_one", occurred_at=datetime(1, 1, 1, tzinfo=UTC))

    processed = conversion_event_process(event_id=event.pk)

    assert processed.status == ConversionEventStatus.FAILED
    assert "OverflowError" in processed.error or "Error" in processed.error
    assert processed.error.strip() != ""


@pytest.mark.django_db
def test_a_failed_conversion_is_replaced_by_its_corrected_version_under_the_same_id(
    world, django_capture_on_commit_callbacks
):
    program = _paying_program(world.a)
    _, link = referrer(program, "Dana Whitfield")
    client = world.api(world.key_a)
    payload = {
        "external_event_id": "evt_wrong_currency",
        "kind": "payment",
        "amount_minor": 120_00,
        "currency": "EUR",
        "occurred_at": (timezone.now() - timedelta(hours=1)).isoformat(),
        "customer_external_id": "cus_7",
        "referral_code": link.code,
    }
    first = client.post("/api/v1/conversions", payload, format="json")
    event = ConversionEvent.objects.get(pk=first.json()["id"])
    with django_capture_on_commit_callbacks(execute=True):
        conversion_event_process(event_id=event.pk)
    event.refresh_from_db()
    assert event.status == ConversionEventStatus.FAILED and "currency" in event.error

    with django_capture_on_commit_callbacks(execute=True):
        corrected = client.post("/api/v1/conversions", {**payload, "currency": "USD"}, format="json")

    assert corrected.status_code == 201, corrected.content
    assert corrected.json()["id"] == event.pk
    event.refresh_from_db()
    assert event.status == ConversionEventStatus.PROCESSED and event.currency == "USD" and event.error == ""
    assert ConversionEvent.objects.filter(tenant=world.a, external_event_id="evt_wrong_currency").count() == 1
    assert Reward.objects.filter(conversion_event=event).count() == 1
    # A processed event is never replaced: another body under its id is still a conflict.
    again = client.post("/api/v1/conversions", {**payload, "amount_minor": 1}, format="json")
    assert again.status_code == 409


@pytest.mark.django_db
def test_a_stripe_webhook_event_left_received_is_handled_again(world, django_capture_on_commit_callbacks):
    stuck = f.StripeWebhookEventFactory(tenant=world.a, type="some.unhandled_type")
    StripeWebhookEvent.objects.filter(pk=stuck.pk).update(received_at=timezone.now() - LONG_AGO)
    recent = f.StripeWebhookEventFactory(tenant=world.a, type="some.unhandled_type")

    with django_capture_on_commit_callbacks(execute=True):
        result = reconcile()

    stuck.refresh_from_db()
    recent.refresh_from_db()
    assert result["rewards.stripe_events"] == 1
    assert stuck.status == WebhookEventStatus.IGNORED and stuck.attempts == 1
    assert recent.status == WebhookEventStatus.RECEIVED


@pytest.mark.django_db
def test_a_stripe_webhook_event_stuck_for_every_period_is_failed_with_the_reason(world, settings):
    stuck = f.StripeWebhookEventFactory(tenant=world.a)
    long_ago = timezone.now() - timedelta(
        seconds=settings.RECONCILE_STALE_SECONDS * (settings.RECONCILE_MAX_ATTEMPTS + 3)
    )
    StripeWebhookEvent.objects.filter(pk=stuck.pk).update(received_at=long_ago)

    reconcile()

    stuck.refresh_from_db()
    assert stuck.status == WebhookEventStatus.FAILED and "re-queues" in stuck.error


@pytest.mark.django_db
def test_a_payout_whose_executor_died_is_executed_again(world, django_capture_on_commit_callbacks, monkeypatch):
    payout = f.PayoutFactory(participant=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)))
    Payout.objects.filter(pk=payout.pk).update(
        status=PayoutStatus.PROCESSING, outcome_unknown_since=timezone.now() - LONG_AGO
    )
    executed = []
    from rewards import tasks

    monkeypatch.setattr(tasks.payout_execute, "apply_async", lambda args, **kw: executed.append(args[0]))

    with django_capture_on_commit_callbacks(execute=True):
        result = reconcile()

    assert result["rewards.payouts"] == 1 and executed == [payout.pk]


@pytest.mark.django_db
def test_a_processed_event_whose_settlement_died_is_settled_again(world, django_capture_on_commit_callbacks):
    program = _paying_program(world.a)
    _, link = referrer(program, "Dana Whitfield")
    event = _left_by_a_dead_worker(world.a, link, "evt_unsettled")
    with django_capture_on_commit_callbacks(execute=False):  # the settlement task is lost with its worker
        conversion_event_process(event_id=event.pk)
    ConversionEvent.objects.filter(pk=event.pk).update(processed_at=timezone.now() - LONG_AGO)
    assert Reward.objects.filter(conversion_event=event).count() == 0

    with django_capture_on_commit_callbacks(execute=True):
        result = reconcile()
    with django_capture_on_commit_callbacks(execute=True):
        again = reconcile()

    from rewards.models import RewardEvaluation

    assert Reward.objects.filter(conversion_event=event).count() == 1, RewardEvaluation.objects.all().values()
    assert result["rewards.settlements"] == 1 and again["rewards.settlements"] == 0


@pytest.mark.django_db(transaction=True)
def test_clicks_a_dead_consumer_left_pending_are_written_by_the_reconciler(world):
    from referrals import hot_redis
    from referrals.click_buffer import GROUP, BatchReader
    from referrals.models import Click
    from referrals.tests.test_click_flush import click_many

    _, link = referrer(f.ProgramFactory(tenant=world.a), "Dana Whitfield")
    click_many(link, 3)
    # A consumer reads the entries, then dies before writing and acknowledging them.
    BatchReader(consumer="dead-consumer", batch_size=10, claim_idle_ms=60_000).next_batch()
    client = hot_redis.client()
    assert client.xpending(hot_redis.click_stream_key(), GROUP)["pending"] == 3

    result = reconcile(now=timezone.now() + timedelta(seconds=2), stale_seconds=1)

    assert result["referrals.click_stream"] == 3
    assert Click.objects.filter(tenant=world.a, link=link).count() == 3
    assert client.xpending(hot_redis.click_stream_key(), GROUP)["pending"] == 0


def test_a_failing_sweep_does_not_stop_the_others(monkeypatch):
    from referral_platform import reconcile as module

    ran = []
    monkeypatch.setattr(
        module,
        "_SWEEPS",
        {"broken": lambda **kw: 1 / 0, "fine": lambda **kw: ran.append(kw) or 3},
    )

    result = module.reconcile(stale_seconds=60)

    assert result["broken"].startswith("ZeroDivisionError") and result["fine"] == 3 and len(ran) == 1


@pytest.mark.django_db
def test_a_refund_whose_settlement_died_is_settled_again(world, django_capture_on_commit_callbacks):
    from rewards.models import RewardEvaluation, StripeCharge

    program = _paying_program(world.a)
    _, link = referrer(program, "Dana Whitfield")
    event = _left_by_a_dead_worker(world.a, link, "evt_refunded_later")
    with django_capture_on_commit_callbacks(execute=True):
        conversion_event_process(event_id=event.pk)
    reward = Reward.objects.get(conversion_event=event)
    assert reward.reversed_minor == 0
    # The charge was refunded by half after the payment's evaluation; its settlement died with its worker.
    RewardEvaluation.objects.filter(conversion_event=event).update(evaluated_at=timezone.now() - 2 * LONG_AGO)
    StripeCharge.objects.create(
        tenant=world.a,
        stripe_charge_id="ch_refunded_later",
        conversion_event=event,
        amount_minor=120_00,
        amount_refunded_minor=60_00,
        currency="USD",
        updated_at=timezone.now() - LONG_AGO,
    )

    with django_capture_on_commit_callbacks(execute=True):
        result = reconcile()
    with django_capture_on_commit_callbacks(execute=True):
        again = reconcile()

    reward.refresh_from_db()
    assert reward.reversed_minor == 25_00  # half of the 50.00 reward
    assert result["rewards.settlements"] == 1 and again["rewards.settlements"] == 0
