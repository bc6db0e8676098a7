"""Webhook intake in batches (issue 15): the door only verifies, stores raw (one INSERT, idempotent on the
Stripe event id) and acknowledges; ``stripe_events_drain`` handles the stored events of one tenant in
chunks, and runs their follow-ups (matching and attribution, settlement, messages) in the same task, in
batches, with analytics merged into one task."""

from __future__ import annotations

import json

import pytest
from celery.signals import task_prerun
from django.core.cache import cache
from django.db import connection
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext

from referrals.models import ConversionEvent
from rewards.ledger import unbalanced_transactions
from rewards.models import LedgerEntry, Reward, RewardEvaluation, StripeCharge, StripeCredentials, StripeWebhookEvent
from rewards.webhooks import (
    DRAIN_HELPERS,
    _drain_key,
    stripe_events_drain,
    stripe_events_schedule,
    webhook_receive,
)
from tests import factories as f

from .pipeline import program_with_rules, referrer, rules_doc
from .test_webhooks import invoice_paid, sign

# A small chunk keeps the chunked tests quick; what they show does not depend on its size (the deployment's is
# settings.STRIPE_DRAIN_CHUNK, 200 by default).
DRAIN_CHUNK = 20


@pytest.fixture
def small_chunks(settings):
    settings.STRIPE_DRAIN_CHUNK = DRAIN_CHUNK


def receive(tenant, payload):
    body, header = sign(payload, StripeCredentials.objects.get(tenant=tenant).webhook_secret)
    return webhook_receive(tenant_slug=tenant.slug, payload=body.encode(), signature=header)


@pytest.fixture
def tenant(world):
    f.StripeCredentialsFactory(tenant=world.a)
    return world.a


@pytest.fixture
def celery_eager():
    """Tasks run in-process, their errors raised (no worker, nothing sent to the shared broker)."""
    from referral_platform.celery import app

    previous = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = app.conf.task_eager_propagates = True
    yield app
    app.conf.task_always_eager, app.conf.task_eager_propagates = previous


def hold_drains(*tenants):
    """As if a drain (and a helper) were already queued for these tenants: the door and the drain queue
    none (the test runs one)."""
    for tenant in tenants:
        cache.add(_drain_key(tenant.pk), 1, 60)
        for slot in range(DRAIN_HELPERS):
            cache.add(f"{_drain_key(tenant.pk)}:helper:{slot}", 1, 60)


@pytest.fixture
def tasks_run():
    """The names of the Celery tasks that ran (eagerly, in this process)."""
    names: list[str] = []

    def record(sender=None, **_kwargs):
        names.append(sender.name)

    task_prerun.connect(record, weak=False)
    yield names
    task_prerun.disconnect(record)


def test_the_door_reads_the_secret_and_inserts_once_and_handles_nothing(tenant):
    body, header = sign(invoice_paid(), StripeCredentials.objects.get(tenant=tenant).webhook_secret)
    with CaptureQueriesContext(connection) as door:
        stored = webhook_receive(tenant_slug=tenant.slug, payload=body.encode(), signature=header)

    statements = [q["sql"] for q in door.captured_queries]
    assert len(statements) == 2, "\n".join(s[:150] for s in statements)
    assert statements[1].startswith("INSERT INTO rewards_stripewebhookevent") and "ON CONFLICT" in statements[1]
    row = StripeWebhookEvent.objects.get()
    assert (row.pk, row.status, row.tenant_id) == (stored.pk, "received", tenant.pk)
    assert row.payload["id"] == "evt_paid_1" and json.loads(bytes(row.body))["id"] == "evt_paid_1"
    assert not ConversionEvent.objects.exists()  # handled later, by a drain


