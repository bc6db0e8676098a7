"""Writes for referral links and referrals."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from programs.models import Participant, ParticipantStatus, Program, ProgramVersion
from programs.services import judging_rules, program_current_version
from referral_platform.celery import enqueue_on_commit
from referral_platform.tenancy.actors import Actor, system_actor
from referral_platform.tenancy.models import Tenant
from referral_platform.tenancy.services import audit_record

from . import attribution as attribution_math
from . import fraud_services
from .models import (
    Attribution,
    Channel,
    CompanySize,
    ConversionEvent,
    ConversionEventStatus,
    ConversionKind,
    IdentityLink,
    Referral,
    ReferralLink,
    ReferralSource,
    ReferralStatus,
    Touchpoint,
    TouchpointKind,
)
from .selectors import (
    first_click_at,
    identity_cluster,
    identity_nodes,
    latest_credited_click,
    link_for_code,
    link_for_coupon,
    normalize_email,
    normalize_identifier,
    referral_credit,
    referral_for_identity,
    touchpoint_sequence,
)

CODE_BYTES = 9  # 72 bits: unguessable, 12 URL-safe characters


def new_referral_code() -> str:
    return secrets.token_urlsafe(CODE_BYTES)


@transaction.atomic
def referral_link_create(*, participant: Participant, channel: str = Channel.DIRECT) -> ReferralLink:
    """The participant's link for ``channel`` (created once, with a fresh unguessable code)."""
    existing = (
        ReferralLink.objects.for_tenant(participant.tenant_id).filter(participant=participant, channel=channel).first()
    )
    if existing:
        return existing
    for _ in range(5):
        try:
            with transaction.atomic():
                return ReferralLink.objects.create(
                    tenant_id=participant.tenant_id,
                    program_id=participant.program_id,
                    participant=participant,
                    channel=channel,
                    code=new_referral_code(),
                )
        except IntegrityError:
            existing = (
                ReferralLink.objects.for_tenant(participant.tenant_id)
                .filter(participant=participant, channel=channel)
                .first()
            )
            if existing:
                return existing
    raise RuntimeError("could not allocate a unique referral code")


# --- referrals: creation, screening, funnel stages ------------------------------------------------
# Who may move where. A stage may be skipped (a payment can convert a referral that never qualified);
# rejected and churned are final.
# A cancellation churns a referral at any open stage: a customer who cancelled before paying stays
# churned when a later payment arrives, whatever order the events came in.
REFERRAL_MOVES: dict[str, frozenset[str]] = {
    ReferralStatus.CLICKED: frozenset(
        {
            ReferralStatus.SIGNED_UP,
            ReferralStatus.QUALIFIED,
            ReferralStatus.CONVERTED,
            ReferralStatus.REJECTED,
            ReferralStatus.CHURNED,
        }
    ),
    ReferralStatus.SIGNED_UP: frozenset(
        {ReferralStatus.QUALIFIED, ReferralStatus.CONVERTED, ReferralStatus.REJECTED, ReferralStatus.CHURNED}
    ),
    ReferralStatus.QUALIFIED: frozenset({ReferralStatus.CONVERTED, ReferralStatus.REJECTED, ReferralStatus.CHURNED}),
    ReferralStatus.CONVERTED: frozenset({ReferralStatus.CHURNED}),
    ReferralStatus.REJECTED: frozenset(),
    ReferralStatus.CHURNED: frozenset(),
}
STAGE_TIMESTAMP_FIELDS: dict[str, str] = {
    ReferralStatus.CLICKED: "clicked_at",
    ReferralStatus.SIGNED_UP: "signed_up_at",
    ReferralStatus.QUALIFIED: "qualified_at",
    ReferralStatus.CONVERTED: "converted_at",
    ReferralStatus.REJECTED: "rejected_at",
    ReferralStatus.CHURNED: "churned_at",
}


def referral_screen(*, referral: Referral, actor: Actor | str) -> None:
    """The screening step every new referral passes, inside referral_create's transaction, after
    the row exists: the program's fraud checks run, and each signal is stored as a FraudFlag with
    its evidence, putting the referral in the admin's review queue (docs/fraud.md)."""
    fraud_services.referral_screen(referral=referral, actor=actor)


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
    if email and Referral.objects.for_tenant(tenant).filter(program=program, referred_email=email).exists():
        raise ValidationError({"email": f"{email} has already been referred to this program."})
    version = program_current_version(program=program)
    try:
        with transaction.atomic():
            referral = Referral.objects.create(
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
            )
    except IntegrityError as exc:  # a concurrent referral of the same e-mail won
        raise ValidationError({"email": f"{email} has already been referred to this program."}) from exc
    audit_record(
        tenant=tenant,
        actor=actor,
        action="referral.created",
        obj=referral,
        to_state=referral.status,
        data={"source": source, "referrer": referrer.pk, "rule_version": version.number},
    )
    referral_screen(referral=referral, actor=actor)
    referral_stage_notify(referral=referral, stage="received")
    return referral_eligibility_enforce(referral=referral, actor=actor)


def referral_eligibility_problems(*, referral: Referral) -> list[str]:
    """Why the referred company is outside the referral's rules' ideal-customer profile (industry,
    employees, annual revenue); unknown values never disqualify. A company-size bucket counts against
    the profile only when the whole bucket lies outside it."""
    from programs.rules import CompanyProfile, RulesError, eligibility_problems, parse_rules

    if referral.rule_version_id is None:
        return []
    try:
        rule_set = parse_rules(referral.rule_version.rules)
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
    *, referral: Referral, to: str, actor: Actor | str, at: datetime | None, reason: str, data: dict | None
) -> Referral:
    locked = Referral.objects.for_tenant(referral.tenant_id).select_for_update().get(pk=referral.pk)
    if to not in REFERRAL_MOVES[locked.status]:
        raise ValidationError(
            {"status": f"A referral cannot move from {locked.get_status_display()} to {ReferralStatus(to).label}."}
        )
    from_state = locked.status
    locked.status = to
    setattr(locked, STAGE_TIMESTAMP_FIELDS[to], at or timezone.now())
    locked.save(update_fields=["status", STAGE_TIMESTAMP_FIELDS[to]])
    audit_record(
        tenant=locked.tenant,
        actor=actor,
        action=f"referral.{to}",
        obj=locked,
        from_state=from_state,
        to_state=to,
        reason=reason,
        data=data,
    )
    # Rewards follow the stage: a lead bounty on sign-up / qualification, a rejection reverses what it earned.
    referral_rewards_settle_queue(referral=locked)
    return locked


