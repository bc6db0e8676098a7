"""Fraud checks: reads that say whether a referral looks fraudulent, with the evidence.

Nothing here writes. ``referral_fraud_signals`` runs the checks a program's ``FraudPolicy`` turns
on and returns one ``FraudSignal`` per finding; ``referrals.fraud_services.referral_screen`` stores
them as ``FraudFlag`` rows and puts the referral in review. ``referral_is_rewardable`` is the one
predicate the rewards code asks before paying for a referral.

Every signal's evidence has the same shape (docs/fraud.md), so the admin and the API can show a
marketer exactly why a referral was flagged::

    {
      "compared": [{"field": ..., "referral": ..., "other": ..., "other_source": ...}],
      "rows":     [{"role": ..., "model": "referrals.click", "id": 7, "at": "<ISO time>", "details": {...}}],
      "params":   {...the thresholds and windows the check used...},
    }

Time windows are measured back from the referral's own ``created_at``, not from "now", so screening
the same referral again later finds the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from django.db import connection
from django.db.models import Q

from referral_platform.db.prepared import execute_prepared
from referral_platform.domains import (
    domain_listed_in,
    free_email_domains,
    normalise_company_name,
    read_domain_list,
    registrable_domain,
)

from .models import (
    Click,
    ConversionKind,
    FraudPolicy,
    FraudSignalCode,
    IdentityKind,
    Referral,
    ReferralStatus,
    ReviewStatus,
)

DATA_DIR = Path(__file__).resolve().parent / "data"
DISPOSABLE_DOMAINS_FILE = DATA_DIR / "disposable_domains.txt"

GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
# Evidence lists are cut here (the total is still reported) so one flag stays readable.
EVIDENCE_ROW_LIMIT = 20

REWARDABLE_REVIEW_STATUSES = frozenset({ReviewStatus.CLEAR, ReviewStatus.CLEARED})


# --- the rewards predicate -------------------------------------------------------------------------
def referral_is_rewardable(referral: Referral) -> bool:
    """True when ``referral`` may earn a reward: it converted, and fraud review does not hold it.

    A flagged referral is not rewardable until a marketer clears it; a rejected one never is. Pass
    a fresh row (read it with ``select_for_update()`` when about to pay); ``rewardable_referrals_q()``
    is the same rule for querysets.
    """
    return referral.status == ReferralStatus.CONVERTED and referral.review_status in REWARDABLE_REVIEW_STATUSES


def rewardable_referrals_q() -> Q:
    """``referral_is_rewardable`` as a filter: ``Referral.objects.for_tenant(t).filter(rewardable_referrals_q())``."""
    return Q(status=ReferralStatus.CONVERTED, review_status__in=sorted(REWARDABLE_REVIEW_STATUSES))


# --- normalisation ---------------------------------------------------------------------------------
def normalize_email_for_matching(email: str) -> str:
    """The mailbox an address reaches: lower-case, ``+tag`` removed, and for Gmail the dots removed
    and googlemail.com read as gmail.com. ``""`` when the address has no local part or domain."""
    local, at, domain = (email or "").strip().lower().rpartition("@")
    domain = domain.rstrip(".")
    if not at or not local or not domain:
        return ""
    local = local.split("+", 1)[0]
    if domain in GMAIL_DOMAINS:
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}" if local else ""


def email_domain(email: str) -> str:
    """The (canonical) domain of an address: ``""`` without one."""
    normalized = normalize_email_for_matching(email)
    return normalized.rpartition("@")[2]


# Company names, free-mail and registrable domains are core helpers (referral_platform.domains),
# shared with partner deal registration; this name stays for the callers that import it from here.
normalize_company = normalise_company_name


def disposable_domains() -> frozenset[str]:
    return read_domain_list(DISPOSABLE_DOMAINS_FILE)


def company_email_domain(email: str) -> str:
    """The domain of an address when it can say which company someone works for: ``""`` for
    free-mail providers (many unrelated people share gmail.com) and disposable domains."""
    domain = email_domain(email)
    if not domain or domain_listed_in(domain, free_email_domains()) or domain_listed_in(domain, disposable_domains()):
        return ""
    return domain


# --- signals ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FraudSignal:
    code: str
    message: str
    evidence: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return FraudSignalCode(self.code).label


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _compared(field_name: str, referral_value, other_value, other_source: str) -> dict:
    return {"field": field_name, "referral": referral_value, "other": other_value, "other_source": other_source}


def _row(role: str, obj, at: datetime | None, **details) -> dict:
    return _row_of(role, obj._meta.label_lower, obj.pk, at, **details)


def _row_of(role: str, model: str, pk: int, at: datetime | None, **details) -> dict:
    return {"role": role, "model": model, "id": pk, "at": _iso(at), "details": details}


def policy_for_program(program) -> FraudPolicy:
    """The program's fraud policy, or an unsaved one with the defaults when it has none yet."""
    policy = FraudPolicy.objects.for_tenant(program.tenant_id).filter(program=program).first()
    return policy or FraudPolicy(tenant_id=program.tenant_id, program=program)


