"""Reads for referrals, the identity graph, touchpoints and attributions. Tenant first, always."""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import io
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Q, QuerySet

from programs.models import Participant, ParticipantStatus, Program, ProgramStatus, ProgramVersion
from programs.services import judging_rules
from referral_platform.db.prepared import execute_prepared
from referral_platform.db.sql import model_from_row
from referral_platform.money import format_amount
from referral_platform.tenancy import memo, rls
from referral_platform.tenancy.models import Tenant

from . import attribution as attribution_math
from .models import (
    SETTLED_EVENT_STATUSES,
    Attribution,
    Channel,
    Click,
    ConversionEvent,
    IdentityKind,
    IdentityLink,
    Referral,
    ReferralLink,
    TouchpointKind,
)

# A cluster stops growing here: a shared computer or a catch-all address must not merge thousands of
# people into one identity.
IDENTITY_CLUSTER_MAX_NODES = 200
IDENTITY_CLUSTER_MAX_DEPTH = 4
# referral_for_identity reads up to this many of a person's referrals at once (more: one query per identifier).
REFERRAL_MATCH_CANDIDATES = 50


def normalize_email(email: str) -> str:
    return (email or "").strip().lower()


def normalize_identifier(value: str) -> str:
    return (value or "").strip()


@dataclass
class IdentityCluster:
    """Every identifier known to belong to one person (visitor ids from several devices, e-mails,
    customer ids), found by walking the identity graph from the identifiers a request revealed."""

    visitor_ids: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)
    customer_ids: set[str] = field(default_factory=set)
    is_truncated: bool = False
    # The identifiers the walk started from (``identity_nodes`` form): another walk from the same ones over
    # the same graph finds the same cluster (``referral_credit`` reuses it). Not part of equality.
    seed: frozenset = field(default_factory=frozenset, compare=False)

    def nodes(self) -> set[tuple[str, str]]:
        return (
            {(IdentityKind.VISITOR.value, v) for v in self.visitor_ids}
            | {(IdentityKind.EMAIL.value, e) for e in self.emails}
            | {(IdentityKind.CUSTOMER.value, c) for c in self.customer_ids}
        )

    def add(self, kind: str, value: str) -> None:
        {
            IdentityKind.VISITOR: self.visitor_ids,
            IdentityKind.EMAIL: self.emails,
            IdentityKind.CUSTOMER: self.customer_ids,
        }[IdentityKind(kind)].add(value)

    def as_json(self) -> dict:
        return {
            "visitor_ids": sorted(self.visitor_ids),
            "emails": sorted(self.emails),
            "customer_ids": sorted(self.customer_ids),
            "truncated": self.is_truncated,
        }

    def is_empty(self) -> bool:
        return not (self.visitor_ids or self.emails or self.customer_ids)


def identity_nodes(*, visitor_ids=(), emails=(), customer_ids=()) -> set[tuple[str, str]]:
    nodes = set()
    nodes |= {(IdentityKind.VISITOR.value, normalize_identifier(v)) for v in visitor_ids if normalize_identifier(v)}
    nodes |= {(IdentityKind.EMAIL.value, normalize_email(e)) for e in emails if normalize_email(e)}
    nodes |= {(IdentityKind.CUSTOMER.value, normalize_identifier(c)) for c in customer_ids if normalize_identifier(c)}
    return nodes


def identity_cluster(
    tenant: Tenant | int, *, visitor_ids=(), emails=(), customer_ids=(), first_level: list[tuple] | None = None
) -> IdentityCluster:
    """The identifiers connected to the given ones in the tenant's identity graph (breadth first).
    ``first_level``: the links touching the given identifiers, already read (``identity_level_sql``, in the
    statement that recorded the person's own links: ``referrals.services.identity_link_and_cluster``)."""
    seen = identity_nodes(visitor_ids=visitor_ids, emails=emails, customer_ids=customer_ids)
    seed = frozenset(seen)
    frontier = set(seen)
    truncated = False
    links = IdentityLink.objects.for_tenant(tenant)
    for depth in range(IDENTITY_CLUSTER_MAX_DEPTH):
        if not frontier:
            break
        found = set()
        if depth == 0 and first_level is not None:
            rows = first_level
        else:
            rows = links.filter(_links_touching(frontier)).values_list("a_kind", "a_value", "b_kind", "b_value")[
                : identity_level_limit()
            ]
        for a_kind, a_value, b_kind, b_value in rows:
            found.add((a_kind, a_value))
            found.add((b_kind, b_value))
        frontier = found - seen
        seen |= frontier
        if len(seen) > IDENTITY_CLUSTER_MAX_NODES:
            truncated = True
            break
    return _cluster_of(seen, truncated, seed=seed)


def identity_level_sql(tenant_id: int, frontier: set[tuple[str, str]]) -> tuple[str, list]:
    """The links touching ``frontier`` (one level of ``identity_cluster``'s walk, at most
    ``identity_level_limit()`` rows) as SQL and parameters, to be run as part of another statement."""
    by_kind: dict[str, list[str]] = {}
    for kind, value in frontier:
        by_kind.setdefault(kind, []).append(value)
    conditions, params = [], [tenant_id]
    for kind, values in sorted(by_kind.items()):
        conditions.append("(a_kind = %s AND a_value = ANY(%s)) OR (b_kind = %s AND b_value = ANY(%s))")
        params += [kind, sorted(values), kind, sorted(values)]
    sql = (
        "SELECT a_kind, a_value, b_kind, b_value FROM referrals_identitylink "  # noqa: S608 - no input in the text
        f"WHERE tenant_id = %s AND ({' OR '.join(conditions)}) LIMIT {identity_level_limit():d}"
    )
    return sql, params


def identity_level_limit() -> int:
    """How many links one level of a walk reads at most."""
    return IDENTITY_CLUSTER_MAX_NODES * 4


def _cluster_of(seen: set[tuple[str, str]], truncated: bool, *, seed: frozenset = frozenset()) -> IdentityCluster:
    cluster = IdentityCluster(is_truncated=truncated, seed=seed)
    for kind, value in sorted(seen)[:IDENTITY_CLUSTER_MAX_NODES]:
        cluster.add(kind, value)
    return cluster