@transaction.atomic
def referral_sign_up(
    *, referral: Referral, actor: Actor | str, at: datetime | None = None, reason: str = "", data: dict | None = None
) -> Referral:
    """clicked → signed up."""
    return _referral_move(referral=referral, to=ReferralStatus.SIGNED_UP, actor=actor, at=at, reason=reason, data=data)


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
    moved = _referral_move(referral=referral, to=ReferralStatus.QUALIFIED, actor=actor, at=at, reason=reason, data=data)
    referral_stage_notify(referral=moved, stage="qualified")
    return moved


@transaction.atomic
def referral_convert(
    *, referral: Referral, actor: Actor | str, at: datetime | None = None, reason: str = "", data: dict | None = None
) -> Referral:
    """clicked / signed up / qualified → converted (a paying customer)."""
    return _referral_move(referral=referral, to=ReferralStatus.CONVERTED, actor=actor, at=at, reason=reason, data=data)


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
    *, referral: Referral, actor: Actor | str, at: datetime | None = None, reason: str = "", data: dict | None = None
) -> Referral:
    """converted → churned (the referred customer cancelled)."""
    return _referral_move(referral=referral, to=ReferralStatus.CHURNED, actor=actor, at=at, reason=reason, data=data)


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
    referral_rewards_settle_queue(referral=locked)
    return locked


STAGE_SERVICES = {
    ReferralStatus.SIGNED_UP: referral_sign_up,
    ReferralStatus.QUALIFIED: referral_qualify,
    ReferralStatus.CONVERTED: referral_convert,
    ReferralStatus.CHURNED: referral_churn,
}


# --- identity graph and touchpoints ---------------------------------------------------------------
def identity_link(
    *, tenant: Tenant, source: str, visitor_id: str = "", email: str = "", customer_external_id: str = ""
) -> int:
    """Record that the given identifiers belong to one person (every pair becomes an edge; repeats
    are no-ops). Returns the number of identifiers linked."""
    nodes = sorted(identity_nodes(visitor_ids=[visitor_id], emails=[email], customer_ids=[customer_external_id]))
    edges = [
        IdentityLink(tenant=tenant, a_kind=a[0], a_value=a[1][:254], b_kind=b[0], b_value=b[1][:254], source=source)
        for index, a in enumerate(nodes)
        for b in nodes[index + 1 :]
    ]
    if edges:
        IdentityLink.objects.bulk_create(edges, ignore_conflicts=True)
    return len(nodes)


@transaction.atomic
def touchpoint_record(
    *,
    tenant: Tenant,
    kind: str,
    occurred_at: datetime,
    program: Program | None = None,
    participant: Participant | None = None,
    referral: Referral | None = None,
    link: ReferralLink | None = None,
    visitor_id: str = "",
    email: str = "",
    customer_external_id: str = "",
    label: str = "",
    dedupe_key: str = "",
    data: dict | None = None,
) -> Touchpoint:
    """Record a non-click touchpoint; with ``dedupe_key`` a repeat returns the existing row.

    A touchpoint with a participant takes attribution credit in the participant's program.
    """
    if kind not in TouchpointKind.values:
        raise ValidationError({"kind": f"Unknown touchpoint kind {kind!r}."})
    if participant is not None:
        if participant.tenant_id != tenant.pk:
            raise ValidationError({"participant": "Unknown participant."})
        if program is not None and participant.program_id != program.pk:
            raise ValidationError({"participant": "The participant is not in this program."})
        program = participant.program
    if program is not None and program.tenant_id != tenant.pk:
        raise ValidationError({"program": "Unknown program."})
    for name, obj in (("referral", referral), ("link", link)):
        if obj is not None and obj.tenant_id != tenant.pk:
            raise ValidationError({name: f"Unknown {name}."})
    fields = dict(
        kind=kind,
        program=program,
        participant=participant,
        referral=referral,
        link=link,
        visitor_id=normalize_identifier(visitor_id)[:64],
        email=normalize_email(email),
        customer_external_id=normalize_identifier(customer_external_id)[:200],
        label=label.strip()[:300],
        occurred_at=occurred_at,
        data=data or {},
    )
    if not dedupe_key:
        return Touchpoint.objects.create(tenant=tenant, **fields)
    touchpoint, _ = Touchpoint.objects.get_or_create(tenant=tenant, dedupe_key=dedupe_key[:400], defaults=fields)
    return touchpoint


def _participant_named_by(*, tenant: Tenant, answer: str, program: Program | None) -> Participant | None:
    """The participant a "how did you hear" answer names exactly (their referral code or e-mail)."""
    answer = answer.strip()
    if not answer:
        return None
    link = link_for_code(tenant, answer)
    if link is not None:
        return link.participant
    if "@" in answer:
        participants = Participant.objects.for_tenant(tenant).filter(
            email=normalize_email(answer), status=ParticipantStatus.ACTIVE
        )
        if program is not None and participants.filter(program=program).exists():
            participants = participants.filter(program=program)
        return participants.order_by("pk").first()
    return None


# --- sign-ups and leads -----------------------------------------------------------------------
@dataclass(frozen=True)
class SignupOutcome:
    referral: Referral | None
    referral_created: bool
    touchpoints: list[Touchpoint]


def _within_window(*, program: Program, version: ProgramVersion, at: datetime, now: datetime) -> bool:
    rules = judging_rules(program=program, version=version)
    return at >= now - timedelta(days=int(rules["cookie_window_days"]))


def _link_accepts_referrals(link: ReferralLink) -> bool:
    return link.is_active and link.program.is_live and link.participant.status == ParticipantStatus.ACTIVE