def test_a_duplicate_at_the_door_returns_the_first_event_and_writes_nothing(tenant):
    first = receive(tenant, invoice_paid())
    again = receive(tenant, invoice_paid())

    assert again.pk == first.pk and StripeWebhookEvent.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_drain_handles_every_event_of_its_tenant_once_and_marks_a_bad_one_failed(
    tenant, world, celery_eager, small_chunks
):
    f.StripeCredentialsFactory(tenant=world.b)
    hold_drains(tenant, world.b)
    count = 2 * DRAIN_CHUNK + 7  # three chunks
    for index in range(count):
        payload = invoice_paid(
            event_id=f"evt_{index}", charge=f"ch_{index}", invoice=f"in_{index}", customer=f"cus_{index}"
        )
        if index == DRAIN_CHUNK + 3:  # in the second chunk
            payload["data"]["object"]["amount_paid"] = "not a number"
        receive(tenant, payload)
    for index in range(3):
        receive(world.b, invoice_paid(event_id=f"evt_b{index}", charge=f"chb{index}", invoice=f"inb{index}"))

    handled = stripe_events_drain(tenant_id=tenant.pk)

    assert handled == count
    events_a = StripeWebhookEvent.objects.filter(tenant=tenant)
    assert events_a.filter(status="processed", attempts=1).count() == count - 1
    bad = events_a.get(stripe_event_id=f"evt_{DRAIN_CHUNK + 3}")
    assert bad.status == "failed" and bad.attempts == 1 and bad.error.startswith("ValueError")
    assert ConversionEvent.objects.filter(tenant=tenant).count() == count - 1
    assert not ConversionEvent.objects.filter(tenant=tenant, status="received").exists()  # matched in the drain
    # Tenant B's events are another tenant's: untouched by tenant A's drain.
    assert set(StripeWebhookEvent.objects.filter(tenant=world.b).values_list("status", flat=True)) == {"received"}
    assert not ConversionEvent.objects.filter(tenant=world.b).exists()
    assert stripe_events_drain(tenant_id=tenant.pk) == 0  # nothing left: a second drain does nothing


@pytest.mark.django_db(transaction=True)
def test_payments_go_from_the_door_to_balanced_ledger_in_one_drain_task(tenant, celery_eager, tasks_run):
    hold_drains(tenant)
    program = program_with_rules(
        tenant,
        rules_doc(
            referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}],
            referred=[{"kind": "account_credit", "amount_minor": 2_000}],
        ),
    )
    _dana, link = referrer(program, "Dana Drain")
    for index in range(5):
        payload = invoice_paid(
            event_id=f"evt_{index}", charge=f"ch_{index}", invoice=f"in_{index}", customer=f"cus_{index}"
        )
        payload["data"]["object"]["metadata"] = {"referral_code": link.code}
        payload["data"]["object"]["customer_email"] = f"buyer{index}@customer{index}.example"
        receive(tenant, payload)

    from rewards.tasks import stripe_events_drain as drain_task

    drain_task.delay(tenant.pk)

    rewards = Reward.objects.filter(tenant=tenant)
    assert rewards.filter(beneficiary_side="referrer").count() == 5
    assert rewards.filter(beneficiary_side="referred").count() == 5
    assert RewardEvaluation.objects.filter(tenant=tenant, status="done").count() == 5
    assert unbalanced_transactions(tenant) == []
    assert LedgerEntry.objects.filter(tenant=tenant).aggregate(total=Sum("amount_minor"))["total"] == 0
    # One task did it all: no task per event for matching, settlement or messages; analytics merged.
    assert tasks_run.count("rewards.stripe_events_drain") == 1
    assert tasks_run.count("analytics.refresh_sources") == 1
    assert not {"referrals.process_conversion_event", "rewards.settle_referral"} & set(tasks_run), tasks_run

    # Delivered again (Stripe retries) and drained again: nothing more.
    for index in range(5):
        receive(tenant, invoice_paid(event_id=f"evt_{index}"))
    drain_task.delay(tenant.pk)
    assert Reward.objects.filter(tenant=tenant).count() == 10


@pytest.mark.django_db(transaction=True)
def test_a_backlog_is_shared_by_helper_drains_and_each_event_is_handled_once(
    tenant, celery_eager, tasks_run, small_chunks
):
    cache.add(_drain_key(tenant.pk), 1, 60)  # the door queues nothing: the test starts the first drain
    count = 3 * DRAIN_CHUNK
    for index in range(count):
        receive(tenant, invoice_paid(event_id=f"evt_{index}", charge=f"ch_{index}", invoice=f"in_{index}"))

    from rewards.tasks import stripe_events_drain as drain_task

    drain_task.delay(tenant.pk)

    assert tasks_run.count("rewards.stripe_events_drain") >= 2  # a full chunk asked for a helper
    events = StripeWebhookEvent.objects.filter(tenant=tenant)
    assert events.filter(status="processed", attempts=1).count() == count
    assert ConversionEvent.objects.filter(tenant=tenant).count() == count
    assert not cache.get(_drain_key(tenant.pk))  # the drain that found nothing left released the door's key