def referral_fraud_signals(*, referral: Referral, policy: FraudPolicy | None = None) -> list[FraudSignal]:
    """Every fraud signal the program's policy finds on ``referral`` (reads only, tenant-scoped).

    Each check compares the referral with rows of its own tenant only.
    """
    policy = policy or policy_for_program(referral.program)
    signals: list[FraudSignal | None] = []
    own_visitors, count, earlier = None, None, None
    if policy.self_referral_enabled and policy.velocity_enabled and policy.duplicate_company_enabled:
        own_visitors, count, earlier = screen_rows(referral=referral, policy=policy)  # one statement for the three
    elif policy.velocity_enabled and policy.duplicate_company_enabled:
        count, earlier = velocity_and_company_rows(referral=referral, policy=policy)
    if policy.self_referral_enabled:
        if own_visitors is None:
            own_visitors = referrer_visitor_ids(referral=referral)
        signals += [
            check_self_referral_email(referral=referral),
            check_self_referral_visitor(referral=referral, own_visitors=own_visitors),
            check_self_referral_device(referral=referral, own_visitors=own_visitors, policy=policy),
        ]
    if policy.own_company_enabled:
        signals.append(check_own_company(referral=referral))
    if policy.disposable_email_enabled:
        signals.append(check_disposable_email(referral=referral))
    if policy.velocity_enabled:
        signals.append(check_velocity(referral=referral, policy=policy, count=count))
    if policy.duplicate_company_enabled:
        signals.append(check_duplicate_company(referral=referral, policy=policy, earlier=earlier))
    return [signal for signal in signals if signal is not None]


def check_self_referral_email(*, referral: Referral) -> FraudSignal | None:
    """The referred e-mail is the referrer's own once normalised (case, +tag, Gmail dots)."""
    referrer = referral.referrer
    referred = normalize_email_for_matching(referral.referred_email)
    own = normalize_email_for_matching(referrer.email)
    if not referred or referred != own:
        return None
    source = f"referrer (participant #{referrer.pk})"
    return FraudSignal(
        code=FraudSignalCode.SELF_REFERRAL_EMAIL,
        message=(
            f"The referred e-mail {referral.referred_email} and the referrer's e-mail {referrer.email} "
            f"reach the same mailbox ({referred})."
        ),
        evidence={
            "compared": [
                _compared("E-mail as given", referral.referred_email, referrer.email, source),
                _compared("E-mail normalised", referred, own, source),
            ],
            "rows": [_row("referrer", referrer, referrer.created_at, name=referrer.name, email=referrer.email)],
            "params": {"normalisation": "lower-case; +tag removed; Gmail: dots removed, googlemail.com = gmail.com"},
        },
    )


OWN_COMPANY_DOMAIN_RULE = (
    "same registrable domain (eTLD+1 by the Public Suffix List; sub-domains count as their domain); "
    "free-mail and disposable domains do not count"
)
OWN_COMPANY_NAME_RULE = "accents, case, punctuation, spaces, a leading 'the' and trailing legal forms removed"