def _link_by_model(*, tenant: Tenant, cluster, until: datetime) -> ReferralLink | None:
    """The link a person's clicks establish a referral through at ``until`` (a sign-up, lead or event
    without a code): the program of their latest counted click, if that click lies within the program's
    cookie window, and in it the participant the program's attribution model credits most (first touch:
    the first clicker; last touch: the last one) — so the referral's referrer and the credited
    participant agree. None when no click counts."""
    click = latest_credited_click(tenant, cluster=cluster, until=until)
    if click is None:
        return None
    program = click.program
    rules = judging_rules(program=program, version=program_current_version(program=program))
    window_start = until - timedelta(days=int(rules["cookie_window_days"]))
    if click.occurred_at < window_start:
        return None
    sequence = touchpoint_sequence(tenant, program=program, cluster=cluster, until=until)
    credited = [t for t in sequence if t.occurred_at >= window_start and t.participant_id is not None]
    if not credited:
        return click.link
    result = attribution_math.credit(
        rules["attribution_model"],
        [attribution_math.Touch(t.ref, t.participant_id, t.occurred_at) for t in credited],
        conversion_at=until,
        half_life_days=int(rules["time_decay_half_life_days"]),
    )
    if result.top_participant is None or result.top_participant == click.participant_id:
        return click.link
    own_clicks = [t for t in credited if t.participant_id == result.top_participant and t.kind == "click"]
    if own_clicks:
        link = (
            ReferralLink.objects.for_tenant(tenant)
            .filter(clicks__pk=int(own_clicks[-1].ref.split(":")[1]))
            .select_related("participant", "program", "tenant")
            .first()
        )
        if link is not None:
            return link
    return (
        ReferralLink.objects.for_tenant(tenant)
        .filter(participant_id=result.top_participant, channel=Channel.DIRECT)
        .select_related("participant", "program", "tenant")
        .first()
        or click.link
    )


def _code_link(*, tenant: Tenant, referral_code: str, coupon_code: str) -> tuple[ReferralLink | None, str]:
    """The link a referral or coupon code names, and the field at fault when a referral code is unknown
    (an unknown coupon code is evidence only: "" with no link)."""
    if referral_code.strip():
        link = link_for_code(tenant, referral_code)
        return link, ("" if link is not None else "referral_code")
    if coupon_code.strip():
        return link_for_coupon(tenant, coupon_code), ""
    return None, ""


def identity_lock(*, tenant: Tenant, identifiers: list[str]) -> None:
    """Serialise work on one person (a sign-up and a payment of the same customer processed at once):
    a transaction-scoped advisory lock per identifier, taken in sorted order (no deadlocks). Without it,
    a payment processed while the sign-up that establishes its referral commits could miss it."""
    keys = sorted({f"{tenant.pk}:{value}" for value in identifiers if value})
    with connection.cursor() as cursor:
        for key in keys:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [key])


def _orphans_requeue(*, tenant: Tenant, cluster, referral: Referral) -> int:
    """Events of this person that found no referral because they were processed before the referral
    existed (a payment webhook ahead of the sign-up) are processed again after commit."""
    identity = Q()
    if cluster.customer_ids:
        identity |= Q(customer_external_id__in=cluster.customer_ids)
    if cluster.emails:
        identity |= Q(email__in=cluster.emails)
    if cluster.visitor_ids:
        identity |= Q(visitor_id__in=cluster.visitor_ids)
    if not identity:
        return 0
    orphans = list(
        ConversionEvent.objects.for_tenant(tenant)
        .filter(identity, referral__isnull=True, status=ConversionEventStatus.UNATTRIBUTED)
        .values_list("pk", flat=True)
    )
    if not orphans:
        return 0
    ConversionEvent.objects.for_tenant(tenant).filter(pk__in=orphans).update(
        status=ConversionEventStatus.RECEIVED, error=f"Processed again: referral #{referral.pk} now exists."
    )
    from .tasks import process_conversion_event

    for event_id in orphans:
        enqueue_on_commit(process_conversion_event, event_id)
    return len(orphans)


def _fill_blanks(referral: Referral, **values) -> Referral:
    """Complete a referral with details it does not have yet (never overwrite what is known)."""
    changed = []
    for name, value in values.items():
        if value and not getattr(referral, name):
            if name == "referred_email" and (
                Referral.objects.for_tenant(referral.tenant_id)
                .filter(program_id=referral.program_id, referred_email=value)
                .exclude(pk=referral.pk)
                .exists()
            ):
                continue
            setattr(referral, name, value)
            changed.append(name)
    if changed:
        referral.save(update_fields=changed)
    return referral


