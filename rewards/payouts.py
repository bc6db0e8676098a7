"""Payouts: gather approved rewards into payouts, pay them through Stripe exactly once, record them.

Exactly once, even with concurrent runs and crashes:

1. ``payout_prepare`` locks the participant row, so concurrent runs for one participant prepare one
   payout; the rewards it covers point at it (a reward is in at most one payout). The payout's
   ``idempotency_key`` and its Stripe destination are stored in that same transaction, before any call.
2. ``payout_execute`` first takes the payout's *execution lease*: a PostgreSQL session advisory lock,
   tried without waiting. A payout whose lease another executor holds is skipped and reported as such
   (``PayoutExecution.skipped``; ``payouts_run`` counts and logs them); the holder pays it, or, if it
   dies, PostgreSQL ends the lease with its session and the next run pays it. With the lease held, three
   steps follow, none inside another's transaction: the claim (a short transaction: attempt counted,
   ``outcome_unknown_since`` set, committed), the Stripe calls with ``<idempotency_key>:<step>`` and no
   transaction open, then the result (a short transaction: the ledger transaction and the rewards paid,
   or the failure with its backoff). A re-run after a crash at any point sends the same key and
   parameters, so Stripe replays the first result instead of paying again.
3. Stripe keeps an idempotency key about a day. An attempt whose answer never arrived and that is older
   than ``STRIPE_IDEMPOTENCY_WINDOW_SECONDS`` is therefore not replayed blindly: the next attempt looks
   the object up at Stripe first (transfers by ``transfer_group`` = ``payout-<id>``, balance transactions,
   coupons and promotion codes by ``metadata.payout``) and records the one found; it creates one only
   when none exists.

Lock discipline (docs/ledger.md, "Payouts"): a lock locks only its row (``of=("self",)``), as
``FOR NO KEY UPDATE`` (the lock an UPDATE takes anyway, so rows referencing it can still be inserted);
one participant, payout and its rewards at a time, in the order participant → payout → rewards (ids
ascending); no row lock is held while Stripe is called.

Ledger posting of a payout (idempotency key ``payout:<id>``):
``Dr payable gross; Cr receivable netted (clawbacks offset); Cr paid amount (what was sent)``.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import stripe
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction
from django.db.models import Sum
from django.utils import timezone

from programs.models import Participant
from referral_platform.celery import enqueue_on_commit
from referral_platform.hooks import hooks
from referral_platform.money import format_money
from referral_platform.state import transition
from referral_platform.tenancy.actors import Actor, system_actor
from referral_platform.tenancy.models import Tenant
from referral_platform.tenancy.services import audit_record

from .ledger import Line, ledger_post, participant_account, participant_balances
from .models import (
    AccountKind,
    EntryKind,
    ParticipantStripeProfile,
    Payout,
    PayoutMethod,
    PayoutStatus,
    Reward,
    RewardKind,
    RewardStatus,
)
from .selectors import minimum_payout_minor, participants_with_unpaid_rewards, payouts_due
from .services import reward_mark_paid
from .stripe_api import client_for

logger = logging.getLogger(__name__)

UNFINISHED = (PayoutStatus.PENDING, PayoutStatus.PROCESSING, PayoutStatus.FAILED, PayoutStatus.ABANDONED)
EXECUTABLE = (PayoutStatus.PENDING, PayoutStatus.PROCESSING, PayoutStatus.FAILED)
# Stripe errors after which the call may have executed at Stripe: no answer (timeout, dropped connection),
# a server error, or a key already used differently / in use. Any other error is a definite "not done".
OUTCOME_UNKNOWN_ERRORS = (stripe.APIConnectionError, stripe.APIError, stripe.IdempotencyError)
METHOD_FOR_KIND = {
    RewardKind.CASH: PayoutMethod.TRANSFER,
    RewardKind.CREDIT: PayoutMethod.CUSTOMER_BALANCE,
    RewardKind.COUPON: PayoutMethod.COUPON,
    RewardKind.MANUAL: PayoutMethod.MANUAL,
}


def _profile(participant: Participant) -> ParticipantStripeProfile | None:
    return ParticipantStripeProfile.objects.for_tenant(participant.tenant_id).filter(participant=participant).first()


def _unfinished(participant: Participant, currency: str):
    return Payout.objects.for_tenant(participant.tenant_id).filter(
        participant=participant, currency=currency, status__in=UNFINISHED
    )


# --- prepare -----------------------------------------------------------------------------------


@transaction.atomic
def payout_prepare(*, participant: Participant, now: datetime | None = None) -> list[Payout]:
    """Gather the participant's approved, unpaid rewards into payouts (one per method and currency for
    cash and credit, one per reward for coupons and manual rewards). Cash and credit payouts offset
    clawbacks the participant owes and wait until they reach the program's minimum payout."""
    now = now or timezone.now()
    participant = (
        Participant.objects.select_for_update(of=("self",), no_key=True)
        .select_related("tenant", "program")
        .get(pk=participant.pk)
    )
    rewards = list(
        Reward.objects.for_tenant(participant.tenant)
        .select_for_update(of=("self",), no_key=True)
        .filter(participant=participant, status=RewardStatus.APPROVED, payout__isnull=True)
        .order_by("pk")
    )
    if not rewards:
        return []
    profile = _profile(participant)
    minimum = minimum_payout_minor(participant.program)
    groups: dict[tuple[str, str], list[Reward]] = defaultdict(list)
    for reward in rewards:
        groups[(reward.kind, reward.currency)].append(reward)

    created: list[Payout] = []
    for (kind, currency), members in groups.items():
        if kind in (RewardKind.COUPON, RewardKind.MANUAL):
            for reward in members:
                detail = {"customer": profile.customer_id if profile else ""}
                created.append(_create(participant, METHOD_FOR_KIND[kind], currency, [reward], 0, detail))
            continue
        destination = (
            (profile.connected_account_id if kind == RewardKind.CASH else profile.customer_id) if profile else ""
        )
        if not destination:
            continue  # waits for Connect onboarding / the customer id
        gross = sum(r.amount_minor - r.reversed_minor for r in members)
        netted = min(max(_receivable_available(participant, currency), 0), gross)
        amount = gross - netted
        if 0 < amount < minimum:
            continue
        method = METHOD_FOR_KIND[kind] if amount > 0 else PayoutMethod.NETTING
        key = "destination" if kind == RewardKind.CASH else "customer"
        created.append(_create(participant, method, currency, members, netted, {key: destination}))
    return created