def check_own_company(*, referral: Referral) -> FraudSignal | None:
    """The referred person is a colleague at the referrer's own company: the two e-mail addresses
    are at one registrable domain (``sales.acme.co.uk`` = ``acme.co.uk``; ``acme.com`` ≠
    ``acme.co.uk``), or the referred company's name is the referrer's company name once normalised
    (both given).

    Free-mail and disposable domains never match: two gmail.com users are not one company. The
    referrer's own mailbox is not a colleague: that is ``self_referral_email``, which the program may
    turn off on its own.
    """
    referrer = referral.referrer
    own_mailbox = normalize_email_for_matching(referrer.email)
    if own_mailbox and normalize_email_for_matching(referral.referred_email) == own_mailbox:
        return None
    source = f"referrer (participant #{referrer.pk})"
    compared, matched_on, reasons = [], [], []

    referred_domain = company_email_domain(referral.referred_email)
    own_domain = company_email_domain(referrer.email)
    organisation = registrable_domain(referred_domain)
    if organisation and organisation == registrable_domain(own_domain):
        matched_on.append("domain")
        compared.append(
            _compared("Company e-mail domain", referred_domain, own_domain, source) | {"normalised": organisation}
        )
        reasons.append(
            f"the referred e-mail {referral.referred_email} is at {organisation}, "
            f"the domain of the referrer's e-mail {referrer.email}"
        )

    name = normalise_company_name(referral.referred_company)
    if name and name == normalise_company_name(referrer.company):
        matched_on.append("name")
        compared.append(
            _compared("Company", referral.referred_company, referrer.company, source) | {"normalised": name}
        )
        reasons.append(
            f'the referred company "{referral.referred_company}" is the referrer\'s own company '
            f'"{referrer.company}" (both "{name}" once normalised)'
        )

    if not matched_on:
        return None
    return FraudSignal(
        code=FraudSignalCode.OWN_COMPANY,
        message=f"The referral looks like the referrer's own company: {'; and '.join(reasons)}.",
        evidence={
            "compared": compared,
            "rows": [
                _row(
                    "referrer",
                    referrer,
                    referrer.created_at,
                    name=referrer.name,
                    email=referrer.email,
                    company=referrer.company,
                )
            ],
            "params": {
                "matched_on": matched_on,
                "domain_rule": OWN_COMPANY_DOMAIN_RULE,
                "name_rule": OWN_COMPANY_NAME_RULE,
            },
        },
    )


@dataclass(frozen=True)
class OwnVisitor:
    """A visitor id seen on one of the referrer's own sign-ups (they were the person signing up)."""

    visitor_id: str
    row: dict


def _any_key(select: str, where: str, keys: list[tuple[str, str]], order: tuple[str, str], limit: str = "") -> str:
    """A read of the rows ``select`` (its columns and FROM) finds meeting ``where`` and ANY ONE of ``keys``, oldest
    first, as a UNION of one arm per key: ``(parameter, condition)``, the condition applying when the parameter is
    not empty. Each arm is read on its key's index and its parameter's emptiness is a one-time filter, also in the
    generic plan PostgreSQL keeps for a prepared statement (``execute_prepared``); an OR of such guarded
    conditions cannot be split there, and its generic plan read the whole workspace (or the program's window) by
    ``tenant_id`` with a filter, on every new referral (issue 15). ``order``: the arms' ORDER BY and the union's
    (the output names); ``limit``: at most so many rows, of each arm and of the union (the same first rows)."""
    cap = f" ORDER BY {order[0]} LIMIT {limit}" if limit else ""
    arms = " UNION ".join(
        f"(SELECT {select} WHERE {where} AND {parameter} <> '' AND {condition}{cap})" for parameter, condition in keys
    )
    return f"(SELECT * FROM ({arms}) arms ORDER BY {order[1]}{f' LIMIT {limit}' if limit else ''})"  # noqa: S608 - constants


