"""The Stripe webhook door in front of Django (rewards/door.py, issue 15): through the project's real WSGI
application, the same answers and headers as Django's view, nothing written for a bad request, one
workspace's secret never opening another's door, and nothing of a request's tenant binding left behind."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time

import pytest
from django.core.cache import cache
from django.test import Client

from referral_platform.tenancy import rls
from rewards import door
from rewards.models import StripeCredentials, StripeWebhookEvent
from rewards.webhooks import _drain_key
from tests import factories as f
from tests.wsgi import wsgi_request

from .test_webhooks import invoice_paid, sign

SECURITY_HEADERS = ("X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy", "Cross-Origin-Opener-Policy")


def post(path: str, body: bytes, *, signature: str = "", method: str = "POST", **extra):
    status, headers, answer = wsgi_request(
        method, path, body=body, CONTENT_TYPE="application/json", HTTP_STRIPE_SIGNATURE=signature, **extra
    )
    return status, dict(headers), answer


@pytest.fixture
def tenants(world):
    for tenant in (world.a, world.b):
        f.StripeCredentialsFactory(tenant=tenant)
        cache.add(_drain_key(tenant.pk), 1, 60)  # as if a drain were queued: the door queues none here
    return world


def signed(tenant, payload):
    body, header = sign(payload, StripeCredentials.objects.get(tenant=tenant).webhook_secret)
    return body.encode(), header


def test_the_door_stores_once_and_answers_as_the_view_with_its_headers(tenants, monkeypatch):
    answered_here = []
    original = door._receive
    monkeypatch.setattr(door, "_receive", lambda *args: answered_here.append(1) or original(*args))
    body, header = signed(tenants.a, invoice_paid())

    status, headers, answer = post(f"/webhooks/stripe/{tenants.a.slug}/", body, signature=header)
    again = post(f"/webhooks/stripe/{tenants.a.slug}/", body, signature=header)

    assert (status, json.loads(answer)) == (200, {"received": True, "id": "evt_paid_1"}) and again[0] == 200
    assert answered_here == [1, 1], "answered by the door, not by Django's stack"
    stored = StripeWebhookEvent.objects.get()
    assert (stored.tenant_id, stored.status, bytes(stored.body)) == (tenants.a.pk, "received", body)
    # Django's view (the URL's view, reached by the test client) gives the same answer and security headers.
    view = Client().post(
        f"/webhooks/stripe/{tenants.a.slug}/", body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
    )
    assert (view.status_code, view.json()) == (status, json.loads(answer))
    for name in SECURITY_HEADERS:
        assert headers.get(name) == view.headers.get(name), name
    assert headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("case", "expected"),
    [("bad signature", 400), ("unknown workspace", 400), ("other workspace's secret", 400), ("too large", 413)],
)
def test_a_bad_request_is_refused_and_nothing_is_written(tenants, settings, case, expected):
    body, header = signed(tenants.a, invoice_paid())
    slug = tenants.a.slug
    if case == "bad signature":
        header = header[:-2] + ("00" if not header.endswith("00") else "11")
    elif case == "unknown workspace":
        slug = "no-such-workspace"
    elif case == "other workspace's secret":
        slug = tenants.b.slug  # signed with A's secret, posted to B's door
    else:
        settings.DATA_UPLOAD_MAX_MEMORY_SIZE = len(body) - 1

    status, headers, answer = post(f"/webhooks/stripe/{slug}/", body, signature=header)

    assert status == expected and headers["Content-Type"] == "application/json"
    error = json.loads(answer)["error"]
    assert error["status"] == expected
    if expected == 400:
        assert error == {"status": 400, "code": "invalid_webhook", "message": "Webhook signature verification failed."}
    else:
        assert error["code"] == "too_large" and "body" in error["message"]
    assert not StripeWebhookEvent.objects.exists()


@pytest.mark.django_db(transaction=True)  # Django's handler closes the connection after a request
def test_what_the_door_does_not_answer_goes_to_django(tenants, settings, monkeypatch):
    body, header = signed(tenants.a, invoice_paid())
    assert post(f"/webhooks/stripe/{tenants.a.slug}/", b"", method="GET")[0] == 405  # Django's require_POST
    assert post(f"/webhooks/stripe/{tenants.a.slug}", body, signature=header)[0] in (301, 404)  # no slash
    settings.ALLOWED_HOSTS = ["testserver"]
    assert post(f"/webhooks/stripe/{tenants.a.slug}/", body, signature=header, HTTP_HOST="evil.example")[0] == 400
    assert not StripeWebhookEvent.objects.exists()
    # Plain HTTP where HTTPS is required: left to Django's SecurityMiddleware (its redirect), never answered here.
    answered_here = []
    monkeypatch.setattr(door, "_receive", lambda *args: answered_here.append(args) or (200, {}))
    settings.SECURE_SSL_REDIRECT = True
    post(f"/webhooks/stripe/{tenants.a.slug}/", body, signature=header)
    post(f"/webhooks/stripe/{tenants.a.slug}/", body, signature=header, HTTP_X_FORWARDED_PROTO="http")
    assert answered_here == []
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_HSTS_SECONDS, settings.SECURE_HSTS_INCLUDE_SUBDOMAINS, settings.SECURE_HSTS_PRELOAD = (
        3600,
        True,
        False,
    )
    _status, headers, _ = post(
        f"/webhooks/stripe/{tenants.a.slug}/", body, signature=header, HTTP_X_FORWARDED_PROTO="https"
    )
    assert len(answered_here) == 1 and headers["Strict-Transport-Security"] == "max-age=3600; includeSubDomains"


def test_a_requests_tenant_binding_does_not_outlive_it(tenants):
    before = rls.current()
    body, header = signed(tenants.a, invoice_paid())
    assert post(f"/webhooks/stripe/{tenants.a.slug}/", body, signature=header)[0] == 200
    assert rls.current() == before
    body_b, header_b = signed(tenants.b, invoice_paid(event_id="evt_b"))
    assert post(f"/webhooks/stripe/{tenants.b.slug}/", body_b, signature=header_b)[0] == 200
    assert set(StripeWebhookEvent.objects.values_list("tenant_id", "stripe_event_id")) == {
        (tenants.a.pk, "evt_paid_1"),
        (tenants.b.pk, "evt_b"),
    }


def _deliver(tenant, event_id: str, secret: str | None = None):
    """POST an invoice.paid event to ``tenant``'s door, signed with ``secret`` (default: its stored one)."""
    body, header = sign(
        invoice_paid(event_id=event_id), secret or StripeCredentials.objects.get(tenant=tenant).webhook_secret
    )
    return post(f"/webhooks/stripe/{tenant.slug}/", body.encode(), signature=header)[0]


