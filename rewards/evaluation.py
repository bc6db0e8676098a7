"""Reward evaluation: turn a conversion event's attributions into rewards, under the rules the referral
was judged by (issue 4, item 1; docs/ledger.md "Evaluation").

``reward_evaluate(event_id=...)`` (task ``rewards.evaluate_conversion``, queued by
``referrals.services.attribution_run`` after commit) handles one event:

- **payment / qualified / sign_up** → rewards. The referral's rule version (``Referral.rule_version``)
  is computed with ``programs.rules.compute_rewards`` once per credited participant (their partner
  tier, their count of rewarded referrals for tiers and caps), and each referrer reward is that
  participant's attribution share of the rule amount, split over the credited participants by the
  largest-remainder rule, so the parts sum exactly to the rule amount. The referred company's rewards
  (double-sided programs) are computed once and not split. Every reward goes through
  ``rewards.services.reward_create`` with a deterministic source key and keeps how its amount was
  computed.
- **refund** → the rewards of the refunded payment shrink, or are clawed back once paid
  (``reward_reduce_for_refund``, cumulative over the payment's refunds).
- **cancellation** → the rules' cancellation policy (clawback / forfeit_unpaid / keep) within its window.

Guarantees: the event row is locked for the whole run and a ``RewardEvaluation`` row (unique per event)
records the decision, so a retried, repeated or concurrent run creates one set of rewards. A referral
that fraud review holds, that has not reached the rewarded stage, or a participant who is not active
gets nothing (the evaluation is ``blocked`` and runs again when a marketer clears the referral).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from programs import rules as rules_module
from programs.models import Participant, ParticipantStatus
from programs.money import format_money, format_percent
from programs.selectors import whole_months_between
from programs.services import program_current_version
from referral_platform.tenancy.actors import Actor, system_actor
from referral_platform.tenancy.services import audit_record
from referrals.attribution import SHARE_UNITS, share_to_units
from referrals.models import (
    Attribution,
    ConversionEvent,
    ConversionEventStatus,
    ConversionKind,
    Referral,
)

from . import messages
from .models import (
    BeneficiarySide,
    EvaluationStatus,
    Reward,
    RewardEvaluation,
    RewardKind,
    RewardStatus,
)
from .services import referral_reward_refusal, reward_create, reward_reduce_for_refund

EARNING_KINDS = frozenset({ConversionKind.PAYMENT, ConversionKind.QUALIFIED, ConversionKind.SIGN_UP})
SETTLED_STATUSES = (ConversionEventStatus.PROCESSED, ConversionEventStatus.UNATTRIBUTED)
SPLITTABLE_FORMS = frozenset({rules_module.FORM_CASH, rules_module.FORM_CREDIT})
REWARD_KIND_OF_FORM = {
    rules_module.FORM_CASH: RewardKind.CASH,
    rules_module.FORM_CREDIT: RewardKind.CREDIT,
    rules_module.FORM_DISCOUNT: RewardKind.COUPON,
    rules_module.FORM_FREE_MONTHS: RewardKind.COUPON,
    rules_module.FORM_FEATURE: RewardKind.MANUAL,
    rules_module.FORM_GIFT: RewardKind.MANUAL,
}
INACTIVE_WORDS = {
    ParticipantStatus.PENDING: "has not been approved yet",
    ParticipantStatus.REJECTED: "was not accepted into the program",
    ParticipantStatus.REMOVED: "was removed from the program",
}


# --- pure helpers ------------------------------------------------------------------------------
def split_by_share(amounts: list[int], shares: list[Decimal]) -> list[int]:
    """Each participant's part of a rule amount: ``amount * share`` in whole minor units.

    Largest remainder: every exact part is floored, and the leftover units (the rounded total of the
    exact parts minus the floors) go one each to the largest remainders, ties to the larger share,
    then the later position. When every participant has the same rule amount (the usual case) and the
    shares sum to 1, the parts sum to exactly that amount. Amounts may differ per participant (their
    own tier or cap); the parts then sum to the rounded sum of the exact parts.
    """
    exact = [
        Fraction(amount * share_to_units(share), SHARE_UNITS) for amount, share in zip(amounts, shares, strict=True)
    ]
    parts = [value.numerator // value.denominator for value in exact]
    total = sum(exact, Fraction(0))
    rounded_total = (total.numerator * 2 + total.denominator) // (total.denominator * 2)  # half up
    leftover = rounded_total - sum(parts)
    order = sorted(range(len(exact)), key=lambda i: (exact[i] - parts[i], shares[i], i), reverse=True)
    for index in order[:leftover]:
        parts[index] += 1
    return parts


def period_bounds(moment: datetime, period: str) -> tuple[datetime, datetime]:
    """The calendar month / quarter / year (UTC) that contains ``moment``: [start, end)."""
    moment = moment.astimezone(UTC)
    if period == "month":
        start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
        end = datetime(moment.year + (moment.month == 12), moment.month % 12 + 1, 1, tzinfo=UTC)
    elif period == "quarter":
        first_month = (moment.month - 1) // 3 * 3 + 1
        start = datetime(moment.year, first_month, 1, tzinfo=UTC)
        end = datetime(moment.year + (first_month == 10), (first_month + 2) % 12 + 1, 1, tzinfo=UTC)
    else:
        start = datetime(moment.year, 1, 1, tzinfo=UTC)
        end = datetime(moment.year + 1, 1, 1, tzinfo=UTC)
    return start, end


def share_percent(share: Decimal) -> str:
    """0.400000 → "40 %", 0.333333 → "33.3333 %"."""
    text = f"{share * 100:.4f}".rstrip("0").rstrip(".")
    return f"{text} %"


def seats_of(event: ConversionEvent) -> int:
    """Seats the referred company bought: ``seats`` in the event (API), or the quantities of a Stripe
    invoice's lines; 1 when unknown."""
    raw = event.raw if isinstance(event.raw, dict) else {}
    seats = raw.get("seats")
    if isinstance(seats, int) and not isinstance(seats, bool) and seats >= 1:
        return seats
    lines = (((raw.get("data") or {}).get("object") or {}).get("lines") or {}).get("data")
    if isinstance(lines, list):
        quantities = [line.get("quantity") for line in lines if isinstance(line, dict)]
        total = sum(q for q in quantities if isinstance(q, int) and not isinstance(q, bool) and q > 0)
        if total >= 1:
            return total
    return 1