@transaction.atomic
def signup_record(
    *,
    tenant: Tenant,
    actor: Actor | str,
    email: str,
    referral_code: str = "",
    visitor_id: str = "",
    customer_external_id: str = "",
    name: str = "",
    company: str = "",
    company_size: str = "",
    how_did_you_hear: str = "",
    coupon_code: str = "",
    occurred_at: datetime | None = None,
    industry: str = "",
    employees: int | None = None,
    annual_revenue_minor: int | None = None,
) -> SignupOutcome:
    """The tenant's product reports a sign-up.

    Links the visitor id, e-mail and customer id in the identity graph; finds the person's referral
    (by code, customer id, e-mail or any stitched visitor id) or establishes one: from the referral code,
    the coupon code (a participant's own, or a referral code typed as one), or the person's clicks
    within the cookie window (the participant the program's model credits most); moves it to signed up;
    records the code, coupon and "how did you hear" answer as touchpoints. An unknown referral code is a
    400 on ``referral_code`` and nothing is written; an unknown coupon code is kept as evidence only.
    """
    occurred_at = occurred_at or timezone.now()
    email = normalize_email(email)
    if not email:
        raise ValidationError({"email": "Enter the e-mail address the customer signed up with."})
    link, unknown = _code_link(tenant=tenant, referral_code=referral_code, coupon_code=coupon_code)
    if unknown:
        raise ValidationError({unknown: "Unknown referral code."})
    code_field = "referral_code" if referral_code.strip() else "coupon_code"
    identity_lock(
        tenant=tenant,
        identifiers=[email, normalize_identifier(customer_external_id), normalize_identifier(visitor_id)],
    )
    identity_link(
        tenant=tenant,
        source="sign_up",
        visitor_id=visitor_id,
        email=email,
        customer_external_id=customer_external_id,
    )
    cluster = identity_cluster(tenant, visitor_ids=[visitor_id], emails=[email], customer_ids=[customer_external_id])
    referral = referral_for_identity(tenant, cluster=cluster, program=link.program if link else None)
    created = False
    company_profile = {"industry": industry, "employees": employees, "annual_revenue_minor": annual_revenue_minor}
    if referral is None:
        if link is None:
            clicked = _link_by_model(tenant=tenant, cluster=cluster, until=occurred_at)
            link = clicked if clicked is not None and _link_accepts_referrals(clicked) else None
        if link is not None:
            if not _link_accepts_referrals(link):
                raise ValidationError(
                    {code_field: "This code no longer accepts referrals (link, program or referrer inactive)."}
                )
            referral = referral_create(
                tenant=tenant,
                program=link.program,
                referrer=link.participant,
                link=link,
                actor=actor,
                source=ReferralSource.SIGNUP_API,
                visitor_id=visitor_id,
                email=email,
                name=name,
                company=company,
                company_size=company_size,
                external_id=customer_external_id,
                how_did_you_hear=how_did_you_hear,
                clicked_at=first_click_at(tenant, program=link.program, cluster=cluster),
                established_at=occurred_at,
                **company_profile,
            )
            created = True
    identity = {"visitor_id": visitor_id, "email": email, "customer_external_id": customer_external_id}
    touchpoints = []
    if link is not None and referral_code.strip():
        touchpoints.append(
            touchpoint_record(
                tenant=tenant,
                kind=TouchpointKind.REFERRAL_CODE,
                occurred_at=occurred_at,
                participant=link.participant,
                referral=referral if referral and referral.program_id == link.program_id else None,
                link=link,
                label=link.code,
                dedupe_key=f"signup:code:{email}:{link.code}",
                **identity,
            )
        )
    if coupon_code.strip():
        coupon_link = link_for_coupon(tenant, coupon_code)
        touchpoints.append(
            touchpoint_record(
                tenant=tenant,
                kind=TouchpointKind.COUPON_CODE,
                occurred_at=occurred_at,
                participant=coupon_link.participant if coupon_link else None,
                program=coupon_link.program if coupon_link else (referral.program if referral else None),
                link=coupon_link,
                referral=referral
                if referral and coupon_link and referral.program_id == coupon_link.program_id
                else None,
                label=coupon_code.strip(),
                dedupe_key=f"signup:coupon:{email}:{coupon_code.strip()}",
                **identity,
            )
        )
    if how_did_you_hear.strip():
        named = _participant_named_by(
            tenant=tenant, answer=how_did_you_hear, program=referral.program if referral else None
        )
        touchpoints.append(
            touchpoint_record(
                tenant=tenant,
                kind=TouchpointKind.SELF_REPORTED,
                occurred_at=occurred_at,
                participant=named,
                program=named.program if named else (referral.program if referral else None),
                referral=referral,
                label=how_did_you_hear,
                dedupe_key=f"signup:answer:{email}",
                **identity,
            )
        )
    if referral is not None:
        _fill_blanks(
            referral,
            referred_email=email,
            referred_external_id=normalize_identifier(customer_external_id)[:200],
            referred_name=name.strip()[:200],
            referred_company=company.strip()[:200],
            referred_company_size=company_size,
            how_did_you_hear=how_did_you_hear.strip()[:300],
            visitor_id=normalize_identifier(visitor_id)[:64],
            referred_industry=industry.strip()[:100],
            referred_employees=employees,
            referred_annual_revenue_minor=annual_revenue_minor,
        )
        if referral.status == ReferralStatus.CLICKED:
            referral = referral_sign_up(referral=referral, actor=actor, at=occurred_at, data={"via": "sign-up API"})
        if not created:
            referral = referral_eligibility_enforce(referral=referral, actor=actor)
        referral = referral_establish(referral=referral, at=occurred_at, actor=actor)
        _orphans_requeue(tenant=tenant, cluster=cluster, referral=referral)
    return SignupOutcome(referral=referral, referral_created=created, touchpoints=touchpoints)


def referral_establish(
    *, referral: Referral, at: datetime, actor: Actor | str, queue_settlement: bool = True
) -> Referral:
    """Record that ``referral`` existed at ``at`` (a sign-up, lead or event of that moment). When that is
    earlier than known, the establishment moves back and the credit of every event of the referral is
    decided again from the touchpoints up to the new moment (then its rewards are settled again)."""
    if referral.established_at is not None and referral.established_at <= at:
        return referral
    moved = referral_stage_redate(
        referral=referral, field="established_at", at=at, actor=actor, reason="an earlier event of the referral"
    )
    referral_attribution_refresh(referral=moved, queue_settlement=queue_settlement)
    return moved


def referral_attribution_refresh(*, referral: Referral, queue_settlement: bool = True) -> int:
    """Attribute every settled event of ``referral`` again (its establishment moved), then queue one
    settlement of its rewards. Returns how many events were attributed."""
    events = list(
        ConversionEvent.objects.for_tenant(referral.tenant_id)
        .filter(referral_id=referral.pk, status__in=SETTLED_EVENT_STATUSES)
        .order_by("occurred_at", "external_event_id")
    )
    for event in events:
        attribution_run(event=event, queue_evaluation=False)
    if queue_settlement:
        referral_rewards_settle_queue(referral=referral)
    return len(events)


def _lead_record(
    *,
    tenant: Tenant,
    actor: Actor | str,
    participant: Participant,
    link: ReferralLink | None,
    kind: str,
    source: str,
    email: str,
    name: str,
    company: str,
    company_size: str,
    how_did_you_hear: str,
    qualification: dict,
    visitor_id: str,
    occurred_at: datetime,
    dedupe_key: str,
    refuse_duplicates: bool,
    company_profile: dict | None = None,
) -> Referral:
    program = participant.program
    company_profile = company_profile or {}
    identity_lock(tenant=tenant, identifiers=[email, normalize_identifier(visitor_id)])
    identity_link(tenant=tenant, source=source, visitor_id=visitor_id, email=email)
    referral = Referral.objects.for_tenant(tenant).filter(program=program, referred_email=email).first()
    if referral is not None and refuse_duplicates:
        raise ValidationError(
            {"email": f"{email} has already been referred to this program (referral #{referral.pk})."}
        )
    if referral is None:
        cluster = identity_cluster(tenant, visitor_ids=[visitor_id], emails=[email])
        referral = referral_create(
            tenant=tenant,
            program=program,
            referrer=participant,
            link=link,
            actor=actor,
            source=source,
            visitor_id=visitor_id,
            email=email,
            name=name,
            company=company,
            company_size=company_size,
            how_did_you_hear=how_did_you_hear,
            qualification=qualification,
            clicked_at=first_click_at(tenant, program=program, cluster=cluster),
            established_at=occurred_at,
            **company_profile,
        )
        _orphans_requeue(tenant=tenant, cluster=cluster, referral=referral)
    else:
        _fill_blanks(
            referral,
            referred_name=name.strip()[:200],
            referred_company=company.strip()[:200],
            referred_company_size=company_size,
            how_did_you_hear=how_did_you_hear.strip()[:300],
            visitor_id=normalize_identifier(visitor_id)[:64],
            referred_industry=(company_profile.get("industry") or "").strip()[:100],
            referred_employees=company_profile.get("employees"),
            referred_annual_revenue_minor=company_profile.get("annual_revenue_minor"),
        )
        referral = referral_eligibility_enforce(referral=referral, actor=actor)
    if referral.status == ReferralStatus.CLICKED:
        referral = referral_sign_up(referral=referral, actor=actor, at=occurred_at, data={"via": source})
    touchpoint_record(
        tenant=tenant,
        kind=kind,
        occurred_at=occurred_at,
        participant=participant,
        referral=referral,
        link=link,
        visitor_id=visitor_id,
        email=email,
        label=company,
        dedupe_key=dedupe_key,
        data={"qualification": qualification} if qualification else None,
    )
    if how_did_you_hear.strip():
        named = _participant_named_by(tenant=tenant, answer=how_did_you_hear, program=program)
        touchpoint_record(
            tenant=tenant,
            kind=TouchpointKind.SELF_REPORTED,
            occurred_at=occurred_at,
            participant=named,
            program=named.program if named else program,
            referral=referral,
            visitor_id=visitor_id,
            email=email,
            label=how_did_you_hear,
            dedupe_key=f"{dedupe_key}:answer",
        )
    return referral_establish(referral=referral, at=occurred_at, actor=actor)


