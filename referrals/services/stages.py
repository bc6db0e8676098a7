"""Referrals: creation (screening, eligibility) and the funnel stages (one service per move)."""

from __future__ import annotations

import functools
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from programs.models import Participant, ParticipantStatus, Program
from programs.services import program_current_version
from referral_platform.db.prepared import execute_prepared
from referral_platform.hooks import hooks
from referral_platform.state import transition
from referral_platform.tenancy.actors import Actor
from referral_platform.tenancy.models import Tenant
from referral_platform.tenancy.services import audit_record
from referrals import fraud_services
from referrals.models import (
    CompanySize,
    Referral,
    ReferralLink,
    ReferralStatus,
    company_key,
)
from referrals.selectors import (
    normalize_email,
    normalize_identifier,
)


def referral_screen(*, referral: Referral, actor: Actor | str) -> None:
    """The screening step every new referral passes, inside referral_create's transaction, after
    the row exists: the program's fraud checks run, and each signal is stored as a FraudFlag with
    its evidence, putting the referral in the admin's review queue (docs/fraud.md)."""
    fraud_services.referral_screen(referral=referral, actor=actor, created=True)


@transaction.atomic
def referral_create(
    *,
    tenant: Tenant,
    program: Program,
    referrer: Participant,
    actor: Actor | str,
    source: str,
    link: ReferralLink | None = None,
    visitor_id: str = "",
    email: str = "",
    name: str = "",
    company: str = "",
    company_size: str = "",
    external_id: str = "",
    how_did_you_hear: str = "",
    qualification: dict | None = None,
    clicked_at: datetime | None = None,
    established_at: datetime | None = None,
    industry: str = "",
    employees: int | None = None,
    annual_revenue_minor: int | None = None,
) -> Referral:
    """Create a referral (status clicked) judged under the program's current rule version.

    Guarantees: the program and referrer belong to ``tenant`` and the program is live; one referral
    per referred e-mail and program (a duplicate is a ValidationError on ``email``); the new
    referral has passed ``referral_screen``; a company known to be outside the rules' ideal-customer
    profile is rejected at once with the reason (``referral_eligibility_enforce``).
    ``established_at`` (default now) is the sign-up, lead or event that established it: credit is
    decided from the touchpoints up to that moment.
    """
    if program.tenant_id != tenant.pk:
        raise ValidationError({"program": "Unknown program."})
    if referrer.tenant_id != tenant.pk or referrer.program_id != program.pk:
        raise ValidationError({"referrer": "The referrer is not a participant of this program."})
    if referrer.status != ParticipantStatus.ACTIVE:
        raise ValidationError({"referrer": "The referrer is not an active participant."})
    if not program.is_live:
        raise ValidationError({"program": f"The program {program.name!r} is not accepting referrals."})
    if link is not None and (link.tenant_id != tenant.pk or link.participant_id != referrer.pk):
        raise ValidationError({"link": "The link does not belong to the referrer."})
    email = normalize_email(email)
    # One referral per e-mail and program: the unique constraint refuses a second (no look-up first).
    version = program_current_version(program=program)
    referral = Referral(
        tenant=tenant,
        program=program,
        referrer=referrer,
        link=link,
        visitor_id=normalize_identifier(visitor_id)[:64],
        referred_email=email,
        referred_name=name.strip()[:200],
        referred_company=company.strip()[:200],
        referred_company_size=company_size,
        referred_external_id=normalize_identifier(external_id)[:200],
        how_did_you_hear=how_did_you_hear.strip()[:300],
        qualification=qualification or {},
        referred_industry=industry.strip()[:100],
        referred_employees=employees,
        referred_annual_revenue_minor=annual_revenue_minor,
        source=source,
        status=ReferralStatus.CLICKED,
        clicked_at=clicked_at,
        established_at=established_at or timezone.now(),
        rule_version=version,
        fraud_screened_at=timezone.now(),  # screened below, in this same transaction
    )
    if not _referral_insert(referral):  # the e-mail's referral in this program exists (or a concurrent one won)
        raise ValidationError({"email": f"{email} has already been referred to this program."})
    audit_record(
        tenant=tenant,
        actor=actor,
        action="referral.created",
        obj=referral,
        to_state=referral.status,
        data={"source": source, "referrer": referrer.pk, "rule_version": version.number},
    )
    referral_screen(referral=referral, actor=actor)
    hooks.referral_created(referral=referral)
    return referral_eligibility_enforce(referral=referral, actor=actor)


