"""Writes for referral links and referrals."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
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
    normalize_email,
    normalize_identifier,
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
REFERRAL_MOVES: dict[str, frozenset[str]] = {
    ReferralStatus.CLICKED: frozenset(
        {ReferralStatus.SIGNED_UP, ReferralStatus.QUALIFIED, ReferralStatus.CONVERTED, ReferralStatus.REJECTED}
    ),
    ReferralStatus.SIGNED_UP: frozenset({ReferralStatus.QUALIFIED, ReferralStatus.CONVERTED, ReferralStatus.REJECTED}),
    ReferralStatus.QUALIFIED: frozenset({ReferralStatus.CONVERTED, ReferralStatus.REJECTED}),
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
) -> Referral:
    """Create a referral (status clicked) judged under the program's current rule version.

    Guarantees: the program and referrer belong to ``tenant`` and the program is live; one referral
    per referred e-mail and program (a duplicate is a ValidationError on ``email``); the new
    referral has passed ``referral_screen``.
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
                source=source,
                status=ReferralStatus.CLICKED,
                clicked_at=clicked_at,
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
    return referral


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
) -> SignupOutcome:
    """The tenant's product reports a sign-up.

    Links the visitor id, e-mail and customer id in the identity graph; finds the person's referral
    (by code, customer id, e-mail or any stitched visitor id) or creates one from the code or the
    latest click within the cookie window; moves it to signed up; records the code, coupon and
    "how did you hear" answer as touchpoints. A code of another tenant is unknown (400 on
    ``referral_code``) and nothing is written.
    """
    occurred_at = occurred_at or timezone.now()
    email = normalize_email(email)
    if not email:
        raise ValidationError({"email": "Enter the e-mail address the customer signed up with."})
    link = None
    if referral_code.strip():
        link = link_for_code(tenant, referral_code)
        if link is None:
            raise ValidationError({"referral_code": "Unknown referral code."})
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
    if referral is None:
        if link is None:
            click = latest_credited_click(tenant, cluster=cluster, until=occurred_at)
            if (
                click is not None
                and _link_accepts_referrals(click.link)
                and _within_window(
                    program=click.program,
                    version=program_current_version(program=click.program),
                    at=click.occurred_at,
                    now=occurred_at,
                )
            ):
                link = click.link
        if link is not None:
            if not _link_accepts_referrals(link):
                raise ValidationError(
                    {"referral_code": "This link no longer accepts referrals (link, program or referrer inactive)."}
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
            )
            created = True
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
        )
        if referral.status == ReferralStatus.CLICKED:
            referral = referral_sign_up(referral=referral, actor=actor, at=occurred_at, data={"via": "sign-up API"})
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
        coupon_link = link_for_code(tenant, coupon_code)
        touchpoints.append(
            touchpoint_record(
                tenant=tenant,
                kind=TouchpointKind.COUPON_CODE,
                occurred_at=occurred_at,
                participant=coupon_link.participant if coupon_link else None,
                program=coupon_link.program if coupon_link else (referral.program if referral else None),
                link=coupon_link,
                label=coupon_code,
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
    return SignupOutcome(referral=referral, referral_created=created, touchpoints=touchpoints)


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
) -> Referral:
    program = participant.program
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
        )
    else:
        _fill_blanks(
            referral,
            referred_name=name.strip()[:200],
            referred_company=company.strip()[:200],
            referred_company_size=company_size,
            how_did_you_hear=how_did_you_hear.strip()[:300],
            visitor_id=normalize_identifier(visitor_id)[:64],
        )
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
    return referral


QUALIFICATION_FIELDS = ("budget", "authority", "need", "timeline", "notes")


@transaction.atomic
def lead_submit(
    *,
    tenant: Tenant,
    actor: Actor | str,
    participant: Participant,
    name: str,
    email: str,
    company: str,
    company_size: str = "",
    budget: str = "",
    authority: str = "",
    need: str = "",
    timeline: str = "",
    notes: str = "",
    occurred_at: datetime | None = None,
) -> Referral:
    """A partner submits a lead with qualifying information (R-11); the API calls this now and the
    partner portal will, with the participant taken from its actor.

    Creates a signed-up referral credited to the partner (and a partner-lead touchpoint). A lead
    whose e-mail is already referred to the program is refused on ``email``: the first claim stands.
    """
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
        link=None,
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