# The three reads of ``referrer_visitor_ids`` in ONE statement (issue 15: a new referral's screen). Each part
# reads, as its own query did, at most 100 rows of the tenant matching the referrer's mailbox key (indexed, see
# referrals.mailbox) or external id, oldest first; ``src`` keeps them apart and in that order. An empty
# mailbox or external id matches nothing (``_any_key``: each is an arm of its own, read only when not empty).
_MAILBOX, _EXTERNAL = "%(mailbox)s", "%(external)s"
_OWN_REFERRALS = _any_key(
    """0 AS src, r.id, r.visitor_id, r.created_at AS at, r.referred_email AS email,
        r.referred_external_id AS external_id, '' AS kind, '' AS external_event_id, '' AS other_kind,
        '' AS other_value, '' AS source
   FROM referrals_referral r""",
    "r.tenant_id = %(tenant)s AND r.id <> %(referral)s AND r.visitor_id <> ''",
    [(_MAILBOX, f"r.referred_mailbox = {_MAILBOX}"), (_EXTERNAL, f"r.referred_external_id = {_EXTERNAL}")],
    ("r.created_at, r.id", "at, id"),
    "100",
)
_OWN_EVENTS = _any_key(
    """1 AS src, e.id, e.visitor_id, e.occurred_at AS at, e.email, e.customer_external_id AS external_id,
        e.kind, e.external_event_id, '' AS other_kind, '' AS other_value, '' AS source
   FROM referrals_conversionevent e""",
    "e.tenant_id = %(tenant)s AND e.visitor_id <> ''",
    [(_MAILBOX, f"e.mailbox = {_MAILBOX}"), (_EXTERNAL, f"e.customer_external_id = {_EXTERNAL}")],
    ("e.occurred_at, e.id", "at, id"),
    "100",
)
_OWN_LINKS = _any_key(
    """2 AS src, l.id, CASE WHEN l.a_kind = 'visitor' THEN l.a_value ELSE l.b_value END AS visitor_id,
        l.created_at AS at, '' AS email, '' AS external_id, '' AS kind, '' AS external_event_id,
        CASE WHEN l.a_kind = 'visitor' THEN l.b_kind ELSE l.a_kind END AS other_kind,
        CASE WHEN l.a_kind = 'visitor' THEN l.b_value ELSE l.a_value END AS other_value, l.source
   FROM referrals_identitylink l""",
    "l.tenant_id = %(tenant)s",
    [
        (_MAILBOX, f"l.b_kind = 'visitor' AND l.a_mailbox = {_MAILBOX}"),
        (_EXTERNAL, f"l.b_kind = 'visitor' AND l.a_kind = 'customer' AND l.a_value = {_EXTERNAL}"),
        (_MAILBOX, f"l.a_kind = 'visitor' AND l.b_mailbox = {_MAILBOX}"),
        (_EXTERNAL, f"l.a_kind = 'visitor' AND l.b_kind = 'customer' AND l.b_value = {_EXTERNAL}"),
    ],
    ("l.created_at, l.id", "at, id"),
    "100",
)
_OWN_VISITORS_SQL = f"""
{_OWN_REFERRALS}
UNION ALL
{_OWN_EVENTS}
UNION ALL
{_OWN_LINKS}
ORDER BY src, at, id
"""


def referrer_visitor_ids(*, referral: Referral) -> list[OwnVisitor]:
    """Visitor ids that belong to the referrer: carried by a referral or conversion event of the
    same tenant whose person is the referrer (same normalised e-mail, or the referrer's external id
    as the customer id), or linked to the referrer's e-mail / customer id in the identity graph.

    The identity edges that this referral's own sign-up revealed (its e-mail or customer id with its
    visitor id) are left out: they say who the referred person is, which the e-mail check judges.
    One statement (``_OWN_VISITORS_SQL``); the referrer's mailbox is compared with the stored, indexed
    mailbox keys (referrals.mailbox)."""
    params = _own_visitors_params(referral)
    if not params["mailbox"] and not params["external"]:
        return []
    with connection.cursor() as cursor:
        cursor.execute(_OWN_VISITORS_SQL, params)
        rows = cursor.fetchall()
    return _own_visitors(referral, rows)


def _own_visitors_params(referral: Referral) -> dict:
    referrer = referral.referrer
    return {
        "tenant": referral.tenant_id,
        "referral": referral.pk or 0,
        "mailbox": normalize_email_for_matching(referrer.email),
        "external": referrer.external_id.strip(),
    }