def test_a_remembered_secret_stores_a_webhook_with_one_statement(tenants, django_assert_num_queries):
    secret = StripeCredentials.objects.get(tenant=tenants.a).webhook_secret
    assert _deliver(tenants.a, "evt_first", secret) == 200  # reads the secret, remembers it
    with django_assert_num_queries(1) as one:  # verified with the remembered secret, stored if it is still stored
        assert _deliver(tenants.a, "evt_second", secret) == 200
    with django_assert_num_queries(2) as two:  # a duplicate: the one statement, then the first delivery's row
        assert _deliver(tenants.a, "evt_second", secret) == 200
    # A prepared statement (its planning was most of its time): prepared with its first use on a connection,
    # executed by name after (the test settings close the connection after each request: prepared each time here).
    for captured in (one, two):
        assert re.search(r"\b(PREPARE|EXECUTE) rp_[0-9a-f]+", captured.captured_queries[0]["sql"])
    assert sorted(StripeWebhookEvent.objects.values_list("stripe_event_id", flat=True)) == ["evt_first", "evt_second"]


def test_a_rotated_or_removed_secret_counts_at_the_next_request_despite_the_memory(tenants, world):
    from referral_platform.tenancy.actors import system_actor
    from rewards.services import stripe_credentials_save

    old = StripeCredentials.objects.get(tenant=tenants.a).webhook_secret
    assert _deliver(tenants.a, "evt_before") == 200  # the old secret is remembered by this process
    stripe_credentials_save(tenant=tenants.a, actor=system_actor(tenants.a), webhook_secret="whsec_rotated_secret")
    assert _deliver(tenants.a, "evt_old_secret", secret=old) == 400  # the memory never outlives a rotation
    assert _deliver(tenants.a, "evt_new_secret", secret="whsec_rotated_secret") == 200
    # Re-saved with the same secret (new ciphertext) and re-encrypted keys: still accepted, read again.
    stripe_credentials_save(tenant=tenants.a, actor=system_actor(tenants.a), secret_key="sk_test_other")
    assert _deliver(tenants.a, "evt_same_secret", secret="whsec_rotated_secret") == 200
    StripeCredentials.objects.filter(tenant=tenants.a).delete()
    assert _deliver(tenants.a, "evt_no_secret", secret="whsec_rotated_secret") == 400
    assert sorted(StripeWebhookEvent.objects.values_list("stripe_event_id", flat=True)) == [
        "evt_before",
        "evt_new_secret",
        "evt_same_secret",
    ]


def test_a_remembered_slug_taken_over_by_another_workspace_never_stores_into_either(tenants):
    from referral_platform.tenancy.models import Tenant

    secret_a = StripeCredentials.objects.get(tenant=tenants.a).webhook_secret
    slug_a = tenants.a.slug
    assert _deliver(tenants.a, "evt_a") == 200  # A's secret remembered under A's slug
    Tenant.objects.filter(pk=tenants.a.pk).update(slug="renamed-a")
    Tenant.objects.filter(pk=tenants.b.pk).update(slug=slug_a)  # B now answers at A's old address
    body, header = sign(invoice_paid(event_id="evt_signed_by_a"), secret_a)
    assert post(f"/webhooks/stripe/{slug_a}/", body.encode(), signature=header)[0] == 400  # A's secret opens nothing
    tenants.b.refresh_from_db()
    assert _deliver(tenants.b, "evt_b") == 200  # B's own secret works at its new address
    assert set(StripeWebhookEvent.objects.values_list("tenant_id", "stripe_event_id")) == {
        (tenants.a.pk, "evt_a"),
        (tenants.b.pk, "evt_b"),
    }


