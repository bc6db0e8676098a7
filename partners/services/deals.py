"""Deal registration (R-21) and conflicts (R-22): first to register wins, decided by PostgreSQL.

A registration names the prospect company and its domain. The account is identified by the registrable
domain (``www.acme.co.uk`` → ``acme.co.uk``) and the normalised name ("Acme, Inc." → ``acme``). Two partial
unique indexes (``deal_one_claim_per_domain`` / ``deal_one_claim_per_company``) let one registration per
domain and per name hold the claim (pending or approved) at a time: the first insert wins, a concurrent
second one waits for it and then fails, and is recorded as a conflict instead. Near matches (pg_trgm
similarity of the names or of the domains' stems) open a conflict too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.contrib.postgres.search import TrigramSimilarity
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.db.models.functions import Greatest
from django.utils import timezone

from programs.models import ParticipantStatus, Program
from referral_platform.domains import is_free_email_domain, normalise_company_name, registrable_domain
from referral_platform.hooks import hooks
from referral_platform.money import format_money, format_percent, percent_of
from referral_platform.state import IllegalMove, lock, transition
from referral_platform.tenancy.actors import Actor, system_actor
from referral_platform.tenancy.models import Tenant
from referral_platform.tenancy.services import audit_record
from rewards.models import RewardKind
from rewards.services import reward_create

from ..models import (
    CLAIM_HOLDING_STATUSES,
    OPEN_STAGES,
    QUALIFICATION_ITEMS,
    ConflictDecision,
    ConflictMatch,
    ConflictStatus,
    DealConflict,
    DealExtension,
    DealRegistration,
    DealStage,
    DealStatus,
    Partner,
    PartnerEnrolment,
    PartnerProgramSettings,
    PartnerStatus,
)
from .notify import portal_url, tell_partner, tell_team

# pg_trgm similarity from which two names, or two domain stems, are "near" (tests/test_deal_matching.py).
NAME_SIMILARITY = 0.5
DOMAIN_STEM_SIMILARITY = 0.6
EXPIRY_WARNING = timedelta(days=7)
PROTECTION_DAYS_RANGE = (30, 90)


def program_settings(program: Program) -> PartnerProgramSettings:
    """The program's partner settings (defaults when a marketer has not saved any)."""
    found = PartnerProgramSettings.objects.for_tenant(program.tenant_id).filter(program=program).first()
    return found or PartnerProgramSettings(tenant_id=program.tenant_id, program=program)


def domain_stem(domain: str) -> str:
    """``acme.co.uk`` → ``acme``: a registrable domain is one label followed by its public suffix."""
    return domain.split(".", 1)[0]


@dataclass(frozen=True)
class Account:
    company_key: str
    domain: str
    stem: str


def account_of(*, company_name: str, domain: str) -> Account:
    """The account a registration names, or a ValidationError naming the field."""
    errors = {}
    key = normalise_company_name(company_name)
    if not (company_name or "").strip():
        errors["company_name"] = "Enter the prospect company's name."
    elif not key:
        errors["company_name"] = "The company name needs letters or digits."
    elif len(company_name) > 200:
        errors["company_name"] = "At most 200 characters."
    registrable = registrable_domain(domain or "")
    if not (domain or "").strip():
        errors["domain"] = "Enter the prospect's web domain (e.g. acme.com)."
    elif "." not in registrable or registrable.replace(".", "").isdigit() or ":" in registrable:
        errors["domain"] = f"{domain.strip()!r} is not a company's web domain (e.g. acme.com)."
    elif registrable == domain_stem(registrable) or is_free_email_domain(registrable):
        errors["domain"] = f"{registrable} is a public mail or hosting domain; it cannot identify a company."
    if errors:
        raise ValidationError(errors)
    return Account(company_key=key, domain=registrable, stem=domain_stem(registrable))


def _enrolment(*, partner: Partner, program: Program) -> PartnerEnrolment:
    enrolment = (
        PartnerEnrolment.objects.for_tenant(partner.tenant_id)
        .select_related("participant", "program")
        .filter(partner=partner, program=program)
        .first()
    )
    if enrolment is None:
        raise ValidationError({"program": "Your company is not a partner in this program."})
    if enrolment.participant.status != ParticipantStatus.ACTIVE or not program.is_live:
        raise ValidationError({"program": "This program does not take deal registrations right now."})
    return enrolment