# --- reads -------------------------------------------------------------------------------------
def previous_successful_referrals(*, participant: Participant, referral: Referral, period: str, at: datetime) -> int:
    """The participant's OTHER referrals rewarded (a live referrer reward) whose conversion falls in the
    counting period containing ``at``: the n - 1 of "the n-th successful referral" (tiers, caps).

    For a referral that was already rewarded on a payment, the count stored then is reused, so later
    payments keep the tier and cap standing they had when the referral converted.
    """
    earlier = (
        Reward.objects.for_tenant(participant.tenant_id)
        .filter(participant=participant, referral=referral, beneficiary_side=BeneficiarySide.REFERRER)
        .order_by("pk")
        .values_list("explanation", flat=True)
    )
    for explanation in earlier:
        stored = (explanation or {}).get("previous_successful_referrals")
        if (explanation or {}).get("event_kind") == ConversionKind.PAYMENT and isinstance(stored, int):
            return stored
    start, end = period_bounds(at, period)
    return (
        Reward.objects.for_tenant(participant.tenant_id)
        .filter(
            participant=participant,
            beneficiary_side=BeneficiarySide.REFERRER,
            referral__isnull=False,
            referral__converted_at__gte=start,
            referral__converted_at__lt=end,
        )
        .exclude(referral=referral)
        .exclude(status__in=[RewardStatus.REJECTED, RewardStatus.REVERSED])
        .values("referral_id")
        .distinct()
        .count()
    )