def _referral_insert(referral: Referral) -> bool:
    """INSERT the new ``referral`` as ``save()`` would (its defaults, its company key, the values the database
    generates read back) in ONE prepared statement, ``ON CONFLICT DO NOTHING``: False when the one-referral-per-
    e-mail-and-program constraint (its only unique one) refused it. Instead of the ORM's ``create`` in a savepoint
    caught for the same refusal (issue 15: a billing run's first month creates a referral per new customer)."""
    referral.referred_company_key = company_key(referral.referred_company)  # as ``Referral.save``
    fields, returning, sql = _referral_insert_sql()
    values = [field.get_db_prep_save(field.pre_save(referral, True), connection) for field in fields]
    with connection.cursor() as cursor:
        execute_prepared(cursor, sql, values)
        row = cursor.fetchone()
    if row is None:
        return False
    for field, value in zip(returning, row, strict=True):
        if value is not None and hasattr(field, "from_db_value"):
            value = field.from_db_value(value, None, connection)
        setattr(referral, field.attname, value)
    referral._state.adding, referral._state.db = False, connection.alias
    return True


@functools.cache
def _referral_insert_sql() -> tuple[list, list, str]:
    """``_referral_insert``'s fields, the fields it reads back and its statement (built once per process)."""
    meta = Referral._meta
    quote = connection.ops.quote_name
    fields = [field for field in meta.local_concrete_fields if not field.primary_key and not field.generated]
    returning = meta.db_returning_fields
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(field.column) for field in fields)}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(fields))}) ON CONFLICT DO NOTHING "
        f"RETURNING {', '.join(quote(field.column) for field in returning)}"
    )
    return fields, returning, sql


def referral_eligibility_problems(*, referral: Referral) -> list[str]:
    """Why the referred company is outside the referral's rules' ideal-customer profile (industry,
    employees, annual revenue); unknown values never disqualify. A company-size bucket counts against
    the profile only when the whole bucket lies outside it."""
    from programs.rules import CompanyProfile, RulesError, eligibility_problems, version_rules

    if referral.rule_version_id is None:
        return []
    try:
        rule_set = version_rules(referral.rule_version)
    except RulesError:
        return []
    problems = eligibility_problems(
        rule_set,
        CompanyProfile(
            industry=referral.referred_industry,
            employees=referral.referred_employees,
            annual_revenue_minor=referral.referred_annual_revenue_minor,
        ),
    )
    low, high = rule_set.company_size
    bucket = COMPANY_SIZE_BOUNDS.get(referral.referred_company_size)
    if referral.referred_employees is None and bucket is not None:
        smallest, largest = bucket
        size = referral.get_referred_company_size_display()
        if high is not None and smallest > high:
            problems.append(f"a company of {size} is above the maximum of {high}")
        if low is not None and largest is not None and largest < low:
            problems.append(f"a company of {size} is below the minimum of {low}")
    return problems


# The employees a company-size bucket spans (None: no upper bound).
COMPANY_SIZE_BOUNDS: dict[str, tuple[int, int | None]] = {
    CompanySize.SIZE_1_10: (1, 10),
    CompanySize.SIZE_11_50: (11, 50),
    CompanySize.SIZE_51_200: (51, 200),
    CompanySize.SIZE_201_1000: (201, 1000),
    CompanySize.SIZE_1001_PLUS: (1001, None),
}


def referral_eligibility_enforce(*, referral: Referral, actor: Actor | str) -> Referral:
    """Reject ``referral`` with the reason when what is known of the referred company is outside the
    ideal-customer profile (R-6). Only referrals that have not converted yet are judged: what a paying
    customer's later events reveal is recorded, not held against a reward already earned."""
    if referral.status not in (ReferralStatus.CLICKED, ReferralStatus.SIGNED_UP, ReferralStatus.QUALIFIED):
        return referral
    problems = referral_eligibility_problems(referral=referral)
    if not problems:
        return referral
    return referral_reject(
        referral=referral,
        actor=actor,
        reason="Not eligible: " + "; ".join(problems) + ".",
        data={"eligibility": problems},
    )


def _referral_move(
    *,
    referral: Referral,
    to: str,
    actor: Actor | str,
    at: datetime | None,
    reason: str,
    data: dict | None,
    locked: Referral | None = None,
) -> Referral:
    """``locked``: the referral's row as held by the caller's transaction (e.g. inserted by it), so it is not
    locked and read again."""
    moved = transition(referral, to=to, actor=actor, reason=reason, at=at, data=data, locked=locked)
    # Rewards follow the stage (a lead bounty on qualification; a rejection reverses what it earned),
    # and the referrer is told: the higher layers react to the hook.
    hooks.referral_changed(referral=moved, change=to)
    return moved


