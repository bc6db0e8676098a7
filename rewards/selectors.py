"""Reads of rewards, payouts and statements. The tenant comes first (None only for platform-wide tasks)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.contrib.postgres.expressions import ArraySubquery
from django.db.models import Aggregate, Count, DurationField, F, OuterRef, Q, QuerySet

from programs.models import Participant, Program
from referral_platform.money import format_money
from referral_platform.tenancy.models import Tenant

from .ledger import participant_balances, presented
from .models import (
    PARTICIPANT_ACCOUNT_KINDS,
    LedgerEntry,
    Payout,
    PayoutSettings,
    PayoutStatus,
    Reward,
    RewardEvaluation,
    RewardStatus,
)


def _rewards(tenant: Tenant | None) -> QuerySet[Reward]:
    return Reward.objects.for_tenant(tenant) if tenant is not None else Reward.objects.all()


# --- the review threshold ------------------------------------------------------------------------
# A reward whose net value (amount less reversals and clawbacks) is above its program's auto-approve
# limit waits for a marketer; one within it approves itself once its hold ends. The same rule, for one
# row and as a filter (rewards/tests/test_review_threshold.py holds them equal):


def reward_needs_review(reward: Reward) -> bool:
    """Above the program's auto-approve limit: a marketer decides."""
    return reward.net_minor > reward.program.auto_approve_limit_minor


def needs_review_q() -> Q:
    """``reward_needs_review`` as a filter on rewards."""
    return Q(amount_minor__gt=F("program__auto_approve_limit_minor") + F("reversed_minor") + F("clawed_back_minor"))


def review_queue_q(*, now: datetime) -> Q:
    """The review queue as a filter: pending rewards past their hold that need review."""
    return Q(status=RewardStatus.PENDING, hold_until__lte=now) & needs_review_q()


def rewards_due_for_auto_approval(tenant: Tenant | None, *, now: datetime) -> QuerySet[Reward]:
    """Pending rewards whose hold has ended and whose value is within the program's auto-approve limit."""
    return (
        _rewards(tenant)
        .filter(status=RewardStatus.PENDING, hold_until__lte=now)
        .exclude(needs_review_q())
        .select_related("tenant", "program")
        .order_by("hold_until", "pk")
    )


def rewards_pending_review(tenant: Tenant, *, program: Program | None = None, now: datetime) -> QuerySet[Reward]:
    """The review queue: pending rewards past their hold that are above the auto-approve limit."""
    qs = _rewards(tenant).filter(review_queue_q(now=now))
    if program is not None:
        qs = qs.filter(program=program)
    return qs.order_by("hold_until", "pk")


def reward_evaluations_with_reward_ids(evaluations: QuerySet[RewardEvaluation]) -> QuerySet[RewardEvaluation]:
    """Each evaluation with ``reward_ids``: the ids of its conversion's rewards, oldest first, read in the
    evaluations' own query (a list does not ask once per row)."""
    rewards = Reward.objects.filter(
        tenant_id=OuterRef("tenant_id"), conversion_event_id=OuterRef("conversion_event_id")
    ).order_by("pk")
    return evaluations.annotate(reward_ids=ArraySubquery(rewards.values("pk")))


def minimum_payout_minor(program: Program) -> int:
    settings_row = PayoutSettings.objects.for_tenant(program.tenant_id).filter(program=program).first()
    return settings_row.minimum_payout_minor if settings_row else 0


def participants_with_unpaid_rewards(tenant: Tenant | None) -> QuerySet[Participant]:
    ids = _rewards(tenant).filter(status=RewardStatus.APPROVED, payout__isnull=True).values("participant_id")
    return Participant.objects.filter(pk__in=ids).select_related("tenant", "program").order_by("pk")


def payouts_due(tenant: Tenant | None, *, now: datetime) -> QuerySet[Payout]:
    """Payouts the payout run should (re)try now: new ones, interrupted ones, failed ones whose backoff ended."""
    qs = Payout.objects.for_tenant(tenant) if tenant is not None else Payout.objects.all()
    return (
        qs.exclude(method="manual")
        .filter(status__in=[PayoutStatus.PENDING, PayoutStatus.PROCESSING, PayoutStatus.FAILED])
        .exclude(next_attempt_at__gt=now)
        .order_by("pk")
    )


