"""Partner companies, their enrolment in programs, their people and team invitations."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from programs.models import ParticipantStatus, Program, ProgramKind
from programs.services import participant_approve, participant_tier_set, participant_upsert
from referral_platform.tenancy.actors import Actor
from referral_platform.tenancy.models import Membership, Tenant
from referral_platform.tenancy.services import audit_record

from ..models import (
    COMMISSION_DEFAULTS,
    Partner,
    PartnerEnrolment,
    PartnerInvitation,
    PartnerRole,
    PartnerStatus,
    PartnerTier,
    PartnerType,
    PartnerUser,
)
from .notify import mail_on_commit, portal_url

INVITATION_LIFETIME = timedelta(days=14)
PARTNER_PROGRAM_KINDS = (ProgramKind.PARTNER, ProgramKind.RESELLER)


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _label(actor: Actor | str) -> str:
    return actor if isinstance(actor, str) else actor.label


def partner_validate(
    *,
    name: str,
    partner_type: str,
    website: str = "",
    country: str = "",
    payout_currency: str = "USD",
    commission_bp: int | None = None,
) -> dict:
    """Cleaned partner fields, or a ValidationError naming each bad field."""
    errors = {}
    name = (name or "").strip()
    if not name:
        errors["name"] = "Enter the company name."
    elif len(name) > 200:
        errors["name"] = "At most 200 characters."
    if partner_type not in PartnerType.values:
        errors["partner_type"] = f"Choose one of: {', '.join(PartnerType.values)}."
    website = (website or "").strip()
    if website:
        try:
            URLValidator(schemes=["http", "https"])(website)
        except ValidationError:
            errors["website"] = "Enter the full address, e.g. https://example.com."
    country = (country or "").strip().upper()
    if country and (len(country) != 2 or not country.isalpha()):
        errors["country"] = "Use the two-letter country code (e.g. DE)."
    payout_currency = (payout_currency or "").strip().upper()
    if len(payout_currency) != 3 or not payout_currency.isalpha():
        errors["payout_currency"] = "Use a three-letter ISO currency code (e.g. EUR)."
    if commission_bp is None and partner_type in PartnerType.values:
        commission_bp = COMMISSION_DEFAULTS[partner_type]["default_bp"]
    if commission_bp is not None and (
        not isinstance(commission_bp, int) or isinstance(commission_bp, bool) or not 0 <= commission_bp <= 10_000
    ):
        errors["commission_bp"] = "A commission between 0 and 10000 basis points (0-100 %)."
    if errors:
        raise ValidationError(errors)
    return {
        "name": name,
        "partner_type": partner_type,
        "website": website,
        "country": country,
        "payout_currency": payout_currency,
        "commission_bp": commission_bp,
    }


def entry_tier(tenant: Tenant | int) -> PartnerTier | None:
    return PartnerTier.objects.for_tenant(tenant).order_by("rank").first()


@transaction.atomic
def partner_create(*, tenant: Tenant, actor: Actor | str, **fields) -> Partner:
    """Create a partner company (commission from its type's default unless given), in the entry tier."""
    values = partner_validate(**fields)
    partner = Partner.objects.create(tenant=tenant, tier=entry_tier(tenant), **values)
    audit_record(tenant=tenant, actor=actor, action="partner.created", obj=partner, to_state=partner.status)
    return partner


@transaction.atomic
def partner_update(*, partner: Partner, actor: Actor | str, **fields) -> Partner:
    """Change the company profile. Partner users may change name, website, country and payout currency;
    the commission and type are the tenant's to change."""
    current = {
        "name": partner.name,
        "partner_type": partner.partner_type,
        "website": partner.website,
        "country": partner.country,
        "payout_currency": partner.payout_currency,
        "commission_bp": partner.commission_bp,
    }
    values = partner_validate(**{**current, **fields})
    changed = [name for name, value in values.items() if getattr(partner, name) != value]
    for name in changed:
        setattr(partner, name, values[name])
    if changed:
        partner.save(update_fields=changed)
        audit_record(
            tenant=partner.tenant, actor=actor, action="partner.updated", obj=partner, data={"fields": changed}
        )
    return partner


@transaction.atomic
def partner_status_set(*, partner: Partner, status: str, actor: Actor | str, reason: str = "") -> Partner:
    """Suspend or reactivate a partner: a suspended partner's users act as nobody and it registers nothing."""
    if status not in PartnerStatus.values:
        raise ValidationError({"status": f"Choose one of: {', '.join(PartnerStatus.values)}."})
    row = Partner.objects.for_tenant(partner.tenant_id).select_for_update(of=("self",), no_key=True).get(pk=partner.pk)
    if row.status != status:
        previous = row.status
        row.status = status
        row.save(update_fields=["status"])
        audit_record(
            tenant=row.tenant, actor=actor, action="partner.status", obj=row, from_state=previous, to_state=status,
            reason=reason,
        )  # fmt: skip
    partner.status = row.status
    return row


@transaction.atomic
def partner_enrol(*, partner: Partner, program: Program, actor: Actor, email: str = "") -> PartnerEnrolment:
    """The partner joins a partner or reseller program as a participant (active, with its links); idempotent."""
    if program.tenant_id != partner.tenant_id:
        raise ValidationError({"program": "Unknown program."})
    if program.kind not in PARTNER_PROGRAM_KINDS:
        raise ValidationError({"program": "Partners join partner or reseller programs only."})
    existing = PartnerEnrolment.objects.for_tenant(partner.tenant_id).filter(partner=partner, program=program).first()
    if existing is not None:
        return existing
    contact = email or next(
        iter(
            PartnerUser.objects.for_tenant(partner.tenant_id)
            .filter(partner=partner)
            .values_list("user__email", flat=True)
        ),
        "",
    )
    participant = participant_upsert(
        tenant=partner.tenant,
        program=program,
        external_id=f"partner:{partner.pk}",
        name=partner.name,
        email=contact or f"partner-{partner.pk}@invalid.example",
        company=partner.name,
        actor=actor,
        source="application",
    ).participant
    if participant.status == ParticipantStatus.PENDING:
        participant = participant_approve(participant=participant, actor=actor, reason="partner approved")
    if partner.tier_id:
        participant_tier_set(participant=participant, tier=partner.tier.slug, actor=actor, reason="partner tier")
    enrolment = PartnerEnrolment.objects.create(
        tenant_id=partner.tenant_id, partner=partner, program=program, participant=participant
    )
    audit_record(
        tenant=partner.tenant, actor=actor, action="partner.enrolled", obj=enrolment, data={"program": program.pk}
    )
    return enrolment


# --- team invitations ----------------------------------------------------------------------------


@transaction.atomic
def partner_invitation_create(
    *, partner: Partner, email: str, actor: Actor | str, role: str = PartnerRole.MEMBER, inviter: str = ""
) -> tuple[PartnerInvitation, str]:
    """Invite someone to the partner's team by e-mail: a one-time link (only its hash is stored) valid
    14 days, for that e-mail only. Returns the invitation and the link (e-mailed after commit)."""
    email = (email or "").strip().lower()
    try:
        validate_email(email)
    except ValidationError:
        raise ValidationError({"email": "Enter a valid e-mail address."}) from None
    if role not in PartnerRole.values:
        raise ValidationError({"role": f"Choose one of: {', '.join(PartnerRole.values)}."})
    if PartnerUser.objects.for_tenant(partner.tenant_id).filter(partner=partner, user__email__iexact=email).exists():
        raise ValidationError({"email": f"{email} is already on the team."})
    token = secrets.token_urlsafe(32)
    invitation = PartnerInvitation.objects.create(
        tenant_id=partner.tenant_id,
        partner=partner,
        email=email,
        role=role,
        token_hash=_sha256(token),
        invited_by=_label(actor),
        expires_at=timezone.now() + INVITATION_LIFETIME,
    )
    audit_record(tenant=partner.tenant, actor=actor, action="partner_invitation.created", obj=invitation, to_state=role)
    link = portal_url("portal_invitation", token=token)
    mail_on_commit(
        subject=f"Join {partner.name} in the {partner.tenant.name} partner portal",
        body=(
            f"{inviter or 'The ' + partner.tenant.name + ' team'} invited you to the {partner.tenant.name} partner "
            f"portal for {partner.name}.\n\nAccept: {link}\n\n"
            f"The link works once, for {email} only, and expires on {invitation.expires_at:%Y-%m-%d}."
        ),
        recipients=[email],
    )
    return invitation, link


def partner_invitation_for_token(token: str) -> PartnerInvitation | None:
    return PartnerInvitation.objects.select_related("partner", "tenant").filter(token_hash=_sha256(token or "")).first()


def _user_may_join(user, invitation: PartnerInvitation) -> None:
    existing = PartnerUser.objects.filter(user=user).first()
    if existing is not None and existing.partner_id != invitation.partner_id:
        raise ValidationError({"email": "This login already belongs to another partner; use another e-mail."})
    if Membership.objects.filter(user=user).exists() or user.is_superuser:
        raise ValidationError({"email": "This login belongs to a workspace member; partner users need their own."})


@transaction.atomic
def partner_invitation_accept(*, token: str, user) -> PartnerUser:
    """Join the invited partner's team (once, before expiry, with the invited e-mail only)."""
    invitation = (
        PartnerInvitation.objects.select_for_update(of=("self",))
        .select_related("partner", "tenant")
        .filter(token_hash=_sha256(token or ""))
        .first()
    )
    if invitation is None or not invitation.is_pending:
        raise ValidationError({"token": "This invitation is invalid, expired or already used."})
    if invitation.email.lower() != (user.email or "").lower():
        raise ValidationError({"email": f"This invitation is for {invitation.email}; log in with that address."})
    _user_may_join(user, invitation)
    partner_user, _ = PartnerUser.objects.get_or_create(
        user=user, defaults={"tenant_id": invitation.tenant_id, "partner": invitation.partner, "role": invitation.role}
    )
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_at"])
    audit_record(
        tenant=invitation.tenant,
        actor=f"user:{user.pk}:{user.email}",
        action="partner_invitation.accepted",
        obj=invitation,
        to_state=partner_user.role,
    )
    return partner_user


@transaction.atomic
def partner_invitation_sign_up(*, token: str, password: str, name: str = "") -> PartnerUser:
    """Accept an invitation with a new login: the user is created with the invited (thereby verified) e-mail."""
    from allauth.account.models import EmailAddress

    invitation = partner_invitation_for_token(token)
    if invitation is None or not invitation.is_pending:
        raise ValidationError({"token": "This invitation is invalid, expired or already used."})
    User = get_user_model()
    if User.objects.filter(email__iexact=invitation.email).exists():
        raise ValidationError({"email": f"{invitation.email} already has a login: log in, then open the link again."})
    user = User(username=invitation.email[:150], email=invitation.email, first_name=(name or "").strip()[:150])
    try:
        validate_password(password, user)
    except ValidationError as error:
        raise ValidationError({"password": error.messages}) from None
    user.set_password(password)
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError:
        raise ValidationError({"email": f"{invitation.email} already has a login."}) from None
    EmailAddress.objects.create(user=user, email=invitation.email, verified=True, primary=True)
    return partner_invitation_accept(token=token, user=user)


@transaction.atomic
def partner_user_deactivate(*, partner_user: PartnerUser, actor: Actor | str) -> PartnerUser:
    partner_user.is_active = False
    partner_user.save(update_fields=["is_active"])
    audit_record(tenant=partner_user.tenant, actor=actor, action="partner_user.deactivated", obj=partner_user)
    return partner_user
