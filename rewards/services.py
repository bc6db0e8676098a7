"""Reward lifecycle: create (accrue), approve, reject, reduce for refunds (reverse / claw back), mark paid.

Every status change is one service checked against ``Reward.status_machine`` (through
``referral_platform.state.transition``) and leaves an audit row; every
change of value posts a ledger transaction whose idempotency key is derived from the reward, so a
retried call posts nothing twice.

Ledger postings (Dr = positive, Cr = negative):

- accrual      Dr program expense          Cr participant pending
- approval     Dr participant pending      Cr participant payable
- rejection    Dr pending or payable       Cr program expense        (kind reversal)
- reversal     Dr pending or payable       Cr program expense        (refund before payout)
- clawback     Dr participant receivable   Cr program expense        (refund after payout; netted by
                                                                     the next payout)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from programs.models import Participant, ParticipantStatus, Program
from referral_platform.hooks import hooks
from referral_platform.money import format_money
from referral_platform.state import transition
from referral_platform.tenancy.actors import Actor, system_actor
from referral_platform.tenancy.models import Tenant
from referral_platform.tenancy.services import audit_record
from referrals.fraud import referral_is_rewardable
from referrals.models import ConversionEvent, Referral, ReferralStatus, ReviewStatus

from . import messages
from .ledger import Line, expense_account, ledger_post, participant_account
from .models import (
    AccountKind,
    BeneficiarySide,
    EntryKind,
    Reward,
    RewardKind,
    RewardStatus,
    StripeCharge,
    StripeCredentials,
)

# --- who may be rewarded -------------------------------------------------------------------------
# What a reward is earned on (the rules' ``on``, or the event kind) → the referral stages that count.
EARNED_ON_STAGES: dict[str, frozenset[str]] = {
    "sign_up": frozenset(
        {ReferralStatus.SIGNED_UP, ReferralStatus.QUALIFIED, ReferralStatus.CONVERTED, ReferralStatus.CHURNED}
    ),
    "qualified": frozenset({ReferralStatus.QUALIFIED, ReferralStatus.CONVERTED, ReferralStatus.CHURNED}),
    "conversion": frozenset({ReferralStatus.CONVERTED, ReferralStatus.CHURNED}),
    "payment": frozenset({ReferralStatus.CONVERTED, ReferralStatus.CHURNED}),
}
REVIEW_REFUSALS = {
    ReviewStatus.FLAGGED: "is flagged for fraud review: it earns no reward until a marketer clears it",
    ReviewStatus.REJECTED: "was rejected as fraud in review: it earns no reward",
}


def referral_reward_refusal(referral: Referral, *, earned_on: str = "conversion", at: datetime | None = None) -> str:
    """Why ``referral`` may not earn a reward on ``earned_on`` (sign_up / qualified / conversion /
    payment), or "" when it may. Pass a fresh row (locked when about to create a reward).

    The fraud rule is ``referrals.fraud.referral_is_rewardable``: only clear or cleared referrals earn.
    Conversion and payment rewards need a converted referral (``referral_is_rewardable``); a churned one
    still earns for a payment made before it churned (``at``). Lead rewards need the referral to have
    reached that stage. A rejected referral earns nothing.
    """
    if earned_on not in EARNED_ON_STAGES:
        return f"unknown reward trigger {earned_on!r}"
    name = f"Referral #{referral.pk}"
    if referral.review_status in REVIEW_REFUSALS:
        return f"{name} {REVIEW_REFUSALS[referral.review_status]}."
    if referral.status == ReferralStatus.REJECTED:
        return f"{name} was rejected: it earns no reward."
    if referral.status not in EARNED_ON_STAGES[earned_on]:
        needed = "converted (become a paying customer)" if earned_on in ("conversion", "payment") else earned_on
        return f"{name} has not {needed} yet: it is {referral.get_status_display().lower()}."
    if earned_on in ("conversion", "payment"):
        if referral.status == ReferralStatus.CONVERTED and not referral_is_rewardable(referral):
            return f"{name} is not rewardable."
        if (
            referral.status == ReferralStatus.CHURNED
            and at is not None
            and referral.churned_at
            and at > referral.churned_at
        ):
            return f"{name} churned on {referral.churned_at:%Y-%m-%d}: later payments earn nothing."
    return ""


def _locked(reward: Reward) -> Reward:
    """The reward re-read under its row lock (only its row: not the tenant, program and participant that
    ``select_related`` reads along; see docs/ledger.md, "Payouts")."""
    return (
        Reward.objects.select_for_update(of=("self",), no_key=True)
        .select_related("tenant", "program", "participant")
        .get(pk=reward.pk)
    )


def _post(reward: Reward, suffix: str, kind: str, debit_kind: str, credit_kind: str, amount: int, memo: str):
    """A two-line posting for ``reward``: debit one account kind, credit another, ``amount`` > 0."""
    accounts = {}
    for account_kind in (debit_kind, credit_kind):
        if account_kind == AccountKind.EXPENSE:
            accounts[account_kind] = expense_account(reward.program, reward.currency)
        else:
            accounts[account_kind] = participant_account(reward.participant, account_kind, reward.currency)
    return ledger_post(
        tenant=reward.tenant,
        idempotency_key=f"reward:{reward.pk}:{suffix}",
        kind=kind,
        lines=[Line(accounts[debit_kind], amount), Line(accounts[credit_kind], -amount)],
        memo=memo,
        reward=reward,
    )


def reward_create_errors(
    *,
    tenant: Tenant,
    program: Program,
    participant: Participant,
    amount_minor: int,
    source_key: str,
    kind: str,
    currency: str,
    beneficiary_side: str,
    conversion_event: ConversionEvent | None,
    referral: Referral | None,
    coupon_percent_off: int | None,
    earned_on: str,
) -> dict[str, str]:
    """Why a reward may not be created, per field (empty: it may). ``referral``, when given, must be a
    fresh row read under its lock (``reward_create`` locks it; a set-based settlement holds the lock)."""
    errors = {}
    if program.tenant_id != tenant.pk:
        errors["program"] = "Unknown program."
    if participant.tenant_id != tenant.pk or participant.program_id != program.pk:
        errors["participant"] = "The participant is not enrolled in this program."
    if not isinstance(amount_minor, int) or isinstance(amount_minor, bool) or amount_minor < 0:
        errors["amount_minor"] = "Give a whole, non-negative amount in minor units."
    elif amount_minor == 0 and kind in (RewardKind.CASH, RewardKind.CREDIT):
        errors["amount_minor"] = "Cash and credit rewards need an amount above zero."
    if currency != program.currency.upper():
        errors["currency"] = f"The program pays in {program.currency}."
    if kind not in RewardKind.values:
        errors["kind"] = f"Unknown reward kind {kind!r}."
    if beneficiary_side not in BeneficiarySide.values:
        errors["beneficiary_side"] = f"Unknown side {beneficiary_side!r}."
    if not source_key:
        errors["source_key"] = "A source key is required."
    if kind == RewardKind.COUPON and coupon_percent_off is not None and not 1 <= coupon_percent_off <= 100:
        errors["coupon_percent_off"] = "A percentage between 1 and 100."
    if conversion_event is not None and conversion_event.tenant_id != tenant.pk:
        errors["conversion_event"] = "Unknown conversion event."
    if referral is not None and referral.tenant_id != tenant.pk:
        errors["referral"] = "Unknown referral."
    elif referral is not None:
        if participant.status != ParticipantStatus.ACTIVE and "participant" not in errors:
            errors["participant"] = f"{participant.name} is not an active participant: no reward."
        at = conversion_event.occurred_at if conversion_event is not None else None
        refusal = referral_reward_refusal(referral, earned_on=earned_on, at=at)
        if refusal:
            errors["referral"] = refusal
    return errors


def reward_row(
    *,
    tenant: Tenant,
    program: Program,
    participant: Participant,
    amount_minor: int,
    source_key: str,
    now: datetime,
    slot_key: str = "",
    kind: str = RewardKind.CASH,
    currency: str,
    beneficiary_side: str = BeneficiarySide.REFERRER,
    conversion_event: ConversionEvent | None = None,
    referral: Referral | None = None,
    converted_at: datetime | None = None,
    explanation: dict | None = None,
    explanation_text: str = "",
    description: str = "",
    coupon_percent_off: int | None = None,
    coupon_duration_months: int | None = None,
    hold_from: datetime | None = None,
) -> Reward:
    """The unsaved pending reward ``reward_create`` writes (a set-based settlement writes many at once)."""
    return Reward(
        tenant=tenant,
        program=program,
        participant=participant,
        beneficiary_side=beneficiary_side,
        kind=kind,
        description=description,
        coupon_percent_off=coupon_percent_off,
        coupon_duration_months=coupon_duration_months,
        amount_minor=amount_minor,
        currency=currency,
        hold_until=(hold_from or now) + timedelta(days=program.hold_days),
        explanation=explanation or {},
        explanation_text=explanation_text,
        source_key=source_key,
        slot_key=slot_key,
        conversion_event=conversion_event,
        referral=referral,
        converted_at=converted_at or (conversion_event.occurred_at if conversion_event else now),
        created_at=now,
    )


@transaction.atomic
def reward_create(
    *,
    tenant: Tenant,
    program: Program,
    participant: Participant,
    amount_minor: int,
    source_key: str,
    actor: Actor,
    slot_key: str = "",
    kind: str = RewardKind.CASH,
    currency: str | None = None,
    beneficiary_side: str = BeneficiarySide.REFERRER,
    conversion_event: ConversionEvent | None = None,
    referral: Referral | None = None,
    converted_at: datetime | None = None,
    explanation: dict | None = None,
    explanation_text: str = "",
    description: str = "",
    coupon_percent_off: int | None = None,
    coupon_duration_months: int | None = None,
    now: datetime | None = None,
    hold_from: datetime | None = None,
    earned_on: str = "conversion",
) -> Reward:
    """Create a pending reward held for ``program.hold_days`` (counted from ``hold_from``, the payment
    that earned it, else from now) and accrue it in the ledger.

    Idempotent on ``source_key`` (unique per tenant): a repeat with the same participant and amount
    returns the first reward; a repeat that disagrees raises. The evaluation of attributions calls this.
    Refunds already known for the source conversion are applied at once (refund-before-payment).
    With a ``referral``, the participant must be active and the referral, re-read under a row lock,
    rewardable for ``earned_on`` (``referral_reward_refusal``: not held by fraud review, not rejected,
    converted for conversion/payment rewards); otherwise a ValidationError on ``participant`` /
    ``referral`` says why.
    """
    now = now or timezone.now()
    currency = (currency or program.currency).upper()
    if referral is not None and referral.tenant_id == tenant.pk:
        referral = Referral.objects.for_tenant(tenant).select_for_update(of=("self",)).get(pk=referral.pk)
    errors = reward_create_errors(
        tenant=tenant,
        program=program,
        participant=participant,
        amount_minor=amount_minor,
        source_key=source_key,
        kind=kind,
        currency=currency,
        beneficiary_side=beneficiary_side,
        conversion_event=conversion_event,
        referral=referral,
        coupon_percent_off=coupon_percent_off,
        earned_on=earned_on,
    )
    if errors:
        raise ValidationError(errors)

    existing = Reward.objects.for_tenant(tenant).filter(source_key=source_key).first()
    if existing is None:
        try:
            with transaction.atomic():
                reward = reward_row(
                    tenant=tenant,
                    program=program,
                    participant=participant,
                    beneficiary_side=beneficiary_side,
                    kind=kind,
                    description=description,
                    coupon_percent_off=coupon_percent_off,
                    coupon_duration_months=coupon_duration_months,
                    amount_minor=amount_minor,
                    currency=currency,
                    hold_from=hold_from,
                    explanation=explanation,
                    explanation_text=explanation_text,
                    source_key=source_key,
                    slot_key=slot_key,
                    conversion_event=conversion_event,
                    referral=referral,
                    converted_at=converted_at,
                    now=now,
                )
                reward.save(force_insert=True)
        except IntegrityError:
            existing = Reward.objects.for_tenant(tenant).get(source_key=source_key)
    if existing is not None:
        if existing.participant_id != participant.pk or existing.amount_minor != amount_minor:
            raise ValidationError({"source_key": f"A different reward already exists for {source_key!r}."})
        return existing

    audit_record(tenant=tenant, actor=actor, action="reward.created", obj=reward, to_state=reward.status)
    hooks.reward_changed(reward=reward, change="created")
    if amount_minor > 0:
        _post(
            reward,
            "accrual",
            EntryKind.ACCRUAL,
            AccountKind.EXPENSE,
            AccountKind.PENDING,
            amount_minor,
            f"Reward #{reward.pk} accrued",
        )
    if conversion_event is not None:
        charge = StripeCharge.objects.for_tenant(tenant).filter(conversion_event=conversion_event).first()
        if charge is not None and charge.amount_refunded_minor > 0 and charge.amount_minor > 0:
            reward_reduce_for_refund(
                reward=reward, refunded_minor=charge.amount_refunded_minor, paid_minor=charge.amount_minor, actor=actor
            )
            reward.refresh_from_db()
    return reward


def hold_has_ended(reward: Reward, now: datetime) -> bool:
    return reward.hold_until <= now


@transaction.atomic
def reward_approve(*, reward: Reward, actor: Actor, reason: str = "", now: datetime | None = None) -> Reward:
    """pending → approved once the hold has ended; moves the value from pending to payable."""
    now = now or timezone.now()
    reward = _locked(reward)
    if reward.status != RewardStatus.PENDING:
        raise ValidationError({"status": f"Only pending rewards can be approved; this one is {reward.status}."})
    if not hold_has_ended(reward, now):
        raise ValidationError({"hold_until": f"The reward is on hold until {reward.hold_until:%Y-%m-%d %H:%M} UTC."})
    transition(reward, to=RewardStatus.APPROVED, actor=actor, reason=reason, at=now, locked=reward)
    if reward.net_minor > 0:
        _post(
            reward,
            "approval",
            EntryKind.APPROVAL,
            AccountKind.PENDING,
            AccountKind.PAYABLE,
            reward.net_minor,
            f"Reward #{reward.pk} approved",
        )
    messages.message_reward_approved(reward=reward)
    hooks.reward_changed(reward=reward, change="approved")
    return reward


@transaction.atomic
def reward_reject(*, reward: Reward, actor: Actor, reason: str, now: datetime | None = None) -> Reward:
    """pending / approved (not yet in a payout) → rejected, with a reason; the accrual is reversed."""
    now = now or timezone.now()
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why the reward is rejected."})
    reward = _locked(reward)
    if reward.payout_id is not None:
        raise ValidationError({"status": "The reward is already part of a payout."})
    from_status = reward.status
    transition(
        reward,
        to=RewardStatus.REJECTED,
        actor=actor,
        reason=reason,
        at=now,
        changes={"status_reason": reason},
        locked=reward,
    )
    if reward.net_minor > 0:
        source = AccountKind.PENDING if from_status == RewardStatus.PENDING else AccountKind.PAYABLE
        _post(
            reward,
            "rejection",
            EntryKind.REVERSAL,
            source,
            AccountKind.EXPENSE,
            reward.net_minor,
            f"Reward #{reward.pk} rejected: {reason}",
        )
    hooks.reward_changed(reward=reward, change="rejected")
    return reward


def refund_target(amount_minor: int, refunded_minor: int, paid_minor: int) -> int:
    """The reward's total reduction for a refund of ``refunded`` out of ``paid``: proportional, rounded
    half up to the minor unit, never more than the reward."""
    if paid_minor <= 0 or refunded_minor <= 0:
        return 0
    refunded_minor = min(refunded_minor, paid_minor)
    return min(amount_minor, (2 * amount_minor * refunded_minor + paid_minor) // (2 * paid_minor))


REDUCTION_NONE = "none"  # nothing more to take
REDUCTION_WITHDRAW_ITEM = "withdraw_item"  # an item without a cash value, refunded in full: reversed whole
REDUCTION_REVERSAL = "reversal"  # before payout: taken back from the pending / payable account
REDUCTION_CLAWBACK = "clawback"  # paid or in a payout: owed back by the participant


@dataclass(frozen=True)
class RefundReduction:
    """What a refund does to a live reward (``refund_reduction``): its kind, the reward's total reduction
    afterwards, what is added now, the account a reversal takes it from, and whether nothing is left (the
    reward is then reversed)."""

    kind: str
    total: int = 0
    delta: int = 0
    source: str = ""
    leaves_nothing: bool = False


def reversal_source(status: str) -> str:
    """The participant account a reversal takes a reward's value back from."""
    return AccountKind.PENDING if status == RewardStatus.PENDING else AccountKind.PAYABLE