def _receivable_available(participant: Participant, currency: str) -> int:
    """Clawbacks owed and not yet offset by an unfinished payout."""
    owed = participant_balances(participant.tenant, participant=participant, currency=currency)["receivable"]
    reserved = _unfinished(participant, currency).aggregate(total=Sum("netted_minor"))["total"] or 0
    return owed - reserved


def _create(participant, method, currency, rewards, netted, detail) -> Payout:
    gross = sum(r.amount_minor - r.reversed_minor for r in rewards)
    payable = participant_balances(participant.tenant, participant=participant, currency=currency)["payable"]
    reserved = _unfinished(participant, currency).aggregate(total=Sum("gross_minor"))["total"] or 0
    if gross > payable - reserved:
        raise RuntimeError(
            f"payout of {format_money(gross, currency)} would exceed the payable balance "
            f"{format_money(payable, currency)} less {format_money(reserved, currency)} already in payouts"
        )
    payout = Payout.objects.create(
        tenant=participant.tenant,
        program=participant.program,
        participant=participant,
        method=method,
        currency=currency,
        gross_minor=gross,
        netted_minor=netted,
        amount_minor=gross - netted,
        idempotency_key=Payout.new_idempotency_key(),
        stripe_detail=detail,
    )
    Reward.objects.filter(pk__in=[r.pk for r in rewards]).update(payout=payout)
    audit_record(
        tenant=participant.tenant,
        actor=system_actor(participant.tenant),
        action="payout.created",
        obj=payout,
        to_state=payout.status,
        data={"rewards": [r.pk for r in rewards], "gross_minor": gross, "netted_minor": netted},
    )
    return payout


# --- execute -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PayoutExecution:
    """What one ``payout_execute`` call did, and the payout as it is now. ``outcome``: ``paid`` or
    ``failed`` (this call attempted it), ``skipped`` (still due, but another executor held it: its lease
    or its row), ``not_due`` (manual, paid, backing off, or finished by someone else meanwhile)."""

    payout: Payout
    outcome: str

    @property
    def skipped(self) -> bool:
        return self.outcome == "skipped"


