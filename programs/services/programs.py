"""Programs: configuration and status moves."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.text import slugify

from programs import rules as rules_module
from programs.models import (
    AttributionModel,
    Program,
    ProgramAccess,
    ProgramKind,
    ProgramStatus,
)
from referral_platform.state import transition
from referral_platform.tenancy.actors import Actor
from referral_platform.tenancy.models import Tenant
from referral_platform.tenancy.services import audit_record

from .hosts import host_is_allowed
from .versions import (
    PROGRAM_RULE_FIELDS,
    RulesChange,
    current_version_or_none,
    program_rules_change,
    rules_validate,
    version_create,
    version_has_rewards,
)

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
        try:
            host = urlsplit(str(data["landing_url"] or "")).hostname or "its host"
        except ValueError:
            host = "its host"
        errors["landing_url"] = (
            f"Add {host} to your allowed landing domains: Settings → Domains (Get started lists it), "
            "or use a landing URL on a domain already allowed."
        )
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
        version_create(program=program, actor=actor, document=document, note="Initial rules")
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
    current = current_version_or_none(program)
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
        version_create(
            program=program,
            actor=actor,
            document={**current.rules, "currency": program.currency},
            note=f"Settings changed: {', '.join(judged)}",
        )
    return program


@dataclass(frozen=True)
class ProgramConfiguration:
    program: Program
    rules_change: RulesChange | None  # None when no rules were given


@transaction.atomic
def program_configure(
    *, program: Program, actor: Actor, changes: Mapping[str, Any], rules: Any = None, note: str = ""
) -> ProgramConfiguration:
    """Change a program's settings and, with ``rules``, its rules in one step: ONE new version holds the
    new rules together with the changed judging settings (``program_update`` alone issues a version
    for changed judging settings). ``note`` says why; without one, a version caused by changed settings
    names them. Nothing is written when a setting or the rules are invalid."""
    program = program_update(program=program, actor=actor, new_version=rules is None, **changes)
    if rules is None:
        return ProgramConfiguration(program=program, rules_change=None)
    if not note:
        judged = sorted(name for name in changes if name in PROGRAM_RULE_FIELDS)
        note = f"Settings changed: {', '.join(judged)}" if judged else ""
    change = program_rules_change(program=program, actor=actor, rules=rules, note=note)
    return ProgramConfiguration(program=program, rules_change=change)


@transaction.atomic
def program_activate(*, program: Program, actor: Actor, reason: str = "") -> Program:
    """Draft or paused → active. A program goes live only with reward rules and an allowed landing URL."""
    current = current_version_or_none(program)
    if current is None or not version_has_rewards(current):
        raise ValidationError({"rules": "Set the program's rules before activating it."})
    if not host_is_allowed(tenant=program.tenant, url=program.landing_url):
        raise ValidationError({"landing_url": "The landing URL is no longer on an allowed domain."})
    return transition(program, to=ProgramStatus.ACTIVE, actor=actor, reason=reason, action="program.activated")


@transaction.atomic
def program_pause(*, program: Program, actor: Actor, reason: str = "") -> Program:
    """Active → paused: links stop sending visitors; existing referrals keep their rules."""
    return transition(program, to=ProgramStatus.PAUSED, actor=actor, reason=reason, action="program.paused")


@transaction.atomic
def program_archive(*, program: Program, actor: Actor, reason: str = "") -> Program:
    """Any status but archived → archived (final)."""
    return transition(program, to=ProgramStatus.ARCHIVED, actor=actor, reason=reason, action="program.archived")
