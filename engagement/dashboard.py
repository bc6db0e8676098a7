"""What engagement adds to the participant's dashboard (R-9, R-28): the offer in words, progress to the next
tier or the cap, more ways to share (native share sheet, WhatsApp, SMS, an editable e-mail), clicks on their
link, badges and the opt-in leaderboard."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

from django.db import transaction
from django.db.models import Count, Q

from programs import rules as rules_module
from programs.models import Participant, ParticipantStatus
from programs.services import current_version_or_none
from referral_platform.tenancy.models import Tenant
from referrals.models import Referral
from referrals.selectors import click_count

from .models import ParticipantPreference
from .services.communications import offer_sentence

# Milestones: (converted referrals needed, badge name).
BADGES = ((1, "First success"), (3, "Connector"), (5, "Champion"), (10, "Legend"))
LEADERBOARD_SIZE = 10


@dataclass
class Progress:
    converted: int
    next_tier_at: int | None = None
    cap: int | None = None

    @property
    def to_next_tier(self) -> int | None:
        return None if self.next_tier_at is None else max(0, self.next_tier_at - self.converted)

    @property
    def percent(self) -> int:
        target = self.next_tier_at or self.cap
        return min(100, self.converted * 100 // target) if target else 0


@dataclass
class Extras:
    offer: str
    progress: Progress
    clicks: int
    badges: list[str]
    next_badge: tuple[int, str] | None
    whatsapp: str = ""
    sms: str = ""
    email_subject: str = ""
    email_body: str = ""
    share_text: str = ""
    on_leaderboard: bool = False
    leaderboard: list[dict] = field(default_factory=list)


def _progress(participant: Participant, converted: int) -> Progress:
    progress = Progress(converted=converted)
    version = current_version_or_none(participant.program)
    if version is None:
        return progress
    try:
        rule_set = rules_module.parse_rules(version.rules)
    except rules_module.RulesError:
        return progress
    for rule in rule_set.side("referrer", participant.tier):
        if rule.kind == rules_module.TIERED:
            later = [tier.min_referrals for tier in rule.tiers if tier.min_referrals > converted]
            if later:
                progress.next_tier_at = min(later)
    if rule_set.rewarded_referrals_cap:
        progress.cap = rule_set.rewarded_referrals_cap.max
    return progress


def leaderboard(tenant: Tenant, *, program_id: int) -> list[dict]:
    """The participants who opted in, by converted referrals (first name and initial only)."""
    opted = ParticipantPreference.objects.for_tenant(tenant).filter(on_leaderboard=True).values("participant_id")
    rows = (
        Participant.objects.for_tenant(tenant)
        .filter(program_id=program_id, status=ParticipantStatus.ACTIVE, pk__in=opted)
        .annotate(converted=Count("referrals", filter=Q(referrals__converted_at__isnull=False)))
        .filter(converted__gt=0)
        .order_by("-converted", "pk")[:LEADERBOARD_SIZE]
    )
    board = []
    for row in rows:
        parts = row.name.split()
        display = parts[0] + (f" {parts[-1][0]}." if len(parts) > 1 else "") if parts else "Someone"
        board.append({"name": display, "converted": row.converted, "participant_id": row.pk})
    return board


def dashboard_extras(tenant: Tenant, *, participant: Participant, dashboard) -> Extras:
    converted = Referral.objects.for_tenant(tenant).filter(referrer=participant, converted_at__isnull=False).count()
    earned = [name for needed, name in BADGES if converted >= needed]
    upcoming = next(((needed, name) for needed, name in BADGES if converted < needed), None)
    preference = ParticipantPreference.objects.for_tenant(tenant).filter(participant=participant).first()
    extras = Extras(
        offer=offer_sentence(participant.program),
        progress=_progress(participant, converted),
        clicks=click_count(tenant=tenant, participant_id=participant.pk),
        badges=earned,
        next_badge=upcoming,
        on_leaderboard=bool(preference and preference.on_leaderboard),
        leaderboard=leaderboard(tenant, program_id=participant.program_id),
    )
    share = dashboard.share
    if share is not None:
        name = participant.program.tenant.name
        extras.share_text = f"I recommend {name}. Try it through my invitation: {share.link_url}"
        extras.whatsapp = "https://wa.me/?text=" + quote(extras.share_text)
        extras.sms = "sms:?&body=" + quote(extras.share_text)
        extras.email_subject = f"Try {name}: an invitation from {participant.name}"
        extras.email_body = (
            f"Hi,\n\nI use {name} and think it would help you too. Sign up through my invitation: "
            f"{share.email_link_url}\n\n{participant.name}"
        )
    return extras


@transaction.atomic
def leaderboard_opt_in(*, participant: Participant, on_leaderboard: bool) -> ParticipantPreference:
    row, _ = ParticipantPreference.objects.update_or_create(
        tenant_id=participant.tenant_id, participant=participant, defaults={"on_leaderboard": on_leaderboard}
    )
    return row
