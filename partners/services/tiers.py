"""Partner tiers: the highest tier whose written rules a partner meets over the rolling period is its tier
(promotion and demotion alike), recomputed by Celery beat; every change is kept and the partner told."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, Sum
from django.utils import timezone

from programs.services import participant_tier_set
from referral_platform.money import format_money
from referral_platform.tenancy.actors import Actor
from referral_platform.tenancy.models import Tenant
from referral_platform.tenancy.services import audit_record

from ..models import (
    DealRegistration,
    DealStatus,
    Partner,
    PartnerEnrolment,
    PartnerStatus,
    PartnerTier,
    PartnerTierChange,
    TierChangeDirection,
)
from .notify import tell_partner


@dataclass(frozen=True)
class TierStanding:
    tier: PartnerTier
    won_deals: int
    won_revenue_minor: int

    @property
    def met(self) -> bool:
        return self.won_deals >= self.tier.min_won_deals and self.won_revenue_minor >= self.tier.min_won_revenue_minor


def standing(partner: Partner, tier: PartnerTier, *, now: datetime) -> TierStanding:
    """The partner's won deals (count, and value in the tier's currency) over the tier's rolling period."""
    won = DealRegistration.objects.for_tenant(partner.tenant_id).filter(
        partner=partner, status=DealStatus.WON, closed_at__gt=now - timedelta(days=tier.period_days), closed_at__lte=now
    )
    figures = won.aggregate(count=Count("pk"))
    revenue = won.filter(currency=tier.currency).aggregate(total=Sum("won_amount_minor"))["total"] or 0
    return TierStanding(tier=tier, won_deals=figures["count"], won_revenue_minor=revenue)


def tier_target(partner: Partner, *, now: datetime) -> tuple[PartnerTier | None, list[TierStanding]]:
    tiers = list(PartnerTier.objects.for_tenant(partner.tenant_id).order_by("rank"))
    standings = [standing(partner, tier, now=now) for tier in tiers]
    met = [s.tier for s in standings if s.met]
    return (met[-1] if met else None), standings


@transaction.atomic
def partner_tier_change(
    *, partner: Partner, to_tier: PartnerTier | None, actor: Actor | str, direction: str, reason: str, metrics: dict
) -> PartnerTierChange | None:
    """Move the partner to ``to_tier``: history row, audit row, participants' tier (program rules may pay
    tiers differently), and an e-mail to the partner."""
    partner = (
        Partner.objects.for_tenant(partner.tenant_id).select_for_update(of=("self",), no_key=True).get(pk=partner.pk)
    )
    if partner.tier_id == (to_tier.pk if to_tier else None):
        return None
    label = actor if isinstance(actor, str) else actor.label
    change = PartnerTierChange.objects.create(
        tenant_id=partner.tenant_id,
        partner=partner,
        from_tier=partner.tier,
        to_tier=to_tier,
        direction=direction,
        reason=reason,
        metrics=metrics,
        actor=label,
    )
    previous = partner.tier
    partner.tier = to_tier
    partner.tier_changed_at = timezone.now()
    partner.save(update_fields=["tier", "tier_changed_at"])
    audit_record(
        tenant=partner.tenant,
        actor=label,
        action="partner.tier_changed",
        obj=partner,
        from_state=previous.slug if previous else "",
        to_state=to_tier.slug if to_tier else "",
        reason=reason,
        data=metrics,
    )
    for enrolment in (
        PartnerEnrolment.objects.for_tenant(partner.tenant_id).filter(partner=partner).select_related("participant")
    ):
        participant_tier_set(
            participant=enrolment.participant, tier=to_tier.slug if to_tier else "", actor=label, reason=reason
        )
    word = {"promoted": "Congratulations: you moved up", "demoted": "Your tier changed"}.get(
        direction, "Your tier changed"
    )
    tell_partner(
        partner,
        subject=f"{word} to {to_tier.name if to_tier else 'no tier'}",
        body=f"{partner.name} is now {to_tier.name if to_tier else 'without a tier'} "
        f"(was {previous.name if previous else 'none'}). Why: {reason}",
    )
    return change


def partner_tier_recompute(*, partner: Partner, now: datetime | None = None) -> PartnerTierChange | None:
    now = now or timezone.now()
    target, standings = tier_target(partner, now=now)
    current_rank = partner.tier.rank if partner.tier_id else -1
    target_rank = target.rank if target else -1
    if target_rank == current_rank:
        return None
    direction = TierChangeDirection.PROMOTED if target_rank > current_rank else TierChangeDirection.DEMOTED
    basis = next((s for s in standings if s.tier == (target if direction == "promoted" else partner.tier)), None)
    if basis is None:
        reason = "no tier's rules are met"
    else:
        revenue = format_money(basis.won_revenue_minor, basis.tier.currency)
        verb = "meets" if direction == "promoted" else "no longer meets"
        reason = (
            f"{basis.won_deals} won deal(s) and {revenue} won in the last {basis.tier.period_days} days {verb} the "
            f"rule of {basis.tier.name}: {basis.tier.rule_text}"
        )
    metrics = {
        s.tier.slug: {"won_deals": s.won_deals, "won_revenue_minor": s.won_revenue_minor, "met": s.met}
        for s in standings
    }
    return partner_tier_change(
        partner=partner,
        to_tier=target,
        actor="system:tier-recompute",
        direction=direction,
        reason=reason,
        metrics=metrics,
    )


def partner_tiers_recompute(*, tenant: Tenant | None = None, now: datetime | None = None) -> dict[str, int]:
    """Beat task: recompute every active partner's tier. Returns {"promoted", "demoted"}."""
    now = now or timezone.now()
    partners = Partner.objects.filter(status=PartnerStatus.ACTIVE).select_related("tier", "tenant")
    if tenant is not None:
        partners = partners.filter(tenant=tenant)
    counts = {"promoted": 0, "demoted": 0}
    for partner in partners.order_by("pk").iterator():
        change = partner_tier_recompute(partner=partner, now=now)
        if change is not None:
            counts[change.direction] += 1
    return counts