def _qualification(qualification: dict | None) -> dict:
    qualification = qualification or {}
    unknown = set(qualification) - set(QUALIFICATION_ITEMS)
    if unknown:
        raise ValidationError({"qualification": f"Unknown items: {', '.join(sorted(unknown))}."})
    cleaned = {}
    for key, value in qualification.items():
        if not isinstance(value, str):
            raise ValidationError({key: "Answer in words."})
        if len(value) > 500:
            raise ValidationError({key: "At most 500 characters."})
        if value.strip():
            cleaned[key] = value.strip()
    return cleaned


def review_reasons(*, settings: PartnerProgramSettings, qualification: dict, deal_value_minor: int | None) -> list[str]:
    """Why a registration cannot be approved automatically (empty: it can)."""
    reasons = [
        f"{item} is not answered"
        for item in QUALIFICATION_ITEMS
        if item in settings.required_qualification and not qualification.get(item)
    ]
    if settings.min_deal_value_minor and (deal_value_minor or 0) < settings.min_deal_value_minor:
        reasons.append(
            f"the deal value is below {format_money(settings.min_deal_value_minor, settings.program.currency)}"
        )
    if not settings.auto_approve:
        reasons.append("this program reviews every registration")
    return reasons


def holders_matching(tenant: Tenant | int, *, account: Account, now: datetime):
    """Registrations holding a claim (pending or approved, not lapsed) on this account or a near one, with
    ``name_similarity`` / ``domain_similarity`` (0-1), best match first."""
    return (
        DealRegistration.objects.for_tenant(tenant)
        .filter(status__in=CLAIM_HOLDING_STATUSES)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .annotate(
            name_similarity=TrigramSimilarity("company_key", account.company_key),
            domain_similarity=TrigramSimilarity("domain_stem", account.stem),
        )
        .filter(
            Q(domain=account.domain)
            | Q(company_key=account.company_key)
            | Q(domain_stem=account.stem)
            | Q(name_similarity__gte=NAME_SIMILARITY)
            | Q(domain_similarity__gte=DOMAIN_STEM_SIMILARITY)
        )
        .annotate(best=Greatest("name_similarity", "domain_similarity"))
        .order_by("-best", "registered_at", "pk")
    )


def _match_of(holder: DealRegistration, account: Account) -> tuple[str, Decimal]:
    if holder.domain == account.domain:
        return ConflictMatch.DOMAIN, Decimal("1.000")
    if holder.company_key == account.company_key:
        return ConflictMatch.NAME, Decimal("1.000")
    name = Decimal(str(getattr(holder, "name_similarity", 0) or 0)).quantize(Decimal("0.001"))
    stem = Decimal("1.000") if holder.domain_stem == account.stem else None
    stem = stem or Decimal(str(getattr(holder, "domain_similarity", 0) or 0)).quantize(Decimal("0.001"))
    if stem >= name:
        return ConflictMatch.SIMILAR_DOMAIN, stem
    return ConflictMatch.SIMILAR_NAME, name


def _lapsed_release(*, tenant: Tenant, account: Account, now: datetime) -> None:
    """Expire registrations of this account whose protection ended but that the beat task has not reached
    yet, so a registration after expiry is accepted for the new partner at once."""
    lapsed = (
        DealRegistration.objects.for_tenant(tenant)
        .filter(status__in=CLAIM_HOLDING_STATUSES, expires_at__lte=now)
        .filter(Q(domain=account.domain) | Q(company_key=account.company_key))
        .order_by("pk")
    )
    for deal in lapsed:
        deal_expire(deal=deal, now=now)


def _evidence(deal: DealRegistration) -> dict:
    return {
        "deal": deal.reference,
        "partner": deal.partner.name,
        "company_name": deal.company_name,
        "domain": deal.domain,
        "registered_at": deal.registered_at.isoformat(),
        "contact_email": deal.contact_email,
        "deal_value_minor": deal.deal_value_minor,
        "qualification": deal.qualification,
        "notes": deal.notes,
    }