def execution_lease_key(payout_id: int) -> str:
    """The text whose ``hashtextextended(key, 0)`` is the advisory lock of the payout's execution lease."""
    return f"rewards.payout:{payout_id}"


@contextmanager
def _execution_lease(payout_id: int) -> Iterator[bool]:
    """Try the payout's execution lease (a session advisory lock: it outlives the short transactions of
    one execution and ends with the session if the process dies). Yields whether it is ours."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [execution_lease_key(payout_id)])
        held = cursor.fetchone()[0]
    try:
        yield held
    finally:
        if held:
            try:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [execution_lease_key(payout_id)]
                    )
            except DatabaseError:  # the session is gone or its transaction broken: the lease goes with it
                logger.warning("payout %s: could not release the execution lease", payout_id, exc_info=True)


def _lease_or_refuse(payout: Payout) -> None:
    """For a marketer's action on a payout: the execution lease for this transaction, or a refusal while
    a payout run is paying it (a Stripe call may be in flight)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", [execution_lease_key(payout.pk)])
        if not cursor.fetchone()[0]:
            raise ValidationError({"status": "A payout run is paying this payout right now; try again in a minute."})


def _due(payout_id: int, now: datetime):
    return (
        Payout.objects.filter(pk=payout_id, status__in=EXECUTABLE)
        .exclude(method=PayoutMethod.MANUAL)
        .exclude(next_attempt_at__gt=now)
    )


def payout_execute(*, payout: Payout, now: datetime | None = None) -> PayoutExecution:
    """Pay one due payout through Stripe (exactly once; see the module docstring).

    Manual payouts, and payouts no longer due (paid meanwhile, backing off), are returned untouched. A
    payout another executor holds is returned with ``skipped``: that executor pays it, or the next run
    does. A Stripe error is recorded on the payout (``failed`` with a backoff, or ``abandoned``).
    """
    now = now or timezone.now()
    if payout.method == PayoutMethod.MANUAL:
        return PayoutExecution(payout, "not_due")
    with _execution_lease(payout.pk) as leased:
        if not leased:
            return _skipped(payout.pk, now)
        claimed = _claim(payout.pk, now)
        if claimed is None:
            return _skipped(payout.pk, now)
        payout, look_up = claimed
        made: list[str] = []
        try:
            object_id, detail = _call_stripe(payout, look_up=look_up, made=made)
        except (stripe.StripeError, ValidationError) as error:
            # A definite refusal of the first call leaves nothing at Stripe; anything else may have.
            nothing_made = not made and not isinstance(error, OUTCOME_UNKNOWN_ERRORS)
            return _attempted(_fail(payout, error, now, nothing_made=nothing_made))
        return _attempted(_succeed(payout, now=now, stripe_object_id=object_id, detail=detail))


def _subscription_discount_apply(client, *, customer: str, coupon_id: str, key: str) -> str | None:
    """Free months / a renewal discount reach the customer's active subscription at once: the coupon is added
    to its discounts (those it has are kept). Idempotent: a subscription that already carries the coupon is
    left alone, and the update carries ``<key>:subscription``. Returns the subscription id, or None when the
    customer has no active subscription (the promotion code stays for their next checkout)."""
    subscriptions = client.v1.subscriptions.list({"customer": customer, "status": "active", "limit": 1}).data
    if not subscriptions:
        return None
    subscription = subscriptions[0]
    discounts = list(subscription.to_dict().get("discounts") or [])
    ids = [d if isinstance(d, str) else d.get("id") for d in discounts]
    coupons = [None if isinstance(d, str) else (d.get("coupon") or {}).get("id") for d in discounts]
    if coupon_id not in coupons:
        client.v1.subscriptions.update(
            subscription.id,
            {"discounts": [*({"discount": i} for i in ids if i), {"coupon": coupon_id}]},
            {"idempotency_key": f"{key}:subscription"},
        )
    return subscription.id


def _skipped(payout_id: int, now: datetime) -> PayoutExecution:
    """Not attempted: skipped if still due (someone else holds it), else simply no longer due."""
    current = Payout.objects.get(pk=payout_id)
    return PayoutExecution(current, "skipped" if _due(payout_id, now).exists() else "not_due")


def _attempted(payout: Payout) -> PayoutExecution:
    if payout.status == PayoutStatus.PAID:
        return PayoutExecution(payout, "paid")
    if payout.status in (PayoutStatus.FAILED, PayoutStatus.ABANDONED):
        return PayoutExecution(payout, "failed")
    return PayoutExecution(payout, "not_due")  # finished by a marketer's action meanwhile


