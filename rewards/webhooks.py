"""Stripe webhooks of a tenant's Stripe account: verify, store raw, then handle in batches
(``stripe_events_drain``, task ``rewards.stripe_events_drain``; one event: ``stripe_event_process``).

Handling, per event type (each idempotent, so a duplicate or a late event gives the same result):

- ``invoice.paid``  → a ``payment`` ConversionEvent (external_event_id = Stripe event id), and the
  invoice's charge is remembered so a refund can find the rewards of that payment;
- ``charge.refunded`` → the charge's refunded amount (highest seen) reduces the rewards of its
  payment proportionally (before payout they shrink; after payout a clawback); a refund that arrives
  before its payment is kept and applied when the reward is created;
- ``customer.subscription.deleted`` → a ``cancellation`` ConversionEvent (churn);
- ``customer.created`` with referral metadata → a ``sign_up`` ConversionEvent.

Conversion events are stored through ``referrals.services.conversion_event_receive``, which queues
their matching and attribution (``referrals.process_conversion_event``) after commit; inside a drain
those follow-ups are collected and run in the same task, in batches (``rewards.pipeline``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import stripe
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import DataError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from referral_platform.celery import enqueue_on_commit
from referral_platform.crypto import decrypt
from referral_platform.db.prepared import execute_prepared
from referral_platform.db.sql import db_values, rows_update
from referral_platform.db.young_tables import young_tables_check
from referral_platform.tenancy import rls
from referral_platform.tenancy.actors import system_actor
from referral_platform.tenancy.memo import batch_memo, tenant_key
from referral_platform.tenancy.models import Tenant
from referrals.models import ConversionEvent, ConversionKind

from .models import Reward, StripeCharge, StripeWebhookEvent, WebhookEventStatus
from .services import reward_reduce_for_refund

logger = logging.getLogger(__name__)

WEBHOOK_TOLERANCE_SECONDS = 300
REFERRAL_METADATA_KEYS = ("referral_code", "ref", "referral", "visitor_id")


class WebhookRejected(Exception):
    """Signature, timestamp or payload not acceptable: answer 400 and write nothing."""


def _refuse_future_timestamp(signature: str) -> None:
    """Stripe's library refuses stale timestamps; a timestamp far in the future is refused here too."""
    for part in signature.split(","):
        name, _, value = part.partition("=")
        future = value.strip().isdigit() and int(value) > timezone.now().timestamp() + WEBHOOK_TOLERANCE_SECONDS
        if name.strip() == "t" and future:
            raise WebhookRejected("timestamp in the future")


# The door (``webhook_receive``) only verifies, stores raw with one INSERT and acknowledges; the stored
# events are handled later in batches by ``stripe_events_drain`` (task ``rewards.stripe_events_drain``),
# scheduled at most once per DRAIN_KEY_SECONDS per tenant (docs/throughput.md, "Intake").
# A drain takes settings.STRIPE_DRAIN_CHUNK events per transaction (``drain_chunk``): 25 at first, 50 since issue
# 15's tenth session, 200 since its nineteenth — a chunk's fixed statements (its transaction, the claim, the
# settlement chunk's set reads, the analytics refresh) shared by more events.
DRAIN_KEY_SECONDS = 1
# A drain with a backlog asks for help: up to DRAIN_HELPERS helper drains per tenant and DRAIN_KEY_SECONDS
# (one Redis key per slot), so every worker of a billing run's backlog is busy within a chunk or two.
DRAIN_HELPERS = 3
DRAIN_TIME_BUDGET_SECONDS = 20.0


def drain_chunk() -> int:
    """How many stored events a drain handles per transaction (``settings.STRIPE_DRAIN_CHUNK``, validated where
    the environment is read: ``env_int``)."""
    return settings.STRIPE_DRAIN_CHUNK


def _drain_key(tenant_id: int) -> str:
    return f"rewards:stripe-drain:{tenant_id}"


# A process's memory of each workspace's signing secret: slug -> (tenant id, stored ciphertext, secret). It
# only spares the read and the decryption: the event is stored by one statement that also checks the stored
# ciphertext is still the one remembered, so a rotated or removed secret counts at the next request as before.
_SECRETS: dict[str, tuple[int, str, str]] = {}
_SECRETS_MAX = 1024

_CREDENTIALS_SQL = (
    "SELECT t.id, c.webhook_secret FROM tenancy_tenant t "
    "LEFT JOIN rewards_stripecredentials c ON c.tenant_id = t.id WHERE t.slug = %s"
)


