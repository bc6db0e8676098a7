"""Reads of the partners app that matter, tenant first; the portal's reads are also partner-scoped."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db.models import Count, Q, Sum
from django.utils import timezone

from referral_platform.domains import is_free_email_domain, registrable_domain
from referral_platform.tenancy.models import Tenant
from referrals.models import Click, Referral, ReferralSource
from rewards.ledger import participant_balances

from .models import (
    OPEN_STAGES,
    DealConflict,
    DealRegistration,
    DealStage,
    DealStatus,
    Partner,
    PartnerEnrolment,
    PartnerTier,
    Resource,
    SupportTicket,
)


def account_lookup(tenant: Tenant, *, domain: str, now: datetime | None = None) -> dict:
    """Does this account belong to a partner right now? For the tenant's sales team (API and admin).

    The domain (or an e-mail address, or a URL) is reduced to its registrable domain; the answer names the
    registration that holds it (protected, or waiting for review) and when the protection ends."""
    now = now or timezone.now()
    text = (domain or "").strip()
    registrable = registrable_domain(text)
    if not text:
        raise ValidationError({"domain": "Give the account's web domain, e.g. ?domain=acme.com."})
    if "." not in registrable or is_free_email_domain(registrable):
        raise ValidationError({"domain": f"{text!r} is not a company's web domain."})
    holding = (
        DealRegistration.objects.for_tenant(tenant)
        .filter(domain=registrable, status__in=[DealStatus.APPROVED, DealStatus.PENDING, DealStatus.WON])
        .filter(Q(status=DealStatus.WON) | Q(expires_at__gt=now))
        .select_related("partner")
        .order_by("-status", "registered_at", "pk")
    )
    deal = next((d for d in holding if d.status == DealStatus.APPROVED), None) or next(iter(holding), None)
    answer = {"domain": registrable, "belongs_to_partner": False, "protected": False, "registration": None}
    if deal is None:
        return answer
    answer.update(
        belongs_to_partner=deal.status in (DealStatus.APPROVED, DealStatus.WON),
        protected=deal.status == DealStatus.APPROVED,
        registration={
            "id": deal.pk,
            "reference": deal.reference,
            "status": deal.status,
            "stage": deal.stage,
            "company_name": deal.company_name,
            "partner": {"id": deal.partner_id, "name": deal.partner.name, "type": deal.partner.partner_type},
            "registered_at": deal.registered_at,
            "expires_at": deal.expires_at if deal.status != DealStatus.WON else None,
        },
    )
    return answer


# --- the portal -------------------------------------------------------------------------------------


def partner_enrolments(partner: Partner) -> list[PartnerEnrolment]:
    return list(
        PartnerEnrolment.objects.for_tenant(partner.tenant_id)
        .filter(partner=partner)
        .select_related("program", "participant", "program__tenant")
        .order_by("program__name", "pk")
    )


def partner_deals(partner: Partner):
    return (
        DealRegistration.objects.for_tenant(partner.tenant_id)
        .filter(partner=partner)
        .select_related("program")
        .order_by("-registered_at", "-pk")
    )


def partner_leads(partner: Partner):
    participant_ids = [e.participant_id for e in partner_enrolments(partner)]
    return (
        Referral.objects.for_tenant(partner.tenant_id)
        .filter(referrer_id__in=participant_ids, source=ReferralSource.PARTNER_LEAD)
        .select_related("program")
        .order_by("-created_at", "-pk")
    )


def partner_resources(partner: Partner):
    """Published resources of the partner's tier and the tiers below (premium partners see more)."""
    return (
        Resource.objects.for_tenant(partner.tenant_id)
        .filter(is_published=True)
        .filter(Q(min_tier__isnull=True) | Q(min_tier__rank__lte=partner.tier_rank))
        .select_related("min_tier")
        .order_by("category", "title", "pk")
    )


def partner_tickets(partner: Partner):
    return SupportTicket.objects.for_tenant(partner.tenant_id).filter(partner=partner).order_by("-updated_at", "-pk")


