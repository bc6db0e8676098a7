"""Program rules in plain language: the terms participants read (R-7).

``render_terms(program, version)`` is pure: it turns a program's settings and a rules document into
sections of short sentences (what you earn, what your referral gets, what counts, when you are paid,
limits, cancellation, changes). The same sections feed the admin panel, the API and the public page.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from types import SimpleNamespace

from referral_platform.money import format_money, format_percent

from .models import AttributionModel, Program, ProgramStatus, ProgramVersion
from .rules import (
    ACCOUNT_CREDIT,
    FEATURE_UNLOCK,
    FLAT_PER_CONVERSION,
    FLAT_PER_LEAD,
    FREE_MONTHS,
    GIFT,
    ON_CONVERSION,
    ON_QUALIFIED,
    ON_SIGN_UP,
    PERCENT_OF_REVENUE,
    RECURRING_PERCENT,
    RENEWAL_DISCOUNT,
    TIERED,
    RewardRule,
    RulesError,
    RuleSet,
    parse_rules,
)


@dataclass(frozen=True)
class TermsSection:
    key: str
    title: str
    items: tuple[str, ...]


@dataclass(frozen=True)
class Terms:
    program_name: str
    version: int | None
    effective_at: datetime | None
    notice: str
    sections: tuple[TermsSection, ...]

    @property
    def text(self) -> str:
        """The terms as plain text (headings and bullet lines)."""
        lines = [f"{self.program_name}: program terms"]
        if self.version is not None:
            lines.append(f"Version {self.version}, in effect since {self.effective_at:%Y-%m-%d}.")
        if self.notice:
            lines.append(self.notice)
        for section in self.sections:
            lines.append("")
            lines.append(section.title)
            lines.extend(f"- {item}" for item in section.items)
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {
            "program": self.program_name,
            "version": self.version,
            "effective_at": self.effective_at.isoformat() if self.effective_at else None,
            "notice": self.notice,
            "sections": [{**asdict(section), "items": list(section.items)} for section in self.sections],
            "text": self.text,
        }


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _ordinal(number: int) -> str:
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


_WHEN = {
    "referrer": {
        ON_SIGN_UP: "when a company you referred signs up",
        ON_QUALIFIED: "when a company you referred becomes a qualified lead",
        ON_CONVERSION: "when a company you referred becomes a paying customer",
    },
    "referred": {
        ON_SIGN_UP: "when they sign up",
        ON_QUALIFIED: "when they are confirmed as a qualified lead",
        ON_CONVERSION: "when they become a paying customer",
    },
}


def _rule_sentence(rule: RewardRule, side: str, rule_set: RuleSet) -> str:
    def money(amount: int) -> str:
        return format_money(amount, rule_set.currency)

    whose = "your" if side == "referrer" else "their"
    when = _WHEN[side].get(rule.on, "")
    seats = ""
    if rule.per_seat:
        seats = " for every seat the referred company buys" + (
            f" (up to {rule.max_seats} seats)" if rule.max_seats else ""
        )
    if rule.kind == FLAT_PER_LEAD:
        sentence = f"{money(rule.amount_minor)} {when}"
    elif rule.kind == FLAT_PER_CONVERSION:
        sentence = f"{money(rule.amount_minor)}{seats} {when}"
    elif rule.kind == PERCENT_OF_REVENUE:
        sentence = f"{format_percent(rule.percent_bp)} of the first payment {when}"
    elif rule.kind == RECURRING_PERCENT:
        sentence = (
            f"{format_percent(rule.percent_bp)} of every payment the referred company makes "
            f"in its first {_plural(rule.months, 'month')}"
        )
    elif rule.kind == TIERED:
        parts = []
        for position, tier in enumerate(rule.tiers):
            upper = rule.tiers[position + 1].min_referrals - 1 if position + 1 < len(rule.tiers) else None
            if upper is None:
                span = f"from the {_ordinal(tier.min_referrals)} on"
            elif upper == tier.min_referrals:
                span = f"the {_ordinal(tier.min_referrals)}"
            else:
                span = f"the {_ordinal(tier.min_referrals)} to the {_ordinal(upper)}"
            pays = (
                money(tier.amount_minor)
                + (" per seat" if rule.per_seat else "")
                + (f" (up to {rule.max_seats} seats)" if rule.per_seat and rule.max_seats else "")
                if tier.amount_minor is not None
                else f"{format_percent(tier.percent_bp)} of the first payment"
            )
            parts.append(f"{span}: {pays}")
        sentence = (
            f"A reward that grows with your successful referrals this {rule_set.counting_period}, "
            f"paid when each becomes a paying customer ({'; '.join(parts)})"
        )
    elif rule.kind == FREE_MONTHS:
        sentence = f"{_plural(rule.months, 'free month')} of {whose} subscription {when}"
    elif rule.kind == RENEWAL_DISCOUNT:
        sentence = f"{format_percent(rule.percent_bp)} off {whose} next renewal {when}"
    elif rule.kind == ACCOUNT_CREDIT:
        sentence = f"{money(rule.amount_minor)} account credit{seats} {when}"
    elif rule.kind == FEATURE_UNLOCK:
        duration = f" for {_plural(rule.months, 'month')}" if rule.months else ""
        sentence = f"{rule.feature} unlocked{duration} {when}"
    elif rule.kind == GIFT:
        sentence = f"A gift ({rule.gift}) {when}"
    else:  # pragma: no cover - the schema allows no other kind
        sentence = rule.kind
    if rule.max_amount_minor is not None:
        sentence += f", at most {money(rule.max_amount_minor)} each time"
    sentence = sentence[0].upper() + sentence[1:] + "."
    if rule.description:
        sentence += f" {rule.description}"
    return sentence


def rule_sentence(rule: RewardRule, side: str, rule_set: RuleSet) -> str:
    """One reward rule in a plain sentence, as the terms say it ("50.00 USD when a company you referred
    becomes a paying customer.")."""
    return _rule_sentence(rule, side, rule_set)


# Only links used before signing up, within the window, count: the credit is decided at the sign-up.
_ATTRIBUTION = {
    AttributionModel.FIRST_TOUCH: "the first participant whose link they used before signing up gets the credit",
    AttributionModel.LAST_TOUCH: "the last participant whose link they used before signing up gets the credit",
    AttributionModel.LINEAR: "the credit is split equally between everyone whose link they used before signing up",
    AttributionModel.TIME_DECAY: "the credit is split between everyone whose link they used before signing up, more "
    "for recent visits (a visit {half_life} older counts half as much)",
    AttributionModel.POSITION_BASED: "the first and the last link they used before signing up get 40 % of the credit "
    "each, and the links in between share the other 20 % (two links: half each)",
}


def _what_counts(settings: SimpleNamespace, rule_set: RuleSet) -> list[str]:
    items = [
        f"A referral counts when the company you refer signs up within {_plural(settings.cookie_window_days, 'day')} "
        "of opening your referral link (or with your referral code).",
    ]
    attribution = _ATTRIBUTION.get(settings.attribution_model, "")
    if attribution:
        items.append(
            "If a company was referred by more than one participant, "
            + attribution.format(half_life=_plural(settings.time_decay_half_life_days, "day"))
            + "."
        )
    if rule_set.industries:
        items.append(f"The referred company must work in one of these industries: {', '.join(rule_set.industries)}.")
    low, high = rule_set.company_size
    if low is not None and high is not None:
        items.append(f"The referred company must have {low:,} to {high:,} employees.")
    elif low is not None:
        items.append(f"The referred company must have at least {low:,} employees.")
    elif high is not None:
        items.append(f"The referred company must have at most {high:,} employees.")
    low, high = rule_set.annual_revenue_minor
    money = lambda amount: format_money(amount, rule_set.currency)  # noqa: E731
    if low is not None and high is not None:
        items.append(f"Its annual revenue must be between {money(low)} and {money(high)}.")
    elif low is not None:
        items.append(f"Its annual revenue must be at least {money(low)}.")
    elif high is not None:
        items.append(f"Its annual revenue must be at most {money(high)}.")
    if rule_set.qualification:
        items.append(
            "A lead is qualified once the team has confirmed its "
            + ", ".join(rule_set.qualification[:-1])
            + (" and " if len(rule_set.qualification) > 1 else "")
            + rule_set.qualification[-1]
            + "."
        )
    items.append("Referring yourself or your own company does not count, nor does a company someone already referred.")
    return items


def _when_paid(settings: SimpleNamespace, rule_set: RuleSet) -> list[str]:
    money = lambda amount: format_money(amount, rule_set.currency)  # noqa: E731
    items = []
    if settings.hold_days:
        items.append(
            f"Rewards are held for {_plural(settings.hold_days, 'day')} after the payment that earned them, "
            "so refunds can be settled, then paid out."
        )
    else:
        items.append("Rewards are paid out as soon as they are approved.")
    if settings.auto_approve_limit_minor:
        items.append(
            f"Rewards up to {money(settings.auto_approve_limit_minor)} are approved automatically; "
            "larger ones are reviewed by the team first."
        )
    else:
        items.append("Every reward is reviewed by the team before it is paid.")
    items.append(
        "Cash rewards are paid in "
        f"{rule_set.currency}; credits, discounts and free months are applied to the account's next bills."
    )
    return items


def _limits(rule_set: RuleSet) -> list[str]:
    items = []
    cap = rule_set.rewarded_referrals_cap
    if cap:
        verb = "is" if cap.max == 1 else "are"
        items.append(f"At most {_plural(cap.max, 'referral')} per referrer {verb} rewarded each {cap.period}.")
    items.append(f"Discounts never take more than {format_percent(rule_set.max_bill_discount_bp)} off one bill.")
    return items


def _cancellation(rule_set: RuleSet) -> list[str]:
    days = _plural(rule_set.cancellation_within_days, "day")
    if rule_set.cancellation_policy == "clawback":
        items = [
            f"If the referred company cancels within {days} of becoming a customer, all rewards for it are "
            "withdrawn: rewards not yet paid out are cancelled, and rewards already paid out are deducted from "
            "your next payout."
        ]
    elif rule_set.cancellation_policy == "forfeit_unpaid":
        items = [
            f"If the referred company cancels within {days} of becoming a customer, rewards for it that are not "
            "yet paid out are cancelled; rewards already paid out are yours to keep."
        ]
    else:
        items = ["Rewards you have earned are yours to keep, even if the referred company cancels later."]
    # Whatever the policy, a refund takes back only what the refunded payment earned (rewards/evaluation.py).
    items.append(
        "If a payment is refunded, the rewards that payment earned are reduced in proportion to the amount "
        "refunded, and a full refund withdraws them (an amount already paid out is deducted from your next "
        "payout); rewards earned by other payments are not affected."
    )
    if any(rule.kind == RECURRING_PERCENT for rule in rule_set.referrer):
        items.append("Recurring shares stop when the referred company stops paying.")
    return items


def render_terms(program: Program, version: ProgramVersion | None) -> Terms:
    """Plain-language terms of ``program`` under ``version`` (its current one, usually).

    The judging settings (cookie window, attribution, hold, auto-approval) are the version's own.
    """
    from .services import judging_rules

    notice = ""
    if program.status == ProgramStatus.PAUSED:
        notice = "This program is paused: new referrals are not accepted right now."
    if version is None:
        return Terms(
            program_name=program.name,
            version=None,
            effective_at=None,
            notice=notice or "This program has no rules yet.",
            sections=(),
        )
    try:
        rule_set = parse_rules(version.rules)
    except RulesError:
        return Terms(
            program_name=program.name,
            version=version.number,
            effective_at=version.created_at,
            notice=f"The rules of version {version.number} cannot be shown; ask the program team.",
            sections=(),
        )
    settings = SimpleNamespace(**judging_rules(program=program, version=version))
    if not (rule_set.referrer or rule_set.referred):
        notice = notice or "This program's rewards have not been set yet."
    sections = []
    if rule_set.referrer:
        sections.append(
            TermsSection(
                "referrer", "What you earn", tuple(_rule_sentence(r, "referrer", rule_set) for r in rule_set.referrer)
            )
        )
    for tier_name, tier_rules in sorted(rule_set.partner_tiers.items()):
        sections.append(
            TermsSection(
                f"tier:{tier_name}",
                f"What you earn as a {tier_name} partner (instead of the above)",
                tuple(_rule_sentence(r, "referrer", rule_set) for r in tier_rules)
                or ("No rewards for referrals in this tier.",),
            )
        )
    if rule_set.referred:
        sections.append(
            TermsSection(
                "referred",
                "What the company you refer gets",
                tuple(_rule_sentence(r, "referred", rule_set) for r in rule_set.referred),
            )
        )
    sections += [
        TermsSection("counts", "What counts", tuple(_what_counts(settings, rule_set))),
        TermsSection("paid", "When you are paid", tuple(_when_paid(settings, rule_set))),
        TermsSection("limits", "Limits", tuple(_limits(rule_set))),
        TermsSection("cancellation", "If the customer cancels or is refunded", tuple(_cancellation(rule_set))),
        TermsSection(
            "changes",
            "Changes to these terms",
            (
                "If these terms change, referrals you have already made keep the terms that were in effect "
                "when they were made.",
            ),
        ),
    ]
    return Terms(
        program_name=program.name,
        version=version.number,
        effective_at=version.created_at,
        notice=notice,
        sections=tuple(sections),
    )


# --- the offer in one sentence --------------------------------------------------------------------
_OFFER_WHEN = {
    ON_SIGN_UP: "when they sign up",
    ON_QUALIFIED: "when they are qualified",
    ON_CONVERSION: "when they subscribe",
}


def _offer_phrase(rule: RewardRule, rule_set: RuleSet, whose: str) -> str:
    """A reward as a short noun phrase ("100.00 USD", "a free month", "20 % of every payment for 12 months")."""

    def money(amount: int) -> str:
        return format_money(amount, rule_set.currency)

    per_seat = " per seat" if rule.per_seat else ""
    if rule.kind in {FLAT_PER_LEAD, FLAT_PER_CONVERSION}:
        return f"{money(rule.amount_minor)}{per_seat}"
    if rule.kind == PERCENT_OF_REVENUE:
        return f"{format_percent(rule.percent_bp)} of the first payment"
    if rule.kind == RECURRING_PERCENT:
        return f"{format_percent(rule.percent_bp)} of every payment for {_plural(rule.months, 'month')}"
    if rule.kind == TIERED:
        first, last = rule.tiers[0], rule.tiers[-1]

        def pays(tier) -> str:
            if tier.amount_minor is not None:
                return f"{money(tier.amount_minor)}{per_seat}"
            return f"{format_percent(tier.percent_bp)} of the first payment"

        if len(rule.tiers) == 1:
            return pays(first)
        rising = f"rising to {{}} from your {_ordinal(last.min_referrals)} referral"
        if first.percent_bp is not None and last.percent_bp is not None:
            return (
                f"{format_percent(first.percent_bp)} of the first payment "
                f"({rising.format(format_percent(last.percent_bp))})"
            )
        return f"{pays(first)} ({rising.format(pays(last))})"
    if rule.kind == ACCOUNT_CREDIT:
        return f"{money(rule.amount_minor)} account credit{per_seat}"
    if rule.kind == FREE_MONTHS:
        return "a free month" if rule.months == 1 else f"{rule.months} free months"
    if rule.kind == RENEWAL_DISCOUNT:
        return f"{format_percent(rule.percent_bp)} off {whose} next renewal"
    if rule.kind == FEATURE_UNLOCK:
        return f"{rule.feature}" + (f" for {_plural(rule.months, 'month')}" if rule.months else "")
    if rule.kind == GIFT:
        return f"a gift ({rule.gift})"
    return rule.kind  # pragma: no cover - the schema allows no other kind


def _offer_side(rules: tuple[RewardRule, ...], rule_set: RuleSet, whose: str, *, when: bool) -> str:
    phrases = []
    for rule in rules:
        phrase = _offer_phrase(rule, rule_set, whose)
        moment = _OFFER_WHEN.get(rule.on, "") if when else ""
        phrases.append(f"{phrase} {moment}".strip())
    if len(phrases) > 1:
        return ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return phrases[0] if phrases else ""


def program_offer_sentence(program: Program, rules, *, for_friend: bool = False) -> str:
    """The offer in words, from the rules: "Give a friend a free month — get 100.00 USD when they subscribe."

    ``for_friend``: the referred company's side, said to them ("You get a free month when you subscribe.").

    Pure (no database): ``rules`` is a rules document or a ``RuleSet``. Leads the welcome e-mail, the
    participant's dashboard and the friend's landing page. Empty when the rules grant nothing (or cannot be read).
    """
    try:
        rule_set = parse_rules(rules)
    except RulesError:
        return ""
    if for_friend:
        referred = _offer_side(rule_set.referred, rule_set, "your", when=True)
        for moment in _OFFER_WHEN.values():
            referred = referred.replace(moment, moment.replace("they are", "you are").replace("they", "you"))
        return f"You get {referred}." if referred else ""
    friend = "a friend" if program.kind in {"customer", "employee"} else "a customer"
    referrer = _offer_side(rule_set.referrer, rule_set, "your", when=True)
    referred = _offer_side(rule_set.referred, rule_set, "their", when=False)
    if referrer and referred:
        return f"Give {friend} {referred} — get {referrer}."
    if referrer:
        return f"Refer {friend} — get {referrer}."
    if referred:
        return f"Give {friend} {referred}."
    return ""
