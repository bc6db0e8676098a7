"""Reward evaluation: the rewards a referral has earned, settled from the SET of its events (issue 4,
item 1; issue 7; docs/ledger.md "Evaluation").

``referral_rewards_settle(referral_id=...)`` (task ``rewards.settle_referral``; ``rewards.evaluate_conversion``
for one event settles its referral) recomputes, under the referral's rule version, every reward the
referral's events and stages call for — its *target* — and brings the ledger to it:

- **slots.** Each reward pays for one slot: ``ref:<referral>:<side>:<participant>:<tier>:<rule>:<trigger>``
  where the trigger is ``conversion`` (rules paid once, on the first payment), ``payment:<event>``
  (recurring shares, per payment), ``sign_up`` or ``qualified`` (lead rewards, once). At most one
  current reward per slot (a database constraint), so a first-payment reward exists once per referral,
  rule and participant however the events arrive.
- **the first payment** is the earliest by when it happened (ties: the external event id), never by when
  it was processed; months of recurring shares count from it; payments after the customer's earliest
  cancellation earn nothing; the cancellation policy applies when that cancellation falls within its
  window of the first payment.
- **credit** is the referral's (``referrals.selectors.referral_credit``): decided at its establishment, the
  same for every event. Referrer rewards are the rule amount times the participant's EXACT share, split
  by the largest remainder (parts sum to the amount, each within one minor unit of its exact part); items
  (gift, feature, coupon) go whole to the largest share. The referred company's rewards are not split.
- **reconciling** the target with the current rewards: a slot whose amount, kind or participant changed
  (an earlier payment arrived late, a share moved) has its reward withdrawn through correcting ledger
  transactions (reversal before payout, clawback after) and a new one created; refunds and the
  cancellation policy bring each reward's reductions up to their target (cumulative, proportional); a
  reward reduced more than its target now allows is replaced. Entries are never edited.

So the rewards and ledger balances depend only on the set of events, never on their order or
concurrency (``rewards/tests/test_order_independence.py``). Settling runs under the referral's row lock
and locks the credited participants (id order), so concurrent settlements of one referrer's referrals
count caps and tiers exactly; caps and tiers count the referrer's other rewarded referrals converted
EARLIER in the period, and a settlement that changes a referral's standing settles the later ones again.

Who gets nothing: a referral held by fraud review (its rewards are left as they are until a marketer
decides), a rejected referral (everything it earned is withdrawn), and participants who are not active
(their slots are left as they are).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

from django.core.exceptions import ValidationError
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from programs import rules as rules_module
from programs.models import Participant, ParticipantStatus
from programs.selectors import whole_months_between
from programs.services import participant_for_referred_company
from referral_platform.celery import enqueue_on_commit
from referral_platform.db.sql import rows_insert, rows_update
from referral_platform.hooks import hooks
from referral_platform.money import format_money, format_percent
from referral_platform.tenancy.actors import Actor, system_actor
from referrals.attribution import SHARE_PLACES
from referrals.models import (
    Attribution,
    ConversionEvent,
    ConversionEventStatus,
    ConversionKind,
    Referral,
    ReferralStatus,
    ReviewStatus,
)
from referrals.selectors import referral_credit

from . import messages
from .models import (
    BeneficiarySide,
    EvaluationStatus,
    Reward,
    RewardEvaluation,
    RewardKind,
    RewardStatus,
    StripeCharge,
)
from .services import refund_target, reward_create, reward_reduce_for_refund

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
LIVE = Q(status__in=[RewardStatus.PENDING, RewardStatus.APPROVED, RewardStatus.PAID])
logger = logging.getLogger(__name__)


# --- pure helpers ------------------------------------------------------------------------------
def split_by_share(amounts: list[int], shares: list[Decimal | Fraction]) -> list[int]:
    """Each participant's part of a rule amount: ``amount * share`` in whole minor units.

    Largest remainder: every exact part is floored, and the leftover units (the rounded total of the
    exact parts minus the floors) go one each to the largest remainders, ties to the larger share,
    then the later position. With the EXACT shares (Fractions summing to 1) and the same rule amount for
    every participant (the usual case), the parts sum to exactly that amount and each is within one minor
    unit of its exact part. Amounts may differ per participant (their own tier or cap); the parts then
    sum to the rounded sum of the exact parts.
    """
    shares = [Fraction(share) for share in shares]
    exact = [amount * share for amount, share in zip(amounts, shares, strict=True)]
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


def share_percent(share: Decimal | Fraction) -> str:
    """0.400000 → "40 %", 0.333333 → "33.3333 %"."""
    text = f"{Decimal(str(_display_share(Fraction(share)))) * 100:.4f}".rstrip("0").rstrip(".")
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
        .order_by("-occurred_at", "-external_event_id")
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


# --- reads -------------------------------------------------------------------------------------
def _counting_matters(rule_set: rules_module.RuleSet) -> bool:
    """Whether a referrer's other rewarded referrals change what this one earns (a cap or a tier)."""
    rules = list(rule_set.referrer) + [rule for tier in rule_set.partner_tiers.values() for rule in tier]
    return rule_set.rewarded_referrals_cap is not None or any(rule.kind == rules_module.TIERED for rule in rules)


def previous_successful_referrals(*, participant: Participant, referral: Referral, period: str, at: datetime) -> int:
    """The participant's OTHER referrals rewarded (a current, live referrer reward) that converted in the
    counting period containing ``at`` BEFORE ``referral`` (ties: the older referral first): the n - 1 of
    "the n-th successful referral" (tiers, caps). Counting only earlier conversions makes the answer the
    same whatever order the referrals' events are processed in."""
    start, end = period_bounds(at, period)
    converted_at = referral.converted_at or at
    earlier = Q(referral__converted_at__lt=converted_at) | Q(
        referral__converted_at=converted_at, referral_id__lt=referral.pk
    )
    return (
        Reward.objects.for_tenant(participant.tenant_id)
        .filter(LIVE, earlier, participant=participant, beneficiary_side=BeneficiarySide.REFERRER, is_current=True)
        .filter(referral__converted_at__gte=start, referral__converted_at__lt=end)
        .exclude(referral=referral)
        .values("referral_id")
        .distinct()
        .count()
    )