def _links_touching(frontier: set[tuple[str, str]]) -> Q:
    condition = Q()
    by_kind: dict[str, list[str]] = {}
    for kind, value in frontier:
        by_kind.setdefault(kind, []).append(value)
    for kind, values in by_kind.items():
        condition |= Q(a_kind=kind, a_value__in=values) | Q(b_kind=kind, b_value__in=values)
    return condition


def identity_clusters(
    tenant: Tenant | int, seeds: list[dict], *, first_links: list | None = None
) -> list[IdentityCluster]:
    """``identity_cluster`` for many people at once (a settlement chunk): the graph is walked breadth first
    for all of them in lock step, ONE statement per level. ``seeds``: the keyword arguments of
    ``identity_cluster`` (visitor_ids, emails, customer_ids), one dict per person. The same clusters as one
    call each; a person whose walk meets more links in a level than ``identity_cluster`` reads at once
    (a limited, thus arbitrary, subset) is walked by ``identity_cluster`` itself.
    ``first_links``: a list that receives, per person, the links its walk's first level met (as
    ``(a_kind, a_value, b_kind, b_value)``), or None for a person walked alone or cut short (a conversion chunk
    asks whether a person's own links are all recorded already)."""
    walks = [{"seen": identity_nodes(**seed), "truncated": False, "alone": False} for seed in seeds]
    for walk in walks:
        walk["start"] = frozenset(walk["seen"])
        walk["frontier"] = set(walk["seen"])
    links = IdentityLink.objects.for_tenant(tenant)
    for depth in range(IDENTITY_CLUSTER_MAX_DEPTH):
        active = [walk for walk in walks if walk["frontier"] and not walk["truncated"] and not walk["alone"]]
        if not active:
            break
        frontier = set().union(*(walk["frontier"] for walk in active))
        touching: dict[tuple[str, str], list[int]] = defaultdict(list)
        rows = list(links.filter(_links_touching(frontier)).values_list("a_kind", "a_value", "b_kind", "b_value"))
        for index, (a_kind, a_value, b_kind, b_value) in enumerate(rows):
            touching[(a_kind, a_value)].append(index)
            if (b_kind, b_value) != (a_kind, a_value):
                touching[(b_kind, b_value)].append(index)
        for walk in active:
            matched = set()
            for node in walk["frontier"]:
                matched.update(touching.get(node, ()))
            if len(matched) > IDENTITY_CLUSTER_MAX_NODES * 4:
                walk["alone"] = True
                continue
            found = set()
            for index in matched:
                a_kind, a_value, b_kind, b_value = rows[index]
                found.add((a_kind, a_value))
                found.add((b_kind, b_value))
            if depth == 0:
                walk["first"] = frozenset(rows[index] for index in matched)
            walk["frontier"] = found - walk["seen"]
            walk["seen"] |= walk["frontier"]
            if len(walk["seen"]) > IDENTITY_CLUSTER_MAX_NODES:
                walk["truncated"] = True
    if first_links is not None:
        first_links.extend(
            None if walk["alone"] or walk["truncated"] else walk.get("first", frozenset()) for walk in walks
        )
    return [
        identity_cluster(tenant, **seed)
        if walk["alone"]
        else _cluster_of(walk["seen"], walk["truncated"], seed=walk["start"])
        for seed, walk in zip(seeds, walks, strict=True)
    ]


def link_for_code(tenant: Tenant | int, code: str) -> ReferralLink | None:
    """The tenant's referral link with this code (another tenant's code is unknown here). Inside a
    ``batch_memo`` block, a code ``links_for_codes_read_ahead`` read for the block is answered without a read
    (a copy of its own each time)."""
    code = normalize_identifier(code)
    if not code:
        return None
    kept = memo.recall(_code_memo_key(tenant, code))
    if kept is not None:
        return None if kept is _UNKNOWN_CODE else _link_copy(kept)
    return (
        ReferralLink.objects.for_tenant(tenant)
        .select_related("participant", "program", "tenant")
        .filter(code=code)
        .first()
    )


_UNKNOWN_CODE = object()


def _code_memo_key(tenant: Tenant | int, code: str) -> str:
    return f"link_code_{getattr(tenant, 'pk', tenant)}_{code}"


def links_for_codes_read_ahead(tenant: Tenant | int, codes) -> None:
    """Inside a ``batch_memo`` block (a chunk of conversions, issue 15): the links the chunk's referral codes
    name, with their participants and programs, read in ONE statement for the block, so ``link_for_code``
    answers each of them (and an unknown code) without a read. Outside a block nothing is read.

    As every ``batch_memo`` read: a link, participant or program changed by someone else while the chunk runs
    counts from the next chunk on, as if the chunk had read it at its start. Only the tenant's own links are
    read; another tenant's code stays unknown here."""
    if not memo.in_batch():
        return
    wanted = {normalize_identifier(code) for code in codes} - {""}
    wanted = [code for code in wanted if memo.recall(_code_memo_key(tenant, code)) is None]
    if not wanted:
        return
    found = {
        link.code: link
        for link in ReferralLink.objects.for_tenant(tenant)
        .select_related("participant", "program")
        .filter(code__in=sorted(wanted))
    }
    for code in wanted:
        memo.remember(_code_memo_key(tenant, code), found.get(code, _UNKNOWN_CODE))


def _link_copy(link: ReferralLink) -> ReferralLink:
    """A copy of a remembered link with copies of its participant and program: what one event's processing
    does to its objects never reaches another event's."""
    fresh = copy.copy(link)
    for name in ("participant", "program"):
        relation = ReferralLink._meta.get_field(name)
        if relation.is_cached(link):
            relation.set_cached_value(fresh, copy.copy(relation.get_cached_value(link)))
    return fresh


def link_for_coupon(tenant: Tenant | int, code: str) -> ReferralLink | None:
    """The link a coupon code stands for: the participant's own coupon code (case-insensitive) → their
    direct link; else a referral code typed as a coupon. None for an unknown code."""
    typed = "".join(code.split())
    if not typed:
        return None
    participant = Participant.objects.for_tenant(tenant).filter(coupon_code=typed.upper()[:40]).first()
    if participant is None:
        return link_for_code(tenant, typed)
    links = ReferralLink.objects.for_tenant(tenant).select_related("participant", "program", "tenant")
    return (
        links.filter(participant=participant, channel=Channel.DIRECT).first()
        or links.filter(participant=participant).order_by("pk").first()
    )