def refund_reduction(reward: Reward, *, refunded_minor: int, paid_minor: int) -> RefundReduction:
    """The decision of ``reward_reduce_for_refund`` for a live reward, from its money fields alone (a
    set-based settlement asks it too, ``rewards.settlement_sets``): cumulative and proportional
    (``refund_target``), a reversal before payout, a clawback once paid or in a payout."""
    fully_refunded = paid_minor > 0 and refunded_minor >= paid_minor
    if reward.amount_minor == 0 and fully_refunded and reward.payout_id is None and reward.status != RewardStatus.PAID:
        # An item without a cash value (a feature unlock, a free month of an unknown bill) has nothing to
        # shrink: a full refund or a cancellation withdraws it before it is handed over.
        return RefundReduction(REDUCTION_WITHDRAW_ITEM)
    total = refund_target(reward.amount_minor, refunded_minor, paid_minor)
    delta = total - reward.reversed_minor - reward.clawed_back_minor
    if delta <= 0:
        return RefundReduction(REDUCTION_NONE, total=total)
    after_payout = reward.status == RewardStatus.PAID or reward.payout_id is not None
    left = reward.amount_minor - reward.reversed_minor - reward.clawed_back_minor - delta
    return RefundReduction(
        REDUCTION_CLAWBACK if after_payout else REDUCTION_REVERSAL,
        total=total,
        delta=delta,
        source="" if after_payout else reversal_source(reward.status),
        # Nothing left: reversed, unless a payout still in flight will mark it paid (its clawback stays owed).
        leaves_nothing=left == 0 and (reward.status == RewardStatus.PAID or reward.payout_id is None),
    )


