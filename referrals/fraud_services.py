"""Writes of fraud screening and review: flags with evidence, the review state, per-program policies.

Review states move only through the services below, checked against ``Referral.review_machine``
(``referral_platform.state.transition``), and every move leaves an audit row (who, when, from, to, why)::

    clear ──screen finds a signal──▶ flagged ──marketer──▶ cleared ──new signal──▶ flagged
                                        └──────marketer──▶ rejected (final)

Rewards ask ``referrals.fraud.referral_is_rewardable``: only clear or cleared referrals qualify.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from programs.models import Program
from referral_platform.hooks import hooks
from referral_platform.state import transition
from referral_platform.tenancy.actors import Actor
from referral_platform.tenancy.memo import recall, remember
from referral_platform.tenancy.services import audit_record

from .fraud import FraudSignal, referral_fraud_signals
from .models import FraudFlag, FraudPolicy, Referral, ReviewStatus

REVIEW_REASON_MAX_LENGTH = 2000
SYSTEM_ACTOR = "system"

POLICY_FIELDS = (
    "self_referral_enabled",
    "self_referral_activity_days",
    "own_company_enabled",
    "disposable_email_enabled",
    "velocity_enabled",
    "velocity_max_per_hour",
    "duplicate_company_enabled",
    "duplicate_company_window_days",
)


# --- policies --------------------------------------------------------------------------------------
@transaction.atomic
def fraud_policy_get_or_create(*, program: Program) -> FraudPolicy:
    """The program's fraud policy, created with the defaults (every check on) when it has none.

    Safe under concurrency: the (tenant, program) unique constraint makes a racing creator read the
    winner's row.
    """
    key = f"fraud_policy_{program.pk}"
    policy = recall(key)  # read once per batch (tenancy.memo); one just created is not kept
    if policy is None:
        policy, created = FraudPolicy.objects.get_or_create(tenant_id=program.tenant_id, program=program)
        if not created:
            remember(key, policy)
    return policy


@transaction.atomic
def fraud_policy_save(*, policy: FraudPolicy, actor: Actor | str) -> FraudPolicy:
    """Validate and store a new or edited policy; the audit row lists each changed value (before, after).

    The program must belong to the policy's tenant and have no other policy.
    """
    if policy.tenant_id is None:
        policy.tenant_id = policy.program.tenant_id
    if policy.program.tenant_id != policy.tenant_id:
        raise ValidationError({"program": "Unknown program."})
    policy.full_clean()
    previous = (
        FraudPolicy.objects.for_tenant(policy.tenant_id).select_for_update(of=("self",)).filter(pk=policy.pk).first()
        if policy.pk
        else None
    )
    changed = {
        name: [getattr(previous, name) if previous else None, getattr(policy, name)]
        for name in POLICY_FIELDS
        if previous is None or getattr(previous, name) != getattr(policy, name)
    }
    policy.updated_at = timezone.now()
    policy.save()
    audit_record(
        tenant=policy.tenant,
        actor=actor,
        action="fraud_policy.updated" if previous else "fraud_policy.created",
        obj=policy,
        data={"program": policy.program_id, "changed": changed},
    )
    return policy


# --- screening -------------------------------------------------------------------------------------
@transaction.atomic
def referral_screen(
    *, referral: Referral, actor: Actor | str = SYSTEM_ACTOR, created: bool = False
) -> list[FraudSignal]:
    """Run the program's fraud checks on ``referral`` and record what they find.

    Guarantees: one ``FraudFlag`` per referral and signal code, however often and however
    concurrently the referral is screened (row lock on the referral, backed by the unique
    constraint); a referral with a new flag moves to ``flagged`` (from clear, or from cleared when
    the signal is one the marketer has not seen), with an audit row; a rejected referral stays
    rejected. Returns every signal found now, new or not. Call it inside the transaction that
    created the referral, after the row exists, or later from ``referral_screen_task``.

    ``created``: the caller inserted ``referral`` in this very transaction (``referral_create``): nobody
    else can see the row yet, so it is neither locked again nor are its flags read (it has none); the
    screening time it was inserted with stands (this screening commits or rolls back with that insert).
    """
    if created:
        locked, existing = referral, set()
    else:
        locked = (
            Referral.objects.for_tenant(referral.tenant_id)
            .select_for_update(of=("self",))
            .select_related("program", "referrer", "tenant")
            .get(pk=referral.pk)
        )
        existing = set(
            FraudFlag.objects.for_tenant(locked.tenant_id).filter(referral=locked).values_list("code", flat=True)
        )
    policy = fraud_policy_get_or_create(program=locked.program)
    signals = referral_fraud_signals(referral=locked, policy=policy)
    new_signals = []
    for signal in signals:
        if signal.code in existing:
            continue
        try:
            with transaction.atomic():
                FraudFlag.objects.create(
                    tenant_id=locked.tenant_id,
                    referral=locked,
                    code=signal.code,
                    message=signal.message,
                    evidence=signal.evidence,
                )
        except IntegrityError:  # stored by a screening that did not hold the row lock; same outcome
            continue
        new_signals.append(signal)
    if not (created and locked.fraud_screened_at is not None):  # referral_create stamps it in its INSERT
        locked.fraud_screened_at = timezone.now()
        locked.save(update_fields=["fraud_screened_at"])
    if new_signals and Referral.review_machine.can(locked.review_status, ReviewStatus.FLAGGED):
        locked = referral_review_flag(referral=locked, actor=actor, signals=new_signals)
    _copy_review_fields(source=locked, target=referral)
    return signals


def _copy_review_fields(*, source: Referral, target: Referral) -> None:
    """Keep the caller's instance in step, so a later save() of it cannot write back a stale state."""
    for name in ("review_status", "reviewed_by_id", "reviewed_at", "review_reason", "fraud_screened_at"):
        setattr(target, name, getattr(source, name))