def _own_visitors(referral: Referral, rows) -> list[OwnVisitor]:
    """The rows of ``_OWN_VISITORS_SQL`` as the referrer's own visitors, with their evidence."""
    revealed_by_this_referral = {
        value.strip().lower() for value in (referral.referred_email, referral.referred_external_id) if value.strip()
    }
    found: list[OwnVisitor] = []
    for src, pk, visitor_id, at, email, external, kind, external_event_id, other_kind, other_value, source in rows:
        if src == 0:
            row = _row_of(
                "the referrer's own sign-up (as a referred person)",
                "referrals.referral",
                pk,
                at,
                visitor_id=visitor_id,
                email=email,
                external_id=external,
            )
        elif src == 1:
            row = _row_of(
                f"the referrer's own {ConversionKind(kind).label.lower()} event",
                "referrals.conversionevent",
                pk,
                at,
                visitor_id=visitor_id,
                email=email,
                customer_external_id=external,
                external_event_id=external_event_id,
            )
        else:
            if visitor_id == referral.visitor_id.strip() and other_value.strip().lower() in revealed_by_this_referral:
                continue
            row = _row_of(
                f"identity graph: the referrer's {IdentityKind(other_kind).label.lower()} seen with this visitor",
                "referrals.identitylink",
                pk,
                at,
                visitor_id=visitor_id,
                **{other_kind: other_value},
                source=source,
            )
        found.append(OwnVisitor(visitor_id=visitor_id, row=row))
    return found


def check_self_referral_visitor(*, referral: Referral, own_visitors: list[OwnVisitor]) -> FraudSignal | None:
    """The referral's visitor id (browser cookie) was seen on one of the referrer's own sign-ups."""
    visitor_id = referral.visitor_id.strip()
    matches = [own for own in own_visitors if visitor_id and own.visitor_id == visitor_id]
    if not matches:
        return None
    first = matches[0].row
    return FraudSignal(
        code=FraudSignalCode.SELF_REFERRAL_VISITOR,
        message=(
            f"The referral came from visitor {visitor_id}, the same browser the referrer used for their own "
            f"sign-up ({first['model']} #{first['id']})."
        ),
        evidence={
            "compared": [
                _compared("Visitor id", visitor_id, own.visitor_id, f"{own.row['model']} #{own.row['id']}")
                for own in matches[:EVIDENCE_ROW_LIMIT]
            ],
            "rows": [own.row for own in matches[:EVIDENCE_ROW_LIMIT]],
            "params": {"matches": len(matches)},
        },
    )


def check_self_referral_device(
    *, referral: Referral, own_visitors: list[OwnVisitor], policy: FraudPolicy
) -> FraudSignal | None:
    """A click of the referral's visitor on the referrer's links came from the same IP address and
    browser (user agent) as a recent click by one of the referrer's own visitor ids."""
    visitor_id = referral.visitor_id.strip()
    other_visitors = {own.visitor_id for own in own_visitors} - {visitor_id}
    if not visitor_id or not other_visitors:
        return None
    since = referral.created_at - timedelta(days=policy.self_referral_activity_days)
    referral_clicks = list(
        Click.objects.for_tenant(referral.tenant_id)
        .filter(participant_id=referral.referrer_id, visitor_id=visitor_id, is_bot=False, ip__isnull=False)
        .exclude(user_agent="")
        .order_by("occurred_at", "pk")[:200]
    )
    if not referral_clicks:
        return None
    fingerprints = {(str(click.ip), click.user_agent) for click in referral_clicks}
    own_clicks = [
        click
        for click in Click.objects.for_tenant(referral.tenant_id)
        .filter(visitor_id__in=other_visitors, occurred_at__gte=since, is_bot=False, ip__isnull=False)
        .exclude(user_agent="")
        .order_by("occurred_at", "pk")[:1000]
        if (str(click.ip), click.user_agent) in fingerprints
    ]
    if not own_clicks:
        return None
    pairs = []
    for own in own_clicks:
        theirs = next(c for c in referral_clicks if (str(c.ip), c.user_agent) == (str(own.ip), own.user_agent))
        pairs.append((theirs, own))
    theirs, own = pairs[0]
    source = f"click #{own.pk} by the referrer's visitor {own.visitor_id}"
    rows, seen = [], set()
    for click_of_referral, click_of_referrer in pairs[:EVIDENCE_ROW_LIMIT]:
        for role, click in (
            ("click of the referred visitor on the referrer's link", click_of_referral),
            ("the referrer's own click", click_of_referrer),
        ):
            if click.pk not in seen:
                seen.add(click.pk)
                details = {"visitor_id": click.visitor_id, "ip": str(click.ip), "user_agent": click.user_agent}
                rows.append(_row(role, click, click.occurred_at, link=click.link_id, **details))
    return FraudSignal(
        code=FraudSignalCode.SELF_REFERRAL_DEVICE,
        message=(
            f"The referred visitor {visitor_id} clicked from IP {theirs.ip} with the same browser as the "
            f"referrer's own visitor {own.visitor_id} (click #{own.pk})."
        ),
        evidence={
            "compared": [
                _compared("IP address", str(theirs.ip), str(own.ip), source),
                _compared("User agent", theirs.user_agent, own.user_agent, source),
            ],
            "rows": rows,
            "params": {
                "activity_days": policy.self_referral_activity_days,
                "activity_since": _iso(since),
                "matching_clicks": len(pairs),
            },
        },
    )


