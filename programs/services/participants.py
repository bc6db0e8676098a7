"""Participants: enrolment, applications, status moves, tiers, coupon codes and dashboard links."""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.urls import reverse

from programs import rules as rules_module
from programs.models import (
    Participant,
    ParticipantStatus,
    Program,
    ProgramAccess,
    ProgramStatus,
)
from referral_platform.hooks import hooks
from referral_platform.state import illegal_move, lock, transition
from referral_platform.tenancy.actors import Actor
from referral_platform.tenancy.models import Tenant
from referral_platform.tenancy.services import audit_record

PARTICIPANT_SOURCES = ("admin", "api", "import", "application", "trigger")


def participant_validate(*, external_id: Any, name: Any, email: Any, company: Any = "") -> dict[str, str]:
    """Normalised participant fields, or ``ValidationError`` naming each bad one."""
    errors: dict[str, str] = {}
    values = {
        "external_id": str(external_id or "").strip(),
        "name": str(name or "").strip(),
        "email": str(email or "").strip().lower(),
        "company": str(company or "").strip(),
    }
    for field_name in ("external_id", "name", "email"):
        if not values[field_name]:
            errors[field_name] = "This field is required."
    for field_name in ("external_id", "name", "company"):
        if len(values[field_name]) > 200:
            errors[field_name] = "At most 200 characters."
    if values["email"] and "email" not in errors:
        try:
            validate_email(values["email"])
        except ValidationError:
            errors["email"] = "Enter a valid e-mail address."
    if errors:
        raise ValidationError(errors)
    return values


def _initial_status(program: Program) -> str:
    return ParticipantStatus.PENDING if program.access == ProgramAccess.GATED else ParticipantStatus.ACTIVE


COUPON_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud and typed by hand

COUPON_SUFFIX_LENGTH = 4


def normalize_coupon_code(code: str) -> str:
    return "".join(code.split()).upper()[:40]


def _coupon_stem(participant: Participant) -> str:
    """The first word of the participant's name (or company), ASCII letters and digits, at most 8."""
    words = (participant.name or participant.company or "").split()
    ascii_word = unicodedata.normalize("NFKD", words[0] if words else "").encode("ascii", "ignore").decode()
    return "".join(ch for ch in ascii_word.upper() if ch.isalnum())[:8] or "REF"


def participant_coupon_code_ensure(*, participant: Participant) -> str:
    """The participant's coupon code, created once (name stem + 4 unambiguous characters, unique in the
    workspace). A code a marketer set is kept."""
    if participant.coupon_code:
        return participant.coupon_code
    stem = _coupon_stem(participant)
    for _ in range(8):
        code = stem + "".join(secrets.choice(COUPON_ALPHABET) for _ in range(COUPON_SUFFIX_LENGTH))
        try:
            with transaction.atomic():
                updated = (
                    Participant.objects.for_tenant(participant.tenant_id)
                    .filter(pk=participant.pk, coupon_code="")
                    .update(coupon_code=code)
                )
        except IntegrityError:
            continue  # taken by another participant of the workspace
        if not updated:  # set concurrently
            participant.coupon_code = (
                Participant.objects.for_tenant(participant.tenant_id)
                .values_list("coupon_code", flat=True)
                .get(pk=participant.pk)
            )
            return participant.coupon_code
        participant.coupon_code = code
        return code
    raise RuntimeError("could not allocate a unique coupon code")


def participant_links_ensure(*, participant: Participant, welcome: bool = False) -> None:
    """An active participant has a coupon code, and — through the ``participant_activated`` hook — one active
    link per channel (referrals) and, with ``welcome``, the welcome e-mail with their links and dashboard
    (rewards)."""
    if participant.status != ParticipantStatus.ACTIVE:
        return
    participant_coupon_code_ensure(participant=participant)
    hooks.participant_activated(participant=participant, welcome=welcome)


def _participant_notify(*, participant: Participant, subject: str, body: str) -> None:
    """E-mail the participant once the transaction commits (never for a rolled-back change)."""
    from ..mailing import tenant_email_send_on_commit

    tenant_email_send_on_commit(
        tenant_id=participant.tenant_id, to=participant.email, subject=subject, body=body, fail_silently=True
    )


def _notify_application_received(participant: Participant) -> None:
    program = participant.program
    _participant_notify(
        participant=participant,
        subject=f"Thanks for applying to {program.name}",
        body=(
            f"Hi {participant.name},\n\nthanks for applying to {program.name}. The team reviews every "
            "application and will get back to you within 24 hours."
        ),
    )