def landing_link(code: str) -> ReferralLink | None:
    """The link behind a public landing page: active, of an active participant in a live program.

    Public pages know no tenant before the code; the code is unique across tenants and the
    tenant comes from the link itself.
    """
    if "\x00" in (code or ""):  # PostgreSQL text cannot hold NUL: no such code, not a 500
        return None
    link = (
        ReferralLink.objects.select_related("participant", "program", "tenant")
        .filter(code=normalize_identifier(code), is_active=True)
        .first()
    )
    if link is None or link.program.status != ProgramStatus.ACTIVE:
        return None
    rls.bind(link.tenant_id)  # the public page now sees the link's tenant only (row-level security)
    return link if link.participant.status == ParticipantStatus.ACTIVE else None


@dataclass(frozen=True)
class TouchView:
    """A touchpoint as attribution reads it: a Click row or a Touchpoint row."""

    ref: str  # "click:<id>" or "touchpoint:<id>"
    kind: str
    participant_id: int | None
    participant_name: str
    occurred_at: datetime
    detail: str

    def as_json(self) -> dict:
        return {
            "ref": self.ref,
            "kind": self.kind,
            "participant": self.participant_id,
            "participant_name": self.participant_name,
            "at": self.occurred_at.isoformat(),
            "detail": self.detail,
        }


# A person's clicks (src 0) and other touchpoints (src 1) in ONE statement (issue 15: attribution read them with
# two), with what a sequence shows of each: the clicks of the programs by the visitor ids (bots excluded), the
# touchpoints of the programs — or of no program and no participant — by visitor id, e-mail or customer id; all
# up to ``until``. An empty list matches nothing. Each part on its indexes, as the two queries were.
_TOUCH_ROWS_SQL = """
SELECT 0 AS src, c.id, c.occurred_at, c.participant_id, p.name, c.program_id, c.visitor_id, '' AS email,
       '' AS customer_external_id, 'click' AS kind, l.code AS label, c.channel
  FROM referrals_click c
  JOIN programs_participant p ON p.id = c.participant_id
  JOIN referrals_referrallink l ON l.id = c.link_id
 WHERE c.tenant_id = %(tenant)s AND c.program_id = ANY(%(programs)s) AND NOT c.is_bot
   AND c.visitor_id = ANY(%(visitors)s) AND c.occurred_at <= %(until)s
UNION ALL
SELECT 1, t.id, t.occurred_at, t.participant_id, COALESCE(p.name, ''), t.program_id, t.visitor_id, t.email,
       t.customer_external_id, t.kind, t.label, ''
  FROM referrals_touchpoint t
  LEFT JOIN programs_participant p ON p.id = t.participant_id
 WHERE t.tenant_id = %(tenant)s AND t.occurred_at <= %(until)s
   AND (t.visitor_id = ANY(%(visitors)s) OR t.email = ANY(%(emails)s)
        OR t.customer_external_id = ANY(%(customers)s))
   AND (t.program_id = ANY(%(programs)s) OR (t.program_id IS NULL AND t.participant_id IS NULL))
"""


@dataclass(frozen=True, slots=True)
class _TouchRow:
    src: int  # 0 a click, 1 a touchpoint
    pk: int
    occurred_at: datetime
    participant_id: int | None
    participant_name: str
    program_id: int | None
    visitor_id: str
    email: str
    customer_external_id: str
    kind: str
    label: str  # a click's link code; a touchpoint's label
    channel: str


_CHANNEL_LABELS = dict(Channel.choices)


def _touch_rows(
    tenant: Tenant | int, *, programs: list[int], visitor_ids, emails, customer_ids, until: datetime
) -> list[_TouchRow]:
    if not (visitor_ids or emails or customer_ids):
        return []
    params = {
        "tenant": tenant if isinstance(tenant, int) else tenant.pk,
        "programs": list(programs),
        "visitors": sorted(visitor_ids),
        "emails": sorted(emails),
        "customers": sorted(customer_ids),
        "until": until,
    }
    with connection.cursor() as cursor:
        execute_prepared(cursor, _TOUCH_ROWS_SQL, params)
        return [_TouchRow(*row) for row in cursor.fetchall()]


def _sequence(rows) -> list[TouchView]:
    """Clicks and touchpoints as one sequence: by time, clicks first on a tie, then by id."""
    views: list[tuple] = []
    for row in rows:
        if row.src == 0:
            view = TouchView(
                ref=f"click:{row.pk}",
                kind="click",
                participant_id=row.participant_id,
                participant_name=row.participant_name,
                occurred_at=row.occurred_at,
                detail=f"link {row.label} ({_CHANNEL_LABELS.get(row.channel, row.channel)}), visitor {row.visitor_id}",
            )
        else:
            view = TouchView(
                ref=f"touchpoint:{row.pk}",
                kind=row.kind,
                participant_id=row.participant_id,
                participant_name=row.participant_name,
                occurred_at=row.occurred_at,
                detail=row.label,
            )
        views.append((row.occurred_at, row.src, row.pk, view))
    views.sort(key=lambda item: item[:3])
    return [view for *_, view in views]


# One event's processing reads a person's sequence up to twice with the same question (the link its clicks
# establish the referral through, then the credit) and asks for their first click in between: inside
# ``sequences_remembered`` a sequence read once answers again, until a touchpoint is recorded
# (``touchpoint_record`` calls ``sequences_forget``). Clicks are never written by that processing.
_sequences: contextvars.ContextVar[dict | None] = contextvars.ContextVar("touch_sequences", default=None)


@contextlib.contextmanager
def sequences_remembered():
    token = _sequences.set({})
    try:
        yield
    finally:
        _sequences.reset(token)


def sequences_forget() -> None:
    remembered = _sequences.get()
    if remembered:
        remembered.clear()


def _sequence_key(tenant: Tenant | int, program_id: int, cluster: IdentityCluster) -> tuple:
    return (tenant if isinstance(tenant, int) else tenant.pk, program_id, frozenset(cluster.nodes()))