def check_disposable_email(*, referral: Referral) -> FraudSignal | None:
    """The referred e-mail's domain (or a parent domain of it) is on the disposable-domain list."""
    domain = email_domain(referral.referred_email)
    entry = domain_listed_in(domain, disposable_domains()) if domain else ""
    if not entry:
        return None
    list_name = "disposable domain list (referrals/data/disposable_domains.txt)"
    return FraudSignal(
        code=FraudSignalCode.DISPOSABLE_EMAIL,
        message=f"The referred e-mail {referral.referred_email} uses {domain}, a throw-away e-mail domain ({entry}).",
        evidence={
            "compared": [_compared("E-mail domain", domain, entry, list_name)],
            "rows": [],
            "params": {"list": "referrals/data/disposable_domains.txt", "list_size": len(disposable_domains())},
        },
    )


def _velocity_window(referral: Referral) -> tuple[datetime, datetime]:
    return referral.created_at - timedelta(hours=1), referral.created_at


def check_velocity(*, referral: Referral, policy: FraudPolicy, count: int | None = None) -> FraudSignal | None:
    """The referrer has more than ``velocity_max_per_hour`` referrals in the hour up to this one. ``count``:
    those referrals, already counted (``velocity_and_company_rows``)."""
    window_start, window_end = _velocity_window(referral)

    def in_window():  # built only when needed: most screenings are answered by ``count`` and find nothing
        return (
            Referral.objects.for_tenant(referral.tenant_id)
            .filter(referrer_id=referral.referrer_id, created_at__gt=window_start, created_at__lte=window_end)
            .order_by("created_at", "pk")
        )

    if count is None:
        count = in_window().count()
    limit = policy.velocity_max_per_hour
    if count <= limit:
        return None
    return FraudSignal(
        code=FraudSignalCode.VELOCITY,
        message=(
            f"The referrer made {count} referrals in the hour up to this one "
            f"({window_start:%Y-%m-%d %H:%M:%S} to {window_end:%H:%M:%S} UTC); the program allows {limit}."
        ),
        evidence={
            "compared": [
                _compared(
                    "Referrals by this referrer in the hour",
                    count,
                    limit,
                    "the program's limit (velocity_max_per_hour)",
                )
            ],
            "rows": [
                _row("referral in the hour", row, row.created_at, email=row.referred_email)
                for row in in_window()[:EVIDENCE_ROW_LIMIT]
            ],
            "params": {
                "max_per_hour": limit,
                "window_start": _iso(window_start),
                "window_end": _iso(window_end),
                "count": count,
            },
        },
    )


class _CompanyKeys(NamedTuple):
    """What the duplicate-company check compares a referral by, and from when."""

    name_key: str
    email_key: str
    domain: str
    company_domain: str
    since: datetime


def _company_keys(referral: Referral, policy: FraudPolicy) -> _CompanyKeys:
    return _CompanyKeys(
        name_key=normalise_company_name(referral.referred_company),
        email_key=normalize_email_for_matching(referral.referred_email),
        domain=email_domain(referral.referred_email),
        company_domain=company_email_domain(referral.referred_email),
        since=referral.created_at - timedelta(days=policy.duplicate_company_window_days),
    )


