"""Stripe webhooks: verified with the tenant's signing secret, stored raw first, handled idempotently."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import subprocess
import sys
import time
from collections import Counter
from urllib.request import Request, urlopen

import pytest
from django.urls import reverse

from referral_platform.tenancy.actors import system_actor
from referrals.models import ConversionEvent
from rewards.models import LedgerEntry, Reward, RewardStatus, StripeCredentials, StripeWebhookEvent
from rewards.services import reward_create
from tests import factories as f

NOW = int(time.time())


def event(event_id: str, type_: str, obj: dict, created: int = NOW) -> dict:
    return {
        "id": event_id,
        "object": "event",
        "type": type_,
        "created": created,
        "livemode": False,
        "api_version": "2024-06-20",
        "data": {"object": obj},
    }


def invoice_paid(event_id="evt_paid_1", amount=20_000, charge="ch_1", invoice="in_1", customer="cus_1"):
    return event(
        event_id,
        "invoice.paid",
        {
            "id": invoice,
            "object": "invoice",
            "amount_paid": amount,
            "currency": "usd",
            "customer": customer,
            "customer_email": "buyer@prospect.example",
            "charge": charge,
            "status_transitions": {"paid_at": NOW - 60},
            "metadata": {"referral_code": "abc123"},
        },
    )


def charge_refunded(event_id="evt_refund_1", refunded=6_000, amount=20_000, charge="ch_1", invoice="in_1"):
    return event(
        event_id,
        "charge.refunded",
        {
            "id": charge,
            "object": "charge",
            "amount": amount,
            "amount_captured": amount,
            "amount_refunded": refunded,
            "currency": "usd",
            "invoice": invoice,
            "refunded": refunded >= amount,
        },
    )


def sign(payload: dict, secret: str, timestamp: int | None = None) -> tuple[str, str]:
    """Stripe's documented scheme: v1 = HMAC-SHA256(secret, "<t>.<body>")."""
    body = json.dumps(payload)
    timestamp = timestamp or int(time.time())
    signature = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
    return body, f"t={timestamp},v1={signature}"


def deliver(client, tenant, payload, *, secret=None, timestamp=None, capture=None):
    secret = secret or StripeCredentials.objects.get(tenant=tenant).webhook_secret
    body, header = sign(payload, secret, timestamp)
    url = reverse("stripe_webhook", kwargs={"tenant_slug": tenant.slug})
    if capture is None:
        return client.post(url, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header)
    with capture(execute=True):
        return client.post(url, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header)


@pytest.fixture
def tenant(world):
    f.StripeCredentialsFactory(tenant=world.a)
    return world.a


def nothing_written():
    return not StripeWebhookEvent.objects.exists() and not ConversionEvent.objects.exists()


