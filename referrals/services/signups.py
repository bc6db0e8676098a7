"""Sign-ups and leads: how a referral is established (a click in the window, a referral code, a coupon code)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Min
from django.utils import timezone

from programs.models import Participant, ParticipantStatus, Program, ProgramVersion
from programs.services import judging_rules, program_current_version
from referral_platform.celery import enqueue_on_commit
from referral_platform.db.prepared import execute_prepared
from referral_platform.hooks import hooks
from referral_platform.tenancy.actors import Actor
from referral_platform.tenancy.models import Tenant
from referral_platform.tenancy.services import audit_record
from referrals import attribution as attribution_math
from referrals.models import (
    SETTLED_EVENT_STATUSES,
    Channel,
    CompanySize,
    ConversionEvent,
    ConversionEventStatus,
    Referral,
    ReferralLink,
    ReferralSource,
    ReferralStatus,
    Touchpoint,
    TouchpointKind,
)
from referrals.selectors import (
    EARLIEST_UNREAD,
    first_click_at,
    identity_cluster,
    latest_credited_click,
    link_for_code,
    link_for_coupon,
    normalize_email,
    normalize_identifier,
    referral_for_identity,
    touchpoint_sequence,
)

from .attribution import attribution_run
from .identity import identity_link, identity_lock, participant_named_by, touchpoint_record
from .stages import referral_create, referral_eligibility_enforce, referral_sign_up, referral_stage_redate


@dataclass(frozen=True)
class SignupOutcome:
    referral: Referral | None
    referral_created: bool
    touchpoints: list[Touchpoint]


def _within_window(*, program: Program, version: ProgramVersion, at: datetime, now: datetime) -> bool:
    rules = judging_rules(program=program, version=version)
    return at >= now - timedelta(days=int(rules["cookie_window_days"]))


def link_accepts_referrals(link: ReferralLink) -> bool:
    return link.is_active and link.program.is_live and link.participant.status == ParticipantStatus.ACTIVE


def link_by_model(*, tenant: Tenant, cluster, until: datetime) -> ReferralLink | None:
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


def code_link(*, tenant: Tenant, referral_code: str, coupon_code: str) -> tuple[ReferralLink | None, str]:
    """The link a referral or coupon code names, and the field at fault when a referral code is unknown
    (an unknown coupon code is evidence only: "" with no link)."""
    if referral_code.strip():
        link = link_for_code(tenant, referral_code)
        return link, ("" if link is not None else "referral_code")
    if coupon_code.strip():
        return link_for_coupon(tenant, coupon_code), ""
    return None, ""


def orphans_statement(*, tenant_id: int, cluster, referral_id: int) -> tuple[str, list] | None:
    """``orphans_requeue``'s UPDATE and its values (None: the person has no identifier). The status is written into
    the text, so a prepared statement's generic plan can use these events' partial indexes
    (``conversion_orphan_*_idx``: one lookup per identifier, not a read of every event of the workspace)."""
    identity = [
        ("customer_external_id", sorted(cluster.customer_ids)),
        ("email", sorted(cluster.emails)),
        ("visitor_id", sorted(cluster.visitor_ids)),
    ]
    identity = [(column, values) for column, values in identity if values]
    if not identity:
        return None
    matches = " OR ".join(f"{column} = ANY(%s)" for column, _values in identity)
    orphaned = f"referral_id IS NULL AND status = '{ConversionEventStatus.UNATTRIBUTED.value}'"
    return (
        "UPDATE referrals_conversionevent SET status = %s, error = %s "  # noqa: S608 - no input in the text
        f"WHERE tenant_id = %s AND {orphaned} AND ({matches}) RETURNING id",
        [
            ConversionEventStatus.RECEIVED,
            f"Processed again: referral #{referral_id} now exists.",
            tenant_id,
            *(values for _column, values in identity),
        ],
    )


def orphans_requeue(*, tenant: Tenant, cluster, referral: Referral) -> int:
    """Events of this person that found no referral because they were processed before the referral
    existed (a payment webhook ahead of the sign-up) are processed again after commit. One statement: the
    UPDATE finds them (hand-written, issue 15: every new referral asks)."""
    statement = orphans_statement(tenant_id=tenant.pk, cluster=cluster, referral_id=referral.pk)
    if statement is None:
        return 0
    with connection.cursor() as cursor:
        execute_prepared(cursor, *statement)
        orphans = sorted(pk for (pk,) in cursor.fetchall())
    from referrals.tasks import process_conversion_event

    for event_id in orphans:
        enqueue_on_commit(process_conversion_event, event_id)
    return len(orphans)


def fill_blanks(referral: Referral, **values) -> Referral:
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


def claimed_link(*, tenant: Tenant, email: str, company: str, at: datetime) -> tuple[ReferralLink | None, object]:
    """When a partner's deal registration protects this account (the ``account_owner`` hook, answered by
    partners), the referral is established for that partner and nobody else: their direct link, and the
    claim (with its evidence) to record as a partner-registration touchpoint."""
    claim = hooks.account_owner(tenant=tenant, program=None, email=email, company=company, at=at)
    if claim is None:
        return None, None
    link = (
        ReferralLink.objects.for_tenant(tenant)
        .select_related("participant", "program", "tenant")
        .filter(participant=claim.participant, channel=Channel.DIRECT)
        .first()
    )
    return link, claim


def claim_touchpoint_record(*, tenant: Tenant, claim, referral: Referral, at: datetime, identity: dict) -> None:
    """The partner's claim as a touchpoint of the referral: attribution credits it alone (docs/attribution.md)."""
    touchpoint_record(
        tenant=tenant,
        kind=TouchpointKind.PARTNER_REGISTRATION,
        occurred_at=at,
        participant=claim.participant,
        referral=referral if referral.program_id == claim.participant.program_id else None,
        label=str(claim.evidence.get("deal", ""))[:300],
        dedupe_key=f"claim:{referral.pk}:{claim.participant.pk}",
        data=claim.evidence,
        **identity,
    )


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
    link, unknown = code_link(tenant=tenant, referral_code=referral_code, coupon_code=coupon_code)
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
    claim = None
    if referral is None:
        claimed, claim = claimed_link(tenant=tenant, email=email, company=company, at=occurred_at)
        link = claimed or link
        if link is None:
            clicked = link_by_model(tenant=tenant, cluster=cluster, until=occurred_at)
            link = clicked if clicked is not None and link_accepts_referrals(clicked) else None
        if link is not None:
            if not link_accepts_referrals(link):
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
    if created and claim is not None:
        claim_touchpoint_record(tenant=tenant, claim=claim, referral=referral, at=occurred_at, identity=identity)
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
        named = participant_named_by(
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
        fill_blanks(
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
        referral = referral_signed_up_at(referral=referral, at=occurred_at, actor=actor, via="sign-up API")
        if not created:
            referral = referral_eligibility_enforce(referral=referral, actor=actor)
        referral = referral_establish(referral=referral, actor=actor)
        orphans_requeue(tenant=tenant, cluster=cluster, referral=referral)
    return SignupOutcome(referral=referral, referral_created=created, touchpoints=touchpoints)


def referral_establish(
    *,
    referral: Referral,
    at: datetime | None = None,
    actor: Actor | str,
    queue_settlement: bool = True,
    created: bool = False,
    earliest=EARLIEST_UNREAD,
) -> Referral:
    """Keep ``established_at`` equal to when the referral was established, whatever order its facts
    arrive in: its earliest sign-up (``signed_up_at``: the sign-up API, a lead, a sign-up event) or,
    without one, its earliest conversion event (``at`` adds the event being processed). When it moves, the
    credit of every event of the referral is decided again from the touchpoints up to the new moment, and
    its rewards are settled again. ``created``: the referral was inserted in this very transaction, so none of
    its events is settled yet (their earliest moment is not read). ``earliest``: that moment as read with the
    referral in this transaction (``earliest_settled_as_read``), not read again."""
    target = referral.signed_up_at
    if target is None:
        if created:
            earliest = None
        elif earliest is EARLIEST_UNREAD:
            earliest = (
                ConversionEvent.objects.for_tenant(referral.tenant_id)
                .filter(referral_id=referral.pk, status__in=SETTLED_EVENT_STATUSES)
                .aggregate(earliest=Min("occurred_at"))["earliest"]
            )
        moments = [moment for moment in (earliest, at) if moment is not None]
        target = min(moments) if moments else referral.established_at or referral.created_at
    if referral.established_at == target:
        return referral
    locked = Referral.objects.for_tenant(referral.tenant_id).select_for_update(of=("self",)).get(pk=referral.pk)
    previous = locked.established_at
    locked.established_at = target
    locked.save(update_fields=["established_at"])
    audit_record(
        tenant=locked.tenant,
        actor=actor,
        action="referral.established_redated",
        obj=locked,
        from_state=locked.status,
        to_state=locked.status,
        reason="its earliest sign-up, or without one its earliest event",
        data={"from": previous.isoformat() if previous else None, "to": target.isoformat()},
    )
    referral_attribution_refresh(referral=locked, queue_settlement=queue_settlement)
    return locked


def referral_signed_up_at(*, referral: Referral, at: datetime, actor: Actor | str, via: str) -> Referral:
    """A sign-up of the referral happened at ``at``: a clicked referral signs up; one further along keeps its
    stage and records the earliest sign-up date."""
    if referral.status == ReferralStatus.CLICKED:
        return referral_sign_up(referral=referral, actor=actor, at=at, data={"via": via})
    if referral.status == ReferralStatus.REJECTED:
        return referral
    return referral_stage_redate(referral=referral, field="signed_up_at", at=at, actor=actor, reason=f"sign-up ({via})")


def referral_attribution_refresh(*, referral: Referral, queue_settlement: bool = True) -> int:
    """Attribute every settled event of ``referral`` again (its establishment moved), then queue one
    settlement of its rewards. Returns how many events were attributed."""
    events = list(
        ConversionEvent.objects.for_tenant(referral.tenant_id)
        .filter(referral_id=referral.pk, status__in=SETTLED_EVENT_STATUSES)
        .order_by("occurred_at", "external_event_id")
    )
    for event in events:
        attribution_run(event=event)
    if queue_settlement:
        hooks.referral_changed(referral=referral, change="reattributed")
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
        _claimed, claim = claimed_link(tenant=tenant, email=email, company=company, at=occurred_at)
        if claim is not None and claim.participant.pk != participant.pk:
            raise ValidationError(
                {"company": "This account is protected by another partner's registered deal; the first claim stands."}
            )
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
        orphans_requeue(tenant=tenant, cluster=cluster, referral=referral)
    else:
        fill_blanks(
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
    referral = referral_signed_up_at(referral=referral, at=occurred_at, actor=actor, via=source)
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
        named = participant_named_by(tenant=tenant, answer=how_did_you_hear, program=program)
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
    return referral_establish(referral=referral, actor=actor)


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
    code_owner, unknown = code_link(tenant=tenant, referral_code=referral_code, coupon_code=coupon_code)
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