# The velocity count (src 0) and the duplicate-company candidates (src 1) of a new referral in ONE statement
# (issue 15): the same two reads as ``check_velocity`` and ``check_duplicate_company`` make on their own, each
# on its index; an empty key matches nothing (``_any_key``).
# The candidates' columns in the model's field order (``Model.from_db`` takes a partial row in that order).
_EARLIER_FIELDS = [
    field.attname
    for field in Referral._meta.concrete_fields
    if field.attname in {"id", "referrer_id", "referred_company", "referred_email", "created_at"}
]
# (A NULL of unknown type takes the other branch's column type in a UNION.)
_EARLIER_NULLS = ", ".join("NULL" for _name in _EARLIER_FIELDS)
_EARLIER_OF_COMPANY = _any_key(
    f"1 AS src, {', '.join(f'r.{name}' for name in _EARLIER_FIELDS)}, 0 AS n FROM referrals_referral r",
    """r.tenant_id = %(tenant)s AND r.program_id = %(program)s AND r.created_at >= %(since)s
    AND (r.created_at < %(at)s OR (r.created_at = %(at)s AND r.id < %(pk)s)) AND r.id <> %(pk)s""",
    [
        ("%(name_key)s", "r.referred_company_key = %(name_key)s"),
        ("%(company_domain)s", "r.referred_mailbox_domain = %(company_domain)s"),
        ("%(email_key)s", "r.referred_mailbox = %(email_key)s"),
    ],
    ("r.created_at, r.id", "created_at, id"),
)
_VELOCITY_AND_COMPANY_SQL = f"""
SELECT 0 AS src, {_EARLIER_NULLS}, count(*)
  FROM referrals_referral r
 WHERE r.tenant_id = %(tenant)s AND r.referrer_id = %(referrer)s
   AND r.created_at > %(window_start)s AND r.created_at <= %(window_end)s
UNION ALL
{_EARLIER_OF_COMPANY}
"""  # noqa: S608 - column names from the model, no input


def velocity_and_company_rows(*, referral: Referral, policy: FraudPolicy) -> tuple[int, list[Referral]]:
    """The referrer's referrals in the velocity window (a count) and the program's earlier referrals that may
    be the same company, in one statement, for ``check_velocity`` and ``check_duplicate_company``."""
    with connection.cursor() as cursor:
        cursor.execute(_VELOCITY_AND_COMPANY_SQL, _velocity_and_company_params(referral, policy))
        rows = cursor.fetchall()
    count = next(row[6] for row in rows if row[0] == 0)
    earlier = [Referral.from_db(connection.alias, _EARLIER_FIELDS, list(row[1:6])) for row in rows if row[0] == 1]
    return count, earlier


def _velocity_and_company_params(referral: Referral, policy: FraudPolicy) -> dict:
    window_start, window_end = _velocity_window(referral)
    keys = _company_keys(referral, policy)
    return {
        "tenant": referral.tenant_id,
        "referrer": referral.referrer_id,
        "window_start": window_start,
        "window_end": window_end,
        "program": referral.program_id,
        "since": keys.since,
        "at": referral.created_at,
        "pk": referral.pk or 0,
        "name_key": keys.name_key[:200],
        "company_domain": keys.company_domain,
        "email_key": keys.email_key,
    }


# A new referral's whole screen in ONE statement (issue 15): the referrer's own visitors (src 0-2, the rows of
# ``_OWN_VISITORS_SQL``), the velocity count (src 3) and the duplicate-company candidates (src 4, the rows of
# ``_VELOCITY_AND_COMPANY_SQL``) — the same reads, each part on its index as alone, their rows in the same order.
_SCREEN_COLUMNS = ["src", *_EARLIER_FIELDS, "n"]
_SCREEN_SQL = f"""
SELECT o.src, o.id, o.visitor_id, o.at, o.email, o.external_id, o.kind, o.external_event_id, o.other_kind,
       o.other_value, o.source, NULL::bigint AS referrer_id, NULL::text AS company, NULL::bigint AS n
  FROM ({_OWN_VISITORS_SQL}) o
UNION ALL
SELECT v.src + 3, v.id, NULL, v.created_at, v.referred_email, NULL, NULL, NULL, NULL, NULL, NULL, v.referrer_id,
       v.referred_company, v.n
  FROM ({_VELOCITY_AND_COMPANY_SQL}) v ({", ".join(_SCREEN_COLUMNS)})
ORDER BY 1, 4, 2
"""  # noqa: S608 - column names from the model, no input