def _signing_secret(tenant_slug: str) -> tuple[int, str]:
    """The tenant's id and webhook signing secret, read in one statement (and remembered with its ciphertext,
    see ``_SECRETS``). Raises ``Tenant.DoesNotExist`` for an unknown tenant."""
    _SECRETS.pop(tenant_slug, None)
    with connection.cursor() as cursor:
        cursor.execute(_CREDENTIALS_SQL, [tenant_slug])
        row = cursor.fetchone()
    if row is None:
        raise Tenant.DoesNotExist(f"no workspace {tenant_slug!r}")
    tenant_id, stored = row
    if not stored:
        return tenant_id, ""
    secret = decrypt(stored)
    if len(_SECRETS) >= _SECRETS_MAX:
        _SECRETS.clear()
    _SECRETS[tenant_slug] = (tenant_id, stored, secret)
    return tenant_id, secret


def _verified(payload: bytes, signature: str, secret: str) -> dict:
    if not secret:
        raise WebhookRejected("no webhook signing secret configured")
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"), signature, secret, tolerance=WEBHOOK_TOLERANCE_SECONDS
        )
    except stripe.SignatureVerificationError as error:
        raise WebhookRejected(str(error)) from None
    except UnicodeDecodeError as error:
        raise WebhookRejected(f"invalid payload: {error}") from None
    try:
        raw = json.loads(payload, parse_constant=_not_json)
    except ValueError as error:
        raise WebhookRejected(f"invalid payload: {error}") from None
    if not isinstance(raw, dict):
        raise WebhookRejected("invalid payload: not an object")
    if b"\\u0000" in payload:  # JSON allows it, PostgreSQL's jsonb does not: refused here, not a 500 later
        raise WebhookRejected("invalid payload: a \\u0000 character")
    return raw


def _not_json(constant: str):
    raise ValueError(f"{constant} is not a JSON number")


_INSERT_SQL = (
    "INSERT INTO rewards_stripewebhookevent (tenant_id, stripe_event_id, type, payload, body, status, attempts, "
    "error, received_at) VALUES (%s, %s, %s, %s::jsonb, %s, %s, 0, '', %s) "
    "ON CONFLICT (tenant_id, stripe_event_id) DO NOTHING RETURNING id"
)
# The warm door's one statement: the event is inserted only if the workspace's stored secret is still the
# ciphertext the signature was verified with; the row read tells which (None: the workspace or its secret
# is gone; another ciphertext: rotated since). Prepared once per connection (``execute_prepared``: its
# planning was two thirds of its database time), hence the explicit types of the values PostgreSQL could not
# infer (a SELECT list's values would be text).
_INSERT_IF_CREDENTIALS_SQL = (
    "WITH cred AS (SELECT c.tenant_id, c.webhook_secret FROM rewards_stripecredentials c "
    "JOIN tenancy_tenant t ON t.id = c.tenant_id WHERE t.slug = %s), "
    "stored AS (INSERT INTO rewards_stripewebhookevent (tenant_id, stripe_event_id, type, payload, body, status, "
    "attempts, error, received_at) "
    "SELECT cred.tenant_id, %s, %s, %s::jsonb, %s::bytea, %s, 0, '', %s::timestamptz FROM cred "
    "WHERE cred.tenant_id = %s AND cred.webhook_secret = %s "
    "ON CONFLICT (tenant_id, stripe_event_id) DO NOTHING RETURNING id) "
    "SELECT cred.webhook_secret, (SELECT id FROM stored) FROM cred"
)


def webhook_receive(*, tenant_slug: str, payload: bytes, signature: str) -> StripeWebhookEvent:
    """Verify ``payload`` with the tenant's signing secret (Stripe's scheme, 5-minute tolerance) and
    store it once per Stripe event id (one ``INSERT … ON CONFLICT DO NOTHING``); its handling is left to a
    batch (``stripe_events_drain``), scheduled after commit. Returns the stored event (the first one for
    a duplicate). Raises ``Tenant.DoesNotExist`` for an unknown tenant and ``WebhookRejected`` for a bad
    signature.

    With the workspace's secret remembered by this process (``_SECRETS``), verifying and storing is ONE
    statement (``_INSERT_IF_CREDENTIALS_SQL``) that stores only if that secret is still the stored one; otherwise
    (first request, a failed verification, a rotated or removed secret) the secret is read again first,
    exactly as without the memory."""
    _refuse_future_timestamp(signature)
    received_at = timezone.now()
    remembered = _SECRETS.get(tenant_slug)
    if remembered is not None:
        tenant_id, stored_secret, secret = remembered
        try:
            raw = _verified(payload, signature, secret)
        except WebhookRejected:
            raw = None  # perhaps rotated since: read the secret again below
        if raw is not None:
            event_id, event_type = _event_id_and_type(raw)
            with connection.cursor() as cursor:
                execute_prepared(
                    cursor,
                    _INSERT_IF_CREDENTIALS_SQL,
                    [tenant_slug, *_values(event_id, event_type, payload, received_at), tenant_id, stored_secret],
                )
                row = cursor.fetchone()
            if row is not None and row[0] == stored_secret:
                rls.bind(tenant_id)  # from here the request sees this tenant's rows only (row-level security)
                return _received(tenant_id, row[1], event_id, event_type, raw, payload, received_at)
    tenant_id, secret = _signing_secret(tenant_slug)
    rls.bind(tenant_id)  # from here the request sees this tenant's rows only (row-level security)
    raw = _verified(payload, signature, secret)
    event_id, event_type = _event_id_and_type(raw)
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_SQL, [tenant_id, *_values(event_id, event_type, payload, received_at)])
        row = cursor.fetchone()
    return _received(tenant_id, row[0] if row else None, event_id, event_type, raw, payload, received_at)


