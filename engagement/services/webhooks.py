"""Outbound webhooks to the tenant's CRM (R-30), signed per the Standard Webhooks spec.

Each business fact becomes one ``WebhookMessage`` (``dedupe_key`` keeps a repeated hook call from sending
it twice) and one ``WebhookDelivery`` per endpoint that wants its type. ``webhook_deliver`` POSTs the JSON
with ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of
"id.timestamp.body">``, one signature per valid secret: during a rotation the previous secret signs too
until it expires). A failed attempt is retried with exponential backoff (``RETRY_SCHEDULE``) up to
``MAX_ATTEMPTS``, then given up; every attempt's request headers, status and response body are kept. An
endpoint whose deliveries keep failing for ``WEBHOOK_DISABLE_AFTER_HOURS`` is disabled when another one
gives up, and the workspace's team is told.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.utils import timezone

from referral_platform.celery import enqueue_on_commit
from referral_platform.tenancy.actors import system_actor
from referral_platform.tenancy.memo import memoized
from referral_platform.tenancy.models import Tenant
from referral_platform.tenancy.services import audit_record

from ..models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookEventType, WebhookMessage

logger = logging.getLogger(__name__)

# Seconds before attempt n+1 (after attempt n failed); Standard Webhooks' suggested schedule, capped under
# CELERY_MAX_COUNTDOWN_SECONDS. The first attempt is immediate.
RETRY_SCHEDULE = (5, 300, 1800, 7200, 18000, 21600, 21600)
MAX_ATTEMPTS = len(RETRY_SCHEDULE) + 1
TIMEOUT_SECONDS = 10
RESPONSE_KEEP_CHARS = 2000


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_") + "==")
    digest = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def valid_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    found = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_secret_expires_at and endpoint.previous_secret_expires_at > now:
        found.append(endpoint.previous_secret)
    return found


def _validate_endpoint(url: str, event_types: list[str]) -> None:
    errors = {}
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        errors["url"] = "Enter an http(s) URL."
    unknown = [value for value in event_types if value not in WebhookEventType.values]
    if unknown:
        errors["event_types"] = f"Unknown event type(s): {', '.join(unknown)}."
    if errors:
        raise ValidationError(errors)


@transaction.atomic
def webhook_endpoint_create(
    *, tenant: Tenant, url: str, event_types: list[str] | None = None, description: str = ""
) -> WebhookEndpoint:
    event_types = list(event_types or [])
    _validate_endpoint(url, event_types)
    return WebhookEndpoint.objects.create(
        tenant=tenant, url=url, event_types=event_types, description=description[:200], secret=new_secret()
    )


@transaction.atomic
def webhook_endpoint_update(
    *, endpoint: WebhookEndpoint, url: str | None = None, event_types: list[str] | None = None, is_active=None
) -> WebhookEndpoint:
    url = endpoint.url if url is None else url
    event_types = endpoint.event_types if event_types is None else list(event_types)
    _validate_endpoint(url, event_types)
    endpoint.url, endpoint.event_types = url, event_types
    if is_active is not None:
        endpoint.is_active = bool(is_active)
        if endpoint.is_active:
            endpoint.disabled_at, endpoint.disabled_reason, endpoint.failing_since = None, "", None
    endpoint.save()
    return endpoint


@transaction.atomic
def webhook_endpoint_rotate_secret(
    *, endpoint: WebhookEndpoint, grace: timedelta = timedelta(hours=24), now: datetime | None = None
) -> WebhookEndpoint:
    """A new secret; the old one keeps signing (beside the new) for ``grace``, so receivers can switch."""
    now = now or timezone.now()
    locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk, tenant_id=endpoint.tenant_id)
    locked.previous_secret, locked.previous_secret_expires_at = locked.secret, now + grace
    locked.secret = new_secret()
    locked.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at"])
    return locked


def webhook_emit(
    *, tenant_id: int, event_type: str, dedupe_key: str, data: dict | Callable[[], dict]
) -> WebhookMessage | None:
    """Record one event and queue its delivery to every endpoint that wants it (after commit). A second call
    for the same fact (``dedupe_key``) does nothing. No endpoint wants it: nothing is written, and ``data``,
    when a callable, is never computed. The endpoints are read once per batch (``tenancy.memo``)."""
    endpoints = memoized(f"webhook_endpoints_{tenant_id}", lambda: list(WebhookEndpoint.objects.for_tenant(tenant_id)))
    endpoints = [row for row in endpoints if row.wants(event_type)]
    if not endpoints:
        return None
    if callable(data):
        data = data()
    now = timezone.now()
    msg_id = "msg_" + secrets.token_urlsafe(18)
    payload = {"type": event_type, "timestamp": now.isoformat(), "data": data}
    try:
        with transaction.atomic():
            message = WebhookMessage.objects.create(
                tenant_id=tenant_id, msg_id=msg_id, event_type=event_type, payload=payload, dedupe_key=dedupe_key
            )
    except IntegrityError:
        return None
    from ..tasks import webhook_deliver

    for endpoint in endpoints:
        delivery = WebhookDelivery.objects.create(
            tenant_id=tenant_id, endpoint=endpoint, message=message, next_attempt_at=now
        )
        enqueue_on_commit(webhook_deliver, delivery.pk)
    return message


def _attempt(delivery: WebhookDelivery, now: datetime) -> tuple[dict, bool]:
    body = json.dumps(delivery.message.payload, separators=(",", ":"), sort_keys=True)
    timestamp = int(now.timestamp())
    msg_id = delivery.message.msg_id
    headers = {
        "content-type": "application/json",
        "user-agent": "ReferralPlatform-Webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            sign(secret, msg_id, timestamp, body) for secret in valid_secrets(delivery.endpoint, now)
        ),
    }
    record = {"at": now.isoformat(), "request_headers": headers, "request_body": body}
    try:
        response = requests.post(delivery.endpoint.url, data=body.encode(), headers=headers, timeout=TIMEOUT_SECONDS)
    except requests.RequestException as error:
        record.update(status=None, response=f"{type(error).__name__}: {error}"[:RESPONSE_KEEP_CHARS])
        return record, False
    record.update(status=response.status_code, response=response.text[:RESPONSE_KEEP_CHARS])
    return record, 200 <= response.status_code < 300


def webhook_deliver(*, delivery_id: int, now: datetime | None = None) -> WebhookDelivery | None:
    """One attempt of a pending delivery (the row is locked for the attempt, so two workers never both send).
    Success: delivered. Failure: the next attempt is queued with backoff, or the delivery is given up."""
    now = now or timezone.now()
    retry_in = None
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(of=("self",), skip_locked=True)
            .select_related("endpoint", "message")
            .filter(pk=delivery_id, status=DeliveryStatus.PENDING)
            .first()
        )
        if delivery is None:
            return None
        endpoint = delivery.endpoint
        if not endpoint.is_active:
            delivery.status = DeliveryStatus.GAVE_UP
            delivery.attempts = [*delivery.attempts, {"at": now.isoformat(), "skipped": "endpoint disabled"}]
            delivery.save(update_fields=["status", "attempts"])
            return delivery
        record, ok = _attempt(delivery, now)
        delivery.attempts = [*delivery.attempts, record]
        delivery.attempt_count += 1
        if ok:
            delivery.status, delivery.delivered_at, delivery.next_attempt_at = DeliveryStatus.DELIVERED, now, None
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=None)
        elif delivery.attempt_count >= MAX_ATTEMPTS:
            delivery.status, delivery.next_attempt_at = DeliveryStatus.GAVE_UP, None
            _endpoint_failed(endpoint, now, gave_up=True)
        else:
            retry_in = RETRY_SCHEDULE[delivery.attempt_count - 1]
            delivery.next_attempt_at = now + timedelta(seconds=retry_in)
            _endpoint_failed(endpoint, now, gave_up=False)
        delivery.save(update_fields=["attempts", "attempt_count", "status", "delivered_at", "next_attempt_at"])
        if retry_in is not None:
            from ..tasks import webhook_deliver as task

            enqueue_on_commit(task, delivery.pk, countdown=retry_in)
    return delivery


def _endpoint_failed(endpoint: WebhookEndpoint, now: datetime, *, gave_up: bool) -> None:
    locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    if locked.failing_since is None:
        locked.failing_since = now
        locked.save(update_fields=["failing_since"])
    threshold = timedelta(hours=settings.WEBHOOK_DISABLE_AFTER_HOURS)
    if gave_up and locked.is_active and now - locked.failing_since >= threshold:
        webhook_endpoint_disable(endpoint=locked, reason="deliveries kept failing", now=now)


def webhook_endpoint_disable(*, endpoint: WebhookEndpoint, reason: str, now: datetime | None = None) -> None:
    """Disable after sustained failure and tell the team (e-mail to owners and marketers, audit row)."""
    from partners.services.notify import mail_on_commit, team_emails

    now = now or timezone.now()
    endpoint.is_active, endpoint.disabled_at, endpoint.disabled_reason = False, now, reason[:300]
    endpoint.save(update_fields=["is_active", "disabled_at", "disabled_reason"])
    audit_record(
        tenant=endpoint.tenant,
        actor=system_actor(endpoint.tenant),
        action="webhook_endpoint.disabled",
        obj=endpoint,
        from_state="active",
        to_state="disabled",
        reason=reason,
    )
    mail_on_commit(
        subject=f"Webhook endpoint disabled: {endpoint.url}",
        body=(
            f"Deliveries to {endpoint.url} kept failing since {endpoint.failing_since:%Y-%m-%d %H:%M} UTC, so the "
            "endpoint was disabled. Fix the receiver, re-enable it through the API (PATCH is_active=true) and "
            "re-send the failed deliveries from the delivery log."
        ),
        recipients=team_emails(endpoint.tenant_id),
    )


@transaction.atomic
def webhook_delivery_resend(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a delivery again now (a new attempt; the log keeps the earlier ones)."""
    locked = WebhookDelivery.objects.select_for_update().get(pk=delivery.pk, tenant_id=delivery.tenant_id)
    if not locked.endpoint.is_active:
        raise ValidationError({"endpoint": "The endpoint is disabled; enable it first."})
    locked.status, locked.next_attempt_at = DeliveryStatus.PENDING, timezone.now()
    locked.attempt_count = min(locked.attempt_count, MAX_ATTEMPTS - 1)
    locked.save(update_fields=["status", "next_attempt_at", "attempt_count"])
    from ..tasks import webhook_deliver as task

    enqueue_on_commit(task, locked.pk)
    return locked


def deliveries_due(*, now: datetime | None = None, limit: int = 500) -> list[int]:
    now = now or timezone.now()
    return list(
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