def touchpoint_sequence(
    tenant: Tenant | int, *, program: Program, cluster: IdentityCluster, until: datetime
) -> list[TouchView]:
    """The person's touchpoints in ``program`` up to ``until``, oldest first.

    Clicks come from referrals.Click (bots excluded) by visitor id; other touchpoints from
    Touchpoint rows by visitor id, e-mail or customer id. Ties in time are ordered clicks first,
    then by id, so the sequence is deterministic. One statement (``_TOUCH_ROWS_SQL``), or none when the same
    sequence was read already inside ``sequences_remembered``.
    """
    remembered = _sequences.get()
    key = (*_sequence_key(tenant, program.pk, cluster), until)
    if remembered is not None and key in remembered:
        return list(remembered[key])
    sequence = _sequence(
        _touch_rows(
            tenant,
            programs=[program.pk],
            visitor_ids=cluster.visitor_ids,
            emails=cluster.emails,
            customer_ids=cluster.customer_ids,
            until=until,
        )
    )
    if remembered is not None:
        remembered[key] = list(sequence)
    return sequence


def touchpoint_sequences(
    tenant: Tenant | int, wanted: list[tuple[int, IdentityCluster, datetime]]
) -> list[list[TouchView]]:
    """``touchpoint_sequence`` for many people at once (a settlement chunk): ONE statement for the clicks
    and touchpoints of them all, each row then given to the people it belongs to by the same conditions.
    ``wanted``: (program id, cluster, until) per person; the same sequences as one call each."""
    if not wanted:
        return []
    rows = _touch_rows(
        tenant,
        programs=sorted({program_id for program_id, _cluster, _until in wanted}),
        visitor_ids=set().union(*(cluster.visitor_ids for _program, cluster, _until in wanted)),
        emails=set().union(*(cluster.emails for _program, cluster, _until in wanted)),
        customer_ids=set().union(*(cluster.customer_ids for _program, cluster, _until in wanted)),
        until=max(until for _program, _cluster, until in wanted),
    )
    out = []
    for program_id, cluster, until in wanted:
        own = [
            row
            for row in rows
            if row.occurred_at <= until
            and (
                (row.src == 0 and row.program_id == program_id and row.visitor_id in cluster.visitor_ids)
                or (
                    row.src == 1
                    and (row.program_id == program_id or (row.program_id is None and row.participant_id is None))
                    and (
                        row.visitor_id in cluster.visitor_ids
                        or row.email in cluster.emails
                        or row.customer_external_id in cluster.customer_ids
                    )
                )
            )
        ]
        out.append(_sequence(own))
    return out


@dataclass(frozen=True)
class ReferralCredit:
    """Who gets the credit for a referral, decided at its establishment (``Referral.established_at``):
    the touchpoints up to that moment, those within the cookie window before it, and the model's split.
    With no touchpoint of a participant in the window, the referral's referrer of record is credited."""

    model: str
    anchor: datetime
    window_start: datetime
    cookie_window_days: int
    half_life_days: int
    cluster: IdentityCluster
    sequence: list[TouchView]
    in_window: list[TouchView]
    credited: list[TouchView]
    result: attribution_math.Credit


def referral_credit(
    referral: Referral, *, extra_identity: dict | None = None, walked: IdentityCluster | None = None
) -> ReferralCredit:
    """The credit of ``referral`` (every event of the referral is credited this way: a payment a year
    later too, and touches after the sign-up never move it). The model, window and half-life come from
    the referral's rule version; ``extra_identity`` adds an event's identifiers to the person's cluster.
    ``walked``: a cluster this transaction already walked (the event's, in conversion processing); it is
    used when it started from exactly the identifiers the credit starts from (a referral the event created,
    or one that knows no identifier the event does not carry), instead of walking the graph again."""
    seed = _credit_seed(referral, extra_identity or {})
    if walked is not None and walked.seed and walked.seed == identity_nodes(**seed):
        cluster = walked
    else:
        cluster = identity_cluster(referral.tenant_id, **seed)
    anchor = _anchor(referral)
    sequence = touchpoint_sequence(referral.tenant_id, program=referral.program, cluster=cluster, until=anchor)
    return _credit_of(referral, cluster, sequence)


def referral_credits(referrals: list[Referral]) -> list[ReferralCredit | Exception]:
    """``referral_credit`` of many referrals of one tenant at once (a settlement chunk): their identity
    clusters walked together and their touchpoints read together (``identity_clusters``,
    ``touchpoint_sequences``: a few statements for the whole chunk). A referral whose credit cannot be
    computed gets its exception in its place."""
    if not referrals:
        return []
    tenant_id = referrals[0].tenant_id
    clusters = identity_clusters(tenant_id, [_credit_seed(referral, {}) for referral in referrals])
    sequences = touchpoint_sequences(
        tenant_id,
        [
            (referral.program_id, cluster, _anchor(referral))
            for referral, cluster in zip(referrals, clusters, strict=True)
        ],
    )
    out: list[ReferralCredit | Exception] = []
    for referral, cluster, sequence in zip(referrals, clusters, sequences, strict=True):
        try:
            out.append(_credit_of(referral, cluster, sequence))
        except Exception as error:  # the caller leaves this referral to its per-referral path
            out.append(error)
    return out


def _credit_seed(referral: Referral, extra: dict) -> dict:
    return {
        "visitor_ids": [referral.visitor_id, extra.get("visitor_id", "")],
        "emails": [referral.referred_email, extra.get("email", "")],
        "customer_ids": [referral.referred_external_id, extra.get("customer_external_id", "")],
    }


def _anchor(referral: Referral) -> datetime:
    return referral.established_at or referral.created_at


def _credit_of(referral: Referral, cluster: IdentityCluster, sequence: list[TouchView]) -> ReferralCredit:
    rules = judging_rules(program=referral.program, version=referral.rule_version)
    model = rules["attribution_model"]
    anchor = _anchor(referral)
    window_start = anchor - timedelta(days=int(rules["cookie_window_days"]))
    in_window = [touch for touch in sequence if touch.occurred_at >= window_start]
    credited = [touch for touch in in_window if touch.participant_id is not None]
    # A partner's registered deal protects the account: its registration is credited alone.
    registered = [touch for touch in credited if touch.kind == TouchpointKind.PARTNER_REGISTRATION]
    if registered:
        credited = registered
    if not credited:
        # The referral exists, so it counted when it was established (a marketer created it, or its
        # establishment moved before the touch that made it, e.g. a payment dated seconds before the
        # sign-up that carried the code): its referrer of record gets the credit.
        credited = [
            TouchView(
                ref=f"referral:{referral.pk}",
                kind="referrer_of_record",
                participant_id=referral.referrer_id,
                participant_name=referral.referrer.name,
                occurred_at=anchor,
                detail="no touchpoint of a participant in the window: the referral's referrer of record",
            )
        ]
    result = attribution_math.credit(
        model,
        [attribution_math.Touch(t.ref, t.participant_id, t.occurred_at) for t in credited],
        conversion_at=anchor,
        half_life_days=int(rules["time_decay_half_life_days"]),
    )
    return ReferralCredit(
        model=model,
        anchor=anchor,
        window_start=window_start,
        cookie_window_days=int(rules["cookie_window_days"]),
        half_life_days=int(rules["time_decay_half_life_days"]),
        cluster=cluster,
        sequence=sequence,
        in_window=in_window,
        credited=credited,
        result=result,
    )