@transaction.atomic
def _claim(payout_id: int, now: datetime) -> tuple[Payout, bool] | None:
    """Count the attempt and mark its outcome unknown until an answer is recorded (committed before any
    call). Returns the payout and whether Stripe must be asked what an earlier attempt did; None when
    the payout is no longer due or its row is locked (a marketer's action in progress)."""
    locked = (
        _due(payout_id, now)
        .select_for_update(of=("self",), no_key=True, skip_locked=True)
        .select_related("tenant", "participant", "program")
        .first()
    )
    if locked is None:
        return None
    window = timedelta(seconds=settings.STRIPE_IDEMPOTENCY_WINDOW_SECONDS)
    look_up = locked.outcome_unknown_since is not None and now - locked.outcome_unknown_since >= window
    transition(
        locked,
        to=PayoutStatus.PROCESSING,
        actor=system_actor(locked.tenant),
        changes={"attempts": locked.attempts + 1, "outcome_unknown_since": locked.outcome_unknown_since or now},
        locked=locked,
    )
    return locked, look_up


def _relock(payout: Payout) -> Payout | None:
    """The payout row locked for recording an attempt's result (participant first: the lock order), or
    None if something else finished it meanwhile (a marketer's action)."""
    Participant.objects.select_for_update(of=("self",), no_key=True).filter(pk=payout.participant_id).first()
    return (
        Payout.objects.select_for_update(of=("self",), no_key=True)
        .select_related("tenant", "participant", "program")
        .filter(pk=payout.pk, status=PayoutStatus.PROCESSING)
        .first()
    )


@transaction.atomic
def _succeed(payout: Payout, *, now: datetime, stripe_object_id: str, detail: dict) -> Payout:
    locked = _relock(payout)
    if locked is None:
        return Payout.objects.get(pk=payout.pk)
    _complete(locked, actor=system_actor(locked.tenant), now=now, stripe_object_id=stripe_object_id, detail=detail)
    return locked


@transaction.atomic
def _fail(payout: Payout, error: Exception, now: datetime, *, nothing_made: bool) -> Payout:
    locked = _relock(payout)
    if locked is None:
        return Payout.objects.get(pk=payout.pk)
    if nothing_made:
        locked.outcome_unknown_since = None
    _record_failure(locked, error, now)
    return locked


def _transfer_group(payout: Payout) -> str:
    return f"payout-{payout.pk}"


def _made_for(obj, payout: Payout) -> bool:
    return (obj.to_dict().get("metadata") or {}).get("payout") == str(payout.pk)


def _first_made_for(objects: Iterable, payout: Payout):
    return next((obj for obj in objects if _made_for(obj, payout)), None)