def _first_payment(event: ConversionEvent, referral: Referral) -> ConversionEvent:
    payments = ConversionEvent.objects.for_tenant(event.tenant_id).filter(
        referral=referral, kind=ConversionKind.PAYMENT, status__in=SETTLED_STATUSES
    )
    first = payments.order_by("occurred_at", "pk").first()
    if first is None or (event.occurred_at, event.pk) < (first.occurred_at, first.pk):
        return event
    return first


def refunded_payment(refund: ConversionEvent) -> ConversionEvent | None:
    """The payment a refund event refunds: the one named by ``refunded_event_id`` (its external id), else
    the referral's latest payment at or before the refund."""
    raw = refund.raw if isinstance(refund.raw, dict) else {}
    named = str(raw.get("refunded_event_id") or "").strip()
    payments = ConversionEvent.objects.for_tenant(refund.tenant_id).filter(kind=ConversionKind.PAYMENT)
    if named:
        return payments.filter(external_event_id=named).first()
    if refund.referral_id is None:
        return None
    return (
        payments.filter(
            referral_id=refund.referral_id, occurred_at__lte=refund.occurred_at, status__in=SETTLED_STATUSES
        )
        .order_by("-occurred_at", "-pk")
        .first()
    )


def refunded_total(payment: ConversionEvent) -> int:
    """Everything refunded of ``payment`` through refund events (each event counted once), at most the payment."""
    candidates = ConversionEvent.objects.for_tenant(payment.tenant_id).filter(
        kind=ConversionKind.REFUND, status__in=SETTLED_STATUSES
    )
    by_name = candidates.filter(raw__refunded_event_id=payment.external_event_id)
    by_referral = candidates.filter(referral_id=payment.referral_id) if payment.referral_id else candidates.none()
    total = 0
    for refund in (by_name | by_referral).distinct():
        target = refunded_payment(refund)
        if target is not None and target.pk == payment.pk:
            total += refund.amount_minor
    return min(total, payment.amount_minor)


# --- the service -------------------------------------------------------------------------------
@dataclass
class _Outcome:
    status: str
    notes: list[str] = field(default_factory=list)
    detail: dict = field(default_factory=dict)
    created: list[Reward] = field(default_factory=list)


def reward_evaluate(*, event_id: int, now: datetime | None = None) -> RewardEvaluation | None:
    """Evaluate one conversion event (see the module docstring). Returns its ``RewardEvaluation``, or None
    for an unknown event or one without a referral. Idempotent and safe to run concurrently."""
    with transaction.atomic():
        # Lock first, read relations after (a waiting locker re-checks only the locked row).
        event = ConversionEvent.objects.select_for_update().filter(pk=event_id).first()
        if event is None:
            return None
        tenant = event.tenant
        evaluation = RewardEvaluation.objects.for_tenant(tenant).filter(conversion_event=event).first()
        if evaluation is not None and evaluation.status == EvaluationStatus.DONE:
            return evaluation
        if event.referral_id is None or event.status not in SETTLED_STATUSES:
            return evaluation
        referral = (
            Referral.objects.for_tenant(tenant)
            .select_for_update(of=("self",))
            .select_related("program", "referrer", "rule_version")
            .get(pk=event.referral_id)
        )
        actor = system_actor(tenant)
        try:
            with transaction.atomic():
                if event.kind in EARNING_KINDS:
                    outcome = _evaluate_earning(event=event, referral=referral, actor=actor, now=now)
                elif event.kind == ConversionKind.REFUND:
                    outcome = _evaluate_refund(event=event, actor=actor)
                else:
                    outcome = _evaluate_cancellation(event=event, referral=referral, actor=actor)
        except (rules_module.RulesError, rules_module.CurrencyMismatch, ValidationError) as error:
            outcome = _Outcome(EvaluationStatus.FAILED, notes=[f"{type(error).__name__}: {error}"])
        values = {
            "referral": referral,
            "status": outcome.status,
            "notes": outcome.notes,
            "detail": outcome.detail,
            "rewards_created": len(outcome.created),
            "evaluated_at": timezone.now(),
        }
        if evaluation is None:
            evaluation = RewardEvaluation.objects.create(tenant=tenant, conversion_event=event, attempts=1, **values)
        else:
            for name, value in values.items():
                setattr(evaluation, name, value)
            evaluation.attempts += 1
            evaluation.save(update_fields=[*values, "attempts"])
        return evaluation