QUALIFICATION_FIELDS = ("budget", "authority", "need", "timeline", "notes")


@transaction.atomic
def lead_submit(
    *,
    tenant: Tenant,
    actor: Actor | str,
    name: str,
    email: str,
    company: str,
    participant: Participant | None = None,
    coupon_code: str = "",
    referral_code: str = "",
    company_size: str = "",
    budget: str = "",
    authority: str = "",
    need: str = "",
    timeline: str = "",
    notes: str = "",
    occurred_at: datetime | None = None,
    industry: str = "",
    employees: int | None = None,
    annual_revenue_minor: int | None = None,
) -> Referral:
    """A partner submits a lead with qualifying information (R-11); the API calls this now and the
    partner portal will, with the participant taken from its actor.

    The partner is ``participant``, or the owner of ``coupon_code`` / ``referral_code`` (a code alone
    establishes the lead). Creates a signed-up referral credited to the partner (and a partner-lead
    touchpoint). A lead whose e-mail is already referred to the program is refused on ``email``: the
    first claim stands.
    """
    code_owner, unknown = _code_link(tenant=tenant, referral_code=referral_code, coupon_code=coupon_code)
    code_field = "referral_code" if referral_code.strip() else "coupon_code"
    if unknown or (coupon_code.strip() and not referral_code.strip() and code_owner is None):
        raise ValidationError({code_field: "Unknown code."})
    if participant is None:
        if code_owner is None:
            raise ValidationError(
                {"participant": "Name the participant submitting the lead, or give their coupon_code or referral_code."}
            )
        participant = code_owner.participant
    elif code_owner is not None and code_owner.participant_id != participant.pk:
        raise ValidationError({code_field: "This code belongs to another participant."})
    if participant.tenant_id != tenant.pk:
        raise ValidationError({"participant": "Unknown participant."})
    if participant.status != ParticipantStatus.ACTIVE:
        raise ValidationError({"participant": "Only active participants can submit leads."})
    email = normalize_email(email)
    if not email:
        raise ValidationError({"email": "Enter the lead's work e-mail."})
    if not company.strip():
        raise ValidationError({"company": "Enter the lead's company."})
    if company_size and company_size not in CompanySize.values:
        raise ValidationError({"company_size": f"Choose one of {', '.join(CompanySize.values)}."})
    values = {"budget": budget, "authority": authority, "need": need, "timeline": timeline, "notes": notes}
    qualification = {key: value.strip() for key, value in values.items() if value and value.strip()}
    return _lead_record(
        tenant=tenant,
        actor=actor,
        participant=participant,
        link=code_owner,
        kind=TouchpointKind.PARTNER_LEAD,
        source=ReferralSource.PARTNER_LEAD,
        email=email,
        name=name,
        company=company,
        company_size=company_size,
        how_did_you_hear="",
        qualification=qualification,
        visitor_id="",
        occurred_at=occurred_at or timezone.now(),
        dedupe_key=f"lead:{participant.pk}:{email}",
        refuse_duplicates=True,
        company_profile={"industry": industry, "employees": employees, "annual_revenue_minor": annual_revenue_minor},
    )


@transaction.atomic
def landing_lead_submit(
    *,
    link: ReferralLink,
    name: str,
    email: str,
    company: str,
    company_size: str = "",
    how_did_you_hear: str = "",
    visitor_id: str = "",
) -> Referral:
    """The referred company fills in the lead form on the referrer's landing page.

    The tenant comes from the link. A person already referred to the program keeps their referral;
    this referrer's form still counts as a touchpoint, so attribution can share the credit.
    """
    link = ReferralLink.objects.select_related("participant", "program", "tenant").get(pk=link.pk)
    if not link.is_active or not link.program.is_live or link.participant.status != ParticipantStatus.ACTIVE:
        raise ValidationError({"__all__": "This invitation is no longer active."})
    email = normalize_email(email)
    return _lead_record(
        tenant=link.tenant,
        actor=f"public:landing:{link.code}",
        participant=link.participant,
        link=link,
        kind=TouchpointKind.LEAD_FORM,
        source=ReferralSource.LANDING_FORM,
        email=email,
        name=name,
        company=company,
        company_size=company_size,
        how_did_you_hear=how_did_you_hear,
        qualification={},
        visitor_id=visitor_id,
        occurred_at=timezone.now(),
        dedupe_key=f"landing:{link.code}:{email}",
        refuse_duplicates=False,
    )


# --- conversion events ------------------------------------------------------------------------
class ConversionEventConflict(Exception):
    """The external event id was already received with a different payload."""

    def __init__(self, external_event_id: str):
        super().__init__(external_event_id)
        self.external_event_id = external_event_id


@dataclass(frozen=True)
class ReceivedConversion:
    event: ConversionEvent
    created: bool


MONEY_KINDS = frozenset({ConversionKind.PAYMENT, ConversionKind.REFUND})
# Events whose processing is finished with a referral (attributed or not).
SETTLED_EVENT_STATUSES = (ConversionEventStatus.PROCESSED, ConversionEventStatus.UNATTRIBUTED)
# The stage a matched referral moves to for each kind of event (refunds leave the stage alone).
KIND_TARGET_STAGE = {
    ConversionKind.SIGN_UP: ReferralStatus.SIGNED_UP,
    ConversionKind.QUALIFIED: ReferralStatus.QUALIFIED,
    ConversionKind.PAYMENT: ReferralStatus.CONVERTED,
    ConversionKind.CANCELLATION: ReferralStatus.CHURNED,
}
# Only these kinds may create a referral for a person who clicked a link but has none yet.
KINDS_THAT_CREATE_REFERRALS = frozenset({ConversionKind.SIGN_UP, ConversionKind.QUALIFIED, ConversionKind.PAYMENT})