# --- review transitions ----------------------------------------------------------------------------
def _check_reviewer(*, actor: Actor | str, referral: Referral) -> None:
    if not isinstance(actor, Actor) or actor.kind in {"platform_staff", "system"}:
        return
    if actor.tenant is None or actor.tenant.pk != referral.tenant_id:
        raise PermissionDenied("Not found.")
    if not actor.can_write:
        raise PermissionDenied("Your role may look at the review queue but not decide.")


def _review_move(
    *, referral: Referral, to: str, actor: Actor | str, reason: str, data: dict | None = None, is_decision: bool
) -> Referral:
    _check_reviewer(actor=actor, referral=referral)
    decision = {"reviewed_by": actor.user if isinstance(actor, Actor) else None, "review_reason": reason}
    return transition(
        referral,
        to=to,
        actor=actor,
        reason=reason,
        data=data,
        changes=decision if is_decision else None,
        machine=Referral.review_machine,
    )


def _required_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Give a reason for the decision; it is kept in the audit trail."})
    if len(reason) > REVIEW_REASON_MAX_LENGTH:
        raise ValidationError({"reason": f"Keep the reason under {REVIEW_REASON_MAX_LENGTH} characters."})
    return reason


@transaction.atomic
def referral_review_flag(*, referral: Referral, actor: Actor | str, signals: list[FraudSignal]) -> Referral:
    """clear / cleared → flagged: screening found signals; the referral waits for a marketer."""
    if not signals:
        raise ValidationError({"signals": "A referral is flagged only with at least one signal."})
    return _review_move(
        referral=referral,
        to=ReviewStatus.FLAGGED,
        actor=actor,
        reason=" ".join(signal.message for signal in signals),
        data={"codes": [signal.code for signal in signals]},
        is_decision=False,
    )


@transaction.atomic
def referral_review_clear(*, referral: Referral, actor: Actor | str, reason: str) -> Referral:
    """flagged → cleared: a marketer looked at the evidence and lets the referral earn rewards; its
    conversions are evaluated again after commit, so the rewards it earned meanwhile appear."""
    return _review_decide(referral=referral, to=ReviewStatus.CLEARED, actor=actor, reason=reason)


@transaction.atomic
def referral_review_reject(*, referral: Referral, actor: Actor | str, reason: str) -> Referral:
    """flagged → rejected (final): a marketer judged the referral fraudulent; it is never rewarded."""
    return _review_decide(referral=referral, to=ReviewStatus.REJECTED, actor=actor, reason=reason)


def _review_decide(*, referral: Referral, to: str, actor: Actor | str, reason: str) -> Referral:
    """A marketer's decision, with its required reason and the referral's flags in the audit row; the
    higher layers react through ``referral_changed`` (``review_cleared`` / ``review_rejected``)."""
    decided = _review_move(
        referral=referral,
        to=to,
        actor=actor,
        reason=_required_reason(reason),
        data={"codes": _flag_codes(referral)},
        is_decision=True,
    )
    hooks.referral_changed(referral=decided, change=f"review_{to}")
    return decided


def _flag_codes(referral: Referral) -> list[str]:
    return sorted(
        FraudFlag.objects.for_tenant(referral.tenant_id).filter(referral_id=referral.pk).values_list("code", flat=True)
    )


REVIEW_DECISIONS = {
    ReviewStatus.CLEARED: referral_review_clear,
    ReviewStatus.REJECTED: referral_review_reject,
}