def participant_for_referred_company(
    *,
    program: Program,
    external_id: str,
    email: str,
    name: str,
    company: str,
    actor: Actor | str,
    data: dict | None = None,
) -> Participant:
    """The referred company of a double-sided program as a participant (its rewards and ledger accounts
    belong to a participant): the one with its customer id, else its e-mail, else a new active participant
    with source "referred" — no links or coupon code until it enrols itself. Safe under concurrency."""
    participants = Participant.objects.for_tenant(program.tenant_id).filter(program=program)
    found = participants.filter(external_id=external_id[:200]).first()
    if found is None and email:
        found = participants.filter(email=email).order_by("pk").first()
    if found is not None:
        return found
    try:
        with transaction.atomic():
            participant = referred_company_row(
                program=program, external_id=external_id, email=email, name=name, company=company
            )
            participant.save(force_insert=True)
    except IntegrityError:
        return participants.get(external_id=external_id[:200])
    audit_record(
        tenant=program.tenant,
        actor=actor,
        action="participant.created_for_referred_company",
        obj=participant,
        to_state=participant.status,
        data=data,
    )
    return participant


def referred_company_row(*, program: Program, external_id: str, email: str, name: str, company: str) -> Participant:
    """The unsaved participant ``participant_for_referred_company`` creates (a set-based settlement creates
    many with one INSERT, and audits them as this service does)."""
    return Participant(
        tenant_id=program.tenant_id,
        program=program,
        external_id=external_id[:200],
        name=name[:200],
        email=email,
        company=company[:200],
        status=ParticipantStatus.ACTIVE,
        source="referred",
    )


@dataclass(frozen=True)
class Enrolment:
    participant: Participant
    created: bool


@transaction.atomic
def participant_upsert(
    *,
    tenant: Tenant,
    program: Program,
    external_id: str,
    name: str,
    email: str,
    company: str = "",
    actor: Actor,
    source: str = "admin",
    tier: str | None = None,
    welcome: bool = False,
) -> Enrolment:
    """Enrol a participant, or update the one with this external id (idempotent).

    With ``welcome`` a participant created active gets the welcome e-mail (links, dashboard, the offer in
    words) — at most once: the message is recorded once per participant and program. Enrolling in the admin,
    by API or by CSV import asks for it (an import can opt out; ``participant_invite_send`` sends it later).

    New participants of a gated program start pending; of an open or invite-only one (enrolled by the
    tenant itself) active. Active participants get their channel links. Concurrent calls with one
    external id give one participant (the unique constraint decides; the loser updates). With ``tier``
    ("" for none) the participant is put in that partner tier (``participant_tier_set``); without, the
    tier is left as it is. Nothing is written when a field is bad.
    """
    if program.tenant_id != tenant.pk:
        raise ValidationError({"program": "Unknown program."})
    if program.status == ProgramStatus.ARCHIVED:
        raise ValidationError({"program": "This program is archived; nobody can join it."})
    if source not in PARTICIPANT_SOURCES:
        raise ValidationError({"source": f"Choose one of: {', '.join(PARTICIPANT_SOURCES)}."})
    values = participant_validate(external_id=external_id, name=name, email=email, company=company)
    tier = participant_tier_normalize(tier) if tier is not None else None
    participant, created = Participant.objects.update_or_create(
        tenant=tenant,
        program=program,
        external_id=values["external_id"],
        defaults={"name": values["name"], "email": values["email"], "company": values["company"]},
        create_defaults={**values, "status": _initial_status(program), "source": source},
    )
    if created:
        audit_record(
            tenant=tenant,
            actor=actor,
            action="participant.enrolled",
            obj=participant,
            to_state=participant.status,
            data={"source": source},
        )
    if tier is not None and tier != participant.tier:
        participant = participant_tier_set(participant=participant, tier=tier, actor=actor)
    participant_links_ensure(
        participant=participant, welcome=welcome and created and participant.status == ParticipantStatus.ACTIVE
    )
    return Enrolment(participant=participant, created=created)


@transaction.atomic
def participant_invite_send(*, participant: Participant, actor: Actor) -> Participant:
    """Send an active participant the welcome e-mail now (the admin's "send invite"), unless they already
    had it: the e-mail goes at most once. Only active participants have links to send."""
    participant = lock(participant)
    if participant.status != ParticipantStatus.ACTIVE:
        raise ValidationError(
            {"status": f"Only active participants can be invited (this one is {participant.status})."}
        )
    if not participant.email:
        raise ValidationError({"email": "This participant has no e-mail address."})
    audit_record(
        tenant=participant.tenant,
        actor=actor,
        action="participant.invited",
        obj=participant,
        to_state=participant.status,
    )
    participant_links_ensure(participant=participant, welcome=True)
    return participant