def referral_rewards_evaluate(*, referral: Referral) -> list[RewardEvaluation]:
    """Evaluate every conversion event of ``referral`` not yet done (after a fraud review cleared it),
    oldest first, so the first payment is the conversion."""
    events = (
        ConversionEvent.objects.for_tenant(referral.tenant_id)
        .filter(referral_id=referral.pk, status__in=SETTLED_STATUSES)
        .order_by("occurred_at", "pk")
        .values_list("pk", flat=True)
    )
    done = set(
        RewardEvaluation.objects.for_tenant(referral.tenant_id)
        .filter(conversion_event_id__in=list(events), status=EvaluationStatus.DONE)
        .values_list("conversion_event_id", flat=True)
    )
    results = []
    for event_id in events:
        if event_id not in done:
            evaluation = reward_evaluate(event_id=event_id)
            if evaluation is not None:
                results.append(evaluation)
    return results


# --- earning events: payment, qualified, sign-up -------------------------------------------------
@dataclass
class _Grant:
    """One reward the rules grant one participant (before the share)."""

    attribution: Attribution | None
    participant: Participant
    share: Decimal
    reward: rules_module.Reward
    tier: str
    previous: int


def _earned_on(event: ConversionEvent) -> str:
    return {ConversionKind.PAYMENT: "payment", ConversionKind.QUALIFIED: "qualified"}.get(event.kind, "sign_up")