def _event_id_and_type(raw: dict) -> tuple[str, str]:
    event_id, event_type = raw.get("id"), raw.get("type")
    if not event_id or not event_type or not isinstance(event_id, str) or not isinstance(event_type, str):
        raise WebhookRejected("event without id or type")
    if len(event_id) > 100 or len(event_type) > 100:
        raise WebhookRejected("event id or type longer than 100 characters")
    return event_id, event_type


def _values(event_id: str, event_type: str, payload: bytes, received_at: datetime) -> list:
    # The payload column gets the body's own JSON text (PostgreSQL parses it; nothing re-encoded here).
    return [event_id, event_type, payload.decode("utf-8-sig"), bytes(payload), WebhookEventStatus.RECEIVED, received_at]


def _received(
    tenant_id: int, pk: int | None, event_id: str, event_type: str, raw: dict, payload: bytes, received_at: datetime
) -> StripeWebhookEvent:
    """The stored event (``pk`` None: a duplicate, the first delivery's row), its drain scheduled after commit
    while it waits to be handled."""
    if pk is None:
        stored = StripeWebhookEvent.objects.for_tenant(tenant_id).get(stripe_event_id=event_id)
        if stored.status == WebhookEventStatus.RECEIVED:
            transaction.on_commit(lambda: stripe_events_schedule(tenant_id))
        return stored
    stored = StripeWebhookEvent(
        pk=pk,
        tenant_id=tenant_id,
        stripe_event_id=event_id,
        type=event_type,
        payload=raw,
        body=bytes(payload),
        status=WebhookEventStatus.RECEIVED,
        received_at=received_at,
    )
    stored._state.adding = False
    transaction.on_commit(lambda: stripe_events_schedule(tenant_id))
    return stored


def stripe_events_schedule(tenant_id: int, *, helper: bool = False) -> bool:
    """Queue a drain of the tenant's stored events unless one was queued within DRAIN_KEY_SECONDS and has
    not finished yet (one Redis SET NX). A drain that finds nothing left deletes the key, then looks
    once more, so an event stored while the key was held is always handled by some drain. ``helper``: a
    drain with a backlog asks for help (keys of their own: at most DRAIN_HELPERS helpers per tenant and
    DRAIN_KEY_SECONDS, whatever the door does)."""
    key = _drain_key(tenant_id)
    keys = [f"{key}:helper:{slot}" for slot in range(DRAIN_HELPERS)] if helper else [key]
    if not any(cache.add(key, 1, DRAIN_KEY_SECONDS) for key in keys):
        return False
    from .tasks import stripe_events_drain

    stripe_events_drain.apply_async((tenant_id,))
    return True


def _handled(event: StripeWebhookEvent) -> None:
    """The outcome of an event handled as a whole (not saved)."""
    event.attempts += 1
    event.status = WebhookEventStatus.PROCESSED
    event.error = ""
    event.processed_at = timezone.now()


def _handle(event: StripeWebhookEvent) -> None:
    """Run the event's handler in a savepoint and set its outcome (not saved)."""
    event.attempts += 1
    handler = HANDLERS.get(event.type)
    try:
        with transaction.atomic():
            if handler is None:
                event.status = WebhookEventStatus.IGNORED
            else:
                handler(event)
                event.status = WebhookEventStatus.PROCESSED
            event.error = ""
    # The event's own data is at fault (DataError: a value the database refuses, e.g. longer than its column):
    # handling it again would fail the same way, so it is failed with the reason and the chunk goes on.
    except (ValidationError, KeyError, TypeError, ValueError, DataError) as error:
        event.status = WebhookEventStatus.FAILED
        event.error = f"{type(error).__name__}: {error}"[:2000]
        logger.warning("stripe event %s failed: %s", event.stripe_event_id, event.error)
    event.processed_at = timezone.now()


