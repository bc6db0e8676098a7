"""Writes for programs, their versioned rules, participants and participant imports.

Every function is keyword-only, runs in one transaction, validates before it writes (raising
``ValidationError({"field": "message"})``), and records status changes in the audit trail. Status
changes go through one service per transition, checked against ``PROGRAM_TRANSITIONS`` /
``PARTICIPANT_TRANSITIONS``.
"""

from __future__ import annotations

import csv
import io
import re
import secrets
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify

from referral_platform.celery import enqueue_on_commit
from referral_platform.tenancy.actors import Actor
from referral_platform.tenancy.models import Tenant
from referral_platform.tenancy.services import audit_record

from . import rules as rules_module
from .dashboard_links import dashboard_url
from .models import (
    AttributionModel,
    ImportStatus,
    Participant,
    ParticipantImport,
    ParticipantStatus,
    Program,
    ProgramAccess,
    ProgramKind,
    ProgramStatus,
    ProgramVersion,
)

# An ASCII host name (IDNs in punycode). Browsers read "\\", "%2F", "%23"… inside a host
# differently from urlsplit(), so a host with anything else is never allowed.
_HOST_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\Z")
_SPACE_CONTROL_OR_BACKSLASH = re.compile(r"[\x00-\x20\x7f\\]")


def host_is_allowed(*, tenant: Tenant, url: str) -> bool:
    """True when ``url`` is an absolute http(s) URL on one of the tenant's allowed landing domains."""
    if _SPACE_CONTROL_OR_BACKSLASH.search(url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.username or parts.password:
        return False
    host = parts.hostname.lower().rstrip(".")
    if not _HOST_NAME.match(host):
        return False
    for domain in tenant.allowed_landing_domains:
        domain = domain.lower().strip()
        if domain.startswith("."):
            if host == domain[1:] or host.endswith(domain):
                return True
        elif host == domain:
            return True
    return False


# --- programs: configuration -------------------------------------------------------------------
PROGRAM_EDITABLE_FIELDS = (
    "name",
    "slug",
    "description",
    "kind",
    "access",
    "landing_url",
    "cookie_window_days",
    "attribution_model",
    "time_decay_half_life_days",
    "currency",
    "hold_days",
    "auto_approve_limit_minor",
)
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_SLUG = re.compile(r"^[-a-z0-9_]+$")


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def program_validate(*, tenant: Tenant, data: Mapping[str, Any], program: Program | None = None) -> None:
    """Raise ``ValidationError`` naming every bad field of ``data`` (a subset of PROGRAM_EDITABLE_FIELDS).

    Shared by the services, the admin form and the API, so every entry point reports the same errors.
    """
    errors: dict[str, str] = {}
    unknown = set(data) - set(PROGRAM_EDITABLE_FIELDS)
    for name in sorted(unknown):
        errors[name] = "This field cannot be set here."
    if "name" in data and not str(data["name"] or "").strip():
        errors["name"] = "Give the program a name."
    elif "name" in data and len(str(data["name"])) > 200:
        errors["name"] = "At most 200 characters."
    if "slug" in data:
        slug = data["slug"] or ""
        if not _SLUG.match(slug) or len(slug) > 80:
            errors["slug"] = "Use lower-case letters, digits, '-' and '_' (at most 80)."
        else:
            clash = Program.objects.for_tenant(tenant).filter(slug=slug)
            if program is not None:
                clash = clash.exclude(pk=program.pk)
            if clash.exists():
                errors["slug"] = f"A program with slug {slug!r} already exists."
    choices = {
        "kind": ProgramKind.values,
        "access": ProgramAccess.values,
        "attribution_model": AttributionModel.values,
    }
    for name, allowed in choices.items():
        if name in data and data[name] not in allowed:
            errors[name] = f"Choose one of: {', '.join(allowed)}."
    if "landing_url" in data and not host_is_allowed(tenant=tenant, url=str(data["landing_url"] or "")):
        errors["landing_url"] = "The landing URL's host is not one of the workspace's allowed landing domains."
    ranges = {
        "cookie_window_days": (1, 365),
        "time_decay_half_life_days": (1, 365),
        "hold_days": (0, 365),
        "auto_approve_limit_minor": (0, rules_module.MAX_AMOUNT_MINOR),
    }
    for name, (low, high) in ranges.items():
        if name in data and not _int_in(data[name], low, high):
            errors[name] = f"Enter a whole number from {low} to {high}."
    if "currency" in data and not _CURRENCY.match(str(data["currency"] or "")):
        errors["currency"] = "Use a three-letter ISO 4217 code in capitals, e.g. USD."
    elif (
        program is not None
        and "currency" in data
        and data["currency"] != program.currency
        and program.status != ProgramStatus.DRAFT
    ):
        errors["currency"] = "The currency can only change while the program is a draft."
    if "description" in data and len(str(data["description"] or "")) > 2000:
        errors["description"] = "At most 2,000 characters."
    if errors:
        raise ValidationError(errors)


def _has_rewards(version: ProgramVersion) -> bool:
    try:
        return rules_module.has_rewards(version.rules)
    except rules_module.RulesError:
        return False


def _rules_validation_error(exc: rules_module.RulesError) -> ValidationError:
    return ValidationError(
        {("rules" if path == "rules" else f"rules.{path}"): message for path, message in exc.errors.items()}
    )


def rules_validate(*, program: Program, rules: Any) -> dict:
    """The normalised rules document for ``program``, or ``ValidationError`` naming ``rules.<path>`` fields."""
    try:
        document = rules_module.validate_rules(rules)
    except rules_module.RulesError as exc:
        raise _rules_validation_error(exc) from exc
    if document["currency"] != program.currency:
        raise ValidationError({"rules.currency": f"Must be the program's currency, {program.currency}."})
    return document


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
    description: str = "",
    access: str = ProgramAccess.OPEN,
    attribution_model: str = AttributionModel.LAST_TOUCH,
    time_decay_half_life_days: int = 7,
    hold_days: int = 30,
    auto_approve_limit_minor: int = 50_000,
    rules: Mapping | None = None,
) -> Program:
    """Create a draft program (and its version 1 when ``rules`` are given).

    Its landing URL must be on the tenant's allowed domains; nothing is written when any field is bad.
    """
    data = {
        "name": name,
        "slug": slug or slugify(name)[:80],
        "description": description,
        "kind": kind,
        "access": access,
        "landing_url": landing_url,
        "cookie_window_days": 90 if cookie_window_days is None else cookie_window_days,
        "attribution_model": attribution_model,
        "time_decay_half_life_days": time_decay_half_life_days,
        "currency": currency or tenant.default_currency,
        "hold_days": hold_days,
        "auto_approve_limit_minor": auto_approve_limit_minor,
    }
    program_validate(tenant=tenant, data=data)
    program = Program(tenant=tenant, status=ProgramStatus.DRAFT, **data)
    document = rules_validate(program=program, rules=rules) if rules is not None else None
    program.save()
    audit_record(tenant=tenant, actor=actor, action="program.created", obj=program, to_state=program.status)
    if document is not None:
        _version_create(program=program, actor=actor, document=document, note="Initial rules")
    return program


