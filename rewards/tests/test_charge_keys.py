"""A charge is found by any of its three Stripe ids on an index of its own (``stripe_charge_intent_idx`` for the
payment intent, new in issue 15): a payment's "no charge has any of these ids" — alone and for a drain's chunk of
invoices — and a refund's locked read look each id up instead of reading every charge of the workspace. Read off
the statements' plans as PostgreSQL ran them (``tests.plans``) in a workspace of a few thousand charges."""

from __future__ import annotations

import json

import pytest
from django.db import connection, transaction
from django.db.models import Q
from django.test.utils import CaptureQueriesContext

from referral_platform.tenancy import rls
from rewards import webhooks
from rewards.models import StripeCharge
from rewards.webhooks import stripe_events_process_chunk
from tests import factories as f
from tests.plans import analyze, explained, indexes, removed

from .test_invoices_together import store
from .test_webhooks import invoice_paid

CHARGES = 3_000
TABLE = {"rewards_stripecharge"}
INDEX_OF = {
    "charge_id": "stripe_charge_unique",
    "invoice_id": "stripe_charge_invoice_idx",
    "payment_intent_id": "stripe_charge_intent_idx",
}


@pytest.fixture
def charges(world):
    f.StripeCredentialsFactory(tenant=world.a)
    StripeCharge.objects.bulk_create(
        StripeCharge(
            tenant=world.a,
            stripe_charge_id=f"ch_{n}",
            stripe_invoice_id=f"in_{n}",
            stripe_payment_intent_id=f"pi_{n}",
            amount_minor=10_000,
            currency="USD",
        )
        for n in range(CHARGES)
    )
    analyze("rewards_stripecharge")


def _only(kind: str, value: str) -> dict:
    ids = {"charge_id": "ch_new", "invoice_id": "in_new", "payment_intent_id": "pi_new"}
    return {**ids, kind: value}


@pytest.mark.django_db
@pytest.mark.parametrize("kind", sorted(INDEX_OF))
def test_a_payment_finds_a_known_charge_by_each_id_on_its_index(world, charges, kind):
    ids = _only(kind, {"charge_id": "ch_7", "invoice_id": "in_7", "payment_intent_id": "pi_7"}[kind])
    fresh = StripeCharge(tenant=world.a, stripe_charge_id=ids["charge_id"], amount_minor=1, currency="USD")
    with rls.tenant(world.a.pk):
        sql, params = webhooks._insert_if_unseen_sql(fresh, **ids)
        nodes = explained(sql, params)
        assert not StripeCharge.objects.filter(stripe_charge_id="ch_new").exists()
    inserted = next(node for node in nodes if node["Node Type"] == "ModifyTable")["Actual Rows"]
    assert inserted == 0  # the known charge was found: nothing inserted
    assert INDEX_OF[kind] in indexes(nodes), json.dumps(nodes, indent=1)
    assert removed(nodes, TABLE) <= 2, json.dumps(nodes, indent=1)


@pytest.mark.django_db
def test_a_chunk_of_invoices_checks_each_charge_on_its_indexes(world, charges):
    """The chunk's statement (``_paid_together_sql``) as it ran, explained again before its rows exist."""
    payloads = [invoice_paid(event_id=f"evt_{n}", charge=f"ch_chunk_{n}", invoice=f"in_chunk_{n}") for n in range(4)]
    for n, payload in enumerate(payloads):
        payload["data"]["object"]["payment_intent"] = f"pi_chunk_{n}"
    store(world.a, payloads)
    with rls.tenant(world.a.pk), transaction.atomic():
        sid = transaction.savepoint()
        with CaptureQueriesContext(connection) as captured:
            stripe_events_process_chunk(tenant=world.a)
        transaction.savepoint_rollback(sid)
        chunk = [query["sql"] for query in captured.captured_queries if "WITH new_events AS" in query["sql"]]
        assert len(chunk) == 1, [query["sql"][:200] for query in captured.captured_queries]
        statement = chunk[0].split("; ", 1)[-1] if chunk[0].startswith("SAVEPOINT") else chunk[0]
        nodes = explained(statement)
    assert set(INDEX_OF.values()) <= indexes(nodes), json.dumps(nodes, indent=1)
    assert removed(nodes, TABLE) <= 4, json.dumps(nodes, indent=1)


@pytest.mark.django_db
def test_a_refund_reads_its_charge_by_payment_intent_on_its_index(world, charges):
    match = Q(stripe_charge_id="ch_unknown") | Q(stripe_payment_intent_id="pi_11")
    with rls.tenant(world.a.pk), transaction.atomic():
        queryset = StripeCharge.objects.for_tenant(world.a).select_for_update(of=("self",)).filter(match)
        sql, params = queryset.order_by("pk").query.sql_with_params()
        nodes = explained(sql, params)
        assert [charge.stripe_charge_id for charge in queryset] == ["ch_11"]
    assert "stripe_charge_intent_idx" in indexes(nodes), json.dumps(nodes, indent=1)
    assert removed(nodes, TABLE) <= 2, json.dumps(nodes, indent=1)


@pytest.mark.django_db
def test_another_workspace_s_charge_with_the_same_payment_intent_is_not_this_one(world, charges):
    """The payment intent of a charge of workspace A, paid in workspace B: B's charge is inserted."""
    fresh = StripeCharge(
        tenant=world.b, stripe_charge_id="ch_b", stripe_payment_intent_id="pi_5", amount_minor=1, currency="USD"
    )
    with rls.tenant(world.b.pk):
        assert webhooks._insert_if_unseen(fresh, charge_id="ch_b", invoice_id="", payment_intent_id="pi_5")
        assert StripeCharge.objects.for_tenant(world.b).get(stripe_payment_intent_id="pi_5").pk == fresh.pk
    with rls.tenant(world.a.pk):
        assert StripeCharge.objects.for_tenant(world.a).get(stripe_payment_intent_id="pi_5").stripe_charge_id == "ch_5"