# CHARGE LOCK. Why a settlement reads the payments' Stripe charges under a row lock: a charge.refunded webhook updates
# the charge and then asks whether its payment has a referral yet (``rewards.webhooks._apply_refunds``); when
# not (the payment's matching has not committed), it settles nothing, counting on the settlement that follows
# the matching to read the refunded amount. Without the lock that settlement could read the charge while the
# refund's update was still uncommitted — before its commit, after the matching's — and settle the payment
# unreduced, with nobody settling it again (seen once in the benchmark with two workers: a refund never
# applied). With it, the settlement waits for that update and reads the refunded charge; an update that
# comes later waits for the settlement, then finds the referral and settles it again.
def _refund_of(payment: ConversionEvent) -> tuple[int, int]:
    """(refunded, paid) of a payment: refund events through the API, or its Stripe charge, whichever
    refunds the larger part (they describe the same money)."""
    charges = StripeCharge.objects.for_tenant(payment.tenant_id).filter(conversion_event=payment)
    if transaction.get_connection().in_atomic_block:  # settling (a preview reads without it)
        charges = charges.select_for_update(of=("self",), no_key=True)  # see CHARGE LOCK above
    return refund_with_charge(refunded_total(payment), payment, charges.first())


def refund_with_charge(refunded: int, payment: ConversionEvent, charge: StripeCharge | None) -> tuple[int, int]:
    """``_refund_of`` from the refund events' total and the payment's Stripe charge (None: no charge)."""
    paid = payment.amount_minor
    if (
        charge is not None
        and charge.amount_minor > 0
        and charge.amount_refunded_minor > 0
        and Fraction(charge.amount_refunded_minor, charge.amount_minor) > Fraction(refunded, max(paid, 1))
    ):
        return min(charge.amount_refunded_minor, charge.amount_minor), charge.amount_minor
    return refunded, paid


class SettlementReads:
    """What settling a referral reads besides the referral row itself, one referral at a time (the
    per-referral path). ``rewards.settlement_sets`` answers the same questions from sets read once per
    batch; the decisions made from the answers (``_evaluate``) are the same code for both."""

    def events(self, referral: Referral) -> list[ConversionEvent]:
        return sorted(
            ConversionEvent.objects.for_tenant(referral.tenant_id).filter(
                referral_id=referral.pk, status__in=SETTLED_STATUSES
            ),
            key=lambda e: (e.occurred_at, e.external_event_id),
        )

    def current(self, referral: Referral) -> dict[str, Reward]:
        return {
            reward.slot_key: reward
            for reward in Reward.objects.for_tenant(referral.tenant_id)
            .filter(referral=referral, is_current=True)
            .exclude(slot_key="")
            .select_related("participant", "program", "tenant")
        }

    def credit(self, referral: Referral):
        return referral_credit(referral).result

    def participants(self, referral: Referral, ids: list[int]) -> dict[int, Participant]:
        """The credited participants, locked (id order: no deadlocks) so counts for tiers and caps stay
        exact while their other referrals are settled concurrently."""
        return {
            p.pk: p
            for p in Participant.objects.for_tenant(referral.tenant_id)
            .select_for_update(of=("self",), no_key=True)
            .filter(pk__in=ids)
            .order_by("pk")
        }

    def referred(self, referral: Referral, actor: Actor) -> Participant:
        return referred_participant(referral=referral, actor=actor)

    def previous(self, *, participant: Participant, referral: Referral, period: str, at: datetime) -> int:
        return previous_successful_referrals(participant=participant, referral=referral, period=period, at=at)

    def attribution_ids(self, referral: Referral) -> dict[tuple[int, int], int]:
        return {
            (row["conversion_event_id"], row["participant_id"]): row["pk"]
            for row in Attribution.objects.for_tenant(referral.tenant_id)
            .filter(referral=referral)
            .values("pk", "conversion_event_id", "participant_id")
        }

    def refund_of(self, payment: ConversionEvent) -> tuple[int, int]:
        return _refund_of(payment)

    def revision(self, slot: str, tenant_id: int) -> int:
        return _revision(slot, tenant_id)


DIRECT_READS = SettlementReads()


# --- the target: what the referral's events call for ------------------------------------------------
@dataclass
class _Target:
    """One reward the referral's events call for."""

    slot: str
    participant: Participant
    side: str
    rule: rules_module.Reward
    amount: int
    share: Decimal  # displayed share (1 for the referred side)
    tier: str
    previous: int
    event: ConversionEvent | None
    earned_on: str
    earned_at: datetime
    refund: tuple[int, int] = (0, 0)  # (refunded, paid) of the earning payment
    withdraw: str = ""  # why the cancellation policy withdraws it
    policy: str = ""  # the cancellation policy that withdraws it (forfeit_unpaid spares paid rewards)
    attribution: int | None = None  # the earning event's attribution row of this participant

    @property
    def kind(self) -> str:
        return REWARD_KIND_OF_FORM[self.rule.form]

    @property
    def coupon(self) -> dict:
        return _coupon_fields(self.rule) if self.kind == RewardKind.COUPON else {}

    def withdraws(self, reward: Reward | None) -> bool:
        """Whether the cancellation policy takes ``reward`` back: clawback always, forfeit_unpaid only
        while it is not paid (or in a payout)."""
        if not self.withdraw:
            return False
        already_paid = reward is not None and (reward.status == RewardStatus.PAID or reward.payout_id is not None)
        return not (self.policy == "forfeit_unpaid" and already_paid)

    def reduction(self, reward: Reward | None = None) -> int:
        """The reductions the reward should carry: all of it when withdrawn, else the refunded part."""
        if self.withdraws(reward):
            return self.amount
        return refund_target(self.amount, *self.refund)

    def fully_reduced(self, reward: Reward | None = None) -> bool:
        refunded, paid = self.refund
        return self.withdraws(reward) or (paid > 0 and refunded >= paid)