@transaction.atomic
def program_update(*, program: Program, actor: Actor, new_version: bool = True, **changes: Any) -> Program:
    """Change a program's configuration (not its status, not its reward rules).

    A change of a judging setting (PROGRAM_RULE_FIELDS) issues a new version with the same rewards and
    the new settings, so referrals made before keep the settings they were made under (``new_version=False``
    when the caller changes the rules in the same transaction, which snapshots the settings). The currency
    can change only while the program is a draft (its rules are then re-issued in the new currency).
    """
    program = Program.objects.select_for_update().get(pk=program.pk, tenant_id=program.tenant_id)
    changes = {name: value for name, value in changes.items() if getattr(program, name, object()) != value}
    program_validate(tenant=program.tenant, data=changes, program=program)
    if not changes:
        return program
    current = _current_version(program)
    before = {name: getattr(program, name) for name in changes}
    for name, value in changes.items():
        setattr(program, name, value)
    program.save(update_fields=list(changes))
    audit_record(
        tenant=program.tenant,
        actor=actor,
        action="program.updated",
        obj=program,
        data={"changed": {name: [str(before[name]), str(value)] for name, value in changes.items()}},
    )
    judged = sorted(name for name in changes if name in PROGRAM_RULE_FIELDS)
    if judged and current is not None and new_version:
        _version_create(
            program=program,
            actor=actor,
            document={**current.rules, "currency": program.currency},
            note=f"Settings changed: {', '.join(judged)}",
        )
    return program