def participant_enroll(
    *,
    tenant: Tenant,
    program: Program,
    external_id: str,
    name: str,
    email: str,
    company: str = "",
    actor: Actor,
    source: str = "admin",
) -> Participant:
    """``participant_upsert`` returning only the participant."""
    return participant_upsert(
        tenant=tenant,
        program=program,
        external_id=external_id,
        name=name,
        email=email,
        company=company,
        actor=actor,
        source=source,
    ).participant


@transaction.atomic
def participant_apply(*, program: Program, name: str, email: str, company: str = "", note: str = "") -> Enrolment:
    """Someone applies to join ``program`` from its public page.

    Gated programs put the applicant in review (pending); open ones enrol them at once. Invite-only,
    paused and draft programs take no applications. Applying twice with one e-mail gives one participant.
    """
    if program.access == ProgramAccess.INVITE_ONLY or program.status != ProgramStatus.ACTIVE:
        raise ValidationError({"program": "This program does not take applications."})
    if len(note or "") > 2000:
        raise ValidationError({"note": "At most 2,000 characters."})
    email_normalised = str(email or "").strip().lower()
    values = participant_validate(
        external_id=f"application:{email_normalised}", name=name, email=email_normalised, company=company
    )
    existing = Participant.objects.for_tenant(program.tenant_id).filter(program=program, email=values["email"]).first()
    if existing is not None:
        return Enrolment(participant=existing, created=False)
    participant, created = Participant.objects.get_or_create(
        tenant_id=program.tenant_id,
        program=program,
        external_id=values["external_id"],
        defaults={
            "name": values["name"],
            "email": values["email"],
            "company": values["company"],
            "status": _initial_status(program),
            "source": "application",
            "application_note": note or "",
        },
    )
    if created:
        audit_record(
            tenant=program.tenant,
            actor=f"applicant:{values['email']}",
            action="participant.applied",
            obj=participant,
            to_state=participant.status,
        )
    participant_links_ensure(participant=participant, welcome=created)
    if created and participant.status == ParticipantStatus.PENDING:
        _notify_application_received(participant)
    return Enrolment(participant=participant, created=created)


# --- the public apply form: an address is confirmed before anything is stored -----------------------

APPLICATION_CACHE_PREFIX = "programs:application:"


def participant_application_request(
    *, program: Program, name: str, email: str, company: str = "", note: str = ""
) -> None:
    """Someone asks to join ``program`` from its public page: nothing is stored as a participant yet.

    The validated answers wait in Redis under a random token (``APPLICATION_CONFIRM_SECONDS``) and the typed
    address gets one confirmation e-mail that carries no text the applicant typed (the form is no spam relay).
    Opening the link and confirming calls ``participant_application_confirm``, which applies for real.
    """
    if program.access == ProgramAccess.INVITE_ONLY or program.status != ProgramStatus.ACTIVE:
        raise ValidationError({"program": "This program does not take applications."})
    if len(note or "") > 2000:
        raise ValidationError({"note": "At most 2,000 characters."})
    values = participant_validate(external_id="application", name=name, email=email, company=company)
    token = secrets.token_urlsafe(32)
    payload = {"program_id": program.pk, "name": values["name"], "email": values["email"]}
    payload.update(company=values["company"], note=note or "")
    cache.set(APPLICATION_CACHE_PREFIX + token, payload, timeout=settings.APPLICATION_CONFIRM_SECONDS)
    path = reverse("program_apply_confirm", args=[program.tenant.slug, program.slug, token])
    hours = settings.APPLICATION_CONFIRM_SECONDS // 3600
    from ..mailing import tenant_email_send_on_commit

    # An address that unsubscribed gets no confirmation either (the form cannot be used to mail it).
    tenant_email_send_on_commit(
        tenant_id=program.tenant_id,
        to=values["email"],
        subject=f"Confirm your e-mail address for {program.name}",
        body=(
            f"Someone asked to join {program.name} ({program.tenant.name}) with this e-mail address.\n\n"
            f"To confirm it was you, open this link within {hours} hours:\n{settings.SITE_URL}{path}\n\n"
            "If it was not you, ignore this e-mail: nothing happens without your confirmation."
        ),
        fail_silently=True,
    )


def participant_application_pending(*, program: Program, token: str) -> dict | None:
    """The answers waiting for confirmation under ``token`` for this program, or ``None``."""
    payload = cache.get(APPLICATION_CACHE_PREFIX + token)
    if not isinstance(payload, dict) or payload.get("program_id") != program.pk:
        return None
    return payload


@transaction.atomic
def participant_application_confirm(*, program: Program, token: str) -> Enrolment | None:
    """The applicant confirmed their address: apply for real (open programs enrol and send the links, gated
    ones wait for review). ``None`` for an unknown, used or expired token. Confirming twice is harmless."""
    payload = participant_application_pending(program=program, token=token)
    if payload is None:
        return None
    enrolment = participant_apply(
        program=program,
        name=payload["name"],
        email=payload["email"],
        company=payload["company"],
        note=payload["note"],
    )
    cache.delete(APPLICATION_CACHE_PREFIX + token)
    return enrolment


