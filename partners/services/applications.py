"""Applications to partner programs: a public form, duplicates refused, a marketer decides."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from programs.models import Program, ProgramAccess, ProgramStatus
from referral_platform.domains import registrable_domain
from referral_platform.state import transition
from referral_platform.tenancy.actors import Actor
from referral_platform.tenancy.services import audit_record

from ..models import ApplicationStatus, PartnerApplication, PartnerRole, PartnerType
from .notify import mail_on_commit, tell_team
from .organisations import PARTNER_PROGRAM_KINDS, partner_create, partner_enrol, partner_invitation_create


def program_takes_applications(program: Program) -> bool:
    return (
        program.kind in PARTNER_PROGRAM_KINDS
        and program.status == ProgramStatus.ACTIVE
        and program.access != ProgramAccess.INVITE_ONLY
    )


def _text(errors: dict, name: str, value, *, required: bool = True, limit: int = 200) -> str:
    value = (value or "").strip() if isinstance(value, str) else ""
    if required and not value:
        errors[name] = "This field is required."
    elif len(value) > limit:
        errors[name] = f"At most {limit:,} characters."
    return value


@transaction.atomic
def application_submit(
    *,
    program: Program,
    company: str,
    website: str,
    partner_type: str,
    contact_name: str,
    email: str,
    audience: str,
    expected_volume: str,
    terms_accepted: bool,
    country: str = "",
) -> PartnerApplication:
    """A company applies to a partner program. One open application per e-mail (and per company domain)
    and program: a second one is refused on ``email`` / ``website``, also when both arrive at once."""
    if not program_takes_applications(program):
        raise ValidationError({"program": "This program does not take applications."})
    errors: dict = {}
    company = _text(errors, "company", company)
    contact_name = _text(errors, "contact_name", contact_name)
    audience = _text(errors, "audience", audience, limit=2000)
    expected_volume = _text(errors, "expected_volume", expected_volume)
    website = (website or "").strip()
    domain = ""
    try:
        URLValidator(schemes=["http", "https"])(website)
        domain = registrable_domain(website)
    except ValidationError:
        errors["website"] = "Enter the company's web address, e.g. https://example.com."
    email = (email or "").strip().lower()
    try:
        validate_email(email)
    except ValidationError:
        errors["email"] = "Enter a valid e-mail address."
    if partner_type not in PartnerType.values:
        errors["partner_type"] = f"Choose one of: {', '.join(PartnerType.labels)}."
    country = (country or "").strip().upper()
    if country and (len(country) != 2 or not country.isalpha()):
        errors["country"] = "Use the two-letter country code (e.g. DE)."
    if terms_accepted is not True:
        errors["terms_accepted"] = "Accept the partner terms to apply."
    if errors:
        raise ValidationError(errors)
    open_ones = PartnerApplication.objects.for_tenant(program.tenant_id).filter(program=program)
    if open_ones.filter(email=email, status__in=[ApplicationStatus.PENDING, ApplicationStatus.APPROVED]).exists():
        raise ValidationError({"email": "An application from this e-mail address is already open or approved."})
    if open_ones.filter(website_domain=domain, status=ApplicationStatus.PENDING).exists():
        raise ValidationError({"website": f"An application for {domain} is already waiting for review."})
    try:
        with transaction.atomic():
            application = PartnerApplication.objects.create(
                tenant_id=program.tenant_id,
                program=program,
                company=company,
                website=website,
                website_domain=domain,
                partner_type=partner_type,
                country=country,
                contact_name=contact_name,
                email=email,
                audience=audience,
                expected_volume=expected_volume,
                terms_accepted_at=timezone.now(),
            )
    except IntegrityError:
        raise ValidationError(
            {"email": "An application from this e-mail address or company is already open."}
        ) from None
    audit_record(
        tenant=program.tenant,
        actor=f"applicant:{email}",
        action="partner_application.submitted",
        obj=application,
        to_state=application.status,
    )
    mail_on_commit(
        subject=f"Your application to {program.name}",
        # Nothing the applicant typed goes into a mail to the address they typed (no spam relay).
        body=f"Hello,\n\nthank you for applying to {program.name}. The team reviews applications "
        "and answers by e-mail.",
        recipients=[email],
        tenant_id=program.tenant_id,
    )
    tell_team(
        program.tenant,
        subject=f"New partner application: {company}",
        body=f"{company} ({website}, {dict(PartnerType.choices)[partner_type]}) applied to {program.name}. "
        "Decide in the admin: Partners → Partner applications.",
    )
    return application


@transaction.atomic
def application_approve(
    *,
    application: PartnerApplication,
    actor: Actor,
    reason: str = "",
    commission_bp: int | None = None,
    partner_type: str | None = None,
):
    """Approve: the partner company is created (commission: the type's default unless the marketer sets
    another), enrolled in the program, and its contact is e-mailed the portal invitation."""
    application = (
        PartnerApplication.objects.for_tenant(application.tenant_id)
        .select_for_update(of=("self",))
        .get(pk=application.pk)
    )
    partner = partner_create(
        tenant=application.tenant,
        actor=actor,
        name=application.company,
        partner_type=partner_type or application.partner_type,
        website=application.website,
        country=application.country,
        payout_currency=application.program.currency,
        commission_bp=commission_bp,
    )
    partner_enrol(partner=partner, program=application.program, actor=actor, email=application.email)
    transition(
        application,
        to=ApplicationStatus.APPROVED,
        actor=actor,
        reason=reason,
        locked=application,
        changes={"partner": partner, "decision_reason": reason, "decided_by": actor.label},
    )
    partner_invitation_create(
        partner=partner,
        email=application.email,
        role=PartnerRole.ADMIN,
        actor=actor,
        inviter=f"The {application.tenant.name} team approved your application"
        + (f" ({reason})" if reason else "")
        + " and",
    )
    return partner


@transaction.atomic
def application_reject(*, application: PartnerApplication, actor: Actor, reason: str) -> PartnerApplication:
    application = (
        PartnerApplication.objects.for_tenant(application.tenant_id)
        .select_for_update(of=("self",))
        .get(pk=application.pk)
    )
    transition(
        application,
        to=ApplicationStatus.REJECTED,
        actor=actor,
        reason=reason,
        locked=application,
        changes={"decision_reason": (reason or "").strip(), "decided_by": actor.label},
    )
    mail_on_commit(
        subject=f"Your application to {application.program.name}",
        body=f"Hi {application.contact_name},\n\nthank you for applying. The team could not accept your "
        f"application this time.\n\nReason: {reason}",
        recipients=[application.email],
        tenant_id=application.tenant_id,
    )
    return application