PROGRAM_TRANSITIONS: dict[str, frozenset[str]] = {
    ProgramStatus.DRAFT: frozenset({ProgramStatus.ACTIVE, ProgramStatus.ARCHIVED}),
    ProgramStatus.ACTIVE: frozenset({ProgramStatus.PAUSED, ProgramStatus.ARCHIVED}),
    ProgramStatus.PAUSED: frozenset({ProgramStatus.ACTIVE, ProgramStatus.ARCHIVED}),
    ProgramStatus.ARCHIVED: frozenset(),
}


def _program_transition(*, program: Program, actor: Actor, to_state: str, action: str, reason: str) -> Program:
    program = Program.objects.select_for_update().get(pk=program.pk, tenant_id=program.tenant_id)
    from_state = program.status
    if to_state not in PROGRAM_TRANSITIONS[from_state]:
        raise ValidationError(
            {"status": f"A {from_state} program cannot become {to_state}."},
            code="invalid_transition",
        )
    program.status = to_state
    program.save(update_fields=["status"])
    audit_record(
        tenant=program.tenant,
        actor=actor,
        action=action,
        obj=program,
        from_state=from_state,
        to_state=to_state,
        reason=reason,
    )
    return program


@transaction.atomic
def program_activate(*, program: Program, actor: Actor, reason: str = "") -> Program:
    """Draft or paused → active. A program goes live only with reward rules and an allowed landing URL."""
    current = _current_version(program)
    if current is None or not _has_rewards(current):
        raise ValidationError({"rules": "Set the program's rules before activating it."})
    if not host_is_allowed(tenant=program.tenant, url=program.landing_url):
        raise ValidationError({"landing_url": "The landing URL is no longer on an allowed domain."})
    return _program_transition(
        program=program, actor=actor, to_state=ProgramStatus.ACTIVE, action="program.activated", reason=reason
    )


@transaction.atomic
def program_pause(*, program: Program, actor: Actor, reason: str = "") -> Program:
    """Active → paused: links stop sending visitors; existing referrals keep their rules."""
    return _program_transition(
        program=program, actor=actor, to_state=ProgramStatus.PAUSED, action="program.paused", reason=reason
    )


@transaction.atomic
def program_archive(*, program: Program, actor: Actor, reason: str = "") -> Program:
    """Any status but archived → archived (final)."""
    return _program_transition(
        program=program, actor=actor, to_state=ProgramStatus.ARCHIVED, action="program.archived", reason=reason
    )


# --- programs: versioned rules -----------------------------------------------------------------
# Program settings that decide how a referral is judged. Every version snapshots them next to the
# reward rules, so that a later edit of the program never changes what an existing referral was promised.
PROGRAM_RULE_FIELDS = (
    "attribution_model",
    "cookie_window_days",
    "time_decay_half_life_days",
    "currency",
    "hold_days",
    "auto_approve_limit_minor",
)


def program_rules_snapshot(*, program: Program) -> dict:
    """The program's current judging settings as a JSON-able dict (part of every version's ``rules``)."""
    return {name: getattr(program, name) for name in PROGRAM_RULE_FIELDS}


def _version_document(*, program: Program, document: dict) -> dict:
    """What a version stores: the reward rules plus the program's judging settings at that moment."""
    return {**document, **program_rules_snapshot(program=program)}


def _rewards_part(document: Mapping) -> dict:
    return {key: value for key, value in document.items() if key == "currency" or key not in PROGRAM_RULE_FIELDS}


def _unchanged(*, program: Program, current: ProgramVersion, document: dict) -> bool:
    """``document`` (with the program's settings now) is what ``current`` already holds."""
    return _rewards_part(current.rules) == _rewards_part(document) and judging_rules(
        program=program, version=current
    ) == program_rules_snapshot(program=program)


def _current_version(program: Program) -> ProgramVersion | None:
    # The same read as selectors.program_latest_version, kept here so services do not import selectors.
    return (
        ProgramVersion.objects.for_tenant(program.tenant_id).filter(program_id=program.pk).order_by("-number").first()
    )