def _participant_activate(
    participant: Participant, *, actor: Actor, reason: str, action: str, allowed_from: frozenset[str]
) -> Participant:
    """→ active, from one of ``allowed_from`` only: approving (an applicant) and reinstating (a removed
    participant) both lead to active, each from its own states."""
    locked = lock(participant)
    if locked.status not in allowed_from:
        raise illegal_move(locked, ParticipantStatus.ACTIVE)
    return transition(
        participant, to=ParticipantStatus.ACTIVE, actor=actor, reason=reason, action=action, locked=locked
    )


APPROVABLE = frozenset({ParticipantStatus.PENDING, ParticipantStatus.REJECTED})
REINSTATABLE = frozenset({ParticipantStatus.REMOVED})


@transaction.atomic
def participant_approve(*, participant: Participant, actor: Actor, reason: str = "") -> Participant:
    """Pending (or rejected) → active; the participant gets their referral links."""
    participant = _participant_activate(
        participant, actor=actor, reason=reason, action="participant.approved", allowed_from=APPROVABLE
    )
    participant_links_ensure(participant=participant, welcome=True)
    return participant


@transaction.atomic
def participant_reject(*, participant: Participant, actor: Actor, reason: str = "") -> Participant:
    """Pending → rejected. A rejected applicant has no links; they are told by e-mail."""
    participant = transition(
        participant, to=ParticipantStatus.REJECTED, actor=actor, reason=reason, action="participant.rejected"
    )
    _participant_notify(
        participant=participant,
        subject=f"Your application to {participant.program.name}",
        body=(
            f"Hi {participant.name},\n\nthank you for applying to {participant.program.name}. "
            "This time the team could not accept your application."
            + (f"\n\nThe team's note: {reason}" if reason else "")
        ),
    )
    return participant


@transaction.atomic
def participant_remove(*, participant: Participant, actor: Actor, reason: str = "") -> Participant:
    """Active → removed; their links stop working (``participant_deactivated``; existing referrals are kept)."""
    participant = transition(
        participant, to=ParticipantStatus.REMOVED, actor=actor, reason=reason, action="participant.removed"
    )
    hooks.participant_deactivated(participant=participant)
    return participant


@transaction.atomic
def participant_reinstate(*, participant: Participant, actor: Actor, reason: str = "") -> Participant:
    """Removed → active; their links work again."""
    participant = _participant_activate(
        participant, actor=actor, reason=reason, action="participant.reinstated", allowed_from=REINSTATABLE
    )
    participant_links_ensure(participant=participant)
    return participant


PARTICIPANT_TIER_RE = re.compile(rules_module.PARTNER_TIER_PATTERN)


def participant_tier_normalize(tier: Any) -> str:
    """The tier as stored (trimmed, lower case; "" for none), or ``ValidationError`` on ``tier``."""
    tier = str(tier or "").strip().lower()
    if tier and not PARTICIPANT_TIER_RE.match(tier):
        raise ValidationError(
            {"tier": "Use 1-40 lower-case letters, digits, '-' or '_', starting with a letter or digit (e.g. gold)."}
        )
    return tier


@transaction.atomic
def participant_tier_set(*, participant: Participant, tier: str, actor: Actor | str, reason: str = "") -> Participant:
    """Put the participant in a partner tier ("" for none). When the rules of the version a referral is
    judged under list the tier under ``partner_tiers``, that tier's referrer rules apply to its rewards."""
    tier = participant_tier_normalize(tier)
    participant = Participant.objects.select_for_update().get(pk=participant.pk, tenant_id=participant.tenant_id)
    if participant.tier == tier:
        return participant
    previous = participant.tier
    participant.tier = tier
    participant.save(update_fields=["tier"])
    audit_record(
        tenant=participant.tenant,
        actor=actor,
        action="participant.tier_changed",
        obj=participant,
        from_state=previous,
        to_state=tier,
        reason=reason,
    )
    return participant


@transaction.atomic
def participant_dashboard_link_reissue(
    *, participant: Participant, actor: Actor | str, reason: str = ""
) -> Participant:
    """Issue a new signed dashboard link: every link given out before stops working (e.g. one that leaked)."""
    participant = Participant.objects.select_for_update().get(pk=participant.pk, tenant_id=participant.tenant_id)
    participant.dashboard_link_version += 1
    participant.save(update_fields=["dashboard_link_version"])
    audit_record(
        tenant=participant.tenant,
        actor=actor,
        action="participant.dashboard_link_reissued",
        obj=participant,
        reason=reason,
        data={"dashboard_link_version": participant.dashboard_link_version},
    )
    return participant