def _evaluate_earning(*, event: ConversionEvent, referral: Referral, actor: Actor, now: datetime | None) -> _Outcome:
    refusal = referral_reward_refusal(referral, earned_on=_earned_on(event), at=event.occurred_at)
    if refusal:
        return _Outcome(EvaluationStatus.BLOCKED, notes=[refusal])
    attributions = list(
        Attribution.objects.for_tenant(event.tenant_id)
        .filter(conversion_event=event)
        .select_related("participant")
        .order_by("share", "pk")
    )
    if not attributions:
        return _Outcome(EvaluationStatus.NOTHING_YET, notes=["No attribution for this event yet: nothing to reward."])
    version = referral.rule_version or program_current_version(program=referral.program)
    rule_set = rules_module.parse_rules(version.rules)
    # Lock the credited participants (pk order: no deadlocks) so counts for tiers and caps stay exact
    # while their other referrals are evaluated concurrently.
    ids = sorted({row.participant_id for row in attributions} | {referral.referrer_id})
    locked = {p.pk: p for p in Participant.objects.for_tenant(event.tenant_id).select_for_update().filter(pk__in=ids)}
    converted_at = referral.converted_at or event.occurred_at
    base = {
        "kind": event.kind,
        "amount_minor": event.amount_minor,
        "currency": event.currency,
        "seats": seats_of(event),
    }
    is_conversion = False
    if event.kind == ConversionKind.PAYMENT:
        first = _first_payment(event, referral)
        is_conversion = first.pk == event.pk
        base["months_since_first_payment"] = whole_months_between(first.occurred_at, event.occurred_at)
        base["is_first_payment"] = is_conversion
    counting_at = converted_at if event.kind == ConversionKind.PAYMENT else event.occurred_at
    notes: list[str] = []
    detail: dict = {
        "rule_version": version.number,
        "event": {"id": event.pk, "kind": event.kind, "amount_minor": event.amount_minor, "currency": event.currency},
        "context": {key: value for key, value in base.items() if key != "kind"},
        "referrer": [],
    }

    contexts: dict[int, tuple[rules_module.ConversionContext, int]] = {}

    def context(participant: Participant) -> tuple[rules_module.ConversionContext, int]:
        if participant.pk not in contexts:
            previous = previous_successful_referrals(
                participant=participant, referral=referral, period=rule_set.counting_period, at=counting_at
            )
            contexts[participant.pk] = (
                rules_module.ConversionContext(
                    **base, previous_successful_referrals=previous, participant_tier=participant.tier
                ),
                previous,
            )
        return contexts[participant.pk]

    # Referrer side: the rules per credited participant, then each reward split by share.
    slots: dict[tuple[str, int], list[_Grant]] = defaultdict(list)
    for row in attributions:
        participant = locked[row.participant_id]
        if participant.status != ParticipantStatus.ACTIVE:
            notes.append(f"{participant.name} {INACTIVE_WORDS.get(participant.status, 'is not active')}: no reward.")
            continue
        ctx, previous = context(participant)
        outcome = rules_module.compute_rewards(rule_set, ctx)
        tier = participant.tier if rule_set.tier_applies(participant.tier) else ""
        detail["referrer"].append(
            {
                "participant": participant.pk,
                "attribution": row.pk,
                "share": str(row.share),
                "tier": tier,
                "previous_successful_referrals": previous,
                "rewards": [reward.as_dict() for reward in outcome.referrer],
                "notes": list(outcome.notes),
            }
        )
        notes += [f"{participant.name}: {note}" for note in outcome.notes]
        for reward in outcome.referrer:
            slots[(tier or "default", reward.rule_index)].append(
                _Grant(row, participant, row.share, reward, tier, previous)
            )
    created: list[Reward] = []
    by_participant: dict[int, list[Reward]] = defaultdict(list)
    for (tier_key, rule_index), grants in slots.items():
        parts = _parts(grants)
        for grant, amount in zip(grants, parts, strict=True):
            if amount is None:
                continue
            reward = _create(
                event=event,
                referral=referral,
                version_number=version.number,
                grant=grant,
                amount=amount,
                side=BeneficiarySide.REFERRER,
                source_key=f"eval:{event.pk}:referrer:{grant.participant.pk}:{tier_key}:{rule_index}",
                actor=actor,
                now=now,
                notes=notes,
            )
            if reward is not None:
                created.append(reward)
                by_participant[grant.participant.pk].append(reward)

    # Referred side: computed once, never split (in the context of the referral's own referrer).
    referrer_ctx, _previous = context(locked[referral.referrer_id])
    referred_outcome = rules_module.compute_rewards(rule_set, referrer_ctx)
    detail["referred"] = [reward.as_dict() for reward in referred_outcome.referred]
    referred_rewards: list[Reward] = []
    if referred_outcome.referred:
        beneficiary = referred_participant(referral=referral, actor=actor)
        if beneficiary.status != ParticipantStatus.ACTIVE:
            notes.append(
                f"The referred company ({beneficiary.name}) {INACTIVE_WORDS.get(beneficiary.status, 'is not active')}: "
                "no reward for it."
            )
        else:
            for reward_rule in referred_outcome.referred:
                grant = _Grant(None, beneficiary, Decimal(1), reward_rule, "", 0)
                reward = _create(
                    event=event,
                    referral=referral,
                    version_number=version.number,
                    grant=grant,
                    amount=reward_rule.amount_minor,
                    side=BeneficiarySide.REFERRED,
                    source_key=f"eval:{event.pk}:referred:{reward_rule.rule_index}",
                    actor=actor,
                    now=now,
                    notes=notes,
                )
                if reward is not None:
                    created.append(reward)
                    referred_rewards.append(reward)
    if not created:
        notes.append("The rules grant no reward for this event.")

    if event.kind == ConversionKind.PAYMENT:
        _settle_reductions(payment=event, referral=referral, rule_set=rule_set, rewards=created, actor=actor)
    _announce(
        is_conversion=is_conversion, referral=referral, by_participant=by_participant, referred_rewards=referred_rewards
    )
    return _Outcome(EvaluationStatus.DONE, notes=notes, detail=detail, created=created)