@dataclass
class _Settlement:
    status: str
    notes: list[str] = field(default_factory=list)
    detail: dict = field(default_factory=dict)
    created: list[Reward] = field(default_factory=list)
    withdrawn: int = 0


@dataclass(frozen=True)
class _Occasion:
    """One moment the rules are asked about: a lead stage, or one payment."""

    kind: str  # sign_up / qualified / payment
    at: datetime
    event: ConversionEvent | None
    trigger: str  # slot suffix


def _occasions(referral: Referral, events: list[ConversionEvent]) -> tuple[list[_Occasion], dict]:
    """The moments that can earn, from the referral's stages and events (order of arrival never matters):
    its sign-up (the earliest of signing up, qualifying, converting), its qualification, and every payment
    made before the earliest cancellation. Also returns facts for the notes."""
    by_kind: dict[str, list[ConversionEvent]] = defaultdict(list)
    for event in events:
        by_kind[event.kind].append(event)
    payments = by_kind[ConversionKind.PAYMENT]
    cancellation = by_kind[ConversionKind.CANCELLATION][0] if by_kind[ConversionKind.CANCELLATION] else None
    occasions: list[_Occasion] = []

    def first_event(kind: str, at: datetime | None) -> ConversionEvent | None:
        candidates = [e for e in by_kind[kind] if at is None or e.occurred_at <= at]
        return candidates[0] if candidates else None

    signed_up = [t for t in (referral.signed_up_at, referral.qualified_at, referral.converted_at) if t is not None]
    if signed_up:
        at = min(signed_up)
        occasions.append(_Occasion("sign_up", at, first_event(ConversionKind.SIGN_UP, at), "sign_up"))
    if referral.qualified_at is not None:
        at = referral.qualified_at
        occasions.append(_Occasion("qualified", at, first_event(ConversionKind.QUALIFIED, at), "qualified"))
    earning = [p for p in payments if cancellation is None or p.occurred_at <= cancellation.occurred_at]
    for payment in earning:
        trigger = f"payment:{payment.external_event_id}"
        occasions.append(_Occasion("payment", payment.occurred_at, payment, trigger))
    facts = {
        "first_payment": payments[0] if payments else None,
        "cancellation": cancellation,
        "payments_after_cancellation": [p for p in payments if p not in earning],
    }
    return occasions, facts


def _cancellation_withdraws(
    *, rule_set: rules_module.RuleSet, first: ConversionEvent | None, cancellation: ConversionEvent | None
) -> bool:
    """Whether the cancellation policy withdraws the referral's rewards: a cancellation within the policy's
    days of the first payment (the conversion), under clawback or forfeit_unpaid."""
    if rule_set.cancellation_policy == "keep" or cancellation is None or first is None:
        return False
    return (cancellation.occurred_at - first.occurred_at).days <= rule_set.cancellation_within_days


def _slot(referral: Referral, side: str, participant: int | str, tier: str, rule_index: int, trigger: str) -> str:
    return f"ref:{referral.pk}:{side}:{participant}:{tier or 'default'}:{rule_index}:{trigger}"


def _rule_on(rule_set: rules_module.RuleSet, side: str, tier: str, rule_index: int) -> str:
    return rule_set.side(side, tier)[rule_index].on