# --- statements ------------------------------------------------------------------------------


@dataclass
class StatementLine:
    posted_at: datetime
    account: str
    kind: str
    memo: str
    amount_minor: int  # presented: positive increases the account in its normal direction
    transaction_id: int
    reward_id: int | None
    payout_id: int | None


@dataclass
class Statement:
    participant: Participant
    currency: str
    start: datetime
    end: datetime
    opening: dict[str, int]
    closing: dict[str, int]
    lines: list[StatementLine] = field(default_factory=list)

    def movements(self) -> dict[str, int]:
        totals = {kind.value: 0 for kind in PARTICIPANT_ACCOUNT_KINDS}
        for line in self.lines:
            totals[line.account] += line.amount_minor
        return totals

    def reconciles(self) -> bool:
        movements = self.movements()
        return all(self.opening[k] + movements[k] == self.closing[k] for k in self.opening)


def participant_statement(
    tenant: Tenant, *, participant: Participant, start: datetime, end: datetime, currency: str | None = None
) -> Statement:
    """Opening balances at ``start``, every entry in [start, end), closing balances at ``end``: all from
    the ledger, so opening + movements = closing by construction and by test."""
    currency = (currency or participant.program.currency).upper()
    entries = (
        LedgerEntry.objects.for_tenant(tenant)
        .filter(account__participant=participant, account__currency=currency, posted_at__gte=start, posted_at__lt=end)
        .select_related("account", "transaction")
        .order_by("posted_at", "pk")
    )
    statement = Statement(
        participant=participant,
        currency=currency,
        start=start,
        end=end,
        opening=participant_balances(tenant, participant=participant, currency=currency, before=start),
        closing=participant_balances(tenant, participant=participant, currency=currency, before=end),
    )
    for entry in entries:
        statement.lines.append(
            StatementLine(
                posted_at=entry.posted_at,
                account=entry.account.kind,
                kind=entry.transaction.kind,
                memo=entry.transaction.memo,
                amount_minor=presented(entry.account.kind, entry.amount_minor),
                transaction_id=entry.transaction_id,
                reward_id=entry.transaction.reward_id,
                payout_id=entry.transaction.payout_id,
            )
        )
    return statement


def statement_csv_rows(statement: Statement) -> Iterator[list[str]]:
    """The statement as CSV rows. Each amount twice: ``amount_minor``, the integer in minor units for
    machines (sums and reconciliations never parse text), and ``amount``, as people read it
    (referral_platform/money.py: "500 JPY", "12.34 USD", "1.234 KWD")."""
    kinds = [kind.value for kind in PARTICIPANT_ACCOUNT_KINDS]

    def amounts(amount_minor: int) -> list[str]:
        return [str(amount_minor), format_money(amount_minor, statement.currency)]

    yield ["participant", statement.participant.name, "currency", statement.currency]
    yield ["period", statement.start.isoformat(), statement.end.isoformat()]
    yield ["row", "posted_at", "account", "kind", "amount_minor", "amount", "memo", "reward", "payout", "transaction"]
    for kind in kinds:
        yield ["opening", statement.start.isoformat(), kind, "", *amounts(statement.opening[kind]), "", "", "", ""]
    for line in statement.lines:
        yield [
            "entry",
            line.posted_at.isoformat(),
            line.account,
            line.kind,
            *amounts(line.amount_minor),
            line.memo,
            str(line.reward_id or ""),
            str(line.payout_id or ""),
            str(line.transaction_id),
        ]
    for kind in kinds:
        yield ["closing", statement.end.isoformat(), kind, "", *amounts(statement.closing[kind]), "", "", "", ""]


# --- the participant's dashboard -------------------------------------------------------------


@dataclass
class DashboardShare:
    """What the participant needs to share in three steps: the link, a ready e-mail, social posts."""

    link_url: str
    email_link_url: str
    social_link_url: str
    has_qr: bool
    mailto: str
    linkedin: str
    x: str