def _conflict_open(*, challenger: DealRegistration, holder: DealRegistration, account: Account, actor) -> DealConflict:
    match, similarity = _match_of(holder, account)
    conflict = DealConflict.objects.create(
        tenant_id=challenger.tenant_id,
        holder=holder,
        challenger=challenger,
        match=match,
        similarity=similarity,
        evidence={"holder": _evidence(holder), "challenger": _evidence(challenger)},
    )
    audit_record(
        tenant=challenger.tenant,
        actor=actor,
        action="deal_conflict.opened",
        obj=conflict,
        to_state=conflict.status,
        data={"match": match, "similarity": str(similarity), "holder": holder.pk, "challenger": challenger.pk},
    )
    tell_partner(
        challenger.partner,
        subject=f"Your deal registration {challenger.reference} ({challenger.company_name}) is in review",
        body=(
            f"Another registration already covers {challenger.company_name} ({challenger.domain}) or an account very "
            f"like it ({conflict.get_match_display().lower()}, similarity {similarity}). The {challenger.tenant.name} "
            "team will decide who the account belongs to and tell you why."
        ),
    )
    tell_team(
        challenger.tenant,
        subject=f"Deal conflict: {challenger.company_name} claimed by {challenger.partner.name}",
        body=(
            f"{challenger.partner.name} registered {challenger.company_name} ({challenger.domain}); "
            f"{holder.partner.name} holds {holder.reference} {holder.company_name} ({holder.domain}). "
            f"Match: {conflict.get_match_display()} ({similarity}). Decide in the admin: Partners → Deal conflicts."
        ),
    )
    return conflict


@transaction.atomic
def deal_register(
    *,
    tenant: Tenant,
    partner: Partner,
    program: Program,
    company_name: str,
    domain: str,
    actor: Actor | str,
    contact_name: str = "",
    contact_email: str = "",
    deal_value_minor: int | None = None,
    qualification: dict | None = None,
    notes: str = "",
    now: datetime | None = None,
) -> DealRegistration:
    """Register a deal for ``partner`` in ``program``.

    Outcomes: ``approved`` (protected for the program's window, when the qualification requirements are
    met), ``pending`` (holds the claim, waits for a marketer), or ``conflict`` (another partner holds this
    account or a near one: a ``DealConflict`` holds both claims). The same partner registering an account it
    already holds is refused on ``domain``. Bad input: a ValidationError naming the field, nothing written.
    """
    now = now or timezone.now()
    if partner.tenant_id != tenant.pk or program.tenant_id != tenant.pk:
        raise ValidationError({"program": "Unknown program."})
    if partner.status != PartnerStatus.ACTIVE:
        raise ValidationError({"partner": "This partner is suspended."})
    account = account_of(company_name=company_name, domain=domain)
    enrolment = _enrolment(partner=partner, program=program)
    cleaned = _qualification(qualification)
    if contact_email:
        try:
            validate_email(contact_email)
        except ValidationError:
            raise ValidationError({"contact_email": "Enter a valid e-mail address."}) from None
    if deal_value_minor is not None and (
        not isinstance(deal_value_minor, int) or isinstance(deal_value_minor, bool) or deal_value_minor < 0
    ):
        raise ValidationError({"deal_value_minor": "A whole, non-negative amount in minor units."})
    if len(notes or "") > 4000:
        raise ValidationError({"notes": "At most 4,000 characters."})
    if len(contact_name or "") > 200:
        raise ValidationError({"contact_name": "At most 200 characters."})

    settings = program_settings(program)
    _lapsed_release(tenant=tenant, account=account, now=now)
    holders = list(holders_matching(tenant, account=account, now=now).select_related("partner")[:5])
    own = next(
        (h for h in holders if h.partner_id == partner.pk and _match_of(h, account)[1] == Decimal("1.000")), None
    )
    if own is not None:
        raise ValidationError({"domain": f"You registered this account already: {own.reference}."})
    others = [h for h in holders if h.partner_id != partner.pk]
    reasons = review_reasons(settings=settings, qualification=cleaned, deal_value_minor=deal_value_minor)
    values = {
        "tenant": tenant,
        "partner": partner,
        "participant": enrolment.participant,
        "program": program,
        "company_name": company_name.strip(),
        "company_key": account.company_key,
        "domain": account.domain,
        "domain_stem": account.stem,
        "contact_name": (contact_name or "").strip(),
        "contact_email": (contact_email or "").strip().lower(),
        "deal_value_minor": deal_value_minor,
        "currency": program.currency,
        "qualification": cleaned,
        "notes": (notes or "").strip(),
        "registered_by": actor if isinstance(actor, str) else actor.label,
        "registered_at": now,
        "expires_at": now + timedelta(days=settings.protection_days),
    }
    label = values["registered_by"]
    if others:
        deal = DealRegistration.objects.create(**values, status=DealStatus.CONFLICT, review_note="Conflict: in review.")
        holder = others[0]
    else:
        status = DealStatus.PENDING if reasons else DealStatus.APPROVED
        try:
            with transaction.atomic():
                deal = DealRegistration.objects.create(
                    **values,
                    status=status,
                    approved_at=now if status == DealStatus.APPROVED else None,
                    review_note=("Waits for review: " + "; ".join(reasons) + ".") if reasons else "",
                )
        except IntegrityError:
            # A concurrent registration of this account committed first: it holds the claim.
            holder = (
                DealRegistration.objects.for_tenant(tenant)
                .select_related("partner")
                .filter(status__in=CLAIM_HOLDING_STATUSES)
                .filter(Q(domain=account.domain) | Q(company_key=account.company_key))
                .order_by("registered_at", "pk")
                .first()
            )
            if holder is None:  # pragma: no cover - the winner rolled back between our insert and this read
                raise
            if holder.partner_id == partner.pk:
                raise ValidationError({"domain": f"You registered this account already: {holder.reference}."}) from None
            deal = DealRegistration.objects.create(
                **values, status=DealStatus.CONFLICT, review_note="Conflict: in review."
            )
        else:
            holder = None
    audit_record(
        tenant=tenant,
        actor=label,
        action="deal.registered",
        obj=deal,
        to_state=deal.status,
        reason=deal.review_note,
        data={"domain": deal.domain, "company_key": deal.company_key, "partner": partner.pk, "program": program.pk},
    )
    if holder is not None:
        _conflict_open(challenger=deal, holder=holder, account=account, actor=label)
    elif deal.status == DealStatus.APPROVED:
        tell_partner(
            partner,
            subject=f"Deal {deal.reference} approved: {deal.company_name} is protected",
            body=(
                f"{deal.company_name} ({deal.domain}) is registered to {partner.name} until "
                f"{deal.expires_at:%Y-%m-%d}. Sign-ups, leads and conversions of this account are credited to you."
            ),
        )
    else:
        tell_team(
            tenant,
            subject=f"Deal registration to review: {deal.company_name} by {partner.name}",
            body=f"{deal.reference} {deal.company_name} ({deal.domain}). {deal.review_note}",
        )
    hooks.deal_changed(deal=deal, change="conflict" if holder is not None else "registered")
    return deal