def _version_create(*, program: Program, actor: Actor | str, document: dict, note: str) -> ProgramVersion:
    """Write version max + 1. Callers hold the program row lock, so numbers never clash."""
    last = (
        ProgramVersion.objects.for_tenant(program.tenant_id)
        .filter(program_id=program.pk)
        .aggregate(number=Max("number"))["number"]
        or 0
    )
    version = ProgramVersion.objects.create(
        tenant_id=program.tenant_id,
        program=program,
        number=last + 1,
        rules=_version_document(program=program, document=document),
        created_by=actor if isinstance(actor, str) else actor.label,
        note=note[:300],
    )
    audit_record(
        tenant=program.tenant,
        actor=actor,
        action="program.rules_changed",
        obj=program,
        from_state=f"v{last}" if last else "",
        to_state=f"v{version.number}",
        reason=note,
        data={"version_id": version.pk},
    )
    return version


@transaction.atomic
def program_current_version(*, program: Program) -> ProgramVersion:
    """The version a new referral is judged under: the highest number.

    A program without any version gets version 1 here, holding no rewards yet and the program's
    current settings. Safe under concurrency: creation is serialised on the program row (like
    ``program_rules_change``), and two callers racing for version 1 both get the same row.
    """
    current = _current_version(program)
    if current is not None:
        return current
    locked = Program.objects.select_for_update().get(pk=program.pk, tenant_id=program.tenant_id)
    current = _current_version(locked)
    if current is not None:
        return current
    try:
        with transaction.atomic():
            return ProgramVersion.objects.create(
                tenant_id=locked.tenant_id,
                program=locked,
                number=1,
                rules=_version_document(program=locked, document=rules_module.empty_rules(locked.currency)),
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


@dataclass(frozen=True)
class RulesChange:
    version: ProgramVersion
    created: bool  # False when the proposed rules equal the current version's


@transaction.atomic
def program_rules_change(*, program: Program, actor: Actor, rules: Any, note: str = "") -> RulesChange:
    """Make ``rules`` the program's rules: a new immutable version numbered one above the current.

    Rules equal to the current version's change nothing (the current version is returned). Existing
    versions, and the referrals judged under them, are never touched. Concurrent changes of one
    program are serialised on the program row, so numbers never clash.
    """
    program = Program.objects.select_for_update().get(pk=program.pk, tenant_id=program.tenant_id)
    if program.status == ProgramStatus.ARCHIVED:
        raise ValidationError({"rules": "An archived program's rules cannot change."})
    document = rules_validate(program=program, rules=rules)
    if len(note) > 300:
        raise ValidationError({"note": "At most 300 characters."})
    current = _current_version(program)
    if current is not None and _unchanged(program=program, current=current, document=document):
        return RulesChange(version=current, created=False)
    return RulesChange(
        version=_version_create(program=program, actor=actor, document=document, note=note), created=True
    )


# --- participants ------------------------------------------------------------------------------
PARTICIPANT_TRANSITIONS: dict[str, frozenset[str]] = {
    ParticipantStatus.PENDING: frozenset({ParticipantStatus.ACTIVE, ParticipantStatus.REJECTED}),
    ParticipantStatus.REJECTED: frozenset({ParticipantStatus.ACTIVE}),
    ParticipantStatus.ACTIVE: frozenset({ParticipantStatus.REMOVED}),
    ParticipantStatus.REMOVED: frozenset({ParticipantStatus.ACTIVE}),
}
PARTICIPANT_SOURCES = ("admin", "api", "import", "application")


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


def participant_links_ensure(*, participant: Participant) -> None:
    """An active participant has one active link per channel (email, social, in-app, QR, direct) and a
    coupon code."""
    from referrals.models import Channel, ReferralLink
    from referrals.services import referral_link_create

    if participant.status != ParticipantStatus.ACTIVE:
        return
    participant_coupon_code_ensure(participant=participant)
    for channel in Channel.values:
        referral_link_create(participant=participant, channel=channel)
    ReferralLink.objects.for_tenant(participant.tenant_id).filter(participant=participant, is_active=False).update(
        is_active=True
    )


def _participant_links_text(participant: Participant) -> str:
    from referrals.models import ReferralLink

    links = ReferralLink.objects.for_tenant(participant.tenant_id).filter(participant=participant, is_active=True)
    return "\n".join(
        f"  {link.get_channel_display()}: {settings.SITE_URL}/r/{link.code}" for link in links.order_by("channel")
    )


def _participant_notify(*, participant: Participant, subject: str, body: str) -> None:
    """E-mail the participant once the transaction commits (never for a rolled-back change)."""
    transaction.on_commit(
        lambda: send_mail(
            subject=subject, message=body, from_email=None, recipient_list=[participant.email], fail_silently=True
        )
    )


def _notify_welcome(participant: Participant) -> None:
    program = participant.program
    if participant.status == ParticipantStatus.PENDING:
        _participant_notify(
            participant=participant,
            subject=f"Thanks for applying to {program.name}",
            body=(
                f"Hi {participant.name},\n\nthanks for applying to {program.name}. The team reviews every "
                "application and will get back to you within 24 hours."
            ),
        )
    elif participant.status == ParticipantStatus.ACTIVE:
        _participant_notify(
            participant=participant,
            subject=f"Your referral links for {program.name}",
            body=(
                f"Hi {participant.name},\n\nyou are in {program.name}. Share one of your links; each is tagged "
                f"with the channel you use it in:\n\n{_participant_links_text(participant)}\n\n"
                f"Your dashboard (share in a click, follow referrals and rewards): {dashboard_url(participant)}\n\n"
                f"Program terms: {settings.SITE_URL}"
                + reverse(
                    "program_terms_page", kwargs={"tenant_slug": program.tenant.slug, "program_slug": program.slug}
                )
            ),
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
) -> Enrolment:
    """Enrol a participant, or update the one with this external id (idempotent).

    New participants of a gated program start pending; of an open or invite-only one (enrolled by the
    tenant itself) active. Active participants get their channel links. Concurrent calls with one
    external id give one participant (the unique constraint decides; the loser updates).
    """
    if program.tenant_id != tenant.pk:
        raise ValidationError({"program": "Unknown program."})
    if program.status == ProgramStatus.ARCHIVED:
        raise ValidationError({"program": "This program is archived; nobody can join it."})
    if source not in PARTICIPANT_SOURCES:
        raise ValidationError({"source": f"Choose one of: {', '.join(PARTICIPANT_SOURCES)}."})
    values = participant_validate(external_id=external_id, name=name, email=email, company=company)
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
    participant_links_ensure(participant=participant)
    return Enrolment(participant=participant, created=created)


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
    participant_links_ensure(participant=participant)
    if created:
        _notify_welcome(participant)
    return Enrolment(participant=participant, created=created)


def _participant_transition(
    *,
    participant: Participant,
    actor: Actor,
    to_state: str,
    action: str,
    reason: str,
    allowed_from: frozenset[str] | None = None,
) -> Participant:
    participant = Participant.objects.select_for_update().get(pk=participant.pk, tenant_id=participant.tenant_id)
    from_state = participant.status
    if to_state not in PARTICIPANT_TRANSITIONS[from_state] or (allowed_from and from_state not in allowed_from):
        raise ValidationError({"status": f"A {from_state} participant cannot become {to_state} this way."})
    participant.status = to_state
    participant.save(update_fields=["status"])
    audit_record(
        tenant=participant.tenant,
        actor=actor,
        action=action,
        obj=participant,
        from_state=from_state,
        to_state=to_state,
        reason=reason,
    )
    return participant


@transaction.atomic
def participant_approve(*, participant: Participant, actor: Actor, reason: str = "") -> Participant:
    """Pending (or rejected) → active; the participant gets their referral links."""
    participant = _participant_transition(
        participant=participant,
        actor=actor,
        to_state=ParticipantStatus.ACTIVE,
        action="participant.approved",
        reason=reason,
        allowed_from=frozenset({ParticipantStatus.PENDING, ParticipantStatus.REJECTED}),
    )
    participant_links_ensure(participant=participant)
    _notify_welcome(participant)
    return participant


@transaction.atomic
def participant_reject(*, participant: Participant, actor: Actor, reason: str = "") -> Participant:
    """Pending → rejected. A rejected applicant has no links; they are told by e-mail."""
    participant = _participant_transition(
        participant=participant,
        actor=actor,
        to_state=ParticipantStatus.REJECTED,
        action="participant.rejected",
        reason=reason,
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
    """Active → removed; their links stop working (existing referrals are kept)."""
    from referrals.models import ReferralLink

    participant = _participant_transition(
        participant=participant,
        actor=actor,
        to_state=ParticipantStatus.REMOVED,
        action="participant.removed",
        reason=reason,
    )
    ReferralLink.objects.for_tenant(participant.tenant_id).filter(participant=participant).update(is_active=False)
    return participant


@transaction.atomic
def participant_reinstate(*, participant: Participant, actor: Actor, reason: str = "") -> Participant:
    """Removed → active; their links work again."""
    participant = _participant_transition(
        participant=participant,
        actor=actor,
        to_state=ParticipantStatus.ACTIVE,
        action="participant.reinstated",
        reason=reason,
        allowed_from=frozenset({ParticipantStatus.REMOVED}),
    )
    participant_links_ensure(participant=participant)
    return participant


PARTICIPANT_TIER_RE = re.compile(rules_module.PARTNER_TIER_PATTERN)


@transaction.atomic
def participant_tier_set(*, participant: Participant, tier: str, actor: Actor | str, reason: str = "") -> Participant:
    """Put the participant in a partner tier ("" for none). When the rules of the version a referral is
    judged under list the tier under ``partner_tiers``, that tier's referrer rules apply to its rewards."""
    tier = (tier or "").strip().lower()
    if tier and not PARTICIPANT_TIER_RE.match(tier):
        raise ValidationError(
            {"tier": "Use 1-40 lower-case letters, digits, '-' or '_', starting with a letter or digit (e.g. gold)."}
        )
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


# --- participant CSV imports -------------------------------------------------------------------
IMPORT_REQUIRED_COLUMNS = ("external_id", "name", "email")
IMPORT_OPTIONAL_COLUMNS = ("company",)
IMPORT_MAX_STORED_ERRORS = 1000


def _decode_csv(content: bytes | str) -> str:
    if isinstance(content, str):
        return content.lstrip("\ufeff")
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError({"file": f"The file is not UTF-8 text (byte {exc.start} cannot be read)."}) from exc


def _csv_reader(text: str) -> csv.DictReader:
    return csv.DictReader(io.StringIO(text, newline=""))


def participant_import_inspect(content: bytes | str) -> tuple[str, int]:
    """The CSV as text and its number of data rows, or ``ValidationError({"file": ...})`` when the
    whole file is unusable (too large, not UTF-8, no header columns external_id / name / email, no rows)."""
    raw_size = len(content.encode() if isinstance(content, str) else content)
    if raw_size > settings.PARTICIPANT_IMPORT_MAX_BYTES:
        raise ValidationError({"file": f"The file is larger than {settings.PARTICIPANT_IMPORT_MAX_BYTES:,} bytes."})
    text = _decode_csv(content)
    if "\x00" in text:
        raise ValidationError({"file": "The file contains NUL bytes; upload a CSV text file."})
    try:
        reader = _csv_reader(text)
        header = [name.strip().lower() for name in (reader.fieldnames or [])]
        total = sum(1 for _ in reader)
    except csv.Error as exc:
        raise ValidationError({"file": f"Not a readable CSV file: {exc}."}) from exc
    missing = [name for name in IMPORT_REQUIRED_COLUMNS if name not in header]
    if missing:
        raise ValidationError({"file": f"Line 1: the header lacks the column(s) {', '.join(missing)}."})
    if total == 0:
        raise ValidationError({"file": "The file has a header but no rows."})
    return text, total


@transaction.atomic
def participant_import_create(
    *,
    tenant: Tenant,
    program: Program,
    actor: Actor,
    filename: str,
    content: bytes | str,
    enqueue: bool = True,
) -> ParticipantImport:
    """Store an uploaded CSV as received and (``enqueue``) queue its import task once committed.

    The header must name ``external_id``, ``name`` and ``email`` (``company`` optional). The file is
    checked here only for what makes the whole file unusable; row problems are reported per row.
    """
    if program.tenant_id != tenant.pk:
        raise ValidationError({"program": "Unknown program."})
    if program.status == ProgramStatus.ARCHIVED:
        raise ValidationError({"program": "This program is archived; nobody can join it."})
    text, total = participant_import_inspect(content)
    job = ParticipantImport.objects.create(
        tenant=tenant,
        program=program,
        filename=(filename or "upload.csv")[:255],
        content=text,
        total_rows=total,
        created_by=actor.label,
    )
    audit_record(tenant=tenant, actor=actor, action="participant_import.queued", obj=job, to_state=job.status)
    if enqueue:
        from .tasks import participant_import_task

        enqueue_on_commit(participant_import_task, job.pk)
    return job


def participant_import_run(
    *,
    participant_import: ParticipantImport,
    actor: Actor,
    batch_size: int | None = None,
    on_progress: Callable[[ParticipantImport], None] | None = None,
) -> ParticipantImport:
    """Import the job's rows in batches; each batch commits its rows with the progress counters.

    Safe to run again (a retried task, a crashed worker): it resumes after the last committed batch,
    and re-importing a row is an idempotent upsert anyway. Bad rows are recorded with their line
    number and field; the other rows are imported.
    """
    batch_size = batch_size or settings.PARTICIPANT_IMPORT_BATCH_SIZE
    with transaction.atomic():
        job = ParticipantImport.objects.select_for_update().get(pk=participant_import.pk)
        if job.is_finished:
            return job
        if job.status == ImportStatus.QUEUED:
            job.status = ImportStatus.RUNNING
            job.started_at = timezone.now()
            job.save(update_fields=["status", "started_at"])
    program = job.program
    if on_progress:
        on_progress(job)
    try:
        reader = _csv_reader(job.content)
        reader.fieldnames = [name.strip().lower() for name in (reader.fieldnames or [])]
        batch: list[tuple[int, dict]] = []
        index = 0
        for index, row in enumerate(reader, start=1):
            if index <= job.processed_rows:
                continue
            # reader.line_num is the physical line the row ended on (quoted fields may span lines).
            batch.append((reader.line_num, row))
            if len(batch) >= batch_size:
                job = _import_batch(job=job, program=program, actor=actor, batch=batch)
                batch = []
                if on_progress:
                    on_progress(job)
        if batch:
            job = _import_batch(job=job, program=program, actor=actor, batch=batch)
            if on_progress:
                on_progress(job)
    except csv.Error as exc:
        return _import_finish(job=job, actor=actor, status=ImportStatus.FAILED, failure=f"Unreadable CSV: {exc}")
    job = _import_finish(job=job, actor=actor, status=ImportStatus.DONE)
    if on_progress:
        on_progress(job)
    return job


@transaction.atomic
def _import_batch(*, job: ParticipantImport, program: Program, actor: Actor, batch: list[tuple[int, dict]]):
    job = ParticipantImport.objects.select_for_update().get(pk=job.pk)
    errors = list(job.errors)
    for line, row in batch:
        extra = row.get(None)
        if extra:
            problem = {"line": line, "field": "row", "message": f"{len(extra)} more value(s) than header columns."}
            job.error_count += 1
            if len(errors) < IMPORT_MAX_STORED_ERRORS:
                errors.append(problem)
            continue
        try:
            enrolment = participant_upsert(
                tenant=program.tenant,
                program=program,
                external_id=row.get("external_id") or "",
                name=row.get("name") or "",
                email=row.get("email") or "",
                company=row.get("company") or "",
                actor=actor,
                source="import",
            )
        except ValidationError as exc:
            job.error_count += 1
            for field_name, messages in exc.message_dict.items():
                if len(errors) < IMPORT_MAX_STORED_ERRORS:
                    errors.append({"line": line, "field": field_name, "message": " ".join(messages)})
            continue
        if enrolment.created:
            job.created_count += 1
        else:
            job.updated_count += 1
    job.processed_rows += len(batch)
    job.errors = errors
    job.save(update_fields=["processed_rows", "created_count", "updated_count", "error_count", "errors"])
    return job


@transaction.atomic
def _import_finish(*, job: ParticipantImport, actor: Actor, status: str, failure: str = "") -> ParticipantImport:
    job = ParticipantImport.objects.select_for_update().get(pk=job.pk)
    from_state = job.status
    job.status = status
    job.failure = failure
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "failure", "finished_at"])
    audit_record(
        tenant=job.tenant,
        actor=actor,
        action=f"participant_import.{status}",
        obj=job,
        from_state=from_state,
        to_state=status,
        reason=failure,
        data={"created": job.created_count, "updated": job.updated_count, "errors": job.error_count},
    )
    return job