def _targets(
    *,
    referral: Referral,
    rule_set: rules_module.RuleSet,
    events: list[ConversionEvent],
    participants: dict[int, Participant],
    credit: dict[int, Fraction],
    order: list[int],
    referred: Participant | None,
    notes: list[str],
    detail: dict,
    reads: SettlementReads = DIRECT_READS,
) -> dict[str, _Target]:
    occasions, facts = _occasions(referral, events)
    first = facts["first_payment"]
    cancellation = facts["cancellation"]
    counting_at = (first.occurred_at if first else None) or (occasions[0].at if occasions else timezone.now())
    previous = {
        pid: reads.previous(
            participant=participants[pid], referral=referral, period=rule_set.counting_period, at=counting_at
        )
        for pid in order
    }
    detail.update(
        {
            "rule_version": referral.rule_version.number if referral.rule_version else None,
            "first_payment": first.external_event_id if first else None,
            "cancellation": cancellation.external_event_id if cancellation else None,
            "credit": {str(pid): str(_display_share(credit[pid])) for pid in order},
            "previous_successful_referrals": {str(pid): previous[pid] for pid in order},
            "occasions": [],
        }
    )
    if facts["payments_after_cancellation"]:
        late = ", ".join(p.external_event_id for p in facts["payments_after_cancellation"])
        notes.append(
            f"The customer churned (cancelled on {cancellation.occurred_at:%Y-%m-%d}): payments made after that "
            f"earn nothing ({late})."
        )
    attribution_ids = reads.attribution_ids(referral)
    targets: dict[str, _Target] = {}
    for occasion in occasions:
        base = {"kind": occasion.kind}
        refund = (0, 0)
        if occasion.kind == "payment":
            payment = occasion.event
            base.update(
                amount_minor=payment.amount_minor,
                currency=payment.currency,
                seats=seats_of(payment),
                months_since_first_payment=whole_months_between(first.occurred_at, payment.occurred_at),
                is_first_payment=payment.pk == first.pk,
            )
            refund = reads.refund_of(payment)
        elif occasion.event is not None:
            base["seats"] = seats_of(occasion.event)
        fired: list[dict] = []
        # Referrer side, per credited participant, then each reward split by exact share.
        slots: dict[tuple[str, int, str], list[tuple[int, rules_module.Reward, str]]] = defaultdict(list)
        for pid in order:
            participant = participants[pid]
            tier = participant.tier if rule_set.tier_applies(participant.tier) else ""
            context = rules_module.ConversionContext(
                **base, previous_successful_referrals=previous[pid], participant_tier=participant.tier
            )
            outcome = rules_module.compute_rewards(rule_set, context)
            for reward in outcome.referrer:
                on = _rule_on(rule_set, "referrer", tier, reward.rule_index)
                trigger = "conversion" if on == rules_module.ON_CONVERSION else occasion.trigger
                slots[(tier, reward.rule_index, trigger)].append((pid, reward, tier))
            if outcome.notes:
                notes.extend(f"{participant.name}: {note}" for note in outcome.notes if note not in notes)
            fired.append({"participant": pid, "referrer": [r.as_dict() for r in outcome.referrer]})
        for (tier, rule_index, trigger), grants in slots.items():
            for (pid, reward, _tier), amount in zip(grants, _parts(grants, credit), strict=True):
                if amount is None:
                    continue
                slot = _slot(referral, BeneficiarySide.REFERRER, pid, tier, rule_index, trigger)
                targets[slot] = _Target(
                    slot=slot,
                    participant=participants[pid],
                    side=BeneficiarySide.REFERRER,
                    rule=reward,
                    amount=amount,
                    share=_display_share(credit[pid]),
                    tier=tier,
                    previous=previous[pid],
                    event=occasion.event,
                    earned_on="conversion" if trigger == "conversion" else occasion.kind,
                    earned_at=occasion.at,
                    refund=refund,
                    attribution=attribution_ids.get((occasion.event.pk if occasion.event else None, pid)),
                )
        # Referred side: once, never split, in the context of the referral's own referrer.
        if referred is not None:
            referrer_pid = (
                referral.referrer_id if referral.referrer_id in participants else (order[-1] if order else None)
            )
            if referrer_pid is not None:
                context = rules_module.ConversionContext(
                    **base,
                    previous_successful_referrals=previous.get(referrer_pid, 0),
                    participant_tier=participants[referrer_pid].tier,
                )
                outcome = rules_module.compute_rewards(rule_set, context)
                for reward in outcome.referred:
                    on = _rule_on(rule_set, "referred", "", reward.rule_index)
                    trigger = "conversion" if on == rules_module.ON_CONVERSION else occasion.trigger
                    slot = _slot(referral, BeneficiarySide.REFERRED, "company", "", reward.rule_index, trigger)
                    targets[slot] = _Target(
                        slot=slot,
                        participant=referred,
                        side=BeneficiarySide.REFERRED,
                        rule=reward,
                        amount=reward.amount_minor,
                        share=Decimal(1),
                        tier="",
                        previous=0,
                        event=occasion.event,
                        earned_on="conversion" if trigger == "conversion" else occasion.kind,
                        earned_at=occasion.at,
                        refund=refund,
                    )
                fired.append({"referred": [r.as_dict() for r in outcome.referred]})
        detail["occasions"].append({"kind": occasion.kind, "trigger": occasion.trigger, "rules": fired})
    if _cancellation_withdraws(rule_set=rule_set, first=first, cancellation=cancellation):
        policy, days = rule_set.cancellation_policy, rule_set.cancellation_within_days
        reason = f"cancelled on {cancellation.occurred_at:%Y-%m-%d}, within {days} days of converting"
        notes.append(f"The customer {reason}: policy {policy!r} withdraws {_POLICY_WORDS[policy]}.")
        for target in targets.values():
            target.withdraw, target.policy = reason, policy
    detail["policy"] = {"name": rule_set.cancellation_policy, "within_days": rule_set.cancellation_within_days}
    detail["referrer"] = [
        {
            "participant": pid,
            "share": str(_display_share(credit[pid])),
            "tier": participants[pid].tier if rule_set.tier_applies(participants[pid].tier) else "",
            "previous_successful_referrals": previous[pid],
            "rewards": [
                {**target.rule.as_dict(), "amount_minor": target.amount, "slot": target.slot}
                for target in targets.values()
                if target.side == BeneficiarySide.REFERRER and target.participant.pk == pid
            ],
        }
        for pid in order
    ]
    return targets


_POLICY_WORDS = {"clawback": "held and paid rewards", "forfeit_unpaid": "rewards not yet paid"}


def _display_share(exact: Fraction) -> Decimal:
    quantum = Decimal(1).scaleb(-SHARE_PLACES)
    return (Decimal(exact.numerator) / Decimal(exact.denominator)).quantize(quantum)


def _parts(grants: list[tuple[int, rules_module.Reward, str]], credit: dict[int, Fraction]) -> list[int | None]:
    """Per grant, the amount to create (None: nothing for this participant)."""
    form = grants[0][1].form
    if form in SPLITTABLE_FORMS:
        return split_by_share(
            [reward.amount_minor for _pid, reward, _t in grants], [credit[pid] for pid, _r, _t in grants]
        )
    # An item (gift, feature, coupon) cannot be split: it goes whole to the largest share (ties: the later).
    winner = max(range(len(grants)), key=lambda i: (credit[grants[i][0]], i))
    return [reward.amount_minor if index == winner else None for index, (_pid, reward, _t) in enumerate(grants)]