def stripe_event_process(*, event: StripeWebhookEvent) -> StripeWebhookEvent:
    """Handle one stored event once (a processed or ignored event is left alone)."""
    with transaction.atomic():
        event = StripeWebhookEvent.objects.select_for_update(of=("self",)).select_related("tenant").get(pk=event.pk)
        if event.status in (WebhookEventStatus.PROCESSED, WebhookEventStatus.IGNORED):
            return event
        _handle(event)
        event.save(update_fields=["status", "attempts", "error", "processed_at"])
        return event


def stripe_events_process_chunk(*, tenant: Tenant, limit: int | None = None) -> list[StripeWebhookEvent]:
    """Handle up to ``limit`` of the tenant's stored, unhandled events in ONE transaction: claimed with
    ``FOR UPDATE SKIP LOCKED`` (drains on other workers take other events, none waits), each handled in
    its own savepoint (one that fails is marked failed with its reason, the others are handled), their
    outcomes written with one UPDATE. Their follow-ups (matching, settlement) are queued after commit as
    usual. Returns the events handled (empty when none is left). ``limit``: ``drain_chunk()`` unless given."""
    limit = limit or drain_chunk()
    with transaction.atomic():
        events = list(
            StripeWebhookEvent.objects.for_tenant(tenant)
            .filter(status=WebhookEventStatus.RECEIVED)
            .select_for_update(of=("self",), skip_locked=True)
            .order_by("pk")
            .defer("body")[:limit]
        )
        for event in events:
            event.tenant = tenant
        together = _invoices_paid_together(tenant, events)
        for event in events:
            if event.pk not in together:
                _handle(event)
        if events:
            rows_update(events, ["status", "attempts", "error", "processed_at"], connection)
    return events


def stripe_events_drain(*, tenant_id: int, time_budget: float = DRAIN_TIME_BUDGET_SECONDS) -> int:
    """Handle the tenant's stored events chunk by chunk, and their follow-ups in batches in this same
    task (``rewards.pipeline.follow_ups``: matching and attribution, settlement, messages; analytics
    merged into one task), until none is left or ``time_budget`` is spent (then another drain is queued).
    While a backlog remains, one more drain is queued per DRAIN_KEY_SECONDS so other workers help.
    Returns how many events were handled."""
    from .pipeline import follow_ups
    from .tasks import stripe_events_drain as drain_task

    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:
        return 0
    rls.bind(tenant.pk)  # a drain queued without its tenant (e.g. by hand) binds it: this tenant's rows only
    handled = 0
    chunk = drain_chunk()
    started = time.monotonic()
    while True:
        # Between chunks, outside their transactions: statistics for tables never analysed that have grown
        # meanwhile (a long drain starts one task; referral_platform/db/young_tables.py).
        young_tables_check()
        # One chunk and its follow-ups read the tenant and its webhook endpoints once (tenancy.memo).
        with batch_memo(**{tenant_key(tenant.pk): tenant}), follow_ups():
            events = stripe_events_process_chunk(tenant=tenant, limit=chunk)
            if len(events) == chunk:
                stripe_events_schedule(tenant_id, helper=True)  # a backlog: another worker helps meanwhile
        if not events:
            cache.delete(_drain_key(tenant_id))
            with follow_ups():
                events = stripe_events_process_chunk(tenant=tenant, limit=chunk)
            if not events:
                return handled
        handled += len(events)
        if time.monotonic() - started > time_budget:
            drain_task.apply_async((tenant_id,))
            return handled


# --- handlers ----------------------------------------------------------------------------------


def _object(event: StripeWebhookEvent) -> dict:
    return event.payload["data"]["object"]


def _timestamp(value, default: datetime) -> datetime:
    return datetime.fromtimestamp(int(value), tz=UTC) if value else default


def _created(event: StripeWebhookEvent) -> datetime:
    return _timestamp(event.payload.get("created"), event.received_at)


def _conversion(event: StripeWebhookEvent, **fields) -> ConversionEvent:
    """Store the conversion raw through the conversions service (once per Stripe event id); it queues
    matching and attribution after commit. The handlers need only its id: a new one is not read back."""
    return _received_conversion(event, **fields).event


def _received_conversion(event: StripeWebhookEvent, *, also: tuple[str, list] | None = None, **fields):
    from referrals.services import conversion_event_receive

    return conversion_event_receive(
        tenant=event.tenant,
        external_event_id=event.stripe_event_id,
        raw=event.payload,
        source="stripe",
        read_back=False,
        also=also,
        **fields,
    )