@transaction.atomic
def referral_sign_up(
    *,
    referral: Referral,
    actor: Actor | str,
    at: datetime | None = None,
    reason: str = "",
    data: dict | None = None,
    locked: Referral | None = None,
) -> Referral:
    """clicked → signed up."""
    return _referral_move(
        referral=referral, to=ReferralStatus.SIGNED_UP, actor=actor, at=at, reason=reason, data=data, locked=locked
    )


def referral_qualification_missing(*, referral: Referral) -> list[str]:
    """The checklist items (budget, authority, need, timeline) that the referral's rule version requires
    and its lead information does not confirm (an item counts as confirmed when it has an answer)."""
    if referral.rule_version_id is None:
        return []
    from programs.rules import qualification_missing

    answers = {name: bool(str(value).strip()) for name, value in (referral.qualification or {}).items()}
    return qualification_missing(referral.rule_version.rules, answers)


@transaction.atomic
def referral_qualify(
    *,
    referral: Referral,
    actor: Actor | str,
    at: datetime | None = None,
    reason: str = "",
    data: dict | None = None,
    require_checklist: bool = False,
    locked: Referral | None = None,
) -> Referral:
    """clicked / signed up → qualified (the referrer is told what they earn when it converts).

    With ``require_checklist`` (a marketer qualifying a lead by hand) the program's qualification
    checklist must be confirmed first; a ``qualified`` event from the tenant's own product is trusted."""
    if require_checklist:
        missing = referral_qualification_missing(referral=referral)
        if missing:
            raise ValidationError(
                {"qualification": f"The program's checklist is not confirmed yet: missing {', '.join(missing)}."}
            )
    moved = _referral_move(
        referral=referral, to=ReferralStatus.QUALIFIED, actor=actor, at=at, reason=reason, data=data, locked=locked
    )
    return moved


@transaction.atomic
def referral_convert(
    *,
    referral: Referral,
    actor: Actor | str,
    at: datetime | None = None,
    reason: str = "",
    data: dict | None = None,
    locked: Referral | None = None,
) -> Referral:
    """clicked / signed up / qualified → converted (a paying customer)."""
    return _referral_move(
        referral=referral, to=ReferralStatus.CONVERTED, actor=actor, at=at, reason=reason, data=data, locked=locked
    )


@transaction.atomic
def referral_reject(
    *, referral: Referral, actor: Actor | str, reason: str, at: datetime | None = None, data: dict | None = None
) -> Referral:
    """Any open stage → rejected (final). A reason is required: it is shown to the referrer."""
    if not reason.strip():
        raise ValidationError({"reason": "Say why the referral is rejected."})
    return _referral_move(referral=referral, to=ReferralStatus.REJECTED, actor=actor, at=at, reason=reason, data=data)


@transaction.atomic
def referral_churn(
    *,
    referral: Referral,
    actor: Actor | str,
    at: datetime | None = None,
    reason: str = "",
    data: dict | None = None,
    locked: Referral | None = None,
) -> Referral:
    """converted → churned (the referred customer cancelled)."""
    return _referral_move(
        referral=referral, to=ReferralStatus.CHURNED, actor=actor, at=at, reason=reason, data=data, locked=locked
    )


def referral_stage_redate(
    *, referral: Referral, field: str, at: datetime, actor: Actor | str, reason: str = ""
) -> Referral:
    """Move a stage timestamp EARLIER (or set a missing one), when an earlier event arrives late: the
    conversion date is the earliest payment's, the churn date the earliest cancellation's, a lead
    qualified by an event processed after its payment still records when it qualified — whatever order
    the events were processed in. Never moves one later; audited."""
    if field not in ("signed_up_at", "qualified_at", "converted_at", "churned_at", "established_at"):
        raise ValidationError({"field": f"{field} cannot be re-dated."})
    locked = Referral.objects.for_tenant(referral.tenant_id).select_for_update().get(pk=referral.pk)
    current = getattr(locked, field)
    if current is not None and current <= at:
        return locked
    setattr(locked, field, at)
    locked.save(update_fields=[field])
    audit_record(
        tenant=locked.tenant,
        actor=actor,
        action=f"referral.{field.removesuffix('_at')}_redated",
        obj=locked,
        from_state=locked.status,
        to_state=locked.status,
        reason=reason,
        data={"field": field, "from": current.isoformat() if current else None, "to": at.isoformat()},
    )
    hooks.referral_changed(referral=locked, change="redated")
    return locked


STAGE_SERVICES = {
    ReferralStatus.SIGNED_UP: referral_sign_up,
    ReferralStatus.QUALIFIED: referral_qualify,
    ReferralStatus.CONVERTED: referral_convert,
    ReferralStatus.CHURNED: referral_churn,
}