# --- the service -------------------------------------------------------------------------------
def referral_rewards_settle(*, referral_id: int, now: datetime | None = None) -> _Settlement | None:
    """Settle one referral's rewards from the set of its events (see the module docstring): create what is
    missing, withdraw or replace what no longer matches, bring reductions up to refunds and the
    cancellation policy, and record the outcome on each event's ``RewardEvaluation``. Idempotent and safe
    to run concurrently (the referral row is locked). None for an unknown referral."""
    with transaction.atomic():
        referral = (
            Referral.objects.select_for_update(of=("self",))
            .select_related("program", "referrer", "rule_version", "tenant")
            .filter(pk=referral_id)
            .first()
        )
        if referral is None:
            return None
        actor = system_actor(referral.tenant)
        try:
            with transaction.atomic():
                settlement = _settle_locked(referral=referral, actor=actor, now=now)
        except (rules_module.RulesError, rules_module.CurrencyMismatch, ValidationError) as error:
            settlement = _Settlement(EvaluationStatus.FAILED, notes=[f"{type(error).__name__}: {error}"])
        _record_evaluations(referral=referral, settlement=settlement)
        return settlement


@dataclass
class BatchSettlement:
    """The outcome of ``referral_rewards_settle_batch``: each referral's status, and why failed ones failed."""

    settled: dict[int, str] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)


def referral_rewards_settle_batch(*, referral_ids: Iterable[int], now: datetime | None = None) -> BatchSettlement:
    """Settle many referrals (a backlog, a billing run, the later referrals a standing change moves), each
    exactly as ``referral_rewards_settle`` does and in its own transaction (id order), so a batch never
    holds the locks of more than one referral and its participants at a time, and nothing serialises
    tenants or workers behind one lock.

    One referral that fails unexpectedly (a bug, a corrupt row) is rolled back alone: the others commit,
    and its settled events' evaluations are marked ``failed`` with the reason (the next settlement of the
    referral, or a rerun of the batch, replaces that outcome). A transient database error (deadlock,
    lost connection) is raised instead, so the task retries: the referrals already settled commit once,
    and settling them again creates nothing (settlement is idempotent), so a rerun, a redelivered task or
    two workers running overlapping batches still give each reward exactly once.
    """
    from .settlement_sets import referrals_settle_sets

    referral_ids = list(referral_ids)
    bad = [value for value in referral_ids if not isinstance(value, int) or isinstance(value, bool)]
    if bad:  # a task argument from outside our code: refused whole, before anything is written
        raise ValueError(f"referral_ids: whole numbers only, not {bad[:5]!r}")
    result = BatchSettlement()
    sets = referrals_settle_sets(referral_ids=referral_ids, now=now)
    result.settled.update(sets.settled)
    for referral_id in sets.left:
        try:
            try:
                settlement = referral_rewards_settle(referral_id=referral_id, now=now)
            except IntegrityError:
                # A unique key another transaction just took (a first-use ledger account, a participant
                # row): settling again reads the winner's row.
                settlement = referral_rewards_settle(referral_id=referral_id, now=now)
        except OperationalError:
            raise
        except Exception as error:  # isolate one referral's failure from the batch
            reason = f"{type(error).__name__}: {error}"[:2000]
            logger.exception("settling referral %s failed in a batch", referral_id)
            _record_failure(referral_id=referral_id, reason=reason)
            result.failed[referral_id] = reason
            continue
        if settlement is not None:
            result.settled[referral_id] = settlement.status
    return result


def _record_failure(*, referral_id: int, reason: str) -> None:
    """Mark the settled events of a referral whose settlement raised: failed, with the reason."""
    with transaction.atomic():
        referral = Referral.objects.select_for_update(of=("self",)).filter(pk=referral_id).first()
        if referral is None:
            return
        settlement = _Settlement(
            EvaluationStatus.FAILED,
            notes=[f"Settling referral #{referral_id} failed: {reason}. It is settled again on its next change."],
        )
        _record_evaluations(referral=referral, settlement=settlement)


def reward_evaluate(*, event_id: int, now: datetime | None = None) -> RewardEvaluation | None:
    """Evaluate one conversion event: settle its referral's rewards. Returns the event's
    ``RewardEvaluation``, or None for an unknown event or one without a referral."""
    event = ConversionEvent.objects.filter(pk=event_id).only("pk", "tenant_id", "referral_id", "status").first()
    if event is None or event.referral_id is None:
        return None
    referral_rewards_settle(referral_id=event.referral_id, now=now)
    return RewardEvaluation.objects.for_tenant(event.tenant_id).filter(conversion_event_id=event.pk).first()


def referral_rewards_evaluate(*, referral: Referral) -> list[RewardEvaluation]:
    """Settle ``referral`` (after a fraud review cleared it) and return its events' evaluations."""
    referral_rewards_settle(referral_id=referral.pk)
    return list(RewardEvaluation.objects.for_tenant(referral.tenant_id).filter(referral=referral).order_by("pk"))


@dataclass
class _Evaluation:
    """What a referral's events call for (``_evaluate``), before anything is written."""

    settlement: _Settlement
    current: dict[str, Reward]
    targets: dict[str, _Target]
    frozen: set[int]
    refused: str
    blocked: bool = False