def screen_rows(*, referral: Referral, policy: FraudPolicy) -> tuple[list[OwnVisitor], int, list[Referral]]:
    """``referrer_visitor_ids`` and ``velocity_and_company_rows`` in one statement (``_SCREEN_SQL``): the
    referrer's own visitors, the velocity count and the duplicate-company candidates."""
    with connection.cursor() as cursor:
        execute_prepared(
            cursor, _SCREEN_SQL, {**_own_visitors_params(referral), **_velocity_and_company_params(referral, policy)}
        )
        rows = cursor.fetchall()
    own = [row[:11] for row in rows if row[0] < 3]
    count = next(row[13] for row in rows if row[0] == 3)
    earlier = []
    for row in rows:
        if row[0] == 4:
            values = {"id": row[1], "referrer_id": row[11], "referred_company": row[12]}
            values |= {"referred_email": row[4], "created_at": row[3]}
            earlier.append(
                Referral.from_db(connection.alias, _EARLIER_FIELDS, [values[name] for name in _EARLIER_FIELDS])
            )
    return _own_visitors(referral, own), count, earlier


def check_duplicate_company(
    *, referral: Referral, policy: FraudPolicy, earlier: list[Referral] | None = None
) -> FraudSignal | None:
    """The same company was already referred to this program (by anyone) within the window: same
    normalised company name, same company e-mail domain (free-mail and disposable domains do not
    count) or the same normalised e-mail. ``earlier``: the candidates, already read
    (``velocity_and_company_rows``)."""
    name_key, email_key, domain, company_domain, since = _company_keys(referral, policy)
    if not (name_key or email_key):
        return None
    if earlier is None:
        # Only the program's referrals of the window that can match are read, by the stored keys on their
        # indexes (the normalised company name kept by Referral.save, the mailbox and its domain generated by
        # the database: referrals.mailbox); each is then compared exactly as before.
        could_match = Q(pk__in=[])
        if name_key:
            could_match |= Q(referred_company_key=name_key[:200])
        if company_domain:
            could_match |= Q(referred_mailbox_domain=company_domain)
        if email_key:
            could_match |= Q(referred_mailbox=email_key)
        earlier = (
            Referral.objects.for_tenant(referral.tenant_id)
            .filter(could_match)
            .filter(program_id=referral.program_id, created_at__gte=since)
            .filter(Q(created_at__lt=referral.created_at) | Q(created_at=referral.created_at, pk__lt=referral.pk))
            .exclude(pk=referral.pk)
            .order_by("created_at", "pk")
            .only("pk", "referrer_id", "referred_company", "referred_email", "created_at")
            .iterator(chunk_size=2000)
        )
    matches = []
    for row in earlier:
        matched_on = []
        if name_key and normalise_company_name(row.referred_company) == name_key:
            matched_on.append("name")
        if company_domain and email_domain(row.referred_email) == company_domain:
            matched_on.append("domain")
        if email_key and normalize_email_for_matching(row.referred_email) == email_key:
            matched_on.append("email")
        if matched_on:
            matches.append((row, matched_on))
    if not matches:
        return None
    compared = []
    for key in ("name", "domain", "email"):
        first = next(((row, on) for row, on in matches if key in on), None)
        if first is None:
            continue
        row = first[0]
        source = f"referral #{row.pk} ({row.created_at:%Y-%m-%d %H:%M} UTC)"
        if key == "name":
            compared.append(
                _compared("Company", referral.referred_company, row.referred_company, source) | {"normalised": name_key}
            )
        elif key == "domain":
            compared.append(_compared("Company e-mail domain", domain, email_domain(row.referred_email), source))
        else:
            compared.append(
                _compared("E-mail", referral.referred_email, row.referred_email, source) | {"normalised": email_key}
            )
    first_row, first_on = matches[0]
    return FraudSignal(
        code=FraudSignalCode.DUPLICATE_COMPANY,
        message=(
            f"{referral.referred_company or referral.referred_email} was already referred to this program: "
            f"referral #{first_row.pk} on {first_row.created_at:%Y-%m-%d} (same {', '.join(first_on)})"
            + (f", and {len(matches) - 1} more." if len(matches) > 1 else ".")
        ),
        evidence={
            "compared": compared,
            "rows": [
                _row(
                    "earlier referral of the same company",
                    row,
                    row.created_at,
                    matched_on=on,
                    company=row.referred_company,
                    email=row.referred_email,
                    referrer=row.referrer_id,
                )
                for row, on in matches[:EVIDENCE_ROW_LIMIT]
            ],
            "params": {
                "window_days": policy.duplicate_company_window_days,
                "since": _iso(since),
                "matches": len(matches),
                "company_domain_checked": company_domain or None,
            },
        },
    )