def _parts(grants: list[_Grant]) -> list[int | None]:
    """Per grant, the amount to create (None: nothing for this participant)."""
    form = grants[0].reward.form
    if form in SPLITTABLE_FORMS:
        return split_by_share([g.reward.amount_minor for g in grants], [g.share for g in grants])
    # An item (gift, feature, coupon) cannot be split: it goes whole to the largest share.
    winner = max(range(len(grants)), key=lambda i: (grants[i].share, i))
    return [grant.reward.amount_minor if index == winner else None for index, grant in enumerate(grants)]


def _explanation_text(grant: _Grant, amount: int, version_number: int, side: str) -> str:
    rule = grant.reward
    where = (
        f"partner tier {grant.tier!r} rule {rule.rule_index + 1}"
        if grant.tier
        else f"{side} rule {rule.rule_index + 1}"
    )
    text = f"Rule version {version_number}, {where} ({rule.kind.replace('_', ' ')}): {rule.explanation}"
    if side == BeneficiarySide.REFERRER and grant.share != 1:
        if rule.form in SPLITTABLE_FORMS:
            text += f" {rules_module.TIMES} {share_percent(grant.share)} share = {format_money(amount, rule.currency)}"
        else:
            text += f" (an item cannot be split: it goes to the largest share, {share_percent(grant.share)})"
    return text