@transaction.atomic
def deal_approve(*, deal: DealRegistration, actor: Actor | str, reason: str = "") -> DealRegistration:
    """A marketer approves a registration waiting for review: the account is protected from now on."""
    transition(deal, to=DealStatus.APPROVED, actor=actor, reason=reason)
    tell_partner(
        deal.partner,
        subject=f"Deal {deal.reference} approved: {deal.company_name} is protected",
        body=f"{deal.company_name} ({deal.domain}) is registered to you until {deal.expires_at:%Y-%m-%d}."
        + (f"\n\nNote from the team: {reason}" if reason else ""),
    )
    hooks.deal_changed(deal=deal, change="approved")
    return deal


@transaction.atomic
def deal_reject(*, deal: DealRegistration, actor: Actor | str, reason: str) -> DealRegistration:
    transition(deal, to=DealStatus.REJECTED, actor=actor, reason=reason, changes={"review_note": reason})
    tell_partner(
        deal.partner,
        subject=f"Deal {deal.reference} ({deal.company_name}) was not accepted",
        body=f"The {deal.tenant.name} team did not accept this registration. Reason: {reason}",
    )
    hooks.deal_changed(deal=deal, change="rejected")
    return deal


def deal_expire(*, deal: DealRegistration, now: datetime | None = None) -> bool:
    """Expire a registration whose protection ended; False when another run got there first."""
    now = now or timezone.now()
    try:
        with transaction.atomic():
            row = lock(deal)
            if row.status not in CLAIM_HOLDING_STATUSES or row.expires_at is None or row.expires_at > now:
                return False
            transition(
                row, to=DealStatus.EXPIRED, actor="system:deal-expiry", at=now, locked=row, reason="protection ended"
            )
            tell_partner(
                row.partner,
                subject=f"Deal {row.reference} ({row.company_name}) expired",
                body=f"The protection of {row.company_name} ({row.domain}) ended on {row.expires_at:%Y-%m-%d}.",
            )
            hooks.deal_changed(deal=row, change="expired")
    except IllegalMove:
        return False
    return True


