"""Writes for programs and participants."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.text import slugify

from referral_platform.tenancy.actors import Actor
from referral_platform.tenancy.models import Tenant
from referral_platform.tenancy.services import audit_record

from .models import Participant, ParticipantStatus, Program


def host_is_allowed(*, tenant: Tenant, url: str) -> bool:
    """True when ``url`` is an absolute http(s) URL on one of the tenant's allowed landing domains."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.username or parts.password:
        return False
    host = parts.hostname.lower().rstrip(".")
    for domain in tenant.allowed_landing_domains:
        domain = domain.lower().strip()
        if domain.startswith("."):
            if host == domain[1:] or host.endswith(domain):
                return True
        elif host == domain:
            return True
    return False


@transaction.atomic
def program_create(
    *,
    tenant: Tenant,
    actor: Actor,
    name: str,
    kind: str,
    landing_url: str,
    slug: str | None = None,
    currency: str | None = None,
    cookie_window_days: int | None = None,
) -> Program:
    """Create a draft program. Its landing URL must be on the tenant's allowed domains."""
    if not host_is_allowed(tenant=tenant, url=landing_url):
        raise ValidationError(
            {"landing_url": "The landing URL's host is not one of the workspace's allowed landing domains."}
        )
    slug = slug or slugify(name)[:80]
    if Program.objects.for_tenant(tenant).filter(slug=slug).exists():
        raise ValidationError({"slug": f"A program with slug {slug!r} already exists."})
    program = Program.objects.create(
        tenant=tenant,
        name=name,
        slug=slug,
        kind=kind,
        landing_url=landing_url,
        currency=currency or tenant.default_currency,
        cookie_window_days=cookie_window_days or 90,
    )
    audit_record(tenant=tenant, actor=actor, action="program.created", obj=program, to_state=program.status)
    return program


@transaction.atomic
def participant_enroll(
    *,
    tenant: Tenant,
    program: Program,
    external_id: str,
    name: str,
    email: str,
    company: str = "",
    actor: Actor,
) -> Participant:
    """Enrol (or update, by external id) a participant; active ones get their referral links."""
    from referrals.models import Channel
    from referrals.services import referral_link_create

    if program.tenant_id != tenant.pk:
        raise ValidationError({"program": "Unknown program."})
    participant, created = Participant.objects.update_or_create(
        tenant=tenant,
        program=program,
        external_id=external_id,
        defaults={"name": name, "email": email.strip().lower(), "company": company},
    )
    if created:
        audit_record(
            tenant=tenant, actor=actor, action="participant.enrolled", obj=participant, to_state=participant.status
        )
    if participant.status == ParticipantStatus.ACTIVE:
        for channel in Channel.values:
            referral_link_create(participant=participant, channel=channel)
    return participant
