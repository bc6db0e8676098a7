"""A chunk's new invoices in one statement (issue 15, ``rewards.webhooks._invoices_paid_together``): the
``invoice.paid`` events of a drain's chunk whose conversion and charge are both new are inserted together, each
exactly as its handler inserts it alone; anything else — a refund or another invoice naming the same charge, a
charge or conversion already known, a malformed payload, a value the database refuses — is left to the event's
handler. The end state equals handling every event one by one, whatever the chunk holds and in any order."""

from __future__ import annotations

import json
import random

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from referral_platform.celery import collect_tasks
from referrals.models import ConversionEvent
from referrals.services import conversions
from rewards import webhooks
from rewards.models import StripeCharge, StripeWebhookEvent
from rewards.webhooks import stripe_events_process_chunk
from tests import factories as f
from tests.hypothesis_db import WITHOUT_SHRINKING, database_examples

from .test_webhooks import charge_refunded, invoice_paid

CONVERSION_TASK = "referrals.process_conversion_event"
# Every column a conversion is stored with (the insert's own list), but its workspace and the moments it was
# received and queued at.
CONVERSION_COLUMNS = [name for name in conversions._INSERT_FIELDS if name not in ("tenant", "received_at", "queued_at")]


def store(tenant, payloads: list[dict]) -> None:
    """The events as the door stores them (raw, ``received``), in this delivery order."""
    for payload in payloads:
        StripeWebhookEvent.objects.create(
            tenant=tenant,
            stripe_event_id=payload["id"],
            type=payload["type"],
            payload=payload,
            body=json.dumps(payload).encode(),
            status="received",
            received_at=timezone.now(),
        )


def handle_chunk(tenant, django_capture_on_commit_callbacks) -> list[int]:
    """One chunk handled; returns the conversion events whose processing it queued (after its commit)."""
    with collect_tasks(CONVERSION_TASK) as collector:
        with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
            stripe_events_process_chunk(tenant=tenant)
        queued = sorted(args[0] for _task, args, _kwargs in collector.take())
    return queued


def end_state(tenant) -> dict:
    """Without ids: the events' outcomes, the conversions, the charges with their conversion's external id."""
    return {
        "events": sorted(
            StripeWebhookEvent.objects.filter(tenant=tenant).values_list(
                "stripe_event_id", "status", "error", "attempts"
            )
        ),
        "conversions": sorted(ConversionEvent.objects.filter(tenant=tenant).values_list(*CONVERSION_COLUMNS)),
        "charges": sorted(
            StripeCharge.objects.filter(tenant=tenant).values_list(
                "stripe_charge_id",
                "stripe_invoice_id",
                "stripe_payment_intent_id",
                "amount_minor",
                "amount_refunded_minor",
                "currency",
                "conversion_event__external_event_id",
            )
        ),
    }


def test_a_chunk_of_new_invoices_is_one_insert_and_each_ends_as_handled_alone(
    world, monkeypatch, django_capture_on_commit_callbacks
):
    payloads = [invoice_paid(f"evt_{i}", amount=1_000 * i, charge=f"ch_{i}", invoice=f"in_{i}") for i in range(1, 6)]
    for tenant in (world.a, world.b):
        f.StripeCredentialsFactory(tenant=tenant)
        store(tenant, payloads)

    with CaptureQueriesContext(connection) as captured:
        queued = handle_chunk(world.a, django_capture_on_commit_callbacks)
    inserts = [q["sql"] for q in captured.captured_queries if 'INTO "referrals_conversionevent"' in q["sql"]]
    assert len(inserts) == 1 and 'INTO "rewards_stripecharge"' in inserts[0]
    assert queued == sorted(ConversionEvent.objects.filter(tenant=world.a).values_list("pk", flat=True))
    assert len(queued) == 5

    monkeypatch.setattr(webhooks, "_invoices_paid_together", lambda tenant, events: set())
    alone = handle_chunk(world.b, django_capture_on_commit_callbacks)
    assert len(alone) == 5
    assert end_state(world.a) == end_state(world.b)
    charge = StripeCharge.objects.get(tenant=world.a, stripe_charge_id="ch_3")
    assert (charge.amount_minor, charge.currency, charge.stripe_invoice_id) == (3_000, "USD", "in_3")
    assert charge.conversion_event.external_event_id == "evt_3" and charge.conversion_event.tenant_id == world.a.pk