def deals_expire(*, tenant: Tenant | None = None, now: datetime | None = None) -> int:
    """Beat task: expire every registration whose protection ended. Returns how many."""
    now = now or timezone.now()
    due = DealRegistration.objects.filter(status__in=CLAIM_HOLDING_STATUSES, expires_at__lte=now)
    if tenant is not None:
        due = due.filter(tenant=tenant)
    return sum(deal_expire(deal=deal, now=now) for deal in due.order_by("pk").iterator())


def deals_warn_expiring(*, tenant: Tenant | None = None, now: datetime | None = None) -> int:
    """Beat task: tell partners 7 days before a protected deal expires (once per expiry date: an extension
    resets the warning). Returns how many were warned."""
    now = now or timezone.now()
    due = DealRegistration.objects.filter(
        status=DealStatus.APPROVED, expires_at__gt=now, expires_at__lte=now + EXPIRY_WARNING, expiry_warned_at=None
    ).select_related("partner", "tenant")
    if tenant is not None:
        due = due.filter(tenant=tenant)
    warned = 0
    for deal in due.order_by("pk"):
        with transaction.atomic():
            claimed = (
                DealRegistration.objects.for_tenant(deal.tenant_id)
                .filter(pk=deal.pk, expiry_warned_at=None, status=DealStatus.APPROVED)
                .update(expiry_warned_at=now)
            )
            if not claimed:
                continue
            audit_record(tenant=deal.tenant, actor="system:deal-expiry", action="deal.expiry_warned", obj=deal)
            tell_partner(
                deal.partner,
                subject=f"Deal {deal.reference} ({deal.company_name}) expires on {deal.expires_at:%Y-%m-%d}",
                body=(
                    f"The protection of {deal.company_name} ({deal.domain}) ends in "
                    f"{max(1, (deal.expires_at - now).days)} day(s). If the deal is progressing, ask for an extension: "
                    f"{portal_url('portal_deal_detail', pk=deal.pk)}"
                ),
            )
            warned += 1
    return warned


@transaction.atomic
def deal_extend(
    *, deal: DealRegistration, actor: Actor | str, reason: str = "", days: int | None = None, now=None
) -> DealExtension:
    """Extend the protection of an open, approved deal by ``days`` (default: the program's extension), never
    beyond ``max_protection_days`` after registration: a longer request is refused and says how much is left."""
    now = now or timezone.now()
    row = lock(deal)
    settings = program_settings(row.program)
    days = settings.extension_days if days in (None, "") else days
    if not isinstance(days, int) or isinstance(days, bool) or days < 1:
        raise ValidationError({"days": "Ask for a whole number of days, at least 1."})
    if row.status != DealStatus.APPROVED or row.stage not in OPEN_STAGES:
        raise ValidationError({"deal": "Only an approved, open deal can be extended."})
    if row.expires_at is None or row.expires_at <= now:
        raise ValidationError({"deal": "This deal's protection has ended; register the account again."})
    limit = row.registered_at + timedelta(days=settings.max_protection_days)
    target = row.expires_at + timedelta(days=days)
    if target > limit:
        left = max(0, (limit - row.expires_at).days)
        raise ValidationError(
            {
                "days": (
                    f"An extension of {days} days would protect this deal until {target:%Y-%m-%d}, beyond this "
                    f"program's limit of {settings.max_protection_days} days after registration ({limit:%Y-%m-%d}). "
                    + (f"At most {left} more day(s) can be granted." if left else "It cannot be extended further.")
                )
            }
        )
    label = actor if isinstance(actor, str) else actor.label
    extension = DealExtension.objects.create(
        tenant_id=row.tenant_id,
        deal=row,
        days=days,
        from_expires_at=row.expires_at,
        to_expires_at=target,
        reason=(reason or "").strip(),
        requested_by=label,
    )
    previous = row.expires_at
    row.expires_at = target
    row.expiry_warned_at = None
    row.extensions_count += 1
    row.save(update_fields=["expires_at", "expiry_warned_at", "extensions_count"])
    audit_record(
        tenant=row.tenant,
        actor=label,
        action="deal.extended",
        obj=row,
        from_state=row.status,
        to_state=row.status,
        reason=extension.reason,
        data={"days": days, "from": previous.isoformat(), "to": target.isoformat()},
    )
    deal.expires_at, deal.extensions_count = row.expires_at, row.extensions_count
    hooks.deal_changed(deal=row, change="extended")
    return extension


