"""What a rules change would have paid: the program's payments of the last 90 days replayed under the
proposed rules beside what their own rule versions paid (the admin's and the API's preview, served to
programs through the ``rules_change_preview`` hook; it reads referrals' conversion events and rewards'
rules engine, so it lives in the rewards layer)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.utils import timezone

from programs import rules as rules_module
from programs.charts import grouped_bar_chart_svg
from programs.models import Program, ProgramVersion
from programs.selectors import program_version_in_force, whole_months_between
from programs.services import rules_validate
from referral_platform.money import format_money
from referral_platform.tenancy.models import Tenant
from referrals.models import ConversionEvent, ConversionEventStatus, ConversionKind

PREVIEW_DAYS = 90
PREVIEW_MAX_ROWS = 500


# --- rule-change preview -----------------------------------------------------------------------
@dataclass
class PreviewRow:
    event_id: int
    external_event_id: str
    occurred_at: datetime
    referral_id: int
    referrer: str
    amount_minor: int
    currency: str
    old_version: int | None
    old_referrer_minor: int = 0
    old_referred_minor: int = 0
    new_referrer_minor: int = 0
    new_referred_minor: int = 0
    old_explanation: str = ""
    new_explanation: str = ""
    skipped: str = ""

    @property
    def old_total_minor(self) -> int:
        return self.old_referrer_minor + self.old_referred_minor

    @property
    def new_total_minor(self) -> int:
        return self.new_referrer_minor + self.new_referred_minor

    @property
    def difference_minor(self) -> int:
        return self.new_total_minor - self.old_total_minor

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "external_event_id": self.external_event_id,
            "occurred_at": self.occurred_at.isoformat(),
            "referral_id": self.referral_id,
            "referrer": self.referrer,
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "old_version": self.old_version,
            "old": {
                "referrer_minor": self.old_referrer_minor,
                "referred_minor": self.old_referred_minor,
                "total_minor": self.old_total_minor,
                "explanation": self.old_explanation,
            },
            "new": {
                "referrer_minor": self.new_referrer_minor,
                "referred_minor": self.new_referred_minor,
                "total_minor": self.new_total_minor,
                "explanation": self.new_explanation,
            },
            "difference_minor": self.difference_minor,
            "skipped": self.skipped,
        }


@dataclass
class RulesPreview:
    program_id: int
    currency: str
    since: datetime
    until: datetime
    proposed: dict
    rows: list[PreviewRow] = field(default_factory=list)
    old_referrer_minor: int = 0
    old_referred_minor: int = 0
    new_referrer_minor: int = 0
    new_referred_minor: int = 0
    conversions: int = 0
    skipped: int = 0
    weeks: list[tuple[date, int, int]] = field(default_factory=list)

    @property
    def old_total_minor(self) -> int:
        return self.old_referrer_minor + self.old_referred_minor

    @property
    def new_total_minor(self) -> int:
        return self.new_referrer_minor + self.new_referred_minor

    @property
    def difference_minor(self) -> int:
        return self.new_total_minor - self.old_total_minor

    def money(self, amount: int) -> str:
        return format_money(amount, self.currency)

    @property
    def shown_rows(self) -> list[PreviewRow]:
        return self.rows[:PREVIEW_MAX_ROWS]

    def chart_svg(self):
        """Old vs new rewards per week, as an inline SVG bar chart."""
        groups = [(f"{start:%b %d}", (old, new)) for start, old, new in self.weeks]
        return grouped_bar_chart_svg(
            title="Rewards per week: current rules vs proposed rules",
            groups=groups,
            series=("Current rules", "Proposed rules"),
            value_label=lambda amount: format_money(amount, self.currency),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "program": self.program_id,
            "currency": self.currency,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "conversions": self.conversions,
            "skipped": self.skipped,
            "totals": {
                "old": {
                    "referrer_minor": self.old_referrer_minor,
                    "referred_minor": self.old_referred_minor,
                    "total_minor": self.old_total_minor,
                },
                "new": {
                    "referrer_minor": self.new_referrer_minor,
                    "referred_minor": self.new_referred_minor,
                    "total_minor": self.new_total_minor,
                },
                "difference_minor": self.difference_minor,
            },
            "weeks": [
                {"week_start": start.isoformat(), "old_total_minor": old, "new_total_minor": new}
                for start, old, new in self.weeks
            ],
            "rows": [row.as_dict() for row in self.shown_rows],
            "rows_truncated": len(self.rows) > PREVIEW_MAX_ROWS,
            "proposed_rules": self.proposed,
        }


def _period_key(moment: datetime, period: str) -> tuple[int, int]:
    if period == "month":
        return moment.year, moment.month
    if period == "quarter":
        return moment.year, (moment.month - 1) // 3
    return moment.year, 0


def _explain(outcome: rules_module.RewardOutcome) -> str:
    parts = [f"Referrer: {reward.explanation}" for reward in outcome.referrer]
    parts += [f"Referred: {reward.explanation}" for reward in outcome.referred]
    parts += list(outcome.notes)
    return "; ".join(parts) or "No reward for this payment."


def rules_change_preview(
    tenant: Tenant, *, program: Program, proposed_rules: Any, now: datetime | None = None, days: int = PREVIEW_DAYS
) -> RulesPreview:
    """What ``program`` paid on its payments of the last ``days`` days, and what ``proposed_rules`` would have paid.

    Conversions are the processed payment events of the program's referrals. "Old" is each referral's
    own rule version (or, for a referral without one, the version in force when it was created);
    "new" is the proposal. Amounts are the rewards' values in the program currency; payments in
    another currency are listed as skipped. Raises ``ValidationError`` (fields ``rules.<path>``)
    for invalid proposed rules; nothing is written.
    """
    if program.tenant_id != tenant.pk:
        raise Program.DoesNotExist
    proposed = rules_validate(program=program, rules=proposed_rules)
    new_rules = rules_module.parse_rules(proposed)
    until = now or timezone.now()
    since = until - timedelta(days=days)
    payments = ConversionEvent.objects.for_tenant(tenant).filter(
        kind=ConversionKind.PAYMENT,
        status=ConversionEventStatus.PROCESSED,
        referral__isnull=False,
        referral__program=program,
    )
    events = list(
        payments.filter(occurred_at__gte=since, occurred_at__lte=until)
        .select_related("referral__referrer", "referral__rule_version")
        .order_by("occurred_at", "pk")
    )
    preview = RulesPreview(
        program_id=program.pk, currency=program.currency, since=since, until=until, proposed=proposed
    )
    if not events:
        preview.weeks = _weeks(since, until, [])
        return preview

    # First payment of each referral of the referrers involved: the conversions that count towards
    # tiers and caps, and the start of recurring windows.
    referrer_ids = {event.referral.referrer_id for event in events}
    first_payments = list(
        payments.filter(referral__referrer_id__in=referrer_ids)
        .order_by("referral_id", "occurred_at", "pk")
        .distinct("referral_id")
        .values("referral_id", "referral__referrer_id", "pk", "occurred_at")
    )
    first_by_referral = {row["referral_id"]: row for row in first_payments}
    conversions_by_referrer: dict[int, list[tuple[datetime, int, int]]] = defaultdict(list)
    for row in first_payments:
        conversions_by_referrer[row["referral__referrer_id"]].append(
            (row["occurred_at"], row["pk"], row["referral_id"])
        )

    def previous_successful(referral_id: int, referrer_id: int, period: str) -> int:
        first = first_by_referral[referral_id]
        key = _period_key(first["occurred_at"], period)
        return sum(
            1
            for occurred_at, pk, other in conversions_by_referrer[referrer_id]
            if other != referral_id
            and (occurred_at, pk) < (first["occurred_at"], first["pk"])
            and _period_key(occurred_at, period) == key
        )

    old_rule_sets: dict[int, tuple[int, rules_module.RuleSet | None]] = {}

    def old_rules_for(referral) -> tuple[int, rules_module.RuleSet | None] | None:
        version = referral.rule_version or program_version_in_force(program, referral.created_at)
        if version is None:
            version = ProgramVersion.objects.for_tenant(tenant).filter(program_id=program.pk).order_by("number").first()
        if version is None:
            return None
        if version.pk not in old_rule_sets:
            try:
                old_rule_sets[version.pk] = (version.number, rules_module.parse_rules(version.rules))
            except rules_module.RulesError:
                old_rule_sets[version.pk] = (version.number, None)  # unreadable: counted as paying nothing
        return old_rule_sets[version.pk]

    for event in events:
        referral = event.referral
        first = first_by_referral[referral.pk]
        seats = event.raw.get("seats") if isinstance(event.raw, dict) else None
        old = old_rules_for(referral)
        row = PreviewRow(
            event_id=event.pk,
            external_event_id=event.external_event_id,
            occurred_at=event.occurred_at,
            referral_id=referral.pk,
            referrer=referral.referrer.name,
            amount_minor=event.amount_minor,
            currency=event.currency,
            old_version=old[0] if old else None,
        )
        if event.currency.upper() != program.currency:
            row.skipped = f"Paid in {event.currency}, not {program.currency}: not comparable."
            preview.skipped += 1
            preview.rows.append(row)
            continue

        def context_for(rule_set: rules_module.RuleSet, referral=referral, event=event, first=first, seats=seats):
            return rules_module.ConversionContext(
                kind="payment",
                amount_minor=event.amount_minor,
                currency=event.currency.upper(),
                seats=seats if isinstance(seats, int) and not isinstance(seats, bool) and seats >= 1 else 1,
                previous_successful_referrals=previous_successful(
                    referral.pk, referral.referrer_id, rule_set.counting_period
                ),
                months_since_first_payment=whole_months_between(first["occurred_at"], event.occurred_at),
                is_first_payment=first["pk"] == event.pk,
            )

        if old is not None and old[1] is None:
            row.old_explanation = f"The rules of version {old[0]} cannot be read; counted as nothing."
        elif old is not None:
            outcome = rules_module.compute_rewards(old[1], context_for(old[1]))
            row.old_referrer_minor, row.old_referred_minor = outcome.referrer_total_minor, outcome.referred_total_minor
            row.old_explanation = _explain(outcome)
        else:
            row.old_explanation = "No rules were recorded for this referral."
        outcome = rules_module.compute_rewards(new_rules, context_for(new_rules))
        row.new_referrer_minor, row.new_referred_minor = outcome.referrer_total_minor, outcome.referred_total_minor
        row.new_explanation = _explain(outcome)
        preview.conversions += 1
        preview.old_referrer_minor += row.old_referrer_minor
        preview.old_referred_minor += row.old_referred_minor
        preview.new_referrer_minor += row.new_referrer_minor
        preview.new_referred_minor += row.new_referred_minor
        preview.rows.append(row)
    preview.rows.reverse()  # newest first in the table
    preview.weeks = _weeks(since, until, [row for row in preview.rows if not row.skipped])
    return preview


def _weeks(since: datetime, until: datetime, rows: list[PreviewRow]) -> list[tuple[date, int, int]]:
    """Old and new totals per week (Monday-based) from ``since`` to ``until``, empty weeks included."""
    start = since.date() - timedelta(days=since.weekday())
    totals: dict[date, list[int]] = {}
    cursor = start
    while cursor <= until.date():
        totals[cursor] = [0, 0]
        cursor += timedelta(days=7)
    for row in rows:
        day = row.occurred_at.date()
        week = day - timedelta(days=day.weekday())
        bucket = totals.setdefault(week, [0, 0])
        bucket[0] += row.old_total_minor
        bucket[1] += row.new_total_minor
    return [(week, values[0], values[1]) for week, values in sorted(totals.items())]
