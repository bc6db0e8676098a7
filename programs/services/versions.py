"""Programs' versioned rules: snapshots, the current version, rule changes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max

from programs import rules as rules_module
from programs.models import (
    Program,
    ProgramStatus,
    ProgramVersion,
)
from referral_platform.hooks import hooks
from referral_platform.tenancy.actors import Actor
from referral_platform.tenancy.memo import recall, remember
from referral_platform.tenancy.services import audit_record

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


def current_version_or_none(program: Program) -> ProgramVersion | None:
    # The same read as selectors.program_latest_version, kept here so services do not import selectors.
    return (
        ProgramVersion.objects.for_tenant(program.tenant_id).filter(program_id=program.pk).order_by("-number").first()
    )


def version_create(*, program: Program, actor: Actor | str, document: dict, note: str) -> ProgramVersion:
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
    previous = (
        ProgramVersion.objects.for_tenant(program.tenant_id).filter(program_id=program.pk, number=last).first()
        if last
        else None
    )
    hooks.program_rules_changed(program=program, version=version, previous=previous)
    return version


@transaction.atomic
def program_current_version(*, program: Program) -> ProgramVersion:
    """The version a new referral is judged under: the highest number.

    A program without any version gets version 1 here, holding no rewards yet and the program's
    current settings. Safe under concurrency: creation is serialised on the program row (like
    ``program_rules_change``), and two callers racing for version 1 both get the same row.
    """
    key = f"program_current_version_{program.pk}"
    current = recall(key) or current_version_or_none(program)  # read once per batch (tenancy.memo)
    if current is not None:
        remember(key, current)
        return current
    locked = Program.objects.select_for_update().get(pk=program.pk, tenant_id=program.tenant_id)
    current = current_version_or_none(locked)
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
    current = current_version_or_none(program)
    if current is not None and _unchanged(program=program, current=current, document=document):
        return RulesChange(version=current, created=False)
    return RulesChange(version=version_create(program=program, actor=actor, document=document, note=note), created=True)


def version_has_rewards(version: ProgramVersion) -> bool:
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
