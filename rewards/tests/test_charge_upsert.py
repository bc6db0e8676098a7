"""The Stripe charge row (``rewards.webhooks._charge_upsert``): inserted on first sight in ONE statement that
also checks no row of the workspace matches any of its ids (issue 15); a row matching by any id is updated,
never duplicated; two first sights at once make one row."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from referral_platform.tenancy import rls
from rewards.models import StripeCharge
from rewards.webhooks import _charge_upsert


def _paid(amount):
    def update(charge):
        charge.amount_minor = max(charge.amount_minor, amount)
        charge.currency = charge.currency or "USD"

    return update


def _refunded(refunded):
    def update(charge):
        charge.amount_refunded_minor = max(charge.amount_refunded_minor, refunded)

    return update


def _charge_statements(captured) -> list[str]:
    return [query["sql"] for query in captured.captured_queries if '"rewards_stripecharge"' in query["sql"]]


def test_first_sight_is_one_statement_and_the_row_has_the_values(world):
    with CaptureQueriesContext(connection) as captured:
        charge = _charge_upsert(world.a, charge_id="ch_1", invoice_id="in_1", payment_intent_id="", update=_paid(900))
    assert len(_charge_statements(captured)) == 1
    row = StripeCharge.objects.get(pk=charge.pk)
    assert (row.tenant_id, row.stripe_charge_id, row.stripe_invoice_id, row.amount_minor, row.currency) == (
        world.a.pk,
        "ch_1",
        "in_1",
        900,
        "USD",
    )


def test_a_later_event_naming_the_charge_by_another_id_updates_the_same_row(world):
    # An invoice without its charge id yet (keyed by its payment intent), then the charge's refund.
    first = _charge_upsert(world.a, charge_id="", invoice_id="in_2", payment_intent_id="pi_2", update=_paid(5_000))
    again = _charge_upsert(world.a, charge_id="ch_2", invoice_id="in_2", payment_intent_id="", update=_refunded(2_000))
    assert again.pk == first.pk and StripeCharge.objects.filter(tenant=world.a).count() == 1
    row = StripeCharge.objects.get(pk=first.pk)
    assert (row.stripe_charge_id, row.stripe_payment_intent_id, row.amount_minor, row.amount_refunded_minor) == (
        "pi_2",
        "pi_2",
        5_000,
        2_000,
    )


def test_another_workspaces_charge_with_the_same_ids_is_never_matched(world):
    theirs = _charge_upsert(world.b, charge_id="ch_3", invoice_id="in_3", payment_intent_id="", update=_paid(700))
    ours = _charge_upsert(world.a, charge_id="ch_3", invoice_id="in_3", payment_intent_id="", update=_paid(100))
    assert ours.pk != theirs.pk
    assert StripeCharge.objects.get(pk=theirs.pk).amount_minor == 700
    assert StripeCharge.objects.get(pk=ours.pk).tenant_id == world.a.pk


@pytest.mark.django_db(transaction=True)
def test_two_first_sights_at_once_make_one_row_with_both_updates(world):
    """The payment and its refund handled by two drains at the same moment: the second insert waits for the
    first (ON CONFLICT on the key), does nothing, and the update is applied to the row that won."""
    tenant = world.a
    inserted, errors = threading.Event(), []

    def payment():
        try:
            with rls.tenant(tenant.pk), transaction.atomic():
                _charge_upsert(tenant, charge_id="ch_4", invoice_id="in_4", payment_intent_id="", update=_paid(8_000))
                inserted.set()
                time.sleep(0.5)  # the refund's drain arrives while this row is not committed yet
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    def refund():
        try:
            inserted.wait(10)
            with rls.tenant(tenant.pk), transaction.atomic():
                _charge_upsert(tenant, charge_id="ch_4", invoice_id="", payment_intent_id="", update=_refunded(3_000))
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=payment), threading.Thread(target=refund)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    rows = list(StripeCharge.objects.filter(tenant=tenant).values_list("amount_minor", "amount_refunded_minor"))
    assert rows == [(8_000, 3_000)]


# --- an invoice's conversion and charge in one statement (handle_invoice_paid) -------------------------------
def _stored(tenant, payload):
    from rewards.models import StripeWebhookEvent

    return StripeWebhookEvent(tenant=tenant, stripe_event_id=payload["id"], type=payload["type"], payload=payload)


def _handle(tenant, payload):
    from rewards.webhooks import handle_invoice_paid

    with rls.tenant(tenant.pk), transaction.atomic():
        handle_invoice_paid(_stored(tenant, payload))


def test_an_invoice_seen_for_the_first_time_writes_its_conversion_and_charge_in_one_statement(world):
    from referrals.models import ConversionEvent
    from rewards.tests.test_webhooks import invoice_paid

    with CaptureQueriesContext(connection) as captured:
        _handle(world.a, invoice_paid(event_id="evt_one", amount=12_300, charge="ch_one", invoice="in_one"))
    writes = [sql for sql in (query["sql"] for query in captured.captured_queries) if "INSERT" in sql]
    assert len(writes) == 1 and '"referrals_conversionevent"' in writes[0] and '"rewards_stripecharge"' in writes[0]
    conversion = ConversionEvent.objects.get(tenant=world.a, external_event_id="evt_one")
    row = StripeCharge.objects.get(tenant=world.a)
    assert (row.stripe_charge_id, row.stripe_invoice_id, row.amount_minor, row.currency) == (
        "ch_one",
        "in_one",
        12_300,
        "USD",
    )
    assert row.conversion_event_id == conversion.pk and conversion.amount_minor == 12_300


def test_an_invoice_whose_charge_a_refund_made_first_links_that_charge(world):
    """The refund arrived first: its charge row exists, so the combined insert writes the conversion only and
    the charge is upserted as before — one row, linked to the payment, with both amounts."""
    from referrals.models import ConversionEvent
    from rewards.tests.test_webhooks import invoice_paid

    _charge_upsert(world.a, charge_id="ch_r", invoice_id="in_r", payment_intent_id="", update=_refunded(2_000))
    _handle(world.a, invoice_paid(event_id="evt_r", amount=9_000, charge="ch_r", invoice="in_r"))
    conversion = ConversionEvent.objects.get(tenant=world.a, external_event_id="evt_r")
    rows = list(StripeCharge.objects.filter(tenant=world.a).values_list("conversion_event_id", "amount_minor"))
    assert rows == [(conversion.pk, 9_000)]
    assert StripeCharge.objects.get(tenant=world.a).amount_refunded_minor == 2_000


def test_the_same_invoice_handled_twice_keeps_one_conversion_and_one_charge(world):
    from referrals.models import ConversionEvent
    from rewards.tests.test_webhooks import invoice_paid

    payload = invoice_paid(event_id="evt_twice", amount=5_000, charge="ch_twice", invoice="in_twice")
    _handle(world.a, payload)
    _handle(world.a, payload)
    conversion = ConversionEvent.objects.get(tenant=world.a, external_event_id="evt_twice")
    assert list(StripeCharge.objects.filter(tenant=world.a).values_list("conversion_event_id", flat=True)) == [
        conversion.pk
    ]


def test_another_workspaces_charge_and_event_never_stop_the_combined_insert(world):
    from referrals.models import ConversionEvent
    from rewards.tests.test_webhooks import invoice_paid

    payload = invoice_paid(event_id="evt_both", amount=4_000, charge="ch_both", invoice="in_both")
    _handle(world.b, payload)
    with CaptureQueriesContext(connection) as captured:
        _handle(world.a, payload)
    assert len([query for query in captured.captured_queries if "INSERT" in query["sql"]]) == 1
    ours = StripeCharge.objects.get(tenant=world.a)
    assert ours.conversion_event_id == ConversionEvent.objects.get(tenant=world.a, external_event_id="evt_both").pk
    assert StripeCharge.objects.filter(tenant=world.b).count() == 1