@pytest.mark.parametrize(
    "tamper",
    ["wrong-secret", "stale-timestamp", "future-timestamp", "no-header", "body-changed"],
)
def test_a_webhook_that_fails_verification_is_answered_400_and_nothing_is_written(client, tenant, tamper):
    secret = StripeCredentials.objects.get(tenant=tenant).webhook_secret
    body, header = sign(invoice_paid(), secret)
    if tamper == "wrong-secret":
        body, header = sign(invoice_paid(), "whsec_not_the_tenants")
    elif tamper == "stale-timestamp":
        body, header = sign(invoice_paid(), secret, timestamp=int(time.time()) - 600)
    elif tamper == "future-timestamp":
        body, header = sign(invoice_paid(), secret, timestamp=int(time.time()) + 600)
    elif tamper == "no-header":
        header = ""
    elif tamper == "body-changed":
        body = body.replace("20000", "90000")
    url = reverse("stripe_webhook", kwargs={"tenant_slug": tenant.slug})

    response = client.post(url, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_webhook"
    assert nothing_written()


def test_an_event_signed_for_tenant_a_is_refused_on_tenant_bs_endpoint(client, tenant, world):
    f.StripeCredentialsFactory(tenant=world.b)
    secret_a = StripeCredentials.objects.get(tenant=world.a).webhook_secret

    response = deliver(client, world.b, invoice_paid(), secret=secret_a)

    assert response.status_code == 400 and nothing_written()


def test_an_unknown_workspace_answers_like_a_bad_signature(client, tenant):
    body, header = sign(invoice_paid(), "whsec_x")

    response = client.post(
        "/webhooks/stripe/no-such-tenant/", data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
    )

    assert response.status_code == 400 and nothing_written()


def test_invoice_paid_is_stored_raw_then_becomes_a_payment_conversion(
    client, tenant, django_capture_on_commit_callbacks
):
    response = deliver(client, tenant, invoice_paid(), capture=django_capture_on_commit_callbacks)

    stored = StripeWebhookEvent.objects.get()
    conversion = ConversionEvent.objects.get()
    assert response.status_code == 200 and response.json()["id"] == "evt_paid_1"
    assert stored.status == "processed" and stored.payload["data"]["object"]["id"] == "in_1"
    assert (conversion.kind, conversion.amount_minor, conversion.currency) == ("payment", 20_000, "USD")
    assert conversion.external_event_id == "evt_paid_1" and conversion.source == "stripe"
    assert conversion.customer_external_id == "cus_1" and conversion.referral_code == "abc123"
    assert conversion.raw["id"] == "evt_paid_1"
    assert conversion.status != "received"  # handed to conversion processing (attribution) after commit


def test_the_same_event_delivered_twice_is_stored_and_handled_once(client, tenant, django_capture_on_commit_callbacks):
    first = deliver(client, tenant, invoice_paid(), capture=django_capture_on_commit_callbacks)
    second = deliver(client, tenant, invoice_paid(), capture=django_capture_on_commit_callbacks)

    assert first.status_code == second.status_code == 200
    assert StripeWebhookEvent.objects.count() == 1 and ConversionEvent.objects.count() == 1


def test_customer_created_with_referral_metadata_is_a_sign_up(client, tenant, django_capture_on_commit_callbacks):
    referred = event(
        "evt_cus_1",
        "customer.created",
        {
            "id": "cus_9",
            "object": "customer",
            "email": "n@new.example",
            "created": NOW,
            "metadata": {"referral_code": "xyz"},
        },
    )
    unreferred = event("evt_cus_2", "customer.created", {"id": "cus_10", "object": "customer", "metadata": {}})

    deliver(client, tenant, referred, capture=django_capture_on_commit_callbacks)
    deliver(client, tenant, unreferred, capture=django_capture_on_commit_callbacks)

    conversion = ConversionEvent.objects.get()
    assert (conversion.kind, conversion.referral_code, conversion.email) == ("sign_up", "xyz", "n@new.example")
    assert StripeWebhookEvent.objects.filter(status="processed").count() == 2


def test_subscription_deleted_is_a_cancellation_and_unknown_types_are_ignored(
    client, tenant, django_capture_on_commit_callbacks
):
    deleted = event(
        "evt_sub_1",
        "customer.subscription.deleted",
        {"id": "sub_1", "object": "subscription", "customer": "cus_1", "ended_at": NOW},
    )
    other = event("evt_other", "payment_method.attached", {"id": "pm_1"})

    deliver(client, tenant, deleted, capture=django_capture_on_commit_callbacks)
    deliver(client, tenant, other, capture=django_capture_on_commit_callbacks)

    assert ConversionEvent.objects.get().kind == "cancellation"
    assert StripeWebhookEvent.objects.get(stripe_event_id="evt_other").status == "ignored"


# --- same final ledger whatever the order or repetition ---------------------------------------------------


def _evaluate(tenant, participant):
    """Stands in for reward evaluation (another module): a 10% reward for each payment conversion."""
    for conversion in ConversionEvent.objects.filter(tenant=tenant, kind="payment"):
        reward_create(
            tenant=tenant,
            program=participant.program,
            participant=participant,
            amount_minor=conversion.amount_minor // 10,
            source_key=f"conversion:{conversion.pk}",
            conversion_event=conversion,
            actor=system_actor(tenant),
        )


def _ledger_snapshot(tenant):
    entries = LedgerEntry.objects.filter(tenant=tenant).select_related("transaction", "account")
    rewards = [
        (r.status, r.amount_minor, r.reversed_minor, r.clawed_back_minor) for r in Reward.objects.filter(tenant=tenant)
    ]
    return Counter((e.transaction.kind, e.account.kind, e.amount_minor) for e in entries), rewards


@pytest.mark.parametrize(
    "refund",
    [6_000, 20_000],
    ids=["partial-refund", "full-refund"],
)
def test_duplicates_and_refund_before_payment_give_the_same_final_ledger(
    client, world, django_capture_on_commit_callbacks, refund
):
    snapshots = {}
    scenarios = {
        "in-order": ["paid", "evaluate", "refund"],
        "in-order-each-twice": ["paid", "paid", "evaluate", "refund", "refund", "evaluate"],
        "refund-before-payment": ["refund", "paid", "evaluate"],
        "refund-before-payment-twice": ["refund", "refund", "paid", "evaluate", "paid", "refund"],
    }
    for name, steps in scenarios.items():
        tenant = f.TenantFactory()
        f.StripeCredentialsFactory(tenant=tenant)
        participant = f.ParticipantFactory(program=f.ProgramFactory(tenant=tenant, currency="USD"))
        for step in steps:
            if step == "evaluate":
                _evaluate(tenant, participant)
                continue
            payload = invoice_paid() if step == "paid" else charge_refunded(refunded=refund)
            assert deliver(client, tenant, payload, capture=django_capture_on_commit_callbacks).status_code == 200
        snapshots[name] = _ledger_snapshot(tenant)

    first = snapshots["in-order"]
    assert all(snapshot == first for snapshot in snapshots.values()), snapshots
    expected_status = RewardStatus.REVERSED if refund == 20_000 else RewardStatus.PENDING
    assert first[1] == [(expected_status, 2_000, refund // 10, 0)]


def test_a_refund_after_payout_is_clawed_back(client, tenant, world, django_capture_on_commit_callbacks):
    participant = f.ParticipantFactory(program=f.ProgramFactory(tenant=tenant, currency="USD"))
    deliver(client, tenant, invoice_paid(), capture=django_capture_on_commit_callbacks)
    _evaluate(tenant, participant)
    Reward.objects.filter(tenant=tenant).update(status=RewardStatus.PAID)  # as if paid (payouts tested elsewhere)

    deliver(client, tenant, charge_refunded(refunded=10_000), capture=django_capture_on_commit_callbacks)

    reward = Reward.objects.get(tenant=tenant)
    assert (reward.status, reward.reversed_minor, reward.clawed_back_minor) == (RewardStatus.PAID, 0, 1_000)
    assert (
        LedgerEntry.objects.filter(transaction__kind="clawback", account__kind="receivable").get().amount_minor == 1_000
    )


# --- localstripe: an independent Stripe implementation signs and delivers the webhook ------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def localstripe():
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "localstripe", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            assert time.monotonic() < deadline and process.poll() is None, "localstripe did not start"
            time.sleep(0.1)
    yield base
    process.terminate()
    process.wait(timeout=10)


@pytest.mark.django_db(transaction=True)
def test_localstripe_customer_created_webhook_is_verified_and_becomes_a_sign_up(live_server, localstripe):
    import stripe as stripe_lib

    tenant = f.TenantFactory()
    credentials = f.StripeCredentialsFactory(tenant=tenant)
    webhook_url = live_server.url + reverse("stripe_webhook", kwargs={"tenant_slug": tenant.slug})
    register = Request(  # noqa: S310 - loopback
        f"{localstripe}/_config/webhooks/platform",
        method="POST",
        data=json.dumps(
            {"url": webhook_url, "secret": credentials.webhook_secret, "events": ["customer.created"]}
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    urlopen(register, timeout=10).close()  # noqa: S310 - loopback
    client = stripe_lib.StripeClient("sk_test_localstripe", base_addresses={"api": localstripe}, max_network_retries=0)

    customer = client.v1.customers.create({"email": "new@buyer.example", "metadata": {"referral_code": "ls-code"}})

    deadline = time.monotonic() + 30
    while not ConversionEvent.objects.filter(tenant=tenant).exists():
        assert time.monotonic() < deadline, "localstripe's webhook never arrived"
        time.sleep(0.1)
    conversion = ConversionEvent.objects.get(tenant=tenant)
    assert (conversion.kind, conversion.customer_external_id, conversion.referral_code) == (
        "sign_up",
        customer.id,
        "ls-code",
    )
    assert StripeWebhookEvent.objects.get(tenant=tenant).type == "customer.created"


def test_a_stripe_sign_up_with_a_referral_code_reaches_attribution(client, tenant, django_capture_on_commit_callbacks):
    link = f.ReferralLinkFactory(participant=f.ParticipantFactory(program=f.ProgramFactory(tenant=tenant)))
    created = event(
        "evt_cus_ref",
        "customer.created",
        {
            "id": "cus_ref",
            "object": "customer",
            "created": NOW,
            "email": "lead@buyer.example",
            "metadata": {"referral_code": link.code},
        },
    )

    deliver(client, tenant, created, capture=django_capture_on_commit_callbacks)

    conversion = ConversionEvent.objects.get(tenant=tenant)
    assert conversion.status == "processed" and conversion.referral is not None
    assert conversion.referral.referrer_id == link.participant_id and conversion.referral.status == "signed_up"