def referral_for_identity(
    tenant: Tenant | int, *, cluster: IdentityCluster, program: Program | None = None, with_sequence: bool = False
) -> Referral | None:
    """The person's referral: matched by customer id, then e-mail, then visitor id; in ``program``
    when given. Among several, the oldest wins (the first referrer of record). Returned with its program,
    referrer and rule version. ``with_sequence`` (conversion processing): the same statement also reads the
    moment of the referral's earliest settled event (``earliest_settled_as_read``) and the person's touchpoints in
    the referral's program up to its establishment (``sequence_remember_as_read``) — what it asks next."""
    # One statement for the three identifiers, hand-written (issue 15: conversion processing asks it for every
    # event, and building the ORM's query with its three joined models cost more than running it); the
    # precedence is applied to its rows, oldest first.
    matches = _identity_matches(cluster)
    if not any(values for _name, values in matches):
        return None
    candidates = _referral_candidates(
        tenant,
        program,
        [(name, values) for name, values in matches if values],
        touched=cluster if with_sequence else None,
    )
    if len(candidates) == REFERRAL_MATCH_CANDIDATES:  # a person with that many referrals: one query per identifier
        for name, values in matches:
            if values:
                found = _referral_candidates(tenant, program, [(name, values)], limit=1)
                if found:
                    return found[0]
        return None
    return _by_precedence(candidates, matches)


def _identity_matches(cluster: IdentityCluster) -> tuple:
    """The referral's columns a person is matched by, in precedence order, with the person's identifiers."""
    return (
        ("referred_external_id", cluster.customer_ids),
        ("referred_email", cluster.emails),
        ("visitor_id", cluster.visitor_ids),
    )


def _by_precedence(candidates: list[Referral], matches) -> Referral | None:
    """Customer id, then e-mail, then visitor id; the oldest candidate first within each."""
    for name, values in matches:
        for referral in candidates:
            if getattr(referral, name) in values:
                return referral
    return None


def referrals_for_identities(
    tenant: Tenant | int, people: list[tuple[IdentityCluster, Program | None]]
) -> list[tuple[bool, Referral | None]]:
    """``referral_for_identity(tenant, cluster=…, program=…, with_sequence=True)`` for many people at once, in ONE
    statement (a conversion chunk reads its people's referrals ahead: issue 15): per person (found, the
    referral with its program, referrer, rule version, earliest settled event and touch rows, or None). ``found``
    is False for a person this read cannot answer as the one-person read would (as many candidates as it reads
    at once: that read goes on identifier by identifier) — the caller asks ``referral_for_identity``."""
    if not people:
        return []
    persons = [
        {
            "i": index,
            "program": program.pk if program is not None else None,
            "customers": sorted(cluster.customer_ids),
            "emails": sorted(cluster.emails),
            "visitors": sorted(cluster.visitor_ids),
        }
        for index, (cluster, program) in enumerate(people)
    ]
    columns, joins = _joined_columns_and_joins()
    quote = connection.ops.quote_name
    earliest = _earliest_settled_sql()
    touch_sql = _touch_rows_json_sql(_PERSON_TOUCH_ROWS)
    table = quote(Referral._meta.db_table)
    # The people's candidates as one equality join per identifier kind ((tenant, identifier) indexes, or one hash
    # of the tenant's referrals for all of them), not one search per person; each person's oldest
    # ``REFERRAL_MATCH_CANDIDATES`` kept, as the one-person read's LIMIT keeps them.
    by_identifier = " UNION ".join(
        f"SELECT person.i, c.id FROM person CROSS JOIN LATERAL unnest(person.{values}) AS k(value) "  # noqa: S608
        f"JOIN {table} c ON c.tenant_id = %s AND c.{quote(column)} = k.value"
        for column, values in (
            ("referred_external_id", "customers"),
            ("referred_email", "emails"),
            ("visitor_id", "visitors"),
        )
    )
    # Identifiers and aliases come from the models' metadata; every value is a parameter (the people as JSON).
    sql = (
        "WITH person AS (SELECT * FROM jsonb_to_recordset(%s::jsonb) AS person(i int, program bigint, "  # noqa: S608
        "customers text[], emails text[], visitors text[])), "
        f"matched AS ({by_identifier}), "
        "ranked AS (SELECT matched.i, c.id, row_number() OVER (PARTITION BY matched.i ORDER BY c.created_at, c.id) "
        f"AS n FROM matched JOIN person ON person.i = matched.i JOIN {table} c ON c.id = matched.id "
        "WHERE person.program IS NULL OR c.program_id = person.program) "
        f"SELECT ranked.i, {columns}, {earliest}, {touch_sql} "
        f"FROM ranked JOIN person ON person.i = ranked.i JOIN {table} r ON r.id = ranked.id {joins} "
        f"WHERE ranked.n <= {REFERRAL_MATCH_CANDIDATES:d} "
        "ORDER BY ranked.i, r.created_at, r.id"
    )
    tenant_id = tenant if isinstance(tenant, int) else tenant.pk
    params = [json.dumps(persons), *[tenant_id] * 3, [str(status) for status in SETTLED_EVENT_STATUSES]]
    with connection.cursor() as cursor:
        execute_prepared(cursor, sql, params)
        rows = cursor.fetchall()
    candidates: list[list[Referral]] = [[] for _ in people]
    for row in rows:
        candidates[row[0]].append(_candidate_from_row(row, 1, touched=True))
    return [
        (False, None)
        if len(found) == REFERRAL_MATCH_CANDIDATES
        else (True, _by_precedence(found, _identity_matches(cluster)))
        for found, (cluster, _program) in zip(candidates, people, strict=True)
    ]