def _text(obj: dict, key: str, *, what: str, limit: int | None = None) -> str:
    """A string field of a payload ("" when absent or empty). Anything else — a number, an object, a list, or
    more than ``limit`` characters — fails the event with this reason (ValueError) before a row is written."""
    value = obj.get(key) or ""
    if not isinstance(value, str) or (limit is not None and len(value) > limit):
        shape = "a string" + (f" of at most {limit} characters" if limit is not None else "")
        raise ValueError(f"{what}: {str(value)[:60]!r} is not {shape}")
    return value


def _stripe_id(obj: dict, key: str, *, what: str) -> str:
    """A Stripe object id read from a payload: a string of at most 100 characters ("" when absent)."""
    return _text(obj, key, what=what, limit=100)


def _referral_code(metadata: dict, *keys: str) -> str:
    """The first of ``keys`` the metadata sets (a string, or the event fails with the key named)."""
    for key in keys:
        value = _text(metadata, key, what=f"metadata.{key}")
        if value:
            return value
    return ""


def _referral_metadata(*objects: dict) -> dict:
    for obj in objects:
        metadata = (obj or {}).get("metadata") or {}
        if isinstance(metadata, dict) and any(metadata.get(key) for key in REFERRAL_METADATA_KEYS):
            return metadata
    return {}


def _charge_upsert(
    tenant: Tenant, *, charge_id: str, invoice_id: str, payment_intent_id: str, update: Callable[[StripeCharge], None]
) -> StripeCharge:
    """The charge row matching any of the ids, locked, with ``update`` applied and saved. On first sight it is
    inserted with the update's values at once (keyed by the first id known), in ONE statement that also checks
    no row matches (``_insert_if_unseen``); a row that matches, or a concurrent first insert that won, is read
    locked and this update is applied to it."""
    key = charge_id or payment_intent_id or invoice_id
    fresh = StripeCharge(tenant=tenant, stripe_charge_id=key)
    _fill(fresh, invoice_id=invoice_id, payment_intent_id=payment_intent_id, update=update)
    if _insert_if_unseen(fresh, charge_id=charge_id, invoice_id=invoice_id, payment_intent_id=payment_intent_id):
        return fresh
    match = Q(pk__in=[])
    if charge_id:
        match |= Q(stripe_charge_id=charge_id)
    if invoice_id:
        match |= Q(stripe_invoice_id=invoice_id)
    if payment_intent_id:
        match |= Q(stripe_payment_intent_id=payment_intent_id)
    charge = (
        StripeCharge.objects.for_tenant(tenant).select_for_update(of=("self",)).filter(match).order_by("pk").first()
    )
    if charge is None:  # the row that won the key's insert matches none of the ids (a charge id reused)
        charge = StripeCharge.objects.for_tenant(tenant).select_for_update(of=("self",)).get(stripe_charge_id=key)
    _fill(charge, invoice_id=invoice_id, payment_intent_id=payment_intent_id, update=update)
    charge.save()
    return charge


def _insert_if_unseen(charge: StripeCharge, *, charge_id: str, invoice_id: str, payment_intent_id: str) -> bool:
    """INSERT ``charge`` unless a row of its tenant matches any of the ids (or has its key: ON CONFLICT DO
    NOTHING), in one statement. True when inserted (``charge`` then has its id)."""
    sql, params = _insert_if_unseen_sql(
        charge, charge_id=charge_id, invoice_id=invoice_id, payment_intent_id=payment_intent_id
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return False
    _inserted(charge, row[0])
    return True


def _insert_if_unseen_sql(
    charge: StripeCharge,
    *,
    charge_id: str,
    invoice_id: str,
    payment_intent_id: str,
    of_new_event: bool = False,
) -> tuple[str, list]:
    """The statement of ``_insert_if_unseen`` and its parameters. ``of_new_event``: the statement is the ``also``
    of a conversion event's insert (``conversion_event_receive``): the charge's conversion is that new event,
    and nothing is inserted when the event was not new."""
    meta = StripeCharge._meta
    quote = connection.ops.quote_name
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    columns = ", ".join(quote(field.column) for field in fields)
    given = [field for field in fields if not (of_new_event and field.attname == "conversion_event_id")]
    placeholders = ["%s" if field in given else "(SELECT id FROM new_event)" for field in fields]
    values = db_values(charge, given, connection)
    # Identifiers come from the model's metadata and are quoted; every value is a parameter. An empty id
    # matches nothing, as in the locked read of ``_charge_upsert``.
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) "  # noqa: S608
        f"SELECT {', '.join(placeholders)} WHERE NOT EXISTS ("
        f"SELECT 1 FROM {quote(meta.db_table)} WHERE tenant_id = %s AND ("
        "(%s <> '' AND stripe_charge_id = %s) OR (%s <> '' AND stripe_invoice_id = %s)"
        " OR (%s <> '' AND stripe_payment_intent_id = %s)))"
        + (" AND EXISTS (SELECT 1 FROM new_event)" if of_new_event else "")
        + f" ON CONFLICT (tenant_id, stripe_charge_id) DO NOTHING RETURNING {quote('id')}"
    )
    params = [*values, charge.tenant_id, charge_id, charge_id, invoice_id, invoice_id]
    params += [payment_intent_id, payment_intent_id]
    return sql, params