def _coupon_fields(rule: rules_module.Reward) -> dict:
    if rule.form == rules_module.FORM_FREE_MONTHS:
        return {"coupon_percent_off": 100, "coupon_duration_months": rule.months}
    percent_bp = rule.percent_bp or 0
    if percent_bp % 100 == 0 and percent_bp:
        return {"coupon_percent_off": percent_bp // 100}
    if rule.amount_minor > 0:
        return {}  # a fractional percentage of a known bill: an amount-off coupon
    return {"coupon_percent_off": min(100, max(1, (percent_bp + 50) // 100))}


def _description(rule: rules_module.Reward) -> str:
    if rule.form == rules_module.FORM_FREE_MONTHS:
        return f"{rule.months} free month{'s' if rule.months != 1 else ''}"
    if rule.form == rules_module.FORM_DISCOUNT:
        return f"{format_percent(rule.percent_bp or 0)} off the next renewal"
    if rule.form == rules_module.FORM_FEATURE:
        duration = f" for {rule.months} month{'s' if rule.months != 1 else ''}" if rule.months else ""
        return f"{rule.item} unlocked{duration}"[:200]
    if rule.form == rules_module.FORM_GIFT:
        return f"Gift: {rule.item}"[:200]
    return ""


def _create(
    *,
    event: ConversionEvent,
    referral: Referral,
    version_number: int,
    grant: _Grant,
    amount: int,
    side: str,
    source_key: str,
    actor: Actor,
    now: datetime | None,
    notes: list[str],
) -> Reward | None:
    rule = grant.reward
    kind = REWARD_KIND_OF_FORM[rule.form]
    if amount <= 0 and kind in (RewardKind.CASH, RewardKind.CREDIT):
        notes.append(f"{grant.participant.name}: {rule.explanation} — nothing to pay.")
        return None
    text = _explanation_text(grant, amount, version_number, side)
    explanation = {
        "event": event.pk,
        "external_event_id": event.external_event_id,
        "event_kind": event.kind,
        "rule_version": version_number,
        "side": side,
        "rule_index": rule.rule_index,
        "rule_kind": rule.kind,
        "form": rule.form,
        "tier": grant.tier,
        "rule_amount_minor": rule.amount_minor,
        "rule_explanation": rule.explanation,
        "share": str(grant.share),
        "attribution": grant.attribution.pk if grant.attribution else None,
        "amount_minor": amount,
        "currency": rule.currency,
        "previous_successful_referrals": grant.previous,
        "capped": rule.capped,
    }
    coupon = _coupon_fields(rule) if kind == RewardKind.COUPON else {}
    return reward_create(
        tenant=event.tenant,
        program=referral.program,
        participant=grant.participant,
        amount_minor=amount,
        source_key=source_key,
        actor=actor,
        kind=kind,
        currency=rule.currency,
        beneficiary_side=side,
        conversion_event=event,
        referral=referral,
        explanation=explanation,
        explanation_text=text,
        description=_description(rule),
        now=now,
        hold_from=event.occurred_at,
        earned_on=_earned_on(event),
        **coupon,
    )


def _announce(
    *,
    is_conversion: bool,
    referral: Referral,
    by_participant: dict[int, list[Reward]],
    referred_rewards: list[Reward],
) -> None:
    """The referrer hears "became a customer" once, with the first payment's rewards; every other reward
    (a later payment's share, a lead bounty, the referred company's) is announced on its own."""
    for rewards in by_participant.values():
        live = [reward for reward in rewards if reward.status != RewardStatus.REVERSED]
        if not live:
            continue
        if is_conversion:
            messages.message_referral_converted(participant=live[0].participant, referral=referral, rewards=live)
        else:
            for reward in live:
                messages.message_reward_earned(reward=reward, referral=referral)
    for reward in referred_rewards:
        if reward.status != RewardStatus.REVERSED:
            messages.message_reward_earned(reward=reward, referral=referral)


def referred_participant(*, referral: Referral, actor: Actor) -> Participant:
    """The referred company as a participant of the referral's program (rewards and the ledger belong to
    participants): the participant with its customer id or e-mail when there is one, else a new active
    participant with source "referred" (no referral links until they enrol themselves)."""
    program = referral.program
    participants = Participant.objects.for_tenant(referral.tenant_id).filter(program=program)
    external_id = referral.referred_external_id or f"referred-{referral.pk}"
    found = participants.filter(external_id=external_id).first()
    if found is None and referral.referred_email:
        found = participants.filter(email=referral.referred_email).order_by("pk").first()
    if found is not None:
        return found
    name = referral.referred_company or referral.referred_name or referral.referred_email or f"Referral #{referral.pk}"
    try:
        with transaction.atomic():
            participant = Participant.objects.create(
                tenant_id=referral.tenant_id,
                program=program,
                external_id=external_id[:200],
                name=name[:200],
                email=referral.referred_email,
                company=referral.referred_company,
                status=ParticipantStatus.ACTIVE,
                source="referred",
            )
    except IntegrityError:
        return participants.get(external_id=external_id[:200])
    audit_record(
        tenant=referral.tenant,
        actor=actor,
        action="participant.created_for_referred_company",
        obj=participant,
        to_state=participant.status,
        data={"referral": referral.pk},
    )
    return participant


# --- reductions: refunds and cancellations --------------------------------------------------------
def _apply_refunds(*, payment: ConversionEvent, actor: Actor, rewards: list[Reward] | None = None) -> int:
    total = refunded_total(payment)
    if total <= 0 or payment.amount_minor <= 0:
        return 0
    if rewards is None:
        rewards = list(Reward.objects.for_tenant(payment.tenant_id).filter(conversion_event=payment).order_by("pk"))
    for reward in rewards:
        reward_reduce_for_refund(
            reward=reward, refunded_minor=total, paid_minor=payment.amount_minor, actor=actor, reason="refund"
        )
    return total


def _cancellation_in_force(*, referral: Referral, rule_set: rules_module.RuleSet) -> ConversionEvent | None:
    """The referral's cancellation that falls inside the rules' cancellation window, if any."""
    if rule_set.cancellation_policy == "keep" or referral.converted_at is None:
        return None
    cancellation = (
        ConversionEvent.objects.for_tenant(referral.tenant_id)
        .filter(referral_id=referral.pk, kind=ConversionKind.CANCELLATION, status__in=SETTLED_STATUSES)
        .order_by("occurred_at", "pk")
        .first()
    )
    if cancellation is None:
        return None
    if (cancellation.occurred_at - referral.converted_at).days > rule_set.cancellation_within_days:
        return None
    return cancellation


def _withdraw(*, rewards: list[Reward], policy: str, actor: Actor) -> int:
    withdrawn = 0
    for reward in rewards:
        reward.refresh_from_db()
        if reward.status in (RewardStatus.REJECTED, RewardStatus.REVERSED):
            continue
        already_paid = reward.status == RewardStatus.PAID or reward.payout_id is not None
        if policy == "forfeit_unpaid" and already_paid:
            continue
        reward_reduce_for_refund(reward=reward, refunded_minor=1, paid_minor=1, actor=actor, reason="cancellation")
        withdrawn += 1
    return withdrawn


def _settle_reductions(
    *, payment: ConversionEvent, referral: Referral, rule_set: rules_module.RuleSet, rewards: list[Reward], actor: Actor
) -> None:
    """Rewards created late (e.g. after a fraud review) still get the refunds and the cancellation that
    arrived before them."""
    if not rewards:
        return
    _apply_refunds(payment=payment, actor=actor, rewards=rewards)
    if _cancellation_in_force(referral=referral, rule_set=rule_set) is not None:
        _withdraw(rewards=rewards, policy=rule_set.cancellation_policy, actor=actor)


def _evaluate_refund(*, event: ConversionEvent, actor: Actor) -> _Outcome:
    payment = refunded_payment(event)
    if payment is None:
        return _Outcome(
            EvaluationStatus.NOTHING_YET,
            notes=["The refunded payment is not known yet; its rewards will be reduced when it is evaluated."],
        )
    total = _apply_refunds(payment=payment, actor=actor)
    return _Outcome(
        EvaluationStatus.DONE,
        notes=[
            f"Refund of payment {payment.external_event_id}: {format_money(total, payment.currency or 'USD')} of "
            f"{format_money(payment.amount_minor, payment.currency or 'USD')} refunded in total; its rewards "
            "are reduced in proportion (clawed back if already paid)."
        ],
        detail={"payment": payment.pk, "refunded_minor": total, "paid_minor": payment.amount_minor},
    )


def _evaluate_cancellation(*, event: ConversionEvent, referral: Referral, actor: Actor) -> _Outcome:
    version = referral.rule_version or program_current_version(program=referral.program)
    rule_set = rules_module.parse_rules(version.rules)
    policy, days = rule_set.cancellation_policy, rule_set.cancellation_within_days
    if policy == "keep":
        return _Outcome(EvaluationStatus.DONE, notes=["Cancellation policy 'keep': earned rewards stay."])
    if _cancellation_in_force(referral=referral, rule_set=rule_set) is None:
        return _Outcome(
            EvaluationStatus.DONE,
            notes=[f"Cancelled more than {days} days after converting (or never converted): rewards stay."],
        )
    rewards = list(Reward.objects.for_tenant(event.tenant_id).filter(referral=referral).order_by("pk"))
    withdrawn = _withdraw(rewards=rewards, policy=policy, actor=actor)
    what = "held and paid rewards" if policy == "clawback" else "rewards not yet paid"
    return _Outcome(
        EvaluationStatus.DONE,
        notes=[f"Cancelled within {days} days of converting: policy {policy!r} withdraws {what} ({withdrawn})."],
        detail={"policy": policy, "within_days": days, "withdrawn": withdrawn},
    )


__all__ = [
    "previous_successful_referrals",
    "referral_rewards_evaluate",
    "referred_participant",
    "reward_evaluate",
    "split_by_share",
]
