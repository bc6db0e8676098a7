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
