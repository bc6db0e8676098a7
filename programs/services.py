"""Writes for programs and participants."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from referral_platform.tenancy.actors import Actor
from referral_platform.tenancy.models import Tenant
from referral_platform.tenancy.services import audit_record

from .models import Participant, ParticipantStatus, Program, ProgramVersion


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


# --- rule versions ------------------------------------------------------------------------------
# Program settings that decide how a referral is judged. A version snapshots them so that a later
# edit of the program never changes what an existing referral was promised.
PROGRAM_RULE_FIELDS = (
    "attribution_model",
    "cookie_window_days",
    "time_decay_half_life_days",
    "currency",
    "hold_days",
    "auto_approve_limit_minor",
)


def program_rules_snapshot(*, program: Program) -> dict:
    """The program's current judging settings as a JSON-able dict (the ``rules`` of a version)."""
    return {name: getattr(program, name) for name in PROGRAM_RULE_FIELDS}


@transaction.atomic
def program_current_version(*, program: Program) -> ProgramVersion:
    """The program's current rule version (highest number); version 1 is created from the program's
    current settings when the program has none yet. Safe under concurrency: two callers racing to
    create version 1 both get the same row."""
    current = ProgramVersion.objects.for_tenant(program.tenant_id).filter(program=program).order_by("-number").first()
    if current is not None:
        return current
    try:
        with transaction.atomic():
            return ProgramVersion.objects.create(
                tenant_id=program.tenant_id,
                program=program,
                number=1,
                rules=program_rules_snapshot(program=program),
                created_by="system: first version, from the program's settings",
            )
    except IntegrityError:
        return ProgramVersion.objects.for_tenant(program.tenant_id).get(program=program, number=1)


def judging_rules(*, program: Program, version: ProgramVersion | None) -> dict:
    """The settings a referral is judged under: its version's rules, falling back to the program's
    current settings for any key the version does not hold."""
    rules = program_rules_snapshot(program=program)
    if version is not None:
        rules.update({key: value for key, value in version.rules.items() if key in PROGRAM_RULE_FIELDS})
    return rules