_INSERT_FIELDS = (
    "tenant",
    "external_event_id",
    "kind",
    "amount_minor",
    "currency",
    "occurred_at",
    "customer_external_id",
    "email",
    "referral_code",
    "coupon_code",
    "visitor_id",
    "raw",
    "raw_body",
    "source",
    "status",
    "error",
    "received_at",
)


def _insert_ignoring_duplicate(event: ConversionEvent) -> int | None:
    """INSERT ... ON CONFLICT (tenant, external_event_id) DO NOTHING RETURNING id.

    Returns the new id, or None when the tenant already has an event with this external id. A
    concurrent duplicate waits for the first insert to commit and then does nothing.
    """
    meta = ConversionEvent._meta
    quote = connection.ops.quote_name
    fields = [meta.get_field(name) for name in _INSERT_FIELDS]
    columns = ", ".join(quote(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    values = [field.get_db_prep_save(getattr(event, field.attname), connection) for field in fields]
    # Identifiers come from the model's metadata and are quoted; every value is a parameter.
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({placeholders}) "  # noqa: S608
        f"ON CONFLICT ({quote('tenant_id')}, {quote('external_event_id')}) DO NOTHING RETURNING {quote('id')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        row = cursor.fetchone()
    return row[0] if row else None


@transaction.atomic
def conversion_event_receive(
    *,
    tenant: Tenant,
    external_event_id: str,
    kind: str,
    occurred_at: datetime,
    raw: dict,
    raw_body: str = "",
    amount_minor: int = 0,
    currency: str = "",
    customer_external_id: str = "",
    email: str = "",
    referral_code: str = "",
    coupon_code: str = "",
    visitor_id: str = "",
    source: str = "api",
    queue_processing: bool = True,
) -> ReceivedConversion:
    """Store a validated inbound conversion raw, once per (tenant, external event id), and queue
    its processing after commit.

    A repeat with the same payload returns the stored event (``created`` False); a repeat with a
    different payload raises ConversionEventConflict. Nothing is matched or attributed here.
    ``queue_processing=False`` leaves processing to the caller (the demo seed processes inline).
    """
    event = ConversionEvent(
        tenant=tenant,
        external_event_id=external_event_id,
        kind=kind,
        amount_minor=amount_minor,
        currency=currency,
        occurred_at=occurred_at,
        customer_external_id=normalize_identifier(customer_external_id),
        email=normalize_email(email),
        referral_code=normalize_identifier(referral_code),
        coupon_code="".join(coupon_code.split())[:64],
        visitor_id=normalize_identifier(visitor_id),
        raw=raw,
        raw_body=raw_body,
        source=source,
        status=ConversionEventStatus.RECEIVED,
        received_at=timezone.now(),
    )
    new_id = _insert_ignoring_duplicate(event)
    if new_id is not None:
        from .tasks import process_conversion_event

        if queue_processing:
            enqueue_on_commit(process_conversion_event, new_id)
        return ReceivedConversion(event=ConversionEvent.objects.for_tenant(tenant).get(pk=new_id), created=True)
    existing = ConversionEvent.objects.for_tenant(tenant).get(external_event_id=external_event_id)
    if existing.raw != raw:
        raise ConversionEventConflict(external_event_id)
    return ReceivedConversion(event=existing, created=False)


def _company_profile(event: ConversionEvent) -> dict:
    """What an event says about the referred company (conversions API: industry, employees,
    annual_revenue_minor), read from the stored payload."""
    raw = event.raw if isinstance(event.raw, dict) else {}
    profile: dict = {"industry": str(raw.get("industry") or "")[:100]}
    for name in ("employees", "annual_revenue_minor"):
        value = raw.get(name)
        profile[name] = value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
    return profile


def _referral_for_event(*, event: ConversionEvent, cluster, actor: Actor, notes: list[str]) -> Referral | None:
    tenant = event.tenant
    can_create = event.kind in KINDS_THAT_CREATE_REFERRALS
    link, unknown = _code_link(tenant=tenant, referral_code=event.referral_code, coupon_code=event.coupon_code)
    if unknown:
        notes.append(f"referral_code {event.referral_code!r} is not a code of this workspace.")
    elif event.coupon_code and not event.referral_code and link is None:
        notes.append(f"coupon_code {event.coupon_code!r} is not a code of this workspace (kept as evidence).")
    referral = referral_for_identity(tenant, cluster=cluster, program=link.program if link else None)
    if referral is not None or not can_create:
        return referral
    if link is None:
        link = _link_by_model(tenant=tenant, cluster=cluster, until=event.occurred_at)
    if link is None or not _link_accepts_referrals(link):
        return None
    referral = referral_create(
        tenant=tenant,
        program=link.program,
        referrer=link.participant,
        link=link,
        actor=actor,
        source=ReferralSource.CONVERSION,
        visitor_id=event.visitor_id,
        email=event.email,
        external_id=event.customer_external_id,
        clicked_at=first_click_at(tenant, program=link.program, cluster=cluster),
        established_at=event.occurred_at,
        **_company_profile(event),
    )
    _orphans_requeue(tenant=tenant, cluster=cluster, referral=referral)
    return referral


def _advance_for_event(*, event: ConversionEvent, referral: Referral, actor: Actor, notes: list[str]) -> Referral:
    """Move the referral's stage for ``event`` so that the outcome depends on the set of events, not on
    their order: the conversion date is the earliest payment's, the churn date the earliest
    cancellation's, and a referral with a cancellation is churned even if a payment is processed after it."""
    target = KIND_TARGET_STAGE.get(event.kind)
    if target is None:
        return referral
    reason = f"{event.get_kind_display()} event {event.external_event_id}"
    if event.kind == ConversionKind.PAYMENT and referral.status in (ReferralStatus.CONVERTED, ReferralStatus.CHURNED):
        if referral.converted_at is None or event.occurred_at < referral.converted_at:
            referral = referral_stage_redate(
                referral=referral, field="converted_at", at=event.occurred_at, actor=actor, reason=reason
            )
        return referral
    if event.kind == ConversionKind.CANCELLATION and referral.status == ReferralStatus.CHURNED:
        if referral.churned_at is None or event.occurred_at < referral.churned_at:
            referral = referral_stage_redate(
                referral=referral, field="churned_at", at=event.occurred_at, actor=actor, reason=reason
            )
        return referral
    if referral.status == target:
        return referral
    if target not in REFERRAL_MOVES[referral.status]:
        notes.append(
            f"stage unchanged: a {referral.get_status_display().lower()} referral does not move to "
            f"{ReferralStatus(target).label.lower()}."
        )
        field = STAGE_TIMESTAMP_FIELDS[target]
        if referral.status != ReferralStatus.REJECTED and field in ("signed_up_at", "qualified_at"):
            referral = referral_stage_redate(
                referral=referral, field=field, at=event.occurred_at, actor=actor, reason=reason
            )
        return referral
    return STAGE_SERVICES[target](
        referral=referral, actor=actor, at=event.occurred_at, reason=reason, data={"conversion_event": event.pk}
    )


def conversion_event_process(*, event_id: int) -> ConversionEvent | None:
    """Process a stored conversion event once: match it to a referral (creating one from the
    person's latest click within the cookie window when none exists), move the referral's stage,
    and attribute it.

    Idempotent: an event that is no longer ``received`` is returned untouched (use attribution_run
    to recompute credit). A currency other than the program's fails the event with the reason
    recorded; amounts are never converted. The event row is locked for the whole run, so
    concurrent runs of the same event serialize and the second one does nothing.
    """
    with transaction.atomic():
        event = ConversionEvent.objects.select_for_update().filter(pk=event_id).first()
        if event is None or event.status != ConversionEventStatus.RECEIVED:
            return event
        actor = system_actor(event.tenant)
        notes: list[str] = []
        try:
            with transaction.atomic():
                status, referral = _process_locked_event(event=event, actor=actor, notes=notes)
        except ValidationError as exc:
            status, referral = ConversionEventStatus.FAILED, None
            notes.append("; ".join(f"{field}: {', '.join(messages)}" for field, messages in _error_items(exc)))
        event.referral = referral
        event.status = status
        event.error = "\n".join(notes)
        event.processed_at = timezone.now()
        event.save(update_fields=["referral", "status", "error", "processed_at"])
        return event


def _error_items(exc: ValidationError):
    if hasattr(exc, "error_dict"):
        return exc.message_dict.items()
    return [("error", exc.messages)]


def _process_locked_event(*, event: ConversionEvent, actor: Actor, notes: list[str]) -> tuple[str, Referral | None]:
    tenant = event.tenant
    identity_lock(tenant=tenant, identifiers=[event.email, event.customer_external_id, event.visitor_id])
    identity_link(
        tenant=tenant,
        source=f"conversion:{event.kind}",
        visitor_id=event.visitor_id,
        email=event.email,
        customer_external_id=event.customer_external_id,
    )
    cluster = identity_cluster(
        tenant, visitor_ids=[event.visitor_id], emails=[event.email], customer_ids=[event.customer_external_id]
    )
    referral = _referral_for_event(event=event, cluster=cluster, actor=actor, notes=notes)
    code_link = link_for_code(tenant, event.referral_code) if event.referral_code else None
    if code_link is not None:
        touchpoint_record(
            tenant=tenant,
            kind=TouchpointKind.REFERRAL_CODE,
            occurred_at=event.occurred_at,
            participant=code_link.participant,
            referral=referral if referral and referral.program_id == code_link.program_id else None,
            link=code_link,
            visitor_id=event.visitor_id,
            email=event.email,
            customer_external_id=event.customer_external_id,
            label=code_link.code,
            dedupe_key=f"conversion:code:{event.pk}",
        )
    if event.coupon_code:
        coupon_link = link_for_coupon(tenant, event.coupon_code)
        touchpoint_record(
            tenant=tenant,
            kind=TouchpointKind.COUPON_CODE,
            occurred_at=event.occurred_at,
            participant=coupon_link.participant if coupon_link else None,
            program=coupon_link.program if coupon_link else (referral.program if referral else None),
            referral=referral if referral and coupon_link and referral.program_id == coupon_link.program_id else None,
            link=coupon_link,
            visitor_id=event.visitor_id,
            email=event.email,
            customer_external_id=event.customer_external_id,
            label=event.coupon_code,
            dedupe_key=f"conversion:coupon:{event.pk}",
        )
    if referral is None:
        notes.append("No referral matched this customer: nothing to attribute.")
        return ConversionEventStatus.UNATTRIBUTED, None
    if referral.status == ReferralStatus.REJECTED:
        notes.append(f"Referral #{referral.pk} was rejected: nothing is attributed.")
        return ConversionEventStatus.UNATTRIBUTED, referral
    version = referral.rule_version or program_current_version(program=referral.program)
    program_currency = judging_rules(program=referral.program, version=version)["currency"]
    if (event.kind in MONEY_KINDS or event.amount_minor) and event.currency != program_currency:
        notes.append(
            f"currency: the event is in {event.currency or '(none)'} but the program pays in {program_currency}; "
            "amounts are never converted between currencies. Resend the event in the program's currency."
        )
        return ConversionEventStatus.FAILED, referral
    if referral.status in (ReferralStatus.CLICKED, ReferralStatus.SIGNED_UP, ReferralStatus.QUALIFIED):
        profile = _company_profile(event)
        _fill_blanks(
            referral,
            referred_industry=profile["industry"],
            referred_employees=profile["employees"],
            referred_annual_revenue_minor=profile["annual_revenue_minor"],
        )
        problems = referral_eligibility_problems(referral=referral)
        if problems:
            referral_eligibility_enforce(referral=referral, actor=actor)
            notes.append(f"Referral #{referral.pk} is not eligible: {'; '.join(problems)}. Nothing is attributed.")
            return ConversionEventStatus.UNATTRIBUTED, referral
    referral = _advance_for_event(event=event, referral=referral, actor=actor, notes=notes)
    referral = referral_establish(referral=referral, at=event.occurred_at, actor=actor, queue_settlement=False)
    event.referral = referral
    event.save(update_fields=["referral"])
    attributions = attribution_run(event=event)
    if not attributions:
        notes.append("No touchpoint of a participant within the cookie window: nothing to attribute.")
        return ConversionEventStatus.UNATTRIBUTED, referral
    return ConversionEventStatus.PROCESSED, referral


# --- attribution --------------------------------------------------------------------------------
@transaction.atomic
def attribution_run(*, event: ConversionEvent, queue_evaluation: bool = True) -> list[Attribution]:
    """(Re)compute the attribution of one event and store one row per credited participant.

    The credit is decided at the referral's establishment (``Referral.established_at``: its sign-up or
    earliest event): only touchpoints up to that moment and within the cookie window before it count,
    so every event of a referral — a payment a year later too — is credited the same way, and touches
    after the sign-up never move it. The referral's referrer is kept equal to the participant credited
    most (``_referrer_agree``).

    Idempotent: the event row is locked, rows are updated in place (stable ids) and rows of
    participants no longer credited are deleted, so running it twice, or concurrently, leaves one
    set of rows with the same values. Shares sum to exactly 1, amounts to exactly the event's
    amount (split from the exact shares). The model, window and half-life come from the referral's
    rule version. ``queue_evaluation`` queues the settlement of the referral's rewards after commit.
    """
    # Lock first, read relations after: a locking SELECT that waited for another transaction
    # re-checks only the locked row, so columns joined in the same statement could be stale.
    event = ConversionEvent.objects.for_tenant(event.tenant_id).select_for_update().get(pk=event.pk)
    tenant = event.tenant
    existing = {
        row.participant_id: row for row in Attribution.objects.for_tenant(tenant).filter(conversion_event=event)
    }
    referral = event.referral
    if referral is None or referral.status == ReferralStatus.REJECTED:
        Attribution.objects.for_tenant(tenant).filter(conversion_event=event).delete()
        return []
    program = referral.program
    version = referral.rule_version or program_current_version(program=program)
    decision = referral_credit(
        referral,
        extra_identity={
            "visitor_id": event.visitor_id,
            "email": event.email,
            "customer_external_id": event.customer_external_id,
        },
    )
    model, anchor, window_start, credited = decision.model, decision.anchor, decision.window_start, decision.credited
    result = decision.result
    _referrer_agree(referral=referral, credit=result, model=model)
    order = list(result.participant_shares)
    amounts = dict(
        zip(
            order,
            attribution_math.split_amount(event.amount_minor, [result.participant_exact[pid] for pid in order]),
            strict=True,
        )
    )
    credited_json = [
        {**touch.as_json(), "share": str(share)} for touch, share in zip(credited, result.touch_shares, strict=True)
    ]
    evidence = {
        "model": model,
        "rule_version": version.number,
        "conversion": {
            "id": event.pk,
            "external_event_id": event.external_event_id,
            "kind": event.kind,
            "occurred_at": event.occurred_at.isoformat(),
            "amount_minor": event.amount_minor,
            "currency": event.currency,
        },
        "established_at": anchor.isoformat(),
        "cookie_window_days": decision.cookie_window_days,
        "window_start": window_start.isoformat(),
        "half_life_days": decision.half_life_days,
        "identity": decision.cluster.as_json(),
        "sequence": credited_json,
        "uncredited": [touch.as_json() for touch in decision.in_window if touch.participant_id is None],
        "excluded_before_window": [touch.as_json() for touch in decision.sequence if touch.occurred_at < window_start],
    }
    now = timezone.now()
    rows = []
    for participant_id, share in result.participant_shares.items():
        values = {
            "referral": referral,
            "program": program,
            "rule_version": version,
            "model": model,
            "share": share,
            "exact_share": attribution_math.fraction_text(result.participant_exact[participant_id]),
            "amount_minor": amounts[participant_id],
            "currency": event.currency,
            "touchpoints": [item for item in credited_json if item["participant"] == participant_id],
            "evidence": evidence,
            "computed_at": now,
        }
        row = existing.pop(participant_id, None)
        if row is None:
            row = Attribution.objects.create(
                tenant=tenant, conversion_event=event, participant_id=participant_id, **values
            )
        else:
            for name, value in values.items():
                setattr(row, name, value)
            row.save(update_fields=list(values))
        rows.append(row)
    if existing:
        Attribution.objects.for_tenant(tenant).filter(pk__in=[row.pk for row in existing.values()]).delete()
    if queue_evaluation:
        reward_evaluation_queue(event=event)
    return rows


def _referrer_agree(*, referral: Referral, credit: attribution_math.Credit, model: str) -> None:
    """The referral's referrer is a participant its program's model credits most (first touch: the
    first clicker), so "who referred them" and "who is paid" never disagree. A referrer of record whose
    share equals the largest stays; audited when it changes."""
    participant_id = credit.top_participant
    if participant_id is None or participant_id == referral.referrer_id:
        return
    exact = credit.participant_exact
    if referral.referrer_id in exact and exact[referral.referrer_id] >= exact.get(participant_id, 0):
        return
    locked = Referral.objects.for_tenant(referral.tenant_id).select_for_update().get(pk=referral.pk)
    if locked.referrer_id == participant_id:
        return
    previous = locked.referrer_id
    link = (
        ReferralLink.objects.for_tenant(referral.tenant_id)
        .filter(participant_id=participant_id, channel=Channel.DIRECT)
        .first()
    )
    locked.referrer_id = participant_id
    locked.link = link
    locked.save(update_fields=["referrer", "link"])
    referral.referrer_id, referral.link = participant_id, link
    audit_record(
        tenant=locked.tenant,
        actor=system_actor(locked.tenant),
        action="referral.referrer_credited",
        obj=locked,
        from_state=locked.status,
        to_state=locked.status,
        reason=f"The program's attribution model ({model}) credits participant #{participant_id} most.",
        data={"from": previous, "to": participant_id},
    )


def reward_evaluation_queue(*, event: ConversionEvent) -> None:
    """The one place reward evaluation plugs into attribution: once the attribution of ``event`` commits,
    its referral's rewards are settled from the set of its events (idempotent; see rewards/evaluation.py)."""
    if event.referral_id is not None:
        referral_rewards_settle_queue(referral=event.referral)


def referral_rewards_settle_queue(*, referral: Referral) -> None:
    """After commit, the referral's rewards are settled again from the set of its events
    (``rewards.settle_referral``): a rejection reverses what it earned, a re-dated conversion moves them."""
    from rewards.tasks import settle_referral

    enqueue_on_commit(settle_referral, referral.pk, once=True)


def referral_stage_notify(*, referral: Referral, stage: str) -> None:
    """The hook participant messages plug into: after commit, the referrer is told their referral was
    received or qualified (``rewards.message_referral_stage``; sent once per referral and stage)."""
    from rewards.tasks import message_referral_stage

    enqueue_on_commit(message_referral_stage, referral.pk, stage)