# The referral with the three models ``referral_for_identity`` returns with it, in one row (the ORM's
# ``select_related("program", "referrer", "rule_version")``): each model's columns in its field order.
_JOINED = (
    (Referral, "r", "", ""),
    (Program, "p", "JOIN", "r.program_id"),
    (Participant, "pa", "JOIN", "r.referrer_id"),
    (ProgramVersion, "v", "LEFT JOIN", "r.rule_version_id"),
)


# ``_TOUCH_ROWS_SQL`` for each candidate of ``_referral_candidates`` (alias ``r``): its program, up to its
# establishment (``_anchor``), its rows as one JSON array; the person's identifiers stay parameters.
_CANDIDATE_TOUCH_ROWS = {
    "tenant": "r.tenant_id",
    "programs": "ARRAY[r.program_id]",
    "until": "COALESCE(r.established_at, r.created_at)",
}


def _candidate_touch_rows_sql(cluster: IdentityCluster) -> tuple[str, list]:
    params: list = []
    values = {
        "visitors": sorted(cluster.visitor_ids),
        "emails": sorted(cluster.emails),
        "customers": sorted(cluster.customer_ids),
    }
    return _touch_rows_json_sql(_CANDIDATE_TOUCH_ROWS, values=values, params=params), params


# ``referrals_for_identities``: the person's identifiers are columns of its row (``person``), not parameters.
_PERSON_TOUCH_ROWS = {
    **_CANDIDATE_TOUCH_ROWS,
    "visitors": "person.visitors",
    "emails": "person.emails",
    "customers": "person.customers",
}


def _touch_rows_json_sql(expressions: dict, *, values: dict | None = None, params: list | None = None) -> str:
    """``_TOUCH_ROWS_SQL`` as one JSON array per candidate: each ``%(name)s`` replaced by ``expressions[name]``
    (SQL of our own: a column), else by a placeholder whose value ``values[name]`` is appended to ``params``."""

    def placeholder(match) -> str:
        name = match.group(1)
        if name in expressions:
            return expressions[name]
        params.append(values[name])
        return "%s"

    rows = re.sub(r"%\((\w+)\)s", placeholder, _TOUCH_ROWS_SQL)
    columns = (
        "src, id, occurred_at, participant_id, name, program_id, visitor_id, email, customer_external_id, kind, "
        "label, channel"
    )
    # The statement is ``_TOUCH_ROWS_SQL``'s (no input in its text); every value is a parameter.
    return f"(SELECT json_agg(json_build_array({columns})) FROM ({rows}) touched)"  # noqa: S608


def _touch_rows_from_json(rows: list | None) -> list[_TouchRow]:
    out = []
    for row in rows or ():
        row[2] = datetime.fromisoformat(row[2])
        out.append(_TouchRow(*row))
    return out


def sequence_remember_as_read(referral: Referral, cluster: IdentityCluster) -> None:
    """Remember (``sequences_remembered``) the touchpoints ``referral_for_identity(with_sequence=True)`` read with
    ``referral``: the person's sequence in its program up to its establishment as it stood then, so
    ``touchpoint_sequence`` answers it without a statement — until a touchpoint is recorded, as any remembered
    sequence. Nothing happens outside ``sequences_remembered`` or for a referral read without it."""
    remembered = _sequences.get()
    rows = getattr(referral, "_touch_rows_as_read", None)
    if remembered is None or rows is None:
        return
    until = _anchor(referral)
    remembered[(*_sequence_key(referral.tenant_id, referral.program_id, cluster), until)] = _sequence(rows)


def _referral_candidates(
    tenant: Tenant | int,
    program: Program | None,
    matches: list[tuple[str, object]],
    *,
    limit: int | None = None,
    touched: IdentityCluster | None = None,
) -> list[Referral]:
    quote = connection.ops.quote_name
    columns, joins = _joined_columns_and_joins()
    # Asked by conversion processing (``touched``: the person's cluster), each candidate comes with what it asks
    # next — the moment of its earliest settled event (``referral_establish``) and the person's touch rows in its
    # program up to its establishment (``referral_credit``) — read here, at no statement of their own (issue 15).
    extra, params = "", []
    if touched is not None:
        earliest = _earliest_settled_sql()
        touch_sql, touch_params = _candidate_touch_rows_sql(touched)
        extra = f", {earliest}, {touch_sql}"
        params = [[str(status) for status in SETTLED_EVENT_STATUSES], *touch_params]
    params.append(tenant if isinstance(tenant, int) else tenant.pk)
    where = "r.tenant_id = %s"
    if program is not None:
        where += " AND r.program_id = %s"
        params.append(program.pk)
    ors = []
    for name, values in matches:
        ors.append(f"r.{quote(Referral._meta.get_field(name).column)} = ANY(%s)")
        params.append(sorted(values))
    # Identifiers and aliases come from the models' metadata; every value is a parameter.
    sql = (
        f"SELECT {columns}{extra} FROM {quote(Referral._meta.db_table)} r {joins} "  # noqa: S608
        f"WHERE {where} AND ({' OR '.join(ors)}) "
        f"ORDER BY r.created_at, r.id LIMIT {limit or REFERRAL_MATCH_CANDIDATES:d}"
    )
    with connection.cursor() as cursor:
        execute_prepared(cursor, sql, params)
        rows = cursor.fetchall()
    return [_candidate_from_row(row, 0, touched=touched is not None) for row in rows]


def _earliest_settled_sql() -> str:
    """The moment of candidate ``r``'s earliest settled event (its statuses the one parameter): events of ``r``'s
    own workspace only — another workspace's event naming the referral (a bad row, a planted id) never counts."""
    quote = connection.ops.quote_name
    events = quote(ConversionEvent._meta.db_table)
    return (
        f"(SELECT min(e.{quote('occurred_at')}) FROM {events} e "  # noqa: S608
        f"WHERE e.{quote('tenant_id')} = r.{quote('tenant_id')} AND e.{quote('referral_id')} = r.id "
        f"AND e.{quote('status')} = ANY(%s))"
    )


