"""What the partners app answers for lower layers (registered in ``PartnersConfig.ready``).

- ``account_owner``: referrals asks, before establishing a referral, whether a partner's deal registration
  protects the prospect's account at that moment; the registering partner's participant is the answer.
- ``session_actor``: the tenancy middleware asks who a logged-in user acts as; a partner user is a
  ``partner_user`` actor bound to one tenant and one partner (never a member, never the admin or the API).
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from referral_platform.domains import is_free_email_domain, normalise_company_name, registrable_domain
from referral_platform.hooks import AccountClaim
from referral_platform.tenancy.actors import Actor
from referral_platform.tenancy.memo import in_batch, memoized

from .models import DealRegistration, DealStatus, PartnerStatus, PartnerUser

CLAIMING_STATUSES = (DealStatus.APPROVED, DealStatus.WON, DealStatus.EXPIRED, DealStatus.LOST)


def _covers(deal: DealRegistration, at: datetime) -> bool:
    """Was the account the partner's at ``at``? From registration until protection ended; a won deal keeps it."""
    if deal.registered_at > at:
        return False
    if deal.status == DealStatus.WON:
        return True
    end = deal.expires_at
    if deal.status == DealStatus.LOST and deal.closed_at is not None:
        end = min(end, deal.closed_at) if end else deal.closed_at
    return end is None or at < end


def _claiming_accounts(tenant) -> tuple[frozenset[str], frozenset[str]]:
    """The domains and company keys the tenant's claiming registrations name (any date: ``account_owner``
    then reads the few that match). Inside ``batch_memo`` read once per chunk (tenancy.memo): a registration
    approved while a chunk runs counts from the next chunk on, as if the chunk had read it at its start."""
    rows = (
        DealRegistration.objects.for_tenant(tenant)
        .filter(status__in=CLAIMING_STATUSES)
        .values_list("domain", "company_key")
    )
    domains, keys = set(), set()
    for domain, key in rows:
        domains.add(domain)
        keys.add(key)
    domains.discard("")
    keys.discard("")
    return frozenset(domains), frozenset(keys)


def account_owner(*, tenant, program, email: str = "", company: str = "", at: datetime | None = None):
    """The claim of the partner whose registration protected this account (by the e-mail's registrable
    domain, else the normalised company name) at ``at``, or None."""
    at = at or timezone.now()
    domain = registrable_domain(email) if email and "@" in email else ""
    if domain and is_free_email_domain(domain):
        domain = ""
    key = normalise_company_name(company) if company else ""
    if not domain and not key:
        return None
    if in_batch():  # a chunk of conversions: the tenant's registered accounts read once (tenancy.memo)
        key_name = f"claiming_accounts_{getattr(tenant, 'pk', tenant)}"
        domains, keys = memoized(key_name, lambda: _claiming_accounts(tenant))
        if domain not in domains and key not in keys:
            return None  # no registration names this account (the usual answer)
    match = Q()
    if domain:
        match |= Q(domain=domain)
    if key:
        match |= Q(company_key=key)
    candidates = (
        DealRegistration.objects.for_tenant(tenant)
        .filter(match, status__in=CLAIMING_STATUSES, registered_at__lte=at)
        .select_related("participant", "partner")
        .order_by("registered_at", "pk")
    )
    # The domain is the stronger evidence: prefer a registration of the e-mail's domain.
    ordered = sorted(candidates, key=lambda deal: (deal.domain != domain, deal.registered_at, deal.pk))
    for deal in ordered:
        if _covers(deal, at):
            return AccountClaim(
                participant=deal.participant,
                evidence={
                    "deal": deal.reference,
                    "deal_id": deal.pk,
                    "partner": deal.partner.name,
                    "company": deal.company_name,
                    "domain": deal.domain,
                    "matched_on": "domain" if domain and deal.domain == domain else "company",
                    "registered_at": deal.registered_at.isoformat(),
                    "expires_at": deal.expires_at.isoformat() if deal.expires_at else None,
                },
            )
    return None


def session_actor(*, user):
    """A partner user's actor, or None for everyone else. An inactive partner user, or one of a suspended
    partner, acts as nobody (anonymous with the user): the portal then refuses them."""
    partner_user = PartnerUser.objects.select_related("partner", "tenant").filter(user=user).first()
    if partner_user is None:
        return None
    if not partner_user.is_active or partner_user.partner.status != PartnerStatus.ACTIVE:
        return Actor(kind="anonymous", user=user)
    return Actor(kind="partner_user", tenant=partner_user.tenant, user=user, partner_id=partner_user.partner_id)