@transaction.atomic
def reward_reduce_for_refund(
    *,
    reward: Reward,
    refunded_minor: int,
    paid_minor: int,
    actor: Actor,
    now: datetime | None = None,
    reason: str = "refund",
) -> Reward:
    """Bring the reward's reductions up to the share refunded (cumulative: refunds of 50 then 100 of a
    200 payment reduce by a half in total, and a late or repeated refund of 50 changes nothing).

    Before payout the reward shrinks (reversal from pending / payable) and is reversed when nothing is
    left; once paid, or already in a payout, the reduction is a clawback the participant owes back.
    """
    now = now or timezone.now()
    reward = _locked(reward)
    if reward.status in (RewardStatus.REJECTED, RewardStatus.REVERSED):
        return reward
    plan = refund_reduction(reward, refunded_minor=refunded_minor, paid_minor=paid_minor)
    if plan.kind == REDUCTION_WITHDRAW_ITEM:
        transition(reward, to=RewardStatus.REVERSED, actor=actor, reason=reason, at=now, locked=reward)
        messages.message_reward_reduced(reward=reward, reduced_by_minor=0, total_reduction_minor=0, reason=reason)
        hooks.reward_changed(reward=reward, change="reversed")
        return reward
    if plan.kind == REDUCTION_NONE:
        return reward
    target, delta = plan.total, plan.delta
    from_status = reward.status
    after_payout = plan.kind == REDUCTION_CLAWBACK
    if after_payout:
        reward.clawed_back_minor += delta
        _post(
            reward,
            f"reduce-to:{target}",
            EntryKind.CLAWBACK,
            AccountKind.RECEIVABLE,
            AccountKind.EXPENSE,
            delta,
            f"Reward #{reward.pk} clawed back by {format_money(delta, reward.currency)} (refund)",
        )
    else:
        reward.reversed_minor += delta
        _post(
            reward,
            f"reduce-to:{target}",
            EntryKind.REVERSAL,
            plan.source,
            AccountKind.EXPENSE,
            delta,
            f"Reward #{reward.pk} reduced by {format_money(delta, reward.currency)} (refund)",
        )
    data = {
        "reduced_by_minor": delta,
        "total_reduction_minor": target,
        "refunded_minor": refunded_minor,
        "paid_minor": paid_minor,
        "clawback": after_payout,
    }
    if plan.leaves_nothing:
        transition(
            reward,
            to=RewardStatus.REVERSED,
            actor=actor,
            reason=reason,
            at=now,
            data=data,
            changes={"reversed_minor": reward.reversed_minor, "clawed_back_minor": reward.clawed_back_minor},
            locked=reward,
        )
    else:
        reward.save(update_fields=["reversed_minor", "clawed_back_minor"])
        audit_record(
            tenant=reward.tenant,
            actor=actor,
            action="reward.reduced",
            obj=reward,
            from_state=from_status,
            to_state=reward.status,
            reason=reason,
            data=data,
        )
    messages.message_reward_reduced(reward=reward, reduced_by_minor=delta, total_reduction_minor=target, reason=reason)
    change = "reversed" if reward.status == RewardStatus.REVERSED else "clawed_back" if after_payout else "reduced"
    hooks.reward_changed(reward=reward, change=change)
    return reward