def _joined_columns_and_joins(joined: tuple = _JOINED) -> tuple[str, str]:
    """The select list and the joins of ``joined`` ((model, alias, join, joined on) rows, the first one the row read:
    ``_JOINED``, alias ``r`` the referral, by default)."""
    quote = connection.ops.quote_name
    columns = ", ".join(
        f"{alias}.{quote(field.column)}" for model, alias, _join, _on in joined for field in model._meta.concrete_fields
    )
    joins = " ".join(
        f"{join} {quote(model._meta.db_table)} {alias} ON {alias}.id = {on}"
        for model, alias, join, on in joined
        if join
    )
    return columns, joins


def _joined_objects(joined: tuple, row: tuple, start: int) -> tuple[list, int]:
    """The instances of ``joined``'s models in ``row`` from ``start`` (``_joined_columns_and_joins``' select list),
    and where the row goes on after them."""
    objects = []
    for model, _alias, _join, _on in joined:
        objects.append(model_from_row(model, row, start, connection))
        start += len(model._meta.concrete_fields)
    return objects, start


def _candidate_from_row(row: tuple, start: int, *, touched: bool) -> Referral:
    """The referral of a candidates row (its ``_JOINED`` columns from ``start``) with its program, referrer and
    rule version; ``touched``: the earliest settled event and the touch rows follow them."""
    objects, start = _joined_objects(_JOINED, row, start)
    referral = objects[0]
    for name, value in zip(("program", "referrer", "rule_version"), objects[1:], strict=True):
        Referral._meta.get_field(name).set_cached_value(referral, value)
    if touched:  # as read now: only ``earliest_settled_as_read`` / ``sequence_remember_as_read``
        referral._earliest_settled_at = row[start]
        referral._touch_rows_as_read = _touch_rows_from_json(row[start + 1])
    return referral


# ``referral_establish``'s ``earliest``: not read with the referral (it queries the moment itself).
EARLIEST_UNREAD = object()


def earliest_settled_as_read(referral: Referral | None):
    """The moment of ``referral``'s earliest settled event (processed or unattributed; None: none yet) as
    ``referral_for_identity`` read it with the referral, or ``EARLIEST_UNREAD``. Only for a caller that asks
    right after reading the referral, with nothing in between settling an event of it."""
    return getattr(referral, "_earliest_settled_at", EARLIEST_UNREAD)


# ``latest_credited_click``'s row: the click, its link with the link's participant and program, and the click's own
# participant and program (what ``select_related("link__participant", "link__program", "participant", "program")``
# reads; every one of them a required relation: inner joins).
_CLICK_JOINED = (
    (Click, "c", "", ""),
    (ReferralLink, "l", "JOIN", "c.link_id"),
    (Participant, "lpa", "JOIN", "l.participant_id"),
    (Program, "lp", "JOIN", "l.program_id"),
    (Participant, "pa", "JOIN", "c.participant_id"),
    (Program, "p", "JOIN", "c.program_id"),
)


@functools.cache
def _latest_click_sql() -> str:
    # (built once per process: the same text every call)
    quote = connection.ops.quote_name
    columns, joins = _joined_columns_and_joins(_CLICK_JOINED)
    return (
        f"SELECT {columns} FROM {quote(Click._meta.db_table)} c {joins} "  # noqa: S608 (identifiers from metadata)
        f"WHERE c.{quote('tenant_id')} = %s AND c.{quote('visitor_id')} = ANY(%s) AND NOT c.{quote('is_bot')} "
        f"AND c.{quote('occurred_at')} <= %s ORDER BY c.{quote('occurred_at')} DESC, c.id DESC LIMIT 1"
    )


def latest_credited_click(tenant: Tenant | int, *, cluster: IdentityCluster, until: datetime) -> Click | None:
    """The person's most recent counted click on any link, at or before ``until`` (with its link's participant
    and program: whether the link still accepts referrals is asked next). One prepared statement (issue 15: the
    ORM's five-table query cost more to build and plan than to run, once per new visitor-matched referral)."""
    if not cluster.visitor_ids:
        return None
    tenant_id = tenant.pk if isinstance(tenant, Tenant) else tenant
    with connection.cursor() as cursor:
        execute_prepared(cursor, _latest_click_sql(), [tenant_id, sorted(cluster.visitor_ids), until])
        row = cursor.fetchone()
    if row is None:
        return None
    objects, _end = _joined_objects(_CLICK_JOINED, row, 0)
    click, link, link_participant, link_program, participant, program = objects
    ReferralLink._meta.get_field("participant").set_cached_value(link, link_participant)
    ReferralLink._meta.get_field("program").set_cached_value(link, link_program)
    for name, value in (("link", link), ("participant", participant), ("program", program)):
        Click._meta.get_field(name).set_cached_value(click, value)
    return click


def first_click_at(tenant: Tenant | int, *, program: Program, cluster: IdentityCluster) -> datetime | None:
    """The person's earliest counted click in ``program``. A remembered sequence of theirs in the program
    (``sequences_remembered``) that holds a click answers it: every click up to its moment is in it, and any
    click it lacks is later."""
    if not cluster.visitor_ids:
        return None
    remembered = _sequences.get() or {}
    wanted = _sequence_key(tenant, program.pk, cluster)
    for key, sequence in remembered.items():
        clicks = [touch.occurred_at for touch in sequence if touch.kind == "click"]
        if key[:3] == wanted and clicks:
            return min(clicks)
    click = (
        Click.objects.for_tenant(tenant)
        .filter(program=program, visitor_id__in=cluster.visitor_ids, is_bot=False)
        .order_by("occurred_at")
        .values_list("occurred_at", flat=True)
        .first()
    )
    return click


def attributions_for_event(tenant: Tenant | int, *, event: ConversionEvent) -> list[Attribution]:
    return list(
        Attribution.objects.for_tenant(tenant)
        .filter(conversion_event=event)
        .select_related("participant", "rule_version")
        .order_by("-share", "pk")
    )


# --- explaining an attribution ------------------------------------------------------------------
def _when(iso: str) -> str:
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M UTC")


def _percent(share: str) -> str:
    from decimal import Decimal

    return f"{Decimal(share) * 100:.4f} %"


MODEL_RULES = {
    "first_touch": "the first touchpoint gets all the credit",
    "last_touch": "the last touchpoint gets all the credit",
    "linear": "every touchpoint gets an equal share",
    "time_decay": "each touchpoint weighs 2^(-age / half-life), age counted back from the conversion",
    "position_based": "40 % to the first touchpoint, 40 % to the last, 20 % shared by those between "
    "(two touchpoints: 50/50; one: 100 %)",
}