def test_another_workspaces_charge_with_the_same_ids_neither_stops_nor_is_touched(
    world, django_capture_on_commit_callbacks
):
    for tenant in (world.a, world.b):
        f.StripeCredentialsFactory(tenant=tenant)
    store(world.b, [invoice_paid("evt_b", amount=700, charge="ch_1", invoice="in_1")])
    handle_chunk(world.b, django_capture_on_commit_callbacks)
    before = end_state(world.b)
    store(world.a, [invoice_paid(f"evt_{i}", charge=f"ch_{i}", invoice=f"in_{i}") for i in (1, 2)])
    handle_chunk(world.a, django_capture_on_commit_callbacks)
    assert end_state(world.b) == before
    ours = StripeCharge.objects.get(tenant=world.a, stripe_charge_id="ch_1")
    assert ours.conversion_event.tenant_id == world.a.pk and ours.amount_minor == 20_000


# A chunk's possible events: new invoices, a refund of one of them, a second invoice naming the same charge,
# a charge known from an earlier refund, an invoice re-delivered after it failed, malformed and refused ones.
def _menu() -> dict[str, list[dict]]:
    bad_amount = invoice_paid("evt_bad_amount", charge="ch_bad", invoice="in_bad")
    bad_amount["data"]["object"]["amount_paid"] = "lots"
    too_long = invoice_paid("evt_too_long", charge="ch_long", invoice="in_long")
    too_long["data"]["object"]["currency"] = "usdollars"  # longer than the column: the database refuses it
    return {
        "new": [
            invoice_paid(f"evt_new_{i}", amount=1_000 + i, charge=f"ch_new_{i}", invoice=f"in_new_{i}")
            for i in range(4)
        ],
        "refund_of_new": [
            charge_refunded("evt_refund_new", refunded=500, amount=1_001, charge="ch_new_1", invoice="in_new_1")
        ],
        "same_charge_twice": [
            invoice_paid("evt_twice_a", amount=3_000, charge="ch_twice", invoice="in_twice_a"),
            invoice_paid("evt_twice_b", amount=3_500, charge="ch_twice", invoice="in_twice_b"),
        ],
        "known_charge": [invoice_paid("evt_known", amount=4_000, charge="ch_known", invoice="in_known")],
        "malformed": [bad_amount],
        "refused": [too_long],
    }


def _before(tenant, django_capture_on_commit_callbacks) -> None:
    """What the workspace knew before the chunk: a refund of ``ch_known`` (handled in a chunk of its own)."""
    store(
        tenant,
        [charge_refunded("evt_refund_known", refunded=1_000, amount=4_000, charge="ch_known", invoice="in_known")],
    )
    handle_chunk(tenant, django_capture_on_commit_callbacks)


@pytest.mark.django_db
@database_examples(10, phases=WITHOUT_SHRINKING)
@given(
    kinds=st.sets(st.sampled_from(["refund_of_new", "same_charge_twice", "known_charge", "malformed", "refused"])),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_any_chunk_in_any_order_ends_as_handling_each_event_alone(
    kinds, seed, monkeypatch, django_capture_on_commit_callbacks
):
    menu = _menu()
    payloads = [payload for kind in ["new", *sorted(kinds)] for payload in menu[kind]]
    random.Random(seed).shuffle(payloads)
    ends, queued = [], []
    for together in (True, False):
        tenant = f.TenantFactory()
        f.StripeCredentialsFactory(tenant=tenant)
        _before(tenant, django_capture_on_commit_callbacks)
        with monkeypatch.context() as patch:
            if not together:
                patch.setattr(webhooks, "_invoices_paid_together", lambda tenant, events: set())
            store(tenant, payloads)
            ids = handle_chunk(tenant, django_capture_on_commit_callbacks)
        ends.append(end_state(tenant))
        queued.append(sorted(ConversionEvent.objects.filter(pk__in=ids).values_list("external_event_id", flat=True)))
    assert ends[0] == ends[1]
    assert queued[0] == queued[1]  # every new conversion's processing queued once, as alone
    statuses = dict((event_id, status) for event_id, status, *_rest in ends[0]["events"])
    assert all(statuses[p["id"]] == "processed" for p in menu["new"])
    if "refused" in kinds:
        assert statuses["evt_too_long"] == "failed"