def reward_mark_paid(*, reward: Reward, actor: Actor | str, now: datetime) -> Reward:
    """approved → paid (called by the payout that covered it, inside its transaction)."""
    transition(
        reward,
        to=RewardStatus.PAID,
        actor=actor,
        at=now,
        data={"payout": reward.payout_id},
        changes={"time_to_reward": now - reward.converted_at},
        locked=reward,
    )
    messages.message_reward_paid(reward=reward)
    hooks.reward_changed(reward=reward, change="paid")
    return reward


def rewards_release_holds(*, tenant: Tenant | None = None, now: datetime | None = None) -> int:
    """Approve every pending reward whose hold has ended and whose value is within its program's
    auto-approve limit. Larger ones stay pending: they are the review queue. Returns how many moved."""
    from .selectors import rewards_due_for_auto_approval

    now = now or timezone.now()
    approved = 0
    for reward in rewards_due_for_auto_approval(tenant, now=now):
        try:
            reward_approve(reward=reward, actor=system_actor(reward.tenant), reason="auto-approved after hold", now=now)
            approved += 1
        except ValidationError:
            continue  # changed meanwhile (rejected, reversed, approved by someone else)
    return approved


# --- the workspace's Stripe credentials ------------------------------------------------------------
STRIPE_SECRET_KEY_PREFIXES = ("sk_", "rk_")