def deal_commission_key(deal: DealRegistration) -> str:
    return f"deal:{deal.pk}:won"


@transaction.atomic
def deal_stage_update(
    *,
    deal: DealRegistration,
    stage: str,
    actor: Actor | str,
    amount_minor: int | None = None,
    reason: str = "",
    now: datetime | None = None,
) -> DealRegistration:
    """Move a deal through the sales stages (the tenant's CRM calls this through the API).

    ``won`` closes the deal and posts the partner's commission — ``commission_bp`` of the won amount — as a
    reward through the ledger, once: the row lock makes a repeated or concurrent "won" a no-op, and the
    reward's unique source key ``deal:<id>:won`` backs it. ``lost`` closes it without commission.
    """
    now = now or timezone.now()
    if stage not in DealStage.values:
        raise ValidationError({"stage": f"Choose one of: {', '.join(DealStage.values)}."})
    if amount_minor is not None and (
        not isinstance(amount_minor, int) or isinstance(amount_minor, bool) or amount_minor < 0
    ):
        raise ValidationError({"amount_minor": "A whole, non-negative amount in minor units."})
    row = lock(deal)
    if row.status in (DealStatus.WON, DealStatus.LOST):
        if stage == row.status and (
            amount_minor is None or stage == DealStage.LOST or amount_minor == row.won_amount_minor
        ):
            _refresh(deal, row)
            return row  # a repeated "won" / "lost" changes nothing
        raise ValidationError({"stage": f"This deal is already {row.status}; its stage cannot change."})
    if row.status != DealStatus.APPROVED:
        raise ValidationError(
            {
                "stage": "Only an approved deal moves through the sales stages "
                f"(this one is {row.get_status_display().lower()})."
            }
        )
    label = actor if isinstance(actor, str) else actor.label
    if stage in OPEN_STAGES:
        if stage != row.stage:
            previous = row.stage
            row.stage = stage
            if amount_minor is not None:
                row.deal_value_minor = amount_minor
            row.save(update_fields=["stage", "deal_value_minor"])
            audit_record(
                tenant=row.tenant,
                actor=label,
                action="deal.stage",
                obj=row,
                from_state=previous,
                to_state=stage,
                reason=reason,
            )
            hooks.deal_changed(deal=row, change="stage")
        _refresh(deal, row)
        return row
    if stage == DealStage.LOST:
        transition(row, to=DealStatus.LOST, actor=label, reason=reason, at=now, locked=row, changes={"stage": "lost"})
        tell_partner(row.partner, subject=f"Deal {row.reference} ({row.company_name}) was lost", body=reason or "")
        hooks.deal_changed(deal=row, change="lost")
        _refresh(deal, row)
        return row
    amount = amount_minor if amount_minor is not None else row.deal_value_minor
    if amount is None:
        raise ValidationError(
            {"amount_minor": "Give the won deal's value (amount_minor): the commission is a share of it."}
        )
    transition(
        row,
        to=DealStatus.WON,
        actor=label,
        reason=reason,
        at=now,
        locked=row,
        changes={"stage": DealStage.WON, "won_amount_minor": amount},
        data={"amount_minor": amount},
    )
    reward = _commission_post(deal=row, amount_minor=amount, actor=actor, now=now)
    if reward is not None:
        row.commission_reward = reward
        row.save(update_fields=["commission_reward"])
    tell_partner(
        row.partner,
        subject=f"Deal {row.reference} ({row.company_name}) is won",
        body=f"Congratulations: {row.company_name} signed for {format_money(amount, row.currency)}."
        + (
            f" Your commission of {format_money(reward.amount_minor, reward.currency)} is in your statement."
            if reward
            else ""
        ),
    )
    hooks.deal_changed(deal=row, change="won")
    _refresh(deal, row)
    return row


def _refresh(deal: DealRegistration, row: DealRegistration) -> None:
    if deal is not row:
        for name in ("status", "stage", "won_amount_minor", "closed_at", "commission_reward_id", "deal_value_minor"):
            setattr(deal, name, getattr(row, name))