def _inserted(charge: StripeCharge, pk: int) -> None:
    charge.pk = pk
    charge._state.adding = False
    charge._state.db = connection.alias


def _fill(charge: StripeCharge, *, invoice_id: str, payment_intent_id: str, update) -> None:
    charge.stripe_invoice_id = charge.stripe_invoice_id or invoice_id
    charge.stripe_payment_intent_id = charge.stripe_payment_intent_id or payment_intent_id
    update(charge)
    charge.updated_at = timezone.now()


def _apply_refunds(charge: StripeCharge) -> None:
    """A refunded charge whose payment is known: its referral's rewards are settled again after commit
    (evaluation reads the charge's refunded amount and reduces the payment's rewards in proportion);
    rewards created by hand for that payment (no settlement slot) are reduced here, the same way."""
    if charge.conversion_event_id is None or charge.amount_refunded_minor <= 0 or charge.amount_minor <= 0:
        return
    by_hand = Reward.objects.for_tenant(charge.tenant_id).filter(
        conversion_event_id=charge.conversion_event_id, slot_key=""
    )
    for reward in by_hand.order_by("pk"):
        reward_reduce_for_refund(
            reward=reward,
            refunded_minor=charge.amount_refunded_minor,
            paid_minor=charge.amount_minor,
            actor=system_actor(charge.tenant),
        )
    referral_id = (
        ConversionEvent.objects.for_tenant(charge.tenant_id)
        .filter(pk=charge.conversion_event_id)
        .values_list("referral_id", flat=True)
        .first()
    )
    if referral_id is not None:
        from .tasks import settle_referral

        enqueue_on_commit(settle_referral, referral_id, once=True)


def handle_invoice_paid(event: StripeWebhookEvent) -> None:
    """The invoice's payment as a conversion event and its charge. On first sight of both (a billing run's
    usual case) they are inserted by ONE statement (the charge's insert is the ``also`` of the conversion's,
    issue 15); otherwise — a duplicate or replaced event, a charge already known from a refund — the charge is
    upserted on its own, as ``_charge_upsert`` does."""
    fields, ids = _invoice_paid_parts(event)
    conversion: ConversionEvent | None = None

    def update(charge: StripeCharge) -> None:
        _paid_update(charge, fields)
        if charge.conversion_event_id is None and conversion is not None:
            charge.conversion_event = conversion

    fresh = _fresh_charge(event.tenant, ids, update)
    received = _received_conversion(event, also=_insert_if_unseen_sql(fresh, **ids, of_new_event=True), **fields)
    conversion = received.event
    if received.also_id is not None:  # both new: the charge is the fresh row, its conversion this event
        _inserted(fresh, received.also_id)
        fresh.conversion_event = conversion
        return  # a charge seen for the first time has no refund to apply
    charge = _charge_upsert(event.tenant, **ids, update=update)
    _apply_refunds(charge)


def _invoice_paid_parts(event: StripeWebhookEvent) -> tuple[dict, dict]:
    """What an ``invoice.paid`` event says: its conversion's fields and its charge's three ids (ValueError and
    the like for a malformed payload, before anything is written)."""
    invoice = _object(event)
    paid_at = _timestamp((invoice.get("status_transitions") or {}).get("paid_at"), _created(event))
    metadata = _referral_metadata(invoice, invoice.get("subscription_details") or {})
    paid = int(invoice.get("amount_paid") or 0)
    currency = _text(invoice, "currency", what="currency").upper()
    fields = {
        "kind": ConversionKind.PAYMENT,
        "amount_minor": paid,
        "currency": currency,
        "occurred_at": paid_at,
        "customer_external_id": _text(invoice, "customer", what="customer"),
        "email": _text(invoice, "customer_email", what="customer_email"),
        "referral_code": _referral_code(metadata, "referral_code", "ref"),
        "visitor_id": _text(metadata, "visitor_id", what="metadata.visitor_id"),
    }
    ids = {
        "charge_id": _stripe_id(invoice, "charge", what="charge"),
        "invoice_id": _stripe_id(invoice, "id", what="invoice"),
        "payment_intent_id": _stripe_id(invoice, "payment_intent", what="payment_intent"),
    }
    return fields, ids