def _call_stripe(payout: Payout, *, look_up: bool = False, made: list[str] | None = None) -> tuple[str, dict]:
    """The Stripe calls of one payout, each with ``<payout key>:<step>``; nothing for netting. ``made``
    collects the steps whose object exists at Stripe (a later step may still fail).

    With ``look_up`` (an earlier attempt's outcome is unknown and its key may be forgotten), each step
    first looks for the object that attempt made (``metadata.payout``, and the transfer group) and uses
    it; only a step with nothing found is sent.
    """
    if payout.method == PayoutMethod.NETTING:
        return "", {}
    client = client_for(payout.tenant)
    key = payout.idempotency_key
    metadata = {"payout": str(payout.pk), "participant": str(payout.participant_id), "tenant": payout.tenant.slug}
    description = f"Referral rewards, payout #{payout.pk}"
    found: list[str] = []
    made = [] if made is None else made

    def find(step: str, listing: Callable[[], Iterable]):
        obj = _first_made_for(listing(), payout) if look_up else None
        if obj is not None:
            found.append(step)
            logger.warning("payout %s: %s %s found at Stripe after an unknown outcome", payout.pk, step, obj.id)
        return obj

    def looked_up(detail: dict) -> dict:
        return {**detail, "found_at_stripe": found} if found else detail

    if payout.method == PayoutMethod.TRANSFER:
        destination = payout.stripe_detail["destination"]
        transfer = find(
            "transfer",
            lambda: (
                t
                for t in client.v1.transfers.list(
                    {"transfer_group": _transfer_group(payout), "limit": 100}
                ).auto_paging_iter()
                if t.destination == destination
            ),
        ) or client.v1.transfers.create(
            {
                "amount": payout.amount_minor,
                "currency": payout.currency.lower(),
                "destination": destination,
                "transfer_group": _transfer_group(payout),
                "description": description,
                "metadata": metadata,
            },
            {"idempotency_key": f"{key}:transfer"},
        )
        made.append("transfer")
        return transfer.id, looked_up({"transfer": transfer.id})
    if payout.method == PayoutMethod.CUSTOMER_BALANCE:
        customer = payout.stripe_detail["customer"]
        entry = find(
            "customer_balance_transaction",
            lambda: client.v1.customers.balance_transactions.list(customer, {"limit": 100}).auto_paging_iter(),
        ) or client.v1.customers.balance_transactions.create(
            customer,
            {
                "amount": -payout.amount_minor,  # negative: a credit the customer's next invoices use up
                "currency": payout.currency.lower(),
                "description": description,
                "metadata": metadata,
            },
            {"idempotency_key": f"{key}:balance"},
        )
        made.append("customer_balance_transaction")
        return entry.id, looked_up({"balance_transaction": entry.id, "customer": customer})
    if payout.method == PayoutMethod.COUPON:
        reward = payout.rewards.order_by("pk").first()
        params: dict = {
            "max_redemptions": 1,
            "metadata": metadata,
            "name": (reward.description or "Referral reward")[:40],
        }
        if reward.coupon_percent_off:
            params["percent_off"] = reward.coupon_percent_off
        else:
            params["amount_off"] = payout.amount_minor
            params["currency"] = payout.currency.lower()
        if reward.coupon_duration_months:
            params.update(duration="repeating", duration_in_months=reward.coupon_duration_months)
        else:
            params["duration"] = "once"  # % off the next renewal
        # Made after the payout row (five minutes' slack for the clocks): no need to read older coupons.
        since = int(payout.created_at.timestamp()) - 300
        coupon = find(
            "coupon", lambda: client.v1.coupons.list({"created": {"gte": since}, "limit": 100}).auto_paging_iter()
        ) or client.v1.coupons.create(params, {"idempotency_key": f"{key}:coupon"})
        made.append("coupon")
        detail = {"coupon": coupon.id}
        customer = payout.stripe_detail.get("customer")
        if customer:
            code = find(
                "promotion_code",
                lambda: client.v1.promotion_codes.list(
                    {"coupon": coupon.id, "customer": customer, "limit": 100}
                ).auto_paging_iter(),
            ) or client.v1.promotion_codes.create(
                {
                    "promotion": {"type": "coupon", "coupon": coupon.id},
                    "customer": customer,
                    "max_redemptions": 1,
                    "metadata": metadata,
                },
                {"idempotency_key": f"{key}:promotion_code"},
            )
            made.append("promotion_code")
            detail.update(promotion_code=code.code, customer=customer)
            subscription = _subscription_discount_apply(client, customer=customer, coupon_id=coupon.id, key=key)
            if subscription is not None:
                made.append("subscription_discount")
                detail["subscription"] = subscription
        return coupon.id, looked_up(detail)
    raise ValidationError({"method": f"Payout method {payout.method} is not paid through Stripe."})


def _record_failure(payout: Payout, error: Exception, now: datetime) -> None:
    message = str(getattr(error, "user_message", None) or error) or type(error).__name__
    payout.last_error = f"{type(error).__name__}: {message}"[:2000]
    abandoned = payout.attempts >= settings.PAYOUT_MAX_ATTEMPTS
    transition(
        payout,
        to=PayoutStatus.ABANDONED if abandoned else PayoutStatus.FAILED,
        actor=system_actor(payout.tenant),
        reason=payout.last_error,
        changes={
            "last_error": payout.last_error,
            "next_attempt_at": None if abandoned else now + retry_delay(payout.attempts),
            "outcome_unknown_since": payout.outcome_unknown_since,
        },
        locked=payout,
    )
    logger.warning("payout %s failed (attempt %s): %s", payout.pk, payout.attempts, payout.last_error)
    hooks.payout_changed(payout=payout, change="abandoned" if abandoned else "failed")