def _commission_post(*, deal: DealRegistration, amount_minor: int, actor, now: datetime):
    settings = program_settings(deal.program)
    commission = percent_of(amount_minor, deal.partner.commission_bp)
    if not settings.pays_deal_commission or commission <= 0:
        return None
    text = (
        f"Deal {deal.reference} {deal.company_name} won for {format_money(amount_minor, deal.currency)} x "
        f"{format_percent(deal.partner.commission_bp)} commission = {format_money(commission, deal.currency)}"
    )
    return reward_create(
        tenant=deal.tenant,
        program=deal.program,
        participant=deal.participant,
        amount_minor=commission,
        currency=deal.currency,
        source_key=deal_commission_key(deal),
        slot_key=f"deal:{deal.pk}:commission",
        actor=actor if isinstance(actor, Actor) else system_actor(deal.tenant),
        kind=RewardKind.CASH,
        description=f"Commission: {deal.company_name} ({deal.reference})"[:200],
        explanation={
            "deal": deal.pk,
            "won_amount_minor": amount_minor,
            "commission_bp": deal.partner.commission_bp,
            "partner": deal.partner_id,
        },
        explanation_text=text,
        converted_at=now,
        now=now,
    )


# --- conflicts ---------------------------------------------------------------------------------------


@transaction.atomic
def conflict_resolve(*, conflict: DealConflict, decision: str, reason: str, actor: Actor | str) -> DealConflict:
    """A marketer decides a conflict, with a reason; both partners are told.

    - ``holder_keeps``: the second registration is rejected;
    - ``challenger_wins``: the first is rejected and the second approved (protected from now on);
    - ``both_distinct``: they are different accounts; the second is approved too (refused when both name
      the same domain or company: one must give way).
    """
    reason = (reason or "").strip()
    if decision not in ConflictDecision.values:
        raise ValidationError({"decision": f"Choose one of: {', '.join(ConflictDecision.values)}."})
    if not reason:
        raise ValidationError({"reason": "Say why: both partners read it."})
    row = lock(conflict)
    if row.status != ConflictStatus.OPEN:
        raise ValidationError({"decision": "This conflict is already resolved."})
    holder = lock(row.holder)
    challenger = lock(row.challenger)
    label = actor if isinstance(actor, str) else actor.label
    now = timezone.now()
    settings = program_settings(challenger.program)
    note = f"Conflict #{row.pk}: {reason}"
    if decision == ConflictDecision.HOLDER_KEEPS:
        if challenger.status not in (DealStatus.REJECTED,):
            transition(
                challenger,
                to=DealStatus.REJECTED,
                actor=label,
                reason=note,
                locked=challenger,
                changes={"review_note": note},
            )
    else:
        if decision == ConflictDecision.CHALLENGER_WINS and holder.status in (DealStatus.PENDING, DealStatus.APPROVED):
            transition(
                holder, to=DealStatus.REJECTED, actor=label, reason=note, locked=holder, changes={"review_note": note}
            )
        if challenger.status == DealStatus.CONFLICT:
            try:
                with transaction.atomic():
                    transition(
                        challenger,
                        to=DealStatus.APPROVED,
                        actor=label,
                        reason=note,
                        locked=challenger,
                        changes={"review_note": note, "expires_at": now + timedelta(days=settings.protection_days)},
                    )
            except IntegrityError:
                raise ValidationError(
                    {
                        "decision": "Another registration holds this domain or company name: it must give way first "
                        "(choose 'the second registration gets the account')."
                    }
                ) from None
    transition(
        row,
        to=ConflictStatus.RESOLVED,
        actor=label,
        reason=reason,
        locked=row,
        changes={"decision": decision, "reason": reason, "decided_by": label},
        data={"decision": decision, "holder": holder.pk, "challenger": challenger.pk},
    )
    outcome = row.get_decision_display()
    for deal, role in ((holder, "first"), (challenger, "second")):
        tell_partner(
            deal.partner,
            subject=f"Decision on the conflict over {deal.company_name} ({deal.reference})",
            body=(
                f"Your registration {deal.reference} was the {role} claim on this account. Decision: {outcome}.\n"
                f"Reason: {reason}\nYour registration is now: {deal.get_status_display().lower()}."
            ),
        )
        hooks.deal_changed(deal=deal, change="conflict_resolved")
    return row