def _paid_update(charge: StripeCharge, fields: dict) -> None:
    """What an invoice's payment changes on its charge (its conversion apart)."""
    charge.amount_minor = max(charge.amount_minor, fields["amount_minor"])
    charge.currency = charge.currency or fields["currency"]


def _fresh_charge(tenant: Tenant, ids: dict, update: Callable[[StripeCharge], None]) -> StripeCharge:
    """The charge row a first sight of ``ids`` inserts (keyed by the first id known), ``update`` applied."""
    fresh = StripeCharge(
        tenant=tenant, stripe_charge_id=ids["charge_id"] or ids["payment_intent_id"] or ids["invoice_id"]
    )
    _fill(fresh, invoice_id=ids["invoice_id"], payment_intent_id=ids["payment_intent_id"], update=update)
    return fresh


def _charge_ids_of(event: StripeWebhookEvent) -> list[str]:
    """The Stripe charge, invoice and payment intent ids an event of the chunk names (its handler's; none for
    a payload too malformed to say)."""
    obj = (event.payload.get("data") or {}).get("object") if isinstance(event.payload, dict) else None
    if not isinstance(obj, dict):
        return []
    keys = {"invoice.paid": ("charge", "id", "payment_intent"), "charge.refunded": ("id", "invoice", "payment_intent")}
    return [obj[key] for key in keys.get(event.type, ()) if isinstance(obj.get(key), str) and obj[key]]


def _invoices_paid_together(tenant: Tenant, events: list[StripeWebhookEvent]) -> set[int]:
    """A chunk's ``invoice.paid`` events whose conversion and charge are both new — a billing run's usual
    case — inserted by ONE statement for the whole chunk (issue 15), each exactly as ``handle_invoice_paid``
    inserts them on first sight: the conversion unless its external id is known, the charge unless a row
    matches any of its ids, linked to that conversion. Returns the ids of the events handled so (their outcome
    set, not saved); every other event — malformed, a charge or conversion already known, ids another event of
    the chunk also names (they must see each other in order) — is left to its handler. A statement the
    database refuses (a value too long for its column) writes nothing, and every event goes to its handler."""
    from referrals.services import conversion_event_build
    from referrals.tasks import process_conversion_event

    named: dict[str, int] = {}
    for event in events:
        for stripe_id in set(_charge_ids_of(event)):
            named[stripe_id] = named.get(stripe_id, 0) + 1
    parts = []
    for event in events:
        if event.type != "invoice.paid":
            continue
        try:
            fields, ids = _invoice_paid_parts(event)
            conversion = conversion_event_build(
                tenant=tenant, external_event_id=event.stripe_event_id, raw=event.payload, source="stripe", **fields
            )
        except (ValidationError, KeyError, TypeError, ValueError):
            continue  # its handler fails it with the reason
        if any(named.get(stripe_id, 0) > 1 for stripe_id in ids.values() if stripe_id):
            continue
        parts.append(
            (event, conversion, _fresh_charge(tenant, ids, lambda charge, f=fields: _paid_update(charge, f)), ids)
        )
    if len(parts) < 2:
        return set()
    sql, params = _paid_together_sql(parts)
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
    except DataError as error:
        logger.info("%d invoices left to their handlers one by one: %s", len(parts), error)
        return set()
    inserted = {external_id: (event_id, charge_id) for event_id, external_id, charge_id in rows}
    done: set[int] = set()
    for event, _conversion, _charge, _ids in parts:
        event_id, charge_id = inserted.get(event.stripe_event_id, (None, None))
        if event_id is None:
            continue  # a known conversion: its handler finds it (a duplicate, or a failed one replaced)
        enqueue_on_commit(process_conversion_event, event_id)  # as conversion_event_receive queues a new one
        if charge_id is None:
            continue  # a known charge: its handler links it to the new conversion and applies its refunds
        _handled(event)
        done.add(event.pk)
    return done