def stripe_credentials_values(*, tenant: Tenant, secret_key: str = "", webhook_secret: str = "") -> dict[str, str]:
    """The secret key and webhook signing secret that ``stripe_credentials_save`` would store: a blank
    value keeps the stored one, both are required the first time, and a secret key starts with sk_ (or
    rk_ for a restricted key). ``ValidationError`` names each bad field."""
    stored = StripeCredentials.objects.for_tenant(tenant).first()
    values = {"secret_key": (secret_key or "").strip(), "webhook_secret": (webhook_secret or "").strip()}
    errors = {}
    for name, value in values.items():
        if value:
            continue
        if stored is None:
            errors[name] = "Required."
        else:
            values[name] = getattr(stored, name)
    if values["secret_key"] and not values["secret_key"].startswith(STRIPE_SECRET_KEY_PREFIXES):
        errors["secret_key"] = "A Stripe secret key starts with sk_ (or rk_ for a restricted key)."  # noqa: S105
    if errors:
        raise ValidationError(errors)
    return values


@transaction.atomic
def stripe_credentials_save(
    *, tenant: Tenant, actor: Actor, secret_key: str = "", webhook_secret: str = ""
) -> StripeCredentials:
    """Store the workspace's own Stripe credentials (one row per workspace; see
    ``stripe_credentials_values``). Audited, without the values. Nothing is written when one is bad."""
    values = stripe_credentials_values(tenant=tenant, secret_key=secret_key, webhook_secret=webhook_secret)
    credentials, _ = StripeCredentials.objects.update_or_create(
        tenant=tenant, defaults={**values, "updated_at": timezone.now()}
    )
    audit_record(tenant=tenant, actor=actor, action="stripe.credentials_saved", obj=credentials)
    return credentials