@dataclass
class ParticipantDashboard:
    participant: Participant
    program: Program
    share: DashboardShare | None
    referrals: list
    rewards: list[Reward]
    messages: list
    balances: dict[str, int]
    currency: str
    terms_url: str


def _share(tenant: Tenant, participant: Participant) -> DashboardShare | None:
    from urllib.parse import quote, urlencode

    from referrals.selectors import participant_share_links

    links = {item["channel"]: item["url"] for item in participant_share_links(tenant, participant=participant)}
    if not links:
        return None
    direct = links.get("direct") or next(iter(links.values()))
    by_email, social = links.get("email", direct), links.get("social", direct)
    program = participant.program
    subject = f"Try {program.tenant.name}: an invitation from {participant.name}"
    body = (
        f"Hi,\n\nI use {program.tenant.name} and think it would help you too. "
        f"Sign up through my invitation: {by_email}\n\n{participant.name}"
    )
    post = f"I recommend {program.tenant.name}. Try it through my invitation:"
    return DashboardShare(
        link_url=direct,
        email_link_url=by_email,
        social_link_url=social,
        has_qr="qr" in links,
        mailto=f"mailto:?subject={quote(subject)}&body={quote(body)}",
        linkedin="https://www.linkedin.com/sharing/share-offsite/?" + urlencode({"url": social}),
        x="https://twitter.com/intent/tweet?" + urlencode({"text": post, "url": social}),
    )


def participant_dashboard(tenant: Tenant, *, participant: Participant) -> ParticipantDashboard:
    """Everything a participant's dashboard shows, of that participant only: their share links, their
    referrals (with stage), their rewards (status, amounts, how each was computed), their messages and
    their balances (from the ledger)."""
    from django.urls import reverse

    from referrals.models import Referral

    from .models import ParticipantMessage

    if participant.tenant_id != tenant.pk:
        raise Participant.DoesNotExist
    program = participant.program
    currency = program.currency
    return ParticipantDashboard(
        participant=participant,
        program=program,
        share=_share(tenant, participant),
        referrals=list(
            Referral.objects.for_tenant(tenant).filter(referrer=participant).order_by("-created_at", "-pk")[:100]
        ),
        rewards=list(
            Reward.objects.for_tenant(tenant).filter(participant=participant).order_by("-created_at", "-pk")[:100]
        ),
        messages=list(
            ParticipantMessage.objects.for_tenant(tenant)
            .filter(participant=participant)
            .order_by("-created_at", "-pk")[:50]
        ),
        balances=participant_balances(tenant, participant=participant, currency=currency),
        currency=currency,
        terms_url=reverse("program_terms_page", kwargs={"tenant_slug": tenant.slug, "program_slug": program.slug}),
    )


# --- time to reward ----------------------------------------------------------------------------


@dataclass
class TimeToReward:
    program_id: int
    program_name: str
    paid: int
    median: timedelta | None
    p90: timedelta | None

    @property
    def within_target(self) -> bool | None:
        """R-18: rewards within 7 days (median)."""
        return None if self.median is None else self.median <= TIME_TO_REWARD_TARGET


TIME_TO_REWARD_TARGET = timedelta(days=7)


class _Percentile(Aggregate):
    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression, fraction: float, **extra):
        super().__init__(expression, fraction=fraction, output_field=DurationField(), **extra)


def time_to_reward_by_program(tenant: Tenant, *, program: Program | None = None) -> list[TimeToReward]:
    """Per program: how many rewards were paid, and the median and 90th percentile of their time to
    reward (conversion → paid, ``Reward.time_to_reward``, stored on every paid reward)."""
    rows = _rewards(tenant).filter(status=RewardStatus.PAID, time_to_reward__isnull=False)
    if program is not None:
        rows = rows.filter(program=program)
    stats = (
        rows.values("program_id", "program__name")
        .annotate(
            paid=Count("pk"),
            median=_Percentile("time_to_reward", fraction=0.5),
            p90=_Percentile("time_to_reward", fraction=0.9),
        )
        .order_by("program__name", "program_id")
    )
    return [
        TimeToReward(
            program_id=row["program_id"],
            program_name=row["program__name"],
            paid=row["paid"],
            median=row["median"],
            p90=row["p90"],
        )
        for row in stats
    ]
