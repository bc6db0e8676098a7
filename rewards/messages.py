"""Messages to participants at each step of a referral and a reward (R-20).

Each message is a ``ParticipantMessage`` row, unique per (tenant, participant, kind, related object),
written in the transaction of the step it reports, and e-mailed once that transaction commits (Django
mail; the texts are templates/emails/<kind>.txt, first line the subject). A retried task or a repeated
transition finds the row and sends nothing. The participant's dashboard lists the same rows.

Steps and who calls what:

- referral received (``referral_create``) and qualified (``referral_qualify``): the referrals app queues
  ``rewards.message_referral_stage`` after commit (``referrals.services.referral_stage_notify``);
- became a customer / reward earned: the reward evaluation (``rewards.evaluation``);
- approved ("on its way"), paid, reduced / withdrawn / clawed back: the reward services.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.utils import timezone

from programs import rules as rules_module
from programs.dashboard_links import dashboard_url
from programs.mailing import emails_opted_out, tenant_email_message, tenant_email_send
from programs.models import Participant
from referral_platform.db.sql import keys_in, rows_insert
from referral_platform.money import format_money, format_percent
from referrals.models import Referral

from .models import MessageKind, ParticipantMessage, Reward, RewardKind
from .selectors import reward_needs_review

logger = logging.getLogger(__name__)

REVIEW_HOURS = 24


# --- sending -----------------------------------------------------------------------------------
def participant_message_send(
    *,
    participant: Participant,
    kind: str,
    related_key: str,
    context: dict,
    referral: Referral | None = None,
    reward: Reward | None = None,
) -> ParticipantMessage | None:
    """Record the message once per (participant, kind, related_key) and e-mail it after commit.

    Returns the new row, or None when this message was already sent (nothing written, nothing mailed).
    """
    if kind not in MessageKind.values:
        raise ValueError(f"unknown message kind {kind!r}")
    if (
        ParticipantMessage.objects.for_tenant(participant.tenant_id)
        .filter(participant=participant, kind=kind, related_key=related_key)
        .exists()
    ):
        return None
    message = _message_row(MessageSpec(participant, kind, related_key, context, referral, reward))
    try:
        with transaction.atomic():
            message.save(force_insert=True)
    except IntegrityError:  # a concurrent sender won; it e-mails
        return None
    if message.email_to:
        transaction.on_commit(lambda: _deliver(message.pk))
    return message


def participant_messages_send_many(specs: Sequence[MessageSpec]) -> list[ParticipantMessage]:
    """``participant_message_send`` for many messages of one workspace: which were already sent (one read),
    the new rows (one INSERT), and their e-mails after commit (``_deliver_many``). A row a concurrent
    sender writes at the same moment makes the INSERT fail: then each goes through
    ``participant_message_send``, which skips the ones already sent."""
    if not specs:
        return []
    for spec in specs:
        if spec.kind not in MessageKind.values:
            raise ValueError(f"unknown message kind {spec.kind!r}")
    tenant_id = specs[0].participant.tenant_id
    wanted = [(spec.participant.pk, spec.kind, spec.related_key[:100]) for spec in specs]
    sent = set(
        ParticipantMessage.objects.for_tenant(tenant_id)
        .filter(keys_in(ParticipantMessage, ("participant", "kind", "related_key"), wanted))
        .values_list("participant_id", "kind", "related_key")
    )
    rows, seen = [], set()
    for spec in specs:
        key = (spec.participant.pk, spec.kind, spec.related_key[:100])
        if key in sent or key in seen:
            continue
        seen.add(key)
        rows.append(_message_row(spec))
    try:
        with transaction.atomic():
            created = rows_insert(rows)
    except IntegrityError:
        return [message for spec in specs if (message := participant_message_send(**vars(spec))) is not None]
    to_mail = [message.pk for message in created if message.email_to]
    if to_mail:
        transaction.on_commit(lambda: _deliver_many(to_mail))
    return created


def _message_row(spec: MessageSpec) -> ParticipantMessage:
    participant = spec.participant
    context = {**spec.context, "participant": participant, "dashboard_url": dashboard_url(participant)}
    subject, body = _render(spec.kind, context)
    return ParticipantMessage(
        tenant_id=participant.tenant_id,
        participant=participant,
        kind=spec.kind,
        related_key=spec.related_key[:100],
        referral=spec.referral,
        reward=spec.reward,
        subject=subject[:200],
        body=body,
        email_to=participant.email or "",
    )


def _render(kind: str, context: dict) -> tuple[str, str]:
    text = render_to_string(f"emails/{kind}.txt", context).strip()
    subject, _, body = text.partition("\n")
    return subject.strip(), body.strip() + "\n"


def _deliver(message_id: int) -> None:
    message = ParticipantMessage.objects.filter(pk=message_id, emailed_at__isnull=True).first()
    if message is None:
        return
    try:
        handed = tenant_email_send(
            tenant_id=message.tenant_id, to=message.email_to, subject=message.subject, body=message.body
        )
    except Exception:
        logger.exception("could not e-mail participant message %s", message_id)
        return
    if not handed:  # unsubscribed: the dashboard still lists the message, nothing is e-mailed
        return
    ParticipantMessage.objects.filter(pk=message_id).update(emailed_at=timezone.now())


def _deliver_many(message_ids: list[int]) -> None:
    """``_deliver`` for many messages: one read of the rows, one of the addresses that unsubscribed, the
    e-mails, one UPDATE of the rows handed to the mail backend."""
    messages = list(ParticipantMessage.objects.filter(pk__in=message_ids, emailed_at__isnull=True).order_by("pk"))
    opted_out = emails_opted_out({(message.tenant_id, message.email_to) for message in messages if message.email_to})
    handed = []
    for message in messages:
        if (message.tenant_id, message.email_to.strip().lower()) in opted_out or not message.email_to:
            logger.info("e-mail to an unsubscribed or empty address dropped (tenant %s)", message.tenant_id)
            continue
        try:
            tenant_email_message(
                tenant_id=message.tenant_id, to=message.email_to, subject=message.subject, body=message.body
            ).send()
        except Exception:
            logger.exception("could not e-mail participant message %s", message.pk)
            continue
        handed.append(message.pk)
    if handed:
        ParticipantMessage.objects.filter(pk__in=handed).update(emailed_at=timezone.now())


# --- wording helpers ---------------------------------------------------------------------------
def referral_label(referral: Referral) -> str:
    """How a referral is named to its referrer: the company, else the person, else a neutral phrase."""
    return referral.referred_company or referral.referred_name or "the company you referred"


def reward_value_words(reward: Reward) -> str:
    """A reward in words: "48.00 USD", "1 free month", "SSO unlocked for 6 months", "a gift (Hoodie)"."""
    if reward.kind == RewardKind.MANUAL:
        return reward.description or "a gift"
    if reward.kind == RewardKind.COUPON:
        if reward.coupon_duration_months and reward.coupon_percent_off == 100:
            months = reward.coupon_duration_months
            return f"{months} free month{'s' if months != 1 else ''}"
        if reward.coupon_percent_off:
            return f"{reward.coupon_percent_off} % off your next renewal"
        return f"{format_money(reward.net_minor, reward.currency)} off your next bill"
    words = format_money(reward.net_minor, reward.currency)
    return f"{words} account credit" if reward.kind == RewardKind.CREDIT else words


def rewards_in_words(rewards: Sequence[Reward]) -> str:
    parts = [reward_value_words(reward) for reward in rewards]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def business_days_between(start: datetime, end: datetime) -> int:
    """Weekdays after ``start`` up to and including ``end`` (0 when ``end`` is not later)."""
    days, cursor = 0, start.date()
    while cursor < end.date():
        cursor += timedelta(days=1)
        if cursor.weekday() < 5:
            days += 1
    return days


def arrival_business_days(reward: Reward, *, now: datetime | None = None) -> int:
    """Business days until the reward reaches the participant: the rest of its hold, then the payout run
    and the transfer (``REWARD_PAYOUT_BUSINESS_DAYS``)."""
    now = now or timezone.now()
    return business_days_between(now, reward.hold_until) + settings.REWARD_PAYOUT_BUSINESS_DAYS


def conversion_earnings_words(rule_set: rules_module.RuleSet, *, tier: str = "", next_referral: int = 1) -> str:
    """What the referrer earns when the referral becomes a customer, in words, from the rules they are
    judged under ("10 % of their first payment and 20 % of every payment in their first 12 months")."""
    currency = rule_set.currency

    def money(amount: int) -> str:
        return format_money(amount, currency)

    parts = []
    for rule in rule_set.side("referrer", tier):
        if rule.on not in (rules_module.ON_CONVERSION, rules_module.ON_PAYMENT):
            continue
        seat = " per seat" if rule.per_seat else ""
        if rule.kind == rules_module.FLAT_PER_CONVERSION:
            parts.append(f"{money(rule.amount_minor)}{seat}")
        elif rule.kind == rules_module.PERCENT_OF_REVENUE:
            parts.append(f"{format_percent(rule.percent_bp)} of their first payment")
        elif rule.kind == rules_module.RECURRING_PERCENT:
            months = rule.months or 0
            parts.append(
                f"{format_percent(rule.percent_bp)} of every payment in their first "
                f"{months} month{'s' if months != 1 else ''}"
            )
        elif rule.kind == rules_module.TIERED:
            chosen = None
            for tier_row in rule.tiers:
                if tier_row.min_referrals <= next_referral:
                    chosen = tier_row
            if chosen is None:
                parts.append(f"a reward from your {rule.tiers[0].min_referrals}th successful referral on")
            elif chosen.amount_minor is not None:
                parts.append(f"{money(chosen.amount_minor)}{seat}")
            else:
                parts.append(f"{format_percent(chosen.percent_bp)} of their first payment")
        elif rule.kind == rules_module.ACCOUNT_CREDIT:
            parts.append(f"{money(rule.amount_minor)} account credit{seat}")
        elif rule.kind == rules_module.FREE_MONTHS:
            parts.append(f"{rule.months} free month{'s' if rule.months != 1 else ''}")
        elif rule.kind == rules_module.RENEWAL_DISCOUNT:
            parts.append(f"{format_percent(rule.percent_bp)} off your next renewal")
        elif rule.kind == rules_module.FEATURE_UNLOCK:
            parts.append(f"{rule.feature} unlocked")
        elif rule.kind == rules_module.GIFT:
            parts.append(f"a gift ({rule.gift})")
    if not parts:
        return ""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


# --- the steps ---------------------------------------------------------------------------------
def message_referral_received(*, referral: Referral) -> ParticipantMessage | None:
    """ "Thanks, we'll review within 24 hours" to the referrer of a new referral."""
    return participant_message_send(**vars(referral_received_spec(referral)))


def referral_received_spec(referral: Referral) -> MessageSpec:
    return MessageSpec(
        participant=referral.referrer,
        kind=MessageKind.REFERRAL_RECEIVED,
        related_key=f"referral:{referral.pk}",
        referral=referral,
        context={"referral": referral, "label": referral_label(referral), "review_hours": REVIEW_HOURS},
    )


def message_referral_qualified(*, referral: Referral) -> ParticipantMessage | None:
    """ "Your referral is now a qualified lead; when they become a customer you earn …" (from the rules
    the referral is judged under, the referrer's tier and their count of rewarded referrals)."""
    from .evaluation import previous_successful_referrals

    earnings = ""
    version = referral.rule_version
    if version is not None:
        try:
            rule_set = rules_module.version_rules(version)
        except rules_module.RulesError:
            rule_set = None
        if rule_set is not None:
            previous = previous_successful_referrals(
                participant=referral.referrer,
                referral=referral,
                period=rule_set.counting_period,
                at=referral.qualified_at or timezone.now(),
            )
            earnings = conversion_earnings_words(rule_set, tier=referral.referrer.tier, next_referral=previous + 1)
    return participant_message_send(
        participant=referral.referrer,
        kind=MessageKind.REFERRAL_QUALIFIED,
        related_key=f"referral:{referral.pk}",
        referral=referral,
        context={"referral": referral, "label": referral_label(referral), "earnings": earnings},
    )


@dataclass(frozen=True)
class MessageSpec:
    """One message to record (the arguments of ``participant_message_send``)."""

    participant: Participant
    kind: str
    related_key: str
    context: dict
    referral: Referral | None = None
    reward: Reward | None = None


def referral_converted_spec(*, participant: Participant, referral: Referral, rewards: Sequence[Reward]):
    """ "Your referral became a customer; <rewards> arrive within N business days" (once per referral)."""
    if not rewards:
        return None
    days = max(arrival_business_days(reward) for reward in rewards)
    return MessageSpec(
        participant=participant,
        kind=MessageKind.REFERRAL_CONVERTED,
        related_key=f"referral:{referral.pk}",
        referral=referral,
        reward=rewards[0],
        context={
            "referral": referral,
            "label": referral_label(referral),
            "rewards_words": rewards_in_words(rewards),
            "business_days": days,
            "needs_review": any(reward_needs_review(reward) for reward in rewards),
        },
    )


def reward_earned_spec(*, reward: Reward, referral: Referral | None) -> MessageSpec:
    """A reward that is not the referrer's conversion reward: a later payment's share, a qualified lead's
    bounty, or what the referred company gets."""
    return MessageSpec(
        participant=reward.participant,
        kind=MessageKind.REWARD_EARNED,
        related_key=f"reward:{reward.pk}",
        referral=referral,
        reward=reward,
        context={
            "reward": reward,
            "words": reward_value_words(reward),
            "referral": referral,
            "label": referral_label(referral) if referral else "",
            "referrer_name": referral.referrer.name if referral else "",
            "is_referred_side": reward.beneficiary_side == "referred",
            "business_days": arrival_business_days(reward),
            "needs_review": reward_needs_review(reward),
        },
    )


def message_referral_converted(
    *, participant: Participant, referral: Referral, rewards: Sequence[Reward]
) -> ParticipantMessage | None:
    spec = referral_converted_spec(participant=participant, referral=referral, rewards=rewards)
    return participant_message_send(**vars(spec)) if spec else None


def message_reward_earned(*, reward: Reward, referral: Referral | None) -> ParticipantMessage | None:
    return participant_message_send(**vars(reward_earned_spec(reward=reward, referral=referral)))


def message_reward_approved(*, reward: Reward) -> ParticipantMessage | None:
    """ "Your reward of … is on its way" (approved; the next payout run pays it)."""
    return participant_message_send(
        participant=reward.participant,
        kind=MessageKind.REWARD_APPROVED,
        related_key=f"reward:{reward.pk}",
        referral=reward.referral,
        reward=reward,
        context={
            "reward": reward,
            "words": reward_value_words(reward),
            "business_days": settings.REWARD_PAYOUT_BUSINESS_DAYS,
        },
    )


def message_reward_paid(*, reward: Reward) -> ParticipantMessage | None:
    return participant_message_send(
        participant=reward.participant,
        kind=MessageKind.REWARD_PAID,
        related_key=f"reward:{reward.pk}",
        referral=reward.referral,
        reward=reward,
        context={"reward": reward, "words": reward_value_words(reward)},
    )


def message_reward_reduced(
    *, reward: Reward, reduced_by_minor: int, total_reduction_minor: int, reason: str
) -> ParticipantMessage | None:
    """A refund or cancellation shrank, withdrew or clawed back a reward (one message per new total)."""
    return participant_message_send(
        **vars(
            reward_reduced_spec(
                reward=reward,
                reduced_by_minor=reduced_by_minor,
                total_reduction_minor=total_reduction_minor,
                reason=reason,
            )
        )
    )


def reward_reduced_spec(
    *, reward: Reward, reduced_by_minor: int, total_reduction_minor: int, reason: str = "refund"
) -> MessageSpec:
    """The message of ``message_reward_reduced`` (a set-based settlement sends many at once)."""
    return MessageSpec(
        participant=reward.participant,
        kind=MessageKind.REWARD_REDUCED,
        related_key=f"reward:{reward.pk}:reduce-to:{total_reduction_minor}",
        referral=reward.referral,
        reward=reward,
        context={
            "reward": reward,
            "reason": reason,
            "original": format_money(reward.amount_minor, reward.currency)
            if reward.amount_minor
            else (reward.description or "your reward"),
            "reduced_by": format_money(reduced_by_minor, reward.currency),
            "remaining": format_money(reward.net_minor, reward.currency),
            "withdrawn": reward.net_minor == 0,
            "clawed_back": reward.clawed_back_minor > 0,
            "clawed_back_amount": format_money(reward.clawed_back_minor, reward.currency),
        },
    )


def message_welcome(*, participant: Participant) -> ParticipantMessage | None:
    """The welcome e-mail of a participant who became active: their share links, coupon code, dashboard and
    the program's terms (once per participant)."""
    from django.conf import settings
    from django.urls import reverse

    from programs.selectors import program_latest_version
    from programs.terms import program_offer_sentence
    from referrals.models import Channel
    from referrals.selectors import participant_share_links

    program = participant.program
    version = program_latest_version(program)
    offer = program_offer_sentence(program, version.rules) if version is not None else ""
    labels = dict(Channel.choices)
    links = [
        {"label": labels.get(item["channel"], item["channel"]), "url": item["url"]}
        for item in participant_share_links(participant.tenant_id, participant=participant)
    ]
    terms_url = settings.SITE_URL + reverse(
        "program_terms_page", kwargs={"tenant_slug": program.tenant.slug, "program_slug": program.slug}
    )
    return participant_message_send(
        participant=participant,
        kind=MessageKind.WELCOME,
        related_key=f"program:{program.pk}",
        context={"program": program, "links": links, "terms_url": terms_url, "offer": offer},
    )


def messages_referral_stage_many(calls: Sequence[tuple[int, str]]) -> int:
    """``message_referral_stage`` for many (referral id, stage) pairs (a drain's new referrals): the
    referrals read with one query, the "received" messages written with ``participant_messages_send_many``
    (one transaction per workspace); a "qualified" one, rarer and reading the referrer's counters, is sent
    as the task would. Returns how many messages were written."""
    ids = sorted({referral_id for referral_id, _stage in calls})
    referrals = {
        referral.pk: referral
        for referral in Referral.objects.select_related("tenant", "referrer", "rule_version", "program").filter(
            pk__in=ids
        )
    }
    written = 0
    received: dict[int, list[MessageSpec]] = defaultdict(list)
    for referral_id, stage in dict.fromkeys(calls):
        referral = referrals.get(referral_id)
        if referral is None:
            continue
        if stage == "received":
            received[referral.tenant_id].append(referral_received_spec(referral))
        else:
            written += message_referral_stage(referral_id=referral_id, stage=stage) is not None
    for specs in received.values():
        with transaction.atomic():
            written += len(participant_messages_send_many(specs))
    return written


def message_referral_stage(*, referral_id: int, stage: str) -> ParticipantMessage | None:
    """The referral-stage message for ``stage`` ("received" or "qualified"), read fresh (task body)."""
    referral = (
        Referral.objects.select_related("tenant", "referrer", "rule_version", "program").filter(pk=referral_id).first()
    )
    if referral is None:
        return None
    with transaction.atomic():
        if stage == "received":
            return message_referral_received(referral=referral)
        if stage == "qualified":
            return message_referral_qualified(referral=referral)
    raise ValueError(f"unknown referral stage {stage!r}")