@dataclass
class TierProgress:
    current: PartnerTier | None
    next: PartnerTier | None
    won_deals: int = 0
    won_revenue_minor: int = 0
    percent: int = 100
    steps: list[str] = field(default_factory=list)


def tier_progress(partner: Partner, *, now: datetime | None = None) -> TierProgress:
    from referral_platform.money import format_money

    from .services.tiers import standing

    now = now or timezone.now()
    tiers = list(PartnerTier.objects.for_tenant(partner.tenant_id).order_by("rank"))
    current = partner.tier
    upper = [tier for tier in tiers if tier.rank > partner.tier_rank] if current else tiers
    following = upper[0] if upper else None
    if following is None:
        return TierProgress(current=current, next=None)
    figures = standing(partner, following, now=now)
    parts, steps = [], []
    if following.min_won_deals:
        parts.append(min(1, figures.won_deals / following.min_won_deals))
        steps.append(f"{figures.won_deals} of {following.min_won_deals} won deals")
    if following.min_won_revenue_minor:
        parts.append(min(1, figures.won_revenue_minor / following.min_won_revenue_minor))
        steps.append(
            f"{format_money(figures.won_revenue_minor, following.currency)} of "
            f"{format_money(following.min_won_revenue_minor, following.currency)} won"
        )
    percent = int(100 * min(parts)) if parts else 100
    return TierProgress(
        current=current,
        next=following,
        won_deals=figures.won_deals,
        won_revenue_minor=figures.won_revenue_minor,
        percent=percent,
        steps=steps,
    )


@dataclass
class PortalHome:
    partner: Partner
    pipeline: OrderedDict
    clicks: int
    registered_deals: int
    won_deals: int
    earnings: dict  # currency -> {"pending", "approved", "paid"}
    tier: TierProgress
    recent_deals: list


def portal_home(partner: Partner, *, now: datetime | None = None) -> PortalHome:
    """The partner's performance: open pipeline by stage (count, value), clicks of their links, registered
    and won deals, earnings from the ledger (pending / approved / paid per currency) and tier progress."""
    enrolments = partner_enrolments(partner)
    deals = partner_deals(partner)
    by_stage = {
        row["stage"]: row
        # order_by(): partner_deals() orders by registered_at, which would otherwise join the GROUP BY and
        # split a stage into one row per deal (the portal chart then showed 1 for 2 registered deals).
        for row in deals.filter(status__in=[DealStatus.APPROVED, DealStatus.PENDING, DealStatus.WON])
        .order_by()
        .values("stage")
        .annotate(count=Count("pk"), value=Sum("deal_value_minor"))
    }
    pipeline = OrderedDict(
        (stage, {"label": DealStage(stage).label, "count": by_stage.get(stage, {}).get("count", 0),
                 "value_minor": by_stage.get(stage, {}).get("value") or 0})
        for stage in (*OPEN_STAGES, DealStage.WON)
    )  # fmt: skip
    earnings: dict[str, dict[str, int]] = {}
    for enrolment in enrolments:
        currency = enrolment.program.currency
        balances = participant_balances(partner.tenant, participant=enrolment.participant, currency=currency)
        bucket = earnings.setdefault(currency, {"pending": 0, "approved": 0, "paid": 0})
        bucket["pending"] += balances.get("pending", 0)
        bucket["approved"] += balances.get("payable", 0)
        bucket["paid"] += balances.get("paid", 0)
    clicks = Click.objects.for_tenant(partner.tenant_id).filter(
        participant_id__in=[e.participant_id for e in enrolments], is_bot=False
    )
    return PortalHome(
        partner=partner,
        pipeline=pipeline,
        clicks=clicks.count(),
        registered_deals=deals.count(),
        won_deals=deals.filter(status=DealStatus.WON).count(),
        earnings=earnings,
        tier=tier_progress(partner, now=now),
        recent_deals=list(deals[:5]),
    )


def open_conflicts(tenant: Tenant):
    return DealConflict.objects.for_tenant(tenant).filter(status="open").select_related("holder", "challenger")