def retry_delay(attempts: int) -> timedelta:
    """Exponential backoff: base, 2*base, 4*base … capped."""
    seconds = settings.PAYOUT_RETRY_BASE_SECONDS * 2 ** max(attempts - 1, 0)
    return timedelta(seconds=min(seconds, settings.PAYOUT_RETRY_MAX_SECONDS))


def _complete(payout: Payout, *, actor: Actor | str, now: datetime, stripe_object_id: str, detail: dict) -> None:
    """Record a payout as done: ledger transaction, payout paid, its rewards paid. Inside the locks of the
    participant and the payout (taken in that order)."""
    if payout.gross_minor > 0:
        lines = [
            Line(participant_account(payout.participant, AccountKind.PAYABLE, payout.currency), payout.gross_minor)
        ]
        if payout.netted_minor:
            lines.append(
                Line(
                    participant_account(payout.participant, AccountKind.RECEIVABLE, payout.currency),
                    -payout.netted_minor,
                )
            )
        if payout.amount_minor:
            lines.append(
                Line(participant_account(payout.participant, AccountKind.PAID, payout.currency), -payout.amount_minor)
            )
        ledger_post(
            tenant=payout.tenant,
            idempotency_key=f"payout:{payout.pk}",
            kind=EntryKind.CREDIT if payout.method == PayoutMethod.CUSTOMER_BALANCE else EntryKind.PAYOUT,
            lines=lines,
            memo=f"Payout #{payout.pk} ({payout.get_method_display()}) {stripe_object_id}".strip(),
            payout=payout,
        )
    transition(
        payout,
        to=PayoutStatus.PAID,
        actor=actor,
        at=now,
        data={"stripe_object_id": stripe_object_id},
        changes={
            "stripe_object_id": stripe_object_id,
            "stripe_detail": {**payout.stripe_detail, **detail},
            "last_error": "",
            "next_attempt_at": None,
            "outcome_unknown_since": None,
        },
        locked=payout,
    )
    for reward in Reward.objects.select_for_update(of=("self",), no_key=True).filter(payout=payout).order_by("pk"):
        reward_mark_paid(reward=reward, actor=actor, now=now)
    hooks.payout_changed(payout=payout, change="paid")


@transaction.atomic
def payout_mark_fulfilled(
    *, payout: Payout, actor: Actor, note: str = "", reference: str = "", now: datetime | None = None
) -> Payout:
    """A marketer records a payout as done outside the platform: a manual reward handed over (gift
    card, swag, beta access), or a Stripe payout made by hand (then ``reference`` names it)."""
    now = now or timezone.now()
    if not actor.can_write:
        raise ValidationError({"actor": "Viewers cannot fulfil payouts."})
    Participant.objects.select_for_update(of=("self",), no_key=True).filter(pk=payout.participant_id).first()
    _lease_or_refuse(payout)
    locked = (
        Payout.objects.select_for_update(of=("self",), no_key=True)
        .select_related("tenant", "participant", "program")
        .get(pk=payout.pk)
    )
    if locked.method != PayoutMethod.MANUAL and not reference.strip():
        raise ValidationError({"reference": "Give the reference of the payment made outside the platform."})
    if locked.status == PayoutStatus.PAID:
        raise ValidationError({"status": "This payout is already paid."})
    locked.fulfilment_note = note.strip()
    locked.save(update_fields=["fulfilment_note"])
    _complete(locked, actor=actor, now=now, stripe_object_id=reference.strip(), detail={"fulfilled_by": actor.label})
    return locked


@transaction.atomic
def payout_retry_now(*, payout: Payout, actor: Actor, now: datetime | None = None) -> Payout:
    """Queue a failed or abandoned payout for its next attempt now (the admin's "retry" action)."""
    now = now or timezone.now()
    _lease_or_refuse(payout)
    locked = Payout.objects.select_for_update(of=("self",), no_key=True).select_related("tenant").get(pk=payout.pk)
    if locked.status == PayoutStatus.ABANDONED:
        transition(
            locked,
            to=PayoutStatus.FAILED,
            actor=actor,
            reason="retry requested",
            changes={"next_attempt_at": now},
            locked=locked,
        )
    elif locked.status == PayoutStatus.FAILED:
        locked.next_attempt_at = now
        locked.save(update_fields=["next_attempt_at"])
    else:
        raise ValidationError({"status": f"Only failed payouts can be retried; this one is {locked.status}."})
    return locked