def _evaluate(*, referral: Referral, actor: Actor, reads: SettlementReads) -> _Evaluation:
    """Decide the referral's targets from its events, credit, participants and counters (read through
    ``reads``): pure apart from those reads (and the referred company's participant, created on first use)."""
    events = reads.events(referral)
    current = reads.current(referral)
    notes: list[str] = []
    detail: dict = {}
    refused = ""
    if referral.review_status == ReviewStatus.FLAGGED:
        settlement = _Settlement(
            EvaluationStatus.BLOCKED,
            notes=[
                f"Referral #{referral.pk} is flagged for fraud review: it earns no reward until a marketer clears it."
            ],
        )
        return _Evaluation(settlement, current, {}, set(), "", blocked=True)
    if referral.review_status == ReviewStatus.REJECTED:
        refused = f"Referral #{referral.pk} was rejected as fraud in review: it earns no reward."
    elif referral.status == ReferralStatus.REJECTED:
        refused = f"Referral #{referral.pk} was rejected: it earns no reward."
    targets: dict[str, _Target] = {}
    frozen: set[int] = set()
    if refused:
        notes.append(refused)
    else:
        version = referral.rule_version
        rule_set = rules_module.version_rules(version)
        result = reads.credit(referral)
        ids = sorted(set(result.participant_exact) | {referral.referrer_id})
        locked = reads.participants(referral, ids)
        order = [pid for pid in result.participant_shares if pid in locked]
        active = [pid for pid in order if locked[pid].status == ParticipantStatus.ACTIVE]
        for pid in order:
            if pid not in active:
                frozen.add(pid)
                notes.append(
                    f"{locked[pid].name} {INACTIVE_WORDS.get(locked[pid].status, 'is not active')}: no reward."
                )
        credit = {pid: result.participant_exact[pid] for pid in active}
        total = sum(credit.values(), Fraction(0))
        credit = {pid: share / total for pid, share in credit.items()} if total else {}
        referred = None
        if rule_set.referred:
            referred = reads.referred(referral, actor)
            if referred.status != ParticipantStatus.ACTIVE:
                notes.append(
                    f"The referred company ({referred.name}) "
                    f"{INACTIVE_WORDS.get(referred.status, 'is not active')}: no reward for it."
                )
                frozen.add(referred.pk)
                referred = None
        targets = _targets(
            referral=referral,
            rule_set=rule_set,
            events=events,
            participants=locked,
            credit=credit,
            order=[pid for pid in order if pid in credit],
            referred=referred,
            notes=notes,
            detail=detail,
            reads=reads,
        )
    settlement = _Settlement(EvaluationStatus.DONE, notes=notes, detail=detail)
    return _Evaluation(settlement, current, targets, frozen, refused)


def _settle_locked(*, referral: Referral, actor: Actor, now: datetime | None) -> _Settlement:
    evaluation = _evaluate(referral=referral, actor=actor, reads=DIRECT_READS)
    settlement = evaluation.settlement
    if evaluation.blocked:
        return settlement
    standing_before = _standing(referral)
    _reconcile(
        referral=referral,
        current=evaluation.current,
        targets=evaluation.targets,
        frozen=evaluation.frozen,
        actor=actor,
        now=now,
        settlement=settlement,
    )
    _nothing_granted_note(evaluation)
    _announce(referral=referral, created=settlement.created)
    if not evaluation.refused and _standing(referral) != standing_before:
        _settle_later_referrals(referral=referral)
    return settlement


def _nothing_granted_note(evaluation: _Evaluation) -> None:
    settlement = evaluation.settlement
    if not settlement.created and not evaluation.targets and not evaluation.refused:
        settlement.notes.append("The rules grant no reward for this referral's events yet.")


def _standing(referral: Referral) -> frozenset:
    """What other referrals' caps and tiers see of this one: who holds a live referrer reward for it, and
    since when."""
    rows = (
        Reward.objects.for_tenant(referral.tenant_id)
        .filter(LIVE, referral=referral, beneficiary_side=BeneficiarySide.REFERRER, is_current=True)
        .values_list("participant_id", "converted_at")
    )
    earliest: dict[int, datetime] = {}
    for pid, at in rows:
        earliest[pid] = min(at, earliest.get(pid, at))
    return frozenset(earliest.items()) | frozenset({("converted_at", referral.converted_at)})


def _settle_later_referrals(*, referral: Referral) -> None:
    """A referral's standing changed (it became rewarded, stopped being, or its conversion moved): the
    referrers' referrals converted after it in the same counting period count it differently now."""
    rule_set = rules_module.version_rules(referral.rule_version)
    if not _counting_matters(rule_set) or referral.converted_at is None:
        return
    start, end = period_bounds(referral.converted_at, rule_set.counting_period)
    participants = set(
        Reward.objects.for_tenant(referral.tenant_id)
        .filter(referral=referral, beneficiary_side=BeneficiarySide.REFERRER)
        .values_list("participant_id", flat=True)
    )
    later = (
        Reward.objects.for_tenant(referral.tenant_id)
        .filter(participant_id__in=participants, beneficiary_side=BeneficiarySide.REFERRER, is_current=True)
        .filter(referral__converted_at__gte=referral.converted_at, referral__converted_at__lt=end)
        .exclude(referral=referral)
        .values_list("referral_id", flat=True)
        .distinct()
    )
    from .tasks import settle_referrals

    later = sorted(set(later))
    if later:  # one batch task, not one task per referral
        enqueue_on_commit(settle_referrals, later, once=True)
    del start


def _is_live(reward: Reward) -> bool:
    return reward.status in (RewardStatus.PENDING, RewardStatus.APPROVED, RewardStatus.PAID)


def _money_differs(reward: Reward, target: _Target) -> bool:
    coupon = target.coupon
    return (
        reward.participant_id != target.participant.pk
        or reward.kind != target.kind
        or reward.amount_minor != target.amount
        or reward.currency != target.rule.currency
        or reward.beneficiary_side != target.side
        or reward.coupon_percent_off != coupon.get("coupon_percent_off")
        or reward.coupon_duration_months != coupon.get("coupon_duration_months")
    )


def _over_reduced(reward: Reward, target: _Target) -> bool:
    """The reward carries more reductions than its target allows now (e.g. withdrawn under a cancellation
    that an earlier payment, arriving late, moved out of the policy's window): it must be replaced."""
    if reward.status == RewardStatus.REVERSED:
        if reward.amount_minor == 0:
            return not target.fully_reduced(reward)
        return reward.amount_minor > target.reduction(reward)
    return reward.reversed_minor + reward.clawed_back_minor > target.reduction(reward)