def test_a_backlog_gets_up_to_drain_helpers_helpers_per_second_per_workspace(world, tenant, monkeypatch):
    from rewards import tasks

    other = world.b
    queued = []
    monkeypatch.setattr(tasks.stripe_events_drain, "apply_async", lambda args, **_options: queued.append(args[0]))

    asked = [stripe_events_schedule(tenant.pk, helper=True) for _ in range(DRAIN_HELPERS + 2)]
    asked_other = stripe_events_schedule(other.pk, helper=True)

    assert asked == [True] * DRAIN_HELPERS + [False, False]
    assert asked_other is True, "another workspace's backlog has helper slots of its own"
    assert queued == [tenant.pk] * DRAIN_HELPERS + [other.pk]
    for key in [_drain_key(tenant.pk), _drain_key(other.pk)]:
        for slot in range(DRAIN_HELPERS):
            cache.delete(f"{key}:helper:{slot}")


@pytest.mark.parametrize(
    "field, value",
    [
        ("charge", 12345),
        ("payment_intent", {"id": "pi_1"}),
        ("charge", "ch_" + "x" * 120),
        ("id", ["in_1"]),
        ("customer", 42),
        ("customer_email", ["a@b.example"]),
        ("currency", 840),
        ("metadata", {"referral_code": {"code": "x"}}),
        ("metadata", ["not", "an", "object"]),
        ("customer", "cus_" + "x" * 300),
    ],
)
def test_an_invoice_with_a_malformed_stripe_id_fails_with_its_reason_and_writes_nothing(tenant, world, field, value):
    hold_drains(tenant)
    bad = invoice_paid(event_id="evt_bad", charge="ch_bad", invoice="in_bad", customer="cus_bad")
    bad["data"]["object"][field] = value
    receive(tenant, bad)
    receive(tenant, invoice_paid(event_id="evt_good", charge="ch_good", invoice="in_good", customer="cus_good"))

    assert stripe_events_drain(tenant_id=tenant.pk) == 2

    failed = StripeWebhookEvent.objects.get(tenant=tenant, stripe_event_id="evt_bad")
    if field == "metadata" and isinstance(value, list):  # not referral metadata: a payment nobody referred
        assert failed.status == "processed"
        assert ConversionEvent.objects.get(tenant=tenant, external_event_id="evt_bad").referral_code == ""
        return
    assert failed.status == "failed"
    if field == "customer" and isinstance(
        value, str
    ):  # over 200 characters: refused by its column (DataError), named by PostgreSQL
        assert failed.error.startswith("DataError") and "too long" in failed.error
    else:
        shown = {"id": "invoice", "metadata": "metadata.referral_code"}.get(field, field)
        assert failed.error.startswith("ValueError") and failed.error.split(":")[1].strip() == shown, failed.error
    assert StripeWebhookEvent.objects.get(tenant=tenant, stripe_event_id="evt_good").status == "processed"
    # Nothing of the bad event was kept (its handler's savepoint), the good one is whole.
    assert list(ConversionEvent.objects.filter(tenant=tenant).values_list("external_event_id", flat=True)) == [
        "evt_good"
    ]
    assert list(StripeCharge.objects.filter(tenant=tenant).values_list("stripe_charge_id", flat=True)) == ["ch_good"]
    assert not StripeCharge.objects.filter(tenant=world.b).exists()


@pytest.mark.django_db(transaction=True)
def test_a_drain_takes_chunks_of_the_configured_size(tenant, world, celery_eager, settings, monkeypatch):
    """``settings.STRIPE_DRAIN_CHUNK`` events per transaction: 16 stored events drained in chunks of 7, 7 and 2
    (the empty chunk that ends the drain aside), each event once; another workspace's events are not taken."""
    from rewards import webhooks

    settings.STRIPE_DRAIN_CHUNK = 7
    f.StripeCredentialsFactory(tenant=world.b)
    hold_drains(tenant, world.b)
    for index in range(16):
        receive(tenant, invoice_paid(event_id=f"evt_{index}", charge=f"ch_{index}", invoice=f"in_{index}"))
    receive(world.b, invoice_paid(event_id="evt_b", charge="chb", invoice="inb"))
    sizes = []
    original = webhooks.stripe_events_process_chunk

    def recorded(**kwargs):
        events = original(**kwargs)
        sizes.append(len(events))
        return events

    monkeypatch.setattr(webhooks, "stripe_events_process_chunk", recorded)

    assert stripe_events_drain(tenant_id=tenant.pk) == 16

    assert [size for size in sizes if size] == [7, 7, 2]
    assert StripeWebhookEvent.objects.filter(tenant=tenant, status="processed", attempts=1).count() == 16
    assert StripeWebhookEvent.objects.get(tenant=world.b).status == "received"