def attribution_explanation(attribution: Attribution) -> list[str]:
    """Plain sentences saying why this participant got this share, from what was stored (never
    recomputed, so it explains the credit as it was decided)."""
    evidence = attribution.evidence or {}
    conversion = evidence.get("conversion", {})
    model = evidence.get("model", attribution.model)
    lines = [
        f"Conversion: {conversion.get('kind', '?')} event {conversion.get('external_event_id', '?')} of "
        f"{format_amount(conversion.get('amount_minor', 0), conversion.get('currency', ''))} on "
        f"{_when(conversion['occurred_at']) if conversion.get('occurred_at') else '?'}"
        + (f" (referral #{attribution.referral_id})." if attribution.referral_id else "."),
        f"Judged under rule version {evidence.get('rule_version', '?')} of the program: "
        f"{dict(Attribution._meta.get_field('model').choices).get(model, model)} — {MODEL_RULES.get(model, '')}"
        + (f"; half-life {evidence.get('half_life_days')} days" if model == "time_decay" else "")
        + ".",
        f"Only touchpoints within the {evidence.get('cookie_window_days', '?')}-day cookie window count: from "
        f"{_when(evidence['window_start']) if evidence.get('window_start') else '?'} to the conversion.",
    ]
    identity = evidence.get("identity", {})
    known = []
    if identity.get("visitor_ids"):
        known.append("visitor ids " + ", ".join(identity["visitor_ids"]))
    if identity.get("emails"):
        known.append("e-mails " + ", ".join(identity["emails"]))
    if identity.get("customer_ids"):
        known.append("customer ids " + ", ".join(identity["customer_ids"]))
    if known:
        lines.append(
            "The customer is known as " + "; ".join(known) + " (linked by sign-ups, leads and events, across devices)."
        )
    sequence = evidence.get("sequence", [])
    lines.append(f"Credited touchpoints, oldest first ({len(sequence)}):")
    mine = {item["ref"] for item in attribution.touchpoints}
    for number, item in enumerate(sequence, start=1):
        marker = "  ← this participant" if item["ref"] in mine else ""
        detail = f" ({item['detail']})" if item.get("detail") else ""
        lines.append(
            f"  {number}. {_when(item['at'])} · {item['kind'].replace('_', ' ')} · "
            f"{item.get('participant_name') or 'participant #' + str(item['participant'])}{detail} → "
            f"{_percent(item['share'])}{marker}"
        )
    numbers = [str(n) for n, item in enumerate(sequence, start=1) if item["ref"] in mine]
    lines.append(
        f"{attribution.participant.name} therefore receives {_percent(str(attribution.share))} of the credit "
        f"({format_amount(attribution.amount_minor, attribution.currency)}): the sum of touchpoint"
        f"{'s' if len(numbers) != 1 else ''} {', '.join(numbers)}."
    )
    uncredited = evidence.get("uncredited", [])
    if uncredited:
        lines.append(
            "Also seen, but naming no participant (kept as evidence, no credit): "
            + "; ".join(
                f"{item['kind'].replace('_', ' ')} {item['detail']!r} at {_when(item['at'])}" for item in uncredited
            )
            + "."
        )
    excluded = evidence.get("excluded_before_window", [])
    if excluded:
        lines.append(
            f"{len(excluded)} earlier touchpoint{'s' if len(excluded) != 1 else ''} fell outside the cookie window "
            "and got no credit: "
            + "; ".join(
                f"{item['kind'].replace('_', ' ')} by {item.get('participant_name') or 'no participant'} "
                f"at {_when(item['at'])}"
                for item in excluded[:10]
            )
            + ("…" if len(excluded) > 10 else ".")
        )
    lines.append(
        "Shares are rounded to 6 decimals by largest remainder (ties to the later touchpoint) and sum to exactly 1."
    )
    return lines


def clicks_counted(
    *,
    tenant: Tenant | int,
    program_id: int | None = None,
    participant_id: int | None = None,
    link_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[Click]:
    """The tenant's clicks that count: known bots are stored but never counted."""
    clicks = Click.objects.for_tenant(tenant).filter(is_bot=False)
    if program_id is not None:
        clicks = clicks.filter(program_id=program_id)
    if participant_id is not None:
        clicks = clicks.filter(participant_id=participant_id)
    if link_id is not None:
        clicks = clicks.filter(link_id=link_id)
    if since is not None:
        clicks = clicks.filter(occurred_at__gte=since)
    if until is not None:
        clicks = clicks.filter(occurred_at__lt=until)
    return clicks


def click_count(*, tenant: Tenant | int, **filters) -> int:
    """How many counted (non-bot) clicks match; see clicks_counted() for the filters."""
    return clicks_counted(tenant=tenant, **filters).count()


# --- share links -------------------------------------------------------------------------------
def share_url(code: str) -> str:
    return f"{settings.SITE_URL}/r/{code}"


def participant_share_links(tenant: Tenant | int, *, participant: Participant) -> list[dict[str, Any]]:
    """The participant's active links, one per channel, with absolute share URLs (empty unless active)."""
    if participant.tenant_id != getattr(tenant, "pk", tenant):
        raise Participant.DoesNotExist
    if participant.status != ParticipantStatus.ACTIVE:
        return []
    links = ReferralLink.objects.for_tenant(tenant).filter(participant=participant, is_active=True).order_by("channel")
    return [
        {"channel": link.channel, "code": link.code, "url": share_url(link.code), "created_at": link.created_at}
        for link in links
    ]


def participant_qr_png(tenant: Tenant | int, *, participant: Participant, box_size: int = 8) -> bytes | None:
    """A PNG QR code of the participant's QR-channel link (None when they have none)."""
    import qrcode
    from qrcode.image.pure import PyPNGImage

    link = next(
        (item for item in participant_share_links(tenant, participant=participant) if item["channel"] == Channel.QR),
        None,
    )
    if link is None:
        return None
    image = qrcode.make(link["url"], image_factory=PyPNGImage, box_size=box_size, border=2)
    buffer = io.BytesIO()
    image.save(buffer)
    return buffer.getvalue()


# --- imports -----------------------------------------------------------------------------------