def _withdraw(reward: Reward, *, actor: Actor, reason: str) -> bool:
    """Take the whole value of a live reward back (reversal before payout, clawback after)."""
    if not _is_live(reward):
        return False
    reward_reduce_for_refund(reward=reward, refunded_minor=1, paid_minor=1, actor=actor, reason=reason)
    return True


def _retire(reward: Reward) -> None:
    Reward.objects.for_tenant(reward.tenant_id).filter(pk=reward.pk).update(is_current=False)
    hooks.reward_changed(reward=reward, change="retired")


def _reduce(reward: Reward, target: _Target, *, actor: Actor) -> None:
    """Bring a matching reward's reductions up to the target (refunds, the cancellation policy)."""
    if not _is_live(reward):
        return
    if target.withdraws(reward):
        reward_reduce_for_refund(reward=reward, refunded_minor=1, paid_minor=1, actor=actor, reason="cancellation")
    elif target.refund[0] > 0:
        refunded, paid = target.refund
        reward_reduce_for_refund(reward=reward, refunded_minor=refunded, paid_minor=paid, actor=actor, reason="refund")


# Why a settlement takes a reward back whole and retires it (here and in ``rewards.settlement_sets``).
NO_LONGER_EARNED = "no longer earned: recomputed from the referral's events"
CORRECTED = "corrected: recomputed from the referral's events"


def _reconcile(
    *,
    referral: Referral,
    current: dict[str, Reward],
    targets: dict[str, _Target],
    frozen: set[int],
    actor: Actor,
    now: datetime | None,
    settlement: _Settlement,
) -> None:
    """Bring the referral's current rewards to ``targets``, slot by slot (sorted: deterministic locking)."""
    for slot in sorted(set(current) | set(targets)):
        reward, target = current.get(slot), targets.get(slot)
        if reward is not None and target is None and reward.participant_id in frozen:
            continue  # an inactive participant's rewards stay as they are
        if target is None:
            if _withdraw(reward, actor=actor, reason=NO_LONGER_EARNED):
                settlement.withdrawn += 1
            _retire(reward)
            continue
        if reward is not None and reward.status == RewardStatus.REJECTED and not _money_differs(reward, target):
            continue  # a marketer rejected it: that decision stands
        if reward is not None and (_money_differs(reward, target) or _over_reduced(reward, target)):
            if _withdraw(reward, actor=actor, reason=CORRECTED):
                settlement.withdrawn += 1
            _retire(reward)
            reward = None
        if reward is None:
            created = _create(referral=referral, target=target, actor=actor, now=now, notes=settlement.notes)
            if created is not None:
                settlement.created.append(created)
                _reduce(created, target, actor=actor)
            continue
        _describe(reward, target)
        _reduce(reward, target, actor=actor)


def _revision(slot: str, tenant_id: int) -> int:
    return Reward.objects.for_tenant(tenant_id).filter(slot_key=slot).count() + 1


def _explanation(target: _Target, version_number: int | None) -> tuple[dict, str]:
    rule = target.rule
    where = (
        f"partner tier {target.tier!r} rule {rule.rule_index + 1}"
        if target.tier
        else f"{target.side} rule {rule.rule_index + 1}"
    )
    text = f"Rule version {version_number}, {where} ({rule.kind.replace('_', ' ')}): {rule.explanation}"
    if target.side == BeneficiarySide.REFERRER and target.share != 1:
        if rule.form in SPLITTABLE_FORMS:
            amount = format_money(target.amount, rule.currency)
            text += f" {rules_module.TIMES} {share_percent(target.share)} share = {amount}"
        else:
            text += f" (an item cannot be split: it goes to the largest share, {share_percent(target.share)})"
    event = target.event
    explanation = {
        "slot": target.slot,
        "event": event.pk if event else None,
        "external_event_id": event.external_event_id if event else None,
        "event_kind": event.kind if event else target.earned_on,
        "earned_on": target.earned_on,
        "rule_version": version_number,
        "side": target.side,
        "rule_index": rule.rule_index,
        "rule_kind": rule.kind,
        "form": rule.form,
        "tier": target.tier,
        "rule_amount_minor": rule.amount_minor,
        "rule_explanation": rule.explanation,
        "share": str(target.share),
        "attribution": target.attribution,
        "amount_minor": target.amount,
        "currency": rule.currency,
        "previous_successful_referrals": target.previous,
        "capped": rule.capped,
    }
    return explanation, text


def _describe(reward: Reward, target: _Target) -> None:
    """Keep a matching reward's description of what earned it current (same money: no ledger change):
    e.g. a first-payment bounty now earned by an earlier payment that arrived late."""
    changes = _description_changes(reward, target)
    if changes:
        Reward.objects.for_tenant(reward.tenant_id).filter(pk=reward.pk).update(**changes)


def _description_changes(reward: Reward, target: _Target) -> dict:
    explanation, text = _explanation(target, reward.explanation.get("rule_version"))
    changes = {}
    event_id = target.event.pk if target.event else None
    if reward.conversion_event_id != event_id:
        changes["conversion_event_id"] = event_id
    if reward.converted_at != target.earned_at:
        changes["converted_at"] = target.earned_at
        if reward.status == RewardStatus.PENDING:
            changes["hold_until"] = target.earned_at + (reward.hold_until - reward.converted_at)
    if reward.explanation != explanation:
        changes["explanation"] = explanation
    if reward.explanation_text != text:
        changes["explanation_text"] = text
    return changes


def _create(
    *, referral: Referral, target: _Target, actor: Actor, now: datetime | None, notes: list[str]
) -> Reward | None:
    if _nothing_to_pay(target, notes):
        return None
    return reward_create(
        **_reward_fields(referral, target, revision=_revision(target.slot, referral.tenant_id)), actor=actor, now=now
    )