def _referral_for_event(*, event: ConversionEvent, cluster, actor: Actor, notes: list[str]) -> Referral | None:
    tenant = event.tenant
    can_create = event.kind in KINDS_THAT_CREATE_REFERRALS
    link = None
    if event.referral_code:
        link = link_for_code(tenant, event.referral_code)
        if link is None:
            notes.append(f"referral_code {event.referral_code!r} is not a code of this workspace.")
    referral = referral_for_identity(tenant, cluster=cluster, program=link.program if link else None)
    if referral is not None or not can_create:
        return referral
    if link is None:
        click = latest_credited_click(tenant, cluster=cluster, until=event.occurred_at)
        if click is not None and _within_window(
            program=click.program,
            version=program_current_version(program=click.program),
            at=click.occurred_at,
            now=event.occurred_at,
        ):
            link = click.link
    if link is None or not _link_accepts_referrals(link):
        return None
    return referral_create(
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
    )


def _advance_for_event(*, event: ConversionEvent, referral: Referral, actor: Actor, notes: list[str]) -> Referral:
    target = KIND_TARGET_STAGE.get(event.kind)
    if target is None or referral.status == target:
        return referral
    if target not in REFERRAL_MOVES[referral.status]:
        notes.append(
            f"stage unchanged: a {referral.get_status_display().lower()} referral does not move to "
            f"{ReferralStatus(target).label.lower()}."
        )
        return referral
    return STAGE_SERVICES[target](
        referral=referral,
        actor=actor,
        at=event.occurred_at,
        reason=f"{event.get_kind_display()} event {event.external_event_id}",
        data={"conversion_event": event.pk},
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
    referral = _advance_for_event(event=event, referral=referral, actor=actor, notes=notes)
    event.referral = referral
    event.save(update_fields=["referral"])
    attributions = attribution_run(event=event)
    if not attributions:
        notes.append("No touchpoint of a participant within the cookie window: nothing to attribute.")
        return ConversionEventStatus.UNATTRIBUTED, referral
    return ConversionEventStatus.PROCESSED, referral


# --- attribution --------------------------------------------------------------------------------
@transaction.atomic
def attribution_run(*, event: ConversionEvent) -> list[Attribution]:
    """(Re)compute the attribution of one event and store one row per credited participant.

    Idempotent: the event row is locked, rows are updated in place (stable ids) and rows of
    participants no longer credited are deleted, so running it twice, or concurrently, leaves one
    set of rows with the same values. Shares sum to exactly 1, amounts to exactly the event's
    amount. The model, window and half-life come from the referral's rule version.
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
    rules = judging_rules(program=program, version=version)
    model = rules["attribution_model"]
    cluster = identity_cluster(
        tenant,
        visitor_ids=[event.visitor_id, referral.visitor_id],
        emails=[event.email, referral.referred_email],
        customer_ids=[event.customer_external_id, referral.referred_external_id],
    )
    sequence = touchpoint_sequence(tenant, program=program, cluster=cluster, until=event.occurred_at)
    window_start = event.occurred_at - timedelta(days=int(rules["cookie_window_days"]))
    in_window = [touch for touch in sequence if touch.occurred_at >= window_start]
    credited = [touch for touch in in_window if touch.participant_id is not None]
    if not credited:
        Attribution.objects.for_tenant(tenant).filter(conversion_event=event).delete()
        reward_evaluation_queue(event=event)  # refunds and cancellations act without attribution
        return []
    result = attribution_math.credit(
        model,
        [attribution_math.Touch(t.ref, t.participant_id, t.occurred_at) for t in credited],
        conversion_at=event.occurred_at,
        half_life_days=int(rules["time_decay_half_life_days"]),
        amount_minor=event.amount_minor,
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
        "cookie_window_days": int(rules["cookie_window_days"]),
        "window_start": window_start.isoformat(),
        "half_life_days": int(rules["time_decay_half_life_days"]),
        "identity": cluster.as_json(),
        "sequence": credited_json,
        "uncredited": [touch.as_json() for touch in in_window if touch.participant_id is None],
        "excluded_before_window": [touch.as_json() for touch in sequence if touch.occurred_at < window_start],
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
            "amount_minor": result.participant_amounts[participant_id],
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
    reward_evaluation_queue(event=event)
    return rows


def reward_evaluation_queue(*, event: ConversionEvent) -> None:
    """The one place reward evaluation plugs into attribution: once the attribution of ``event`` commits,
    ``rewards.evaluate_conversion`` turns it into rewards (idempotent; see rewards/evaluation.py)."""
    from rewards.tasks import evaluate_conversion

    enqueue_on_commit(evaluate_conversion, event.pk)


def referral_stage_notify(*, referral: Referral, stage: str) -> None:
    """The hook participant messages plug into: after commit, the referrer is told their referral was
    received or qualified (``rewards.message_referral_stage``; sent once per referral and stage)."""
    from rewards.tasks import message_referral_stage

    enqueue_on_commit(message_referral_stage, referral.pk, stage)