@pytest.mark.parametrize("warm", [False, True], ids=["secret-read", "secret-remembered"])
@pytest.mark.parametrize(
    ("case", "expected"),
    [("NaN", 400), ("NUL character", 400), ("byte-order mark", 200)],
)
def test_json_postgresql_cannot_store_is_refused_and_a_byte_order_mark_is_accepted(tenants, case, expected, warm):
    """Signed bodies that are JSON to Python but not to PostgreSQL's jsonb get a 400 (nothing written), not a
    500 that Stripe would retry for days; a UTF-8 byte-order mark is read past. ``warm``: the workspace's secret is
    remembered first, so the body goes to the door's one prepared statement."""
    secret = StripeCredentials.objects.get(tenant=tenants.a).webhook_secret
    if warm:
        assert _deliver(tenants.a, "evt_warm", secret) == 200
    body, _header = sign(invoice_paid(event_id="evt_odd"), secret)
    if case == "NaN":
        body = body.replace('"amount_paid": 20000', '"amount_paid": NaN')
    elif case == "NUL character":
        body = body.replace('"in_1"', '"in_\\u0000"')
    else:
        body = "\ufeff" + body
    assert body != sign(invoice_paid(event_id="evt_odd"), secret)[0]
    stamp = int(time.time())
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body.encode(), hashlib.sha256).hexdigest()
    status, _headers, answer = post(
        f"/webhooks/stripe/{tenants.a.slug}/", body.encode(), signature=f"t={stamp},v1={digest}"
    )
    assert status == expected, answer
    assert StripeWebhookEvent.objects.filter(stripe_event_id="evt_odd").exists() == (expected == 200)


@pytest.fixture
def persistent_connection():
    """The production settings: a connection kept between requests, checked by Django before a request's first
    statement (the test settings close it after each request)."""
    from django.db import connections

    connection = connections["default"]
    before = connection.settings_dict["CONN_MAX_AGE"], connection.settings_dict["CONN_HEALTH_CHECKS"]
    connection.settings_dict["CONN_MAX_AGE"], connection.settings_dict["CONN_HEALTH_CHECKS"] = 60, True
    connection.close()  # health checks are switched on when a connection is made
    yield connection
    connection.settings_dict["CONN_MAX_AGE"], connection.settings_dict["CONN_HEALTH_CHECKS"] = before
    connection.close()


@pytest.mark.django_db(transaction=True)
def test_the_door_does_not_ping_a_kept_connection_before_its_one_statement(tenants, persistent_connection, monkeypatch):
    secret = StripeCredentials.objects.get(tenant=tenants.a).webhook_secret
    pings = []
    original = type(persistent_connection).is_usable
    monkeypatch.setattr(type(persistent_connection), "is_usable", lambda self: pings.append(1) or original(self))
    assert [_deliver(tenants.a, f"evt_kept_{i}", secret) for i in range(3)] == [200, 200, 200]
    assert persistent_connection.connection is not None  # kept between the requests
    assert pings == []
    assert StripeWebhookEvent.objects.filter(stripe_event_id__startswith="evt_kept_").count() == 3


@pytest.mark.django_db(transaction=True)
def test_a_connection_the_server_dropped_is_replaced_and_the_webhook_stored_once(tenants, persistent_connection):
    import psycopg2

    secret = StripeCredentials.objects.get(tenant=tenants.a).webhook_secret  # read before the drop
    assert _deliver(tenants.a, "evt_before_drop", secret) == 200
    with persistent_connection.connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    params = persistent_connection.get_connection_params()
    killer = psycopg2.connect(**{key: params[key] for key in ("dbname", "user", "host", "port") if key in params})
    killer.autocommit = True
    with killer.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [backend])
    killer.close()

    assert _deliver(tenants.a, "evt_after_drop", secret) == 200  # not a 500: the door replaced the connection
    assert _deliver(tenants.a, "evt_after_drop", secret) == 200  # a redelivery: stored once
    assert StripeWebhookEvent.objects.filter(stripe_event_id="evt_after_drop").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_store_whose_answer_was_lost_is_answered_from_the_stored_event(tenants, persistent_connection, monkeypatch):
    from django.db import OperationalError

    from rewards import views

    calls = []
    original = views.webhook_answer

    def stored_then_connection_lost(*args):
        calls.append(1)
        answer = original(*args)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return answer

    monkeypatch.setattr(views, "webhook_answer", stored_then_connection_lost)
    body, header = signed(tenants.a, invoice_paid(event_id="evt_lost_answer"))
    status, _headers, answer = post(f"/webhooks/stripe/{tenants.a.slug}/", body, signature=header)
    assert (status, json.loads(answer), len(calls)) == (200, {"received": True, "id": "evt_lost_answer"}, 2)
    assert StripeWebhookEvent.objects.filter(stripe_event_id="evt_lost_answer").count() == 1