def _nothing_to_pay(target: _Target, notes: list[str]) -> bool:
    """A cash or credit target of zero: no reward, a note says so."""
    if target.amount <= 0 and target.kind in (RewardKind.CASH, RewardKind.CREDIT):
        note = f"{target.participant.name}: {target.rule.explanation} — nothing to pay."
        if note not in notes:
            notes.append(note)
        return True
    return False


def _reward_fields(referral: Referral, target: _Target, *, revision: int) -> dict:
    """What ``reward_create`` (and ``reward_row`` in a set-based settlement) is given for ``target``."""
    rule = target.rule
    version_number = referral.rule_version.number if referral.rule_version else None
    explanation, text = _explanation(target, version_number)
    return {
        "tenant": referral.tenant,
        "program": referral.program,
        "participant": target.participant,
        "amount_minor": target.amount,
        "source_key": f"{target.slot}#{revision}",
        "slot_key": target.slot,
        "kind": target.kind,
        "currency": rule.currency,
        "beneficiary_side": target.side,
        "conversion_event": target.event,
        "referral": referral,
        "converted_at": target.earned_at,
        "explanation": explanation,
        "explanation_text": text,
        "description": _description(rule),
        "hold_from": target.earned_at,
        "earned_on": target.earned_on,
        **target.coupon,
    }


def _announce(*, referral: Referral, created: list[Reward]) -> None:
    for spec in _announcements(referral=referral, created=created):
        messages.participant_message_send(**vars(spec))


def _announcements(*, referral: Referral, created: list[Reward]) -> list[messages.MessageSpec]:
    """The referrer hears "became a customer" once, with the first payment's rewards; every other new
    reward (a later payment's share, a lead bounty, the referred company's) is announced on its own."""
    specs = []
    conversion: dict[int, list[Reward]] = defaultdict(list)
    for reward in created:
        if reward.status == RewardStatus.REVERSED:
            continue
        if reward.beneficiary_side == BeneficiarySide.REFERRER and reward.slot_key.endswith(":conversion"):
            conversion[reward.participant_id].append(reward)
        else:
            specs.append(messages.reward_earned_spec(reward=reward, referral=referral))
    for rewards in conversion.values():
        spec = messages.referral_converted_spec(participant=rewards[0].participant, referral=referral, rewards=rewards)
        if spec is not None:
            specs.append(spec)
    return specs


def _record_evaluations(*, referral: Referral, settlement: _Settlement) -> None:
    """Each settled event of the referral keeps the outcome of the settlement that last looked at it."""
    events = list(
        ConversionEvent.objects.for_tenant(referral.tenant_id)
        .filter(referral_id=referral.pk, status__in=SETTLED_STATUSES)
        .only("pk", "tenant_id", "kind", "raw", "referral_id", "occurred_at")
    )
    if not events:
        return
    existing = {
        row.conversion_event_id: row
        for row in RewardEvaluation.objects.for_tenant(referral.tenant_id).filter(
            conversion_event_id__in=[event.pk for event in events]
        )
    }
    waiting = {event.pk for event in events if event.kind == ConversionKind.REFUND and refunded_payment(event) is None}
    fresh, changed = _evaluation_rows(
        referral=referral, settlement=settlement, events=events, existing=existing, waiting=waiting
    )
    rows_insert(fresh)
    if changed:
        rows_update(changed, [*EVALUATION_FIELDS, "attempts", "rewards_created"], connection)


EVALUATION_FIELDS = ("referral", "status", "notes", "detail", "evaluated_at")


def _evaluation_rows(
    *,
    referral: Referral,
    settlement: _Settlement,
    events: list[ConversionEvent],
    existing: dict[int, RewardEvaluation],
    waiting: set[int],
    now: datetime | None = None,
) -> tuple[list[RewardEvaluation], list[RewardEvaluation]]:
    """The evaluation rows to create and to update for a settlement of ``referral`` (no statement)."""
    now = now or timezone.now()
    created_by_event: dict[int, int] = defaultdict(int)
    for reward in settlement.created:
        if reward.conversion_event_id:
            created_by_event[reward.conversion_event_id] += 1
    fresh, changed = [], []
    for event in events:
        values = {
            "referral": referral,
            "status": settlement.status,
            "notes": settlement.notes,
            "detail": settlement.detail,
            "evaluated_at": now,
        }
        if event.pk in waiting:
            values["status"] = EvaluationStatus.NOTHING_YET
            values["notes"] = [
                "The refunded payment is not known yet; its rewards will be reduced when it arrives.",
                *settlement.notes,
            ]
        row = existing.get(event.pk)
        if row is None:
            fresh.append(
                RewardEvaluation(
                    tenant_id=referral.tenant_id,
                    conversion_event_id=event.pk,
                    attempts=1,
                    rewards_created=created_by_event[event.pk],
                    **values,
                )
            )
            continue
        for name, value in values.items():
            setattr(row, name, value)
        row.attempts += 1
        row.rewards_created += created_by_event[event.pk]
        changed.append(row)
    return fresh, changed


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


def referred_participant(*, referral: Referral, actor: Actor) -> Participant:
    """The referred company as a participant of the referral's program (rewards and the ledger belong to
    participants), found or created by programs' own service."""
    return participant_for_referred_company(**referred_company_fields(referral), actor=actor)


def referred_company_fields(referral: Referral) -> dict:
    """What ``participant_for_referred_company`` is given for the referral's referred company."""
    name = referral.referred_company or referral.referred_name or referral.referred_email or f"Referral #{referral.pk}"
    return {
        "program": referral.program,
        "external_id": referral.referred_external_id or f"referred-{referral.pk}",
        "email": referral.referred_email,
        "name": name,
        "company": referral.referred_company,
        "data": {"referral": referral.pk},
    }


__all__ = [
    "previous_successful_referrals",
    "referral_rewards_evaluate",
    "referral_rewards_settle",
    "referral_rewards_settle_batch",
    "referred_participant",
    "reward_evaluate",
    "split_by_share",
]