def _paid_together_sql(parts: list) -> tuple[str, list]:
    from referrals.services import conversion_events_insert_sql

    """``_invoices_paid_together``'s statement: the conversions' INSERT, then the charges' — each only when its
    conversion was inserted and no row of the tenant has any of its ids — returning (conversion id, its
    external id, the charge's id or NULL)."""
    quote = connection.ops.quote_name
    insert_events, params = conversion_events_insert_sql([conversion for _event, conversion, _charge, _ids in parts])
    meta = StripeCharge._meta
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    given = [field for field in fields if field.attname != "conversion_event_id"]
    typed = ", ".join(f"%s::{field.db_type(connection)}" for field in given)
    rows = []
    for event, _conversion, charge, ids in parts:
        rows.append(f"(%s, %s, %s, %s, {typed})")
        params += [event.stripe_event_id, ids["charge_id"], ids["invoice_id"], ids["payment_intent_id"]]
        params += db_values(charge, given, connection)
    names = ", ".join(f"c_{field.column}" for field in given)
    selected = ", ".join(
        "n.id" if field.attname == "conversion_event_id" else f"c.c_{field.column}" for field in fields
    )
    table = quote(meta.db_table)
    # Identifiers come from the models' metadata and are quoted; every value is a parameter. An empty id
    # matches nothing, as in ``_insert_if_unseen_sql``. One NOT EXISTS per id (not one over an OR of the three):
    # each is an anti-join on that id's index, where the OR made PostgreSQL hash every charge of the workspace
    # and compare each with every row of the chunk.
    unseen = " AND ".join(
        f"NOT EXISTS (SELECT 1 FROM {table} s WHERE s.tenant_id = c.c_tenant_id AND c.{key} <> '' "  # noqa: S608 - names from the model and constants
        f"AND s.{column} = c.{key})"
        for key, column in (
            ("k_charge", "stripe_charge_id"),
            ("k_invoice", "stripe_invoice_id"),
            ("k_intent", "stripe_payment_intent_id"),
        )
    )
    sql = (
        f"WITH new_events AS ({insert_events}), "  # noqa: S608
        f"charge_rows (external_id, k_charge, k_invoice, k_intent, {names}) AS (VALUES {', '.join(rows)}), "
        f"charges AS (INSERT INTO {table} ({', '.join(quote(field.column) for field in fields)}) "
        f"SELECT {selected} FROM charge_rows c JOIN new_events n ON n.external_event_id = c.external_id "
        f"WHERE {unseen} "
        f"ON CONFLICT (tenant_id, stripe_charge_id) DO NOTHING RETURNING {quote('id')}, conversion_event_id) "
        "SELECT n.id, n.external_event_id, ch.id "
        "FROM new_events n LEFT JOIN charges ch ON ch.conversion_event_id = n.id"
    )
    return sql, params


def handle_charge_refunded(event: StripeWebhookEvent) -> None:
    obj = _object(event)
    captured = int(obj.get("amount_captured") or obj.get("amount") or 0)
    refunded = int(obj.get("amount_refunded") or 0)
    currency = _text(obj, "currency", what="currency").upper()

    def update(charge: StripeCharge) -> None:
        charge.amount_minor = max(charge.amount_minor, captured)
        charge.amount_refunded_minor = max(charge.amount_refunded_minor, refunded)
        charge.currency = charge.currency or currency

    charge = _charge_upsert(
        event.tenant,
        charge_id=_stripe_id(obj, "id", what="charge"),
        invoice_id=_stripe_id(obj, "invoice", what="invoice"),
        payment_intent_id=_stripe_id(obj, "payment_intent", what="payment_intent"),
        update=update,
    )
    _apply_refunds(charge)


def handle_subscription_deleted(event: StripeWebhookEvent) -> None:
    subscription = _object(event)
    metadata = _referral_metadata(subscription)
    _conversion(
        event,
        kind=ConversionKind.CANCELLATION,
        occurred_at=_timestamp(subscription.get("ended_at") or subscription.get("canceled_at"), _created(event)),
        customer_external_id=_text(subscription, "customer", what="customer"),
        referral_code=_referral_code(metadata, "referral_code", "ref"),
        currency=_text(subscription, "currency", what="currency").upper(),
    )


def handle_customer_created(event: StripeWebhookEvent) -> None:
    customer = _object(event)
    metadata = _referral_metadata(customer)
    if not metadata:
        return  # a customer nobody referred: nothing to attribute
    _conversion(
        event,
        kind=ConversionKind.SIGN_UP,
        occurred_at=_timestamp(customer.get("created"), _created(event)),
        customer_external_id=_text(customer, "id", what="customer"),
        email=_text(customer, "email", what="email"),
        referral_code=_referral_code(metadata, "referral_code", "ref", "referral"),
        visitor_id=_text(metadata, "visitor_id", what="metadata.visitor_id"),
    )


HANDLERS = {
    "invoice.paid": handle_invoice_paid,
    "charge.refunded": handle_charge_refunded,
    "customer.subscription.deleted": handle_subscription_deleted,
    "customer.created": handle_customer_created,
}
