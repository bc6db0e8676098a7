"""Payouts: gather approved rewards into payouts, pay them through Stripe exactly once, record them.

Exactly once, even with concurrent runs and crashes:

1. ``payout_prepare`` locks the participant row, so concurrent runs for one participant prepare one
   payout; the rewards it covers point at it (a reward is in at most one payout). The payout's
   ``idempotency_key`` and its Stripe destination are stored in that same transaction, before any call.
2. ``payout_execute`` counts the attempt (committed), then takes the payout row lock with SKIP LOCKED
   (one executor at a time; others return) and calls Stripe with ``<idempotency_key>:<step>``. A
   re-run after a crash at any point sends the same key and parameters, so Stripe replays the first
   result instead of paying again. Success posts the ledger transaction and marks the rewards paid in
   the same transaction; a failure is recorded (attempts, last error, next attempt with backoff).

Ledger posting of a payout (idempotency key ``payout:<id>``):
``Dr payable gross; Cr receivable netted (clawbacks offset); Cr paid amount (what was sent)``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta

import stripe
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from programs.models import Participant
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

ALLOWED_MOVES: dict[str, frozenset[str]] = {
    PayoutStatus.PENDING: frozenset({PayoutStatus.PROCESSING, PayoutStatus.PAID}),
    PayoutStatus.PROCESSING: frozenset(
        {PayoutStatus.PROCESSING, PayoutStatus.PAID, PayoutStatus.FAILED, PayoutStatus.ABANDONED}
    ),
    PayoutStatus.FAILED: frozenset({PayoutStatus.PROCESSING, PayoutStatus.PAID}),
    PayoutStatus.ABANDONED: frozenset({PayoutStatus.FAILED, PayoutStatus.PAID}),
    PayoutStatus.PAID: frozenset(),
}
UNFINISHED = (PayoutStatus.PENDING, PayoutStatus.PROCESSING, PayoutStatus.FAILED, PayoutStatus.ABANDONED)
METHOD_FOR_KIND = {
    RewardKind.CASH: PayoutMethod.TRANSFER,
    RewardKind.CREDIT: PayoutMethod.CUSTOMER_BALANCE,
    RewardKind.COUPON: PayoutMethod.COUPON,
    RewardKind.MANUAL: PayoutMethod.MANUAL,
}


def _move(payout: Payout, to_status: str, *, actor: Actor | str, reason: str = "", data=None) -> None:
    from_status = payout.status
    if to_status not in ALLOWED_MOVES[from_status]:
        raise ValidationError({"status": f"A {from_status} payout cannot become {to_status}."})
    payout.status = to_status
    if from_status != to_status:
        audit_record(
            tenant=payout.tenant,
            actor=actor,
            action=f"payout.{to_status}",
            obj=payout,
            from_state=from_status,
            to_state=to_status,
            reason=reason,
            data=data,
        )


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
        Participant.objects.select_for_update(of=("self",)).select_related("tenant", "program").get(pk=participant.pk)
    )
    rewards = list(
        Reward.objects.for_tenant(participant.tenant)
        .select_for_update()
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
            f"payout of {gross} would exceed the payable balance {payable} less {reserved} already in payouts"
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


def payout_execute(*, payout: Payout, now: datetime | None = None) -> Payout:
    """Pay one payout through Stripe (exactly once; see the module docstring). Returns its state.

    Manual payouts are left for a marketer. A payout locked by another executor is skipped.
    """
    now = now or timezone.now()
    if payout.method == PayoutMethod.MANUAL:
        return payout
    with transaction.atomic():
        claimed = (
            Payout.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("tenant")
            .filter(pk=payout.pk, status__in=[PayoutStatus.PENDING, PayoutStatus.PROCESSING, PayoutStatus.FAILED])
            .first()
        )
        if claimed is None:
            return Payout.objects.get(pk=payout.pk)
        _move(claimed, PayoutStatus.PROCESSING, actor=system_actor(claimed.tenant))
        claimed.attempts += 1
        claimed.save(update_fields=["status", "attempts"])

    # Wait for the row (no skip_locked): another executor may hold it only for its short claim step
    # above, and skipping here could leave a claimed payout unpaid by every concurrent run. Once the
    # lock is ours, the status filter lets exactly one executor make the Stripe call.
    with transaction.atomic():
        locked = (
            Payout.objects.select_for_update(of=("self",))
            .select_related("tenant", "participant", "program")
            .filter(pk=payout.pk, status=PayoutStatus.PROCESSING)
            .first()
        )
        if locked is None:
            return Payout.objects.get(pk=payout.pk)
        try:
            object_id, detail = _call_stripe(locked)
        except (stripe.StripeError, ValidationError) as error:
            _record_failure(locked, error, now)
            return locked
        _complete(locked, actor=system_actor(locked.tenant), now=now, stripe_object_id=object_id, detail=detail)
        return locked


def _call_stripe(payout: Payout) -> tuple[str, dict]:
    """The Stripe calls of one payout, each with ``<payout key>:<step>``; nothing for netting."""
    if payout.method == PayoutMethod.NETTING:
        return "", {}
    client = client_for(payout.tenant)
    key = payout.idempotency_key
    metadata = {"payout": str(payout.pk), "participant": str(payout.participant_id), "tenant": payout.tenant.slug}
    description = f"Referral rewards, payout #{payout.pk}"
    if payout.method == PayoutMethod.TRANSFER:
        transfer = client.v1.transfers.create(
            {
                "amount": payout.amount_minor,
                "currency": payout.currency.lower(),
                "destination": payout.stripe_detail["destination"],
                "transfer_group": f"payout-{payout.pk}",
                "description": description,
                "metadata": metadata,
            },
            {"idempotency_key": f"{key}:transfer"},
        )
        return transfer.id, {"transfer": transfer.id}
    if payout.method == PayoutMethod.CUSTOMER_BALANCE:
        customer = payout.stripe_detail["customer"]
        entry = client.v1.customers.balance_transactions.create(
            customer,
            {
                "amount": -payout.amount_minor,  # negative: a credit the customer's next invoices use up
                "currency": payout.currency.lower(),
                "description": description,
                "metadata": metadata,
            },
            {"idempotency_key": f"{key}:balance"},
        )
        return entry.id, {"balance_transaction": entry.id, "customer": customer}
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
        coupon = client.v1.coupons.create(params, {"idempotency_key": f"{key}:coupon"})
        detail = {"coupon": coupon.id}
        customer = payout.stripe_detail.get("customer")
        if customer:
            code = client.v1.promotion_codes.create(
                {
                    "promotion": {"type": "coupon", "coupon": coupon.id},
                    "customer": customer,
                    "max_redemptions": 1,
                    "metadata": metadata,
                },
                {"idempotency_key": f"{key}:promotion_code"},
            )
            detail.update(promotion_code=code.code, customer=customer)
        return coupon.id, detail
    raise ValidationError({"method": f"Payout method {payout.method} is not paid through Stripe."})


def _record_failure(payout: Payout, error: Exception, now: datetime) -> None:
    message = str(getattr(error, "user_message", None) or error) or type(error).__name__
    payout.last_error = f"{type(error).__name__}: {message}"[:2000]
    if payout.attempts >= settings.PAYOUT_MAX_ATTEMPTS:
        _move(payout, PayoutStatus.ABANDONED, actor=system_actor(payout.tenant), reason=payout.last_error)
        payout.next_attempt_at = None
    else:
        _move(payout, PayoutStatus.FAILED, actor=system_actor(payout.tenant), reason=payout.last_error)
        payout.next_attempt_at = now + retry_delay(payout.attempts)
    payout.save(update_fields=["status", "last_error", "next_attempt_at"])
    logger.warning("payout %s failed (attempt %s): %s", payout.pk, payout.attempts, payout.last_error)


def retry_delay(attempts: int) -> timedelta:
    """Exponential backoff: base, 2*base, 4*base … capped."""
    seconds = settings.PAYOUT_RETRY_BASE_SECONDS * 2 ** max(attempts - 1, 0)
    return timedelta(seconds=min(seconds, settings.PAYOUT_RETRY_MAX_SECONDS))


def _complete(payout: Payout, *, actor: Actor | str, now: datetime, stripe_object_id: str, detail: dict) -> None:
    """Record a payout as done: ledger transaction, payout paid, its rewards paid. Inside the lock."""
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
    _move(payout, PayoutStatus.PAID, actor=actor, data={"stripe_object_id": stripe_object_id})
    payout.paid_at = now
    payout.stripe_object_id = stripe_object_id
    payout.stripe_detail = {**payout.stripe_detail, **detail}
    payout.last_error = ""
    payout.next_attempt_at = None
    payout.save(
        update_fields=["status", "paid_at", "stripe_object_id", "stripe_detail", "last_error", "next_attempt_at"]
    )
    for reward in Reward.objects.select_for_update().filter(payout=payout).order_by("pk"):
        reward_mark_paid(reward=reward, actor=actor, now=now)


@transaction.atomic
def payout_mark_fulfilled(
    *, payout: Payout, actor: Actor, note: str = "", reference: str = "", now: datetime | None = None
) -> Payout:
    """A marketer records a payout as done outside the platform: a manual reward handed over (gift
    card, swag, beta access), or a Stripe payout made by hand (then ``reference`` names it)."""
    now = now or timezone.now()
    if not actor.can_write:
        raise ValidationError({"actor": "Viewers cannot fulfil payouts."})
    locked = Payout.objects.select_for_update(of=("self",)).select_related("tenant", "participant").get(pk=payout.pk)
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
    locked = Payout.objects.select_for_update(of=("self",)).select_related("tenant").get(pk=payout.pk)
    if locked.status == PayoutStatus.ABANDONED:
        _move(locked, PayoutStatus.FAILED, actor=actor, reason="retry requested")
    elif locked.status != PayoutStatus.FAILED:
        raise ValidationError({"status": f"Only failed payouts can be retried; this one is {locked.status}."})
    locked.next_attempt_at = now
    locked.save(update_fields=["status", "next_attempt_at"])
    return locked


def payouts_run_for_participant(*, participant: Participant, now: datetime | None = None) -> list[Payout]:
    """Prepare the participant's payouts, then execute every one of theirs that is due."""
    now = now or timezone.now()
    payout_prepare(participant=participant, now=now)
    return [
        payout_execute(payout=payout, now=now)
        for payout in payouts_due(participant.tenant, now=now).filter(participant=participant)
    ]


def payouts_run(*, tenant: Tenant | None = None, now: datetime | None = None) -> dict[str, int]:
    """The scheduled run: prepare payouts for everyone with approved rewards, then execute what is due."""
    now = now or timezone.now()
    prepared = 0
    for participant in participants_with_unpaid_rewards(tenant):
        prepared += len(payout_prepare(participant=participant, now=now))
    results = [payout_execute(payout=payout, now=now) for payout in payouts_due(tenant, now=now)]
    return {
        "prepared": prepared,
        "paid": sum(1 for p in results if p.status == PayoutStatus.PAID),
        "failed": sum(1 for p in results if p.status in (PayoutStatus.FAILED, PayoutStatus.ABANDONED)),
    }


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