@transaction.atomic
def payout_retry_queue(*, payout: Payout, actor: Actor, now: datetime | None = None) -> Payout:
    """``payout_retry_now``, and the payout's execution queued once this transaction commits."""
    from .tasks import payout_execute as payout_execute_task

    payout = payout_retry_now(payout=payout, actor=actor, now=now)
    enqueue_on_commit(payout_execute_task, payout.pk)
    return payout


def payouts_run_for_participant(*, participant: Participant, now: datetime | None = None) -> dict[str, int]:
    """Prepare the participant's payouts, then execute every one of theirs that is due (see ``payouts_run``)."""
    now = now or timezone.now()
    prepared = len(payout_prepare(participant=participant, now=now))
    return _execute_due(payouts_due(participant.tenant, now=now).filter(participant=participant), prepared, now)


def payouts_run(*, tenant: Tenant | None = None, now: datetime | None = None) -> dict[str, int]:
    """The scheduled run: prepare payouts for everyone with approved rewards, then execute what is due.

    Returns how many payouts it prepared, paid, saw fail, and skipped because another run held them (that
    run pays them; if it dies, the next run does). Concurrent runs are safe: each payout is prepared once
    and paid once, whichever runs overlap.
    """
    now = now or timezone.now()
    prepared = 0
    for participant in participants_with_unpaid_rewards(tenant):
        prepared += len(payout_prepare(participant=participant, now=now))
    return _execute_due(payouts_due(tenant, now=now), prepared, now)


def _execute_due(due, prepared: int, now: datetime) -> dict[str, int]:
    outcomes = Counter()
    skipped = []
    for payout in due:
        execution = payout_execute(payout=payout, now=now)
        outcomes[execution.outcome] += 1
        if execution.skipped:
            skipped.append(payout.pk)
    summary = {
        "prepared": prepared,
        "paid": outcomes["paid"],
        "failed": outcomes["failed"],
        "skipped": outcomes["skipped"],
    }
    if skipped:
        logger.info("payout run: %s; skipped, held by another run: %s", summary, skipped)
    else:
        logger.info("payout run: %s", summary)
    return summary


# --- Connect onboarding ------------------------------------------------------------------------


def connect_onboarding_link_create(*, participant: Participant, actor: Actor, refresh_url: str, return_url: str) -> str:
    """An onboarding link for the participant's Stripe Connect account (the account is created once:
    its creation carries an idempotency key derived from the participant)."""
    tenant = participant.tenant
    client = client_for(tenant)
    with transaction.atomic():
        profile, _ = ParticipantStripeProfile.objects.get_or_create(tenant=tenant, participant=participant)
    if not profile.connected_account_id:
        account = client.v1.accounts.create(
            {
                "type": "express",
                "email": participant.email,
                "metadata": {"participant": str(participant.pk), "tenant": tenant.slug},
            },
            {"idempotency_key": f"connect-account:{tenant.pk}:{participant.pk}"},
        )
        with transaction.atomic():
            updated = ParticipantStripeProfile.objects.filter(pk=profile.pk, connected_account_id="").update(
                connected_account_id=account.id
            )
            profile.refresh_from_db()
            if updated:
                audit_record(
                    tenant=tenant,
                    actor=actor,
                    action="stripe.connect_account_created",
                    obj=profile,
                    data={"account": account.id},
                )
    link = client.v1.account_links.create(
        {
            "account": profile.connected_account_id,
            "refresh_url": refresh_url,
            "return_url": return_url,
            "type": "account_onboarding",
        }
    )
    ParticipantStripeProfile.objects.filter(pk=profile.pk).update(onboarding_link_created_at=timezone.now())
    return link.url


@transaction.atomic
def payouts_pay_now(*, participant: Participant, actor: Actor) -> list[Payout]:
    """Pay ``participant``'s approved rewards now instead of at the next scheduled run (the admin's "pay
    approved rewards now"): gather them into payouts (``payout_prepare``, the same rules as the run) and
    queue each payout's execution once this commits. Only this participant's rewards are touched."""
    from .tasks import payout_execute as payout_execute_task

    payouts = payout_prepare(participant=participant)
    for payout in payouts:
        audit_record(
            tenant=participant.tenant,
            actor=actor,
            action="payout.paid_now",
            obj=payout,
            to_state=payout.status,
            reason="pay approved rewards now",
        )
        enqueue_on_commit(payout_execute_task, payout.pk)
    return payouts
