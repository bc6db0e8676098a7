"""Conversion events: stored raw once, then matched to a referral, its stage moved, and attributed."""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import DatabaseError, DataError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from programs.services import judging_rules, program_current_version
from referral_platform.celery import enqueue_on_commit
from referral_platform.db.prepared import execute_prepared, writes_with_next
from referral_platform.db.sql import db_values, rows_update_sql
from referral_platform.hooks import hooks
from referral_platform.tenancy import memo
from referral_platform.tenancy.actors import Actor, system_actor
from referral_platform.tenancy.models import Tenant
from referral_platform.tenancy.services import audit_record, audit_rows_deferred, audit_rows_pending
from referrals.models import (
    Attribution,
    ConversionEvent,
    ConversionEventStatus,
    ConversionKind,
    Referral,
    ReferralLink,
    ReferralSource,
    ReferralStatus,
    Touchpoint,
    TouchpointKind,
)
from referrals.selectors import (
    EARLIEST_UNREAD,
    IdentityCluster,
    earliest_settled_as_read,
    first_click_at,
    identity_clusters,
    identity_nodes,
    link_for_coupon,
    links_for_codes_read_ahead,
    normalize_email,
    normalize_identifier,
    referral_for_identity,
    referrals_for_identities,
    sequence_remember_as_read,
    sequences_remembered,
)

from .attribution import attribution_run
from .identity import (
    identity_key,
    identity_link,
    identity_link_and_cluster,
    identity_lock,
    identity_lock_many,
    touchpoint_record,
)
from .signups import (
    claim_touchpoint_record,
    claimed_link,
    code_link,
    fill_blanks,
    link_accepts_referrals,
    link_by_model,
    orphans_requeue,
    referral_establish,
)
from .stages import (
    STAGE_SERVICES,
    referral_create,
    referral_eligibility_enforce,
    referral_eligibility_problems,
    referral_stage_redate,
)

logger = logging.getLogger(__name__)


class ConversionEventConflict(Exception):
    """The external event id was already received with a different payload."""

    def __init__(self, external_event_id: str):
        super().__init__(external_event_id)
        self.external_event_id = external_event_id


@dataclass(frozen=True)
class ReceivedConversion:
    event: ConversionEvent
    created: bool
    also_id: int | None = None  # what the ``also`` statement returned (conversion_event_receive)


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
    "coupon_code",
    "visitor_id",
    "raw",
    "raw_body",
    "source",
    "status",
    "error",
    "received_at",
    "queued_at",
    "requeues",
)


def _insert_ignoring_duplicate(
    event: ConversionEvent, *, also: tuple[str, list] | None = None
) -> tuple[int | None, int | None]:
    """INSERT ... ON CONFLICT (tenant, external_event_id) DO NOTHING RETURNING id.

    Returns (the new id, or None when the tenant already has an event with this external id; the id ``also``
    returned). A concurrent duplicate waits for the first insert to commit and then does nothing.

    ``also``: (SQL, parameters) of a second data-modifying statement run in the SAME statement as this insert,
    as a common table expression (issue 15: one round trip and one statement for a Stripe invoice's
    conversion and its charge). It may read the new event's id as ``(SELECT id FROM new_event)`` — no row
    when the event was a duplicate — and returns at most one ``id``.
    """
    sql, values = conversion_events_insert_sql([event])
    if also is not None:
        also_sql, also_params = also
        # ``also`` is SQL of our own code (its values are parameters too).
        sql = (
            f"WITH new_event AS ({sql}), also AS ({also_sql}) SELECT (SELECT id FROM new_event), (SELECT id FROM also)"  # noqa: S608
        )
        values = [*values, *also_params]
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        row = cursor.fetchone()
    if also is not None:
        return row[0], row[1]
    return (row[0] if row else None), None


def conversion_events_insert_sql(events: list[ConversionEvent]) -> tuple[str, list]:
    """The statement inserting new ``events`` (built by ``conversion_event_build``) except those whose tenant
    already has their external id (``ON CONFLICT DO NOTHING``), and its parameters. It returns ``id`` and
    ``external_event_id`` of each event inserted."""
    meta = ConversionEvent._meta
    quote = connection.ops.quote_name
    fields = [meta.get_field(name) for name in _INSERT_FIELDS]
    columns = ", ".join(quote(field.column) for field in fields)
    placeholders = f"({', '.join(['%s'] * len(fields))})"
    values = [value for event in events for value in db_values(event, fields, connection)]
    # Identifiers come from the model's metadata and are quoted; every value is a parameter.
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES {', '.join([placeholders] * len(events))} "  # noqa: S608
        f"ON CONFLICT ({quote('tenant_id')}, {quote('external_event_id')}) DO NOTHING "
        f"RETURNING {quote('id')}, {quote('external_event_id')}"
    )
    return sql, values


def conversion_event_build(
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
) -> ConversionEvent:
    """The event ``conversion_event_receive`` stores, unsaved: identifiers normalised, ``received``."""
    return ConversionEvent(
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
        queued_at=timezone.now(),
    )


@transaction.atomic
def conversion_event_receive(
    *,
    queue_processing: bool = True,
    read_back: bool = True,
    also: tuple[str, list] | None = None,
    **fields,
) -> ReceivedConversion:
    """Store a validated inbound conversion raw, once per (tenant, external event id), and queue
    its processing after commit. ``fields``: the event's, as ``conversion_event_build`` takes them (``tenant``,
    ``external_event_id``, ``kind``, ``occurred_at``, ``raw`` and the optional ones).

    A repeat with the same payload returns the stored event (``created`` False); a repeat with a
    different payload raises ConversionEventConflict. Nothing is matched or attributed here.
    ``queue_processing=False`` leaves processing to the caller (the demo seed processes inline).
    ``read_back=False``: a new event is returned as built here, with its id, instead of read back from the
    database (a caller that only needs its id — the Stripe drain — saves a statement per event).
    ``also``: a second insert made in the same statement as the event's (``_insert_ignoring_duplicate``); the id
    it returned is ``also_id`` of the result.
    """
    event = conversion_event_build(**fields)
    tenant, external_event_id, raw = event.tenant, event.external_event_id, event.raw
    from referrals.tasks import process_conversion_event

    new_id, also_id = _insert_ignoring_duplicate(event, also=also)
    if new_id is not None:
        if queue_processing:
            enqueue_on_commit(process_conversion_event, new_id)
        if not read_back:
            event.pk = new_id
            event._state.adding, event._state.db = False, "default"
            return ReceivedConversion(event=event, created=True, also_id=also_id)
        event = ConversionEvent.objects.for_tenant(tenant).get(pk=new_id)
        return ReceivedConversion(event=event, created=True, also_id=also_id)
    existing = ConversionEvent.objects.for_tenant(tenant).select_for_update().get(external_event_id=external_event_id)
    if existing.raw == raw:
        return ReceivedConversion(event=existing, created=False)
    if existing.status != ConversionEventStatus.FAILED:
        raise ConversionEventConflict(external_event_id)
    # A failed event is replaced by its corrected version: same row and external id, processed afresh.
    previous_error = existing.error
    for name in _INSERT_FIELDS:
        if name not in ("tenant", "external_event_id"):
            setattr(existing, name, getattr(event, name))
    existing.referral = None
    existing.processed_at = None
    existing.requeues = 0
    existing.save()
    audit_record(
        tenant=tenant,
        actor=system_actor(tenant),
        action="conversion_event.replaced",
        obj=existing,
        data={"previous_error": previous_error[:2000]},
    )
    if queue_processing:
        enqueue_on_commit(process_conversion_event, existing.pk)
    return ReceivedConversion(event=existing, created=True)


def _company_profile(event: ConversionEvent) -> dict:
    """What an event says about the referred company (conversions API: industry, employees,
    annual_revenue_minor), read from the stored payload."""
    raw = event.raw if isinstance(event.raw, dict) else {}
    profile: dict = {"industry": str(raw.get("industry") or "")[:100]}
    for name in ("employees", "annual_revenue_minor"):
        value = raw.get(name)
        profile[name] = value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
    return profile


def _referral_for_event(
    *,
    event: ConversionEvent,
    cluster,
    named: tuple[ReferralLink | None, str],
    actor: Actor,
    notes: list[str],
    ahead: PersonAhead | None = None,
) -> tuple[Referral | None, bool]:
    """The event's referral and whether it was created here. ``named``: the link the event's referral or coupon
    code names and the field at fault (``code_link``). ``ahead``: the person's referral as the chunk read it
    (``people_read_ahead``), used instead of reading it."""
    tenant = event.tenant
    can_create = event.kind in KINDS_THAT_CREATE_REFERRALS
    link, unknown = named
    if unknown:
        notes.append(f"referral_code {event.referral_code!r} is not a code of this workspace.")
    elif event.coupon_code and not event.referral_code and link is None:
        notes.append(f"coupon_code {event.coupon_code!r} is not a code of this workspace (kept as evidence).")
    if ahead is not None:
        referral = ahead.referral
    else:
        referral = referral_for_identity(
            tenant, cluster=cluster, program=link.program if link else None, with_sequence=True
        )
    if referral is not None or not can_create:
        return referral, False
    claimed, claim = claimed_link(tenant=tenant, email=event.email, company="", at=event.occurred_at)
    link = claimed or link
    if link is None:
        link = link_by_model(tenant=tenant, cluster=cluster, until=event.occurred_at)
    if link is None or not link_accepts_referrals(link):
        return None, False
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
    if claim is not None:
        identity = {
            "visitor_id": event.visitor_id,
            "email": event.email,
            "customer_external_id": event.customer_external_id,
        }
        claim_touchpoint_record(tenant=tenant, claim=claim, referral=referral, at=event.occurred_at, identity=identity)
    orphans_requeue(tenant=tenant, cluster=cluster, referral=referral)
    return referral, True


def _advance_for_event(
    *, event: ConversionEvent, referral: Referral, actor: Actor, notes: list[str], created: bool = False
) -> Referral:
    """Move the referral's stage for ``event`` so that the outcome depends on the set of events, not on
    their order: the conversion date is the earliest payment's, the churn date the earliest
    cancellation's, and a referral with a cancellation is churned even if a payment is processed after it.
    ``created``: ``referral`` was inserted by this event's processing (its row is held by this transaction
    and the object is current: it is moved without being locked and read again)."""
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
    if not Referral.status_machine.can(referral.status, target):
        notes.append(
            f"stage unchanged: a {referral.get_status_display().lower()} referral does not move to "
            f"{ReferralStatus(target).label.lower()}."
        )
        field = Referral.status_machine.timestamps[target]
        if referral.status != ReferralStatus.REJECTED and field in ("signed_up_at", "qualified_at"):
            referral = referral_stage_redate(
                referral=referral, field=field, at=event.occurred_at, actor=actor, reason=reason
            )
        return referral
    return STAGE_SERVICES[target](
        referral=referral,
        actor=actor,
        at=event.occurred_at,
        reason=reason,
        data={"conversion_event": event.pk},
        locked=referral if created else None,
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
        return _process_and_record(event)


def conversion_events_process_many(
    *, event_ids, postponed: list[int] | None = None
) -> tuple[list[ConversionEvent], list[int]]:
    """Process stored conversion events in ONE transaction (the Stripe drain's follow-ups, issue 15): they
    are locked with one statement (``SKIP LOCKED``: an event another run is processing right now is left to
    it), then each is processed and its outcome saved exactly as ``conversion_event_process`` does, in a
    savepoint of its own and in id order, so a later event sees an earlier one's outcome as it would one by
    one. An event whose processing hits a database error (a deadlock with a concurrent drain, a lost race for
    a unique row) is rolled back alone and handed back, to be processed on its own (its task's retries).
    Returns (the events processed, the ids handed back). An error outside the events' savepoints (the
    commit) raises: nothing of the chunk is committed and every event is still ``received``.

    ``postponed`` (a list): the people's locks are only tried, not waited for. An event whose person another
    transaction holds (a concurrent chunk with the same customer's other payment) is left ``received`` and
    its id appended to the list, with every later event of the chunk that shares an identifier with it (so
    events of one person keep their order); the chunk goes on with the others instead of waiting for the
    other chunk's whole transaction (issue 15: two drains of one billing run). The caller processes the
    postponed ids again, waiting then (``rewards.pipeline.run_follow_ups``: once the rest of its batch is
    done)."""
    processed: list[ConversionEvent] = []
    handed_back: list[int] = []
    with transaction.atomic():
        events = list(
            ConversionEvent.objects.select_for_update(of=("self",), skip_locked=True)
            .filter(pk__in=list(event_ids), status=ConversionEventStatus.RECEIVED)
            .order_by("pk")
        )
        # The people of the whole chunk locked at once (one statement, every key in sorted order): each event's
        # own lock would be held until this commit anyway, and taking them in one sorted pass cannot deadlock
        # with another chunk taking its people the same way.
        busy = identity_lock_many(
            [(event.tenant_id, _identifiers(event)) for event in events],
            wait=postponed is None,
        )
        if busy:
            events = _without_busy_people(events, busy, postponed)
        # The links the chunk's referral codes name, read once (inside the caller's batch_memo block).
        codes_by_tenant: dict[int, list[str]] = defaultdict(list)
        for event in events:
            codes_by_tenant[event.tenant_id].append(event.referral_code)
        for tenant_id, codes in codes_by_tenant.items():
            links_for_codes_read_ahead(tenant_id, codes)
        ahead = people_read_ahead(events)
        touched = _Touched()
        deferred: list[_Deferred] = []  # outcomes written together (an event read ahead that sent nothing)
        with audit_rows_deferred():  # the chunk's audit rows in one INSERT (those of a rolled-back event dropped)
            for event in events:
                person = ahead.get(event.pk)
                usable = person if person is not None and touched.untouched(person) else None
                if usable is None:  # it reads for itself: what the earlier events did is written first
                    _outcomes_flush(deferred, processed, handed_back)
                walked: list[IdentityCluster] = []
                try:
                    with transaction.atomic():
                        processed.append(
                            _process_and_record(
                                event, identities_locked=True, ahead=usable, walked=walked, deferred=deferred
                            )
                        )
                except DatabaseError as error:
                    logger.warning("conversion event %s handed back to its own processing: %s", event.pk, error)
                    handed_back.append(event.pk)
                touched.add(event, person, walked)
            _outcomes_flush(deferred, processed, handed_back)
    return processed, handed_back


def _without_busy_people(events: list[ConversionEvent], busy: set[str], postponed: list[int]) -> list[ConversionEvent]:
    """``events`` (in id order) without those whose person is ``busy`` (lock keys another transaction holds)
    and without every later one that shares an identifier with a postponed one; their ids appended to
    ``postponed``."""
    kept: list[ConversionEvent] = []
    waiting = set(busy)
    for event in events:
        keys = {identity_key(event.tenant_id, value) for value in _identifiers(event) if value}
        if keys & waiting:
            waiting |= keys
            postponed.append(event.pk)
        else:
            kept.append(event)
    return kept


# --- a chunk's people read ahead (issue 15) ---------------------------------------------------------------------


@dataclass
class PersonAhead:
    """A chunk's event's person as the chunk read it before processing any of its events: the identity cluster
    (walked in lock step with the others') and the referral conversion processing would match (with what it reads
    with it: ``referral_for_identity(with_sequence=True)``)."""

    cluster: IdentityCluster
    referral: Referral | None
    nodes: frozenset  # the cluster's identifiers and the event's own (``identity_nodes`` form)
    links_missing: bool = False  # some of the event's own links are not recorded yet: its processing inserts them


def people_read_ahead(events: list[ConversionEvent]) -> dict[int, PersonAhead]:
    """The people of a chunk's events whose cluster and referral can be read for the whole chunk at once — TWO
    reads for all of them (the walk: one statement per level; the referrals: one statement) instead of two
    statements per event (issue 15: a billing run's renewals, and its new customers). Only a person whose walk
    was neither cut short nor walked alone, and whose referrals one read answers; only an event with no coupon
    code, and with a referral code only when the chunk's codes are read ahead (``batch_memo``): reading its link
    costs nothing then. {event id: person}.

    A person some of whose own links are not recorded yet (a first payment joining a customer id to an e-mail and
    a visitor) is read too (``links_missing``: the event's processing inserts them, without walking again): those
    links join only the identifiers the walk starts from, so the cluster walked before they exist is the one
    walked after (as in ``identity_link_and_cluster``, whose read does not see the links it inserts either).

    What was read stays true for an event until an earlier event of the chunk touches the person (``_Touched``:
    then the event reads for itself, as without read-ahead); so each event's outcome is the one it has when
    processed alone in the chunk's order. As every read of a chunk (``batch_memo``), something another
    transaction commits while the chunk runs counts as if it had committed after the chunk's start."""
    by_tenant: dict[int, list[tuple[ConversionEvent, frozenset, tuple]]] = defaultdict(list)
    for event in events:
        if event.coupon_code or (event.referral_code.strip() and not memo.in_batch()):
            continue
        seed = identity_nodes(**_seed_of(event))
        if not seed or any(len(value) > 254 for _kind, value in seed):
            continue
        ordered = sorted(seed)
        edges = frozenset((a[0], a[1], b[0], b[1]) for index, a in enumerate(ordered) for b in ordered[index + 1 :])
        by_tenant[event.tenant_id].append((event, frozenset(seed), edges))
    out: dict[int, PersonAhead] = {}
    for tenant_id, people in by_tenant.items():
        first_links: list = []
        clusters = identity_clusters(
            tenant_id,
            [_seed_of(event) for event, _seed, _edges in people],
            first_links=first_links,
        )
        known = [
            (event, seed, cluster, not edges <= links)
            for (event, seed, edges), cluster, links in zip(people, clusters, first_links, strict=True)
            if links is not None and not cluster.is_truncated
        ]
        if not known:
            continue
        tenant = known[0][0].tenant
        programs = []
        for event, _seed, _cluster, _missing in known:
            link, _unknown = code_link(tenant=tenant, referral_code=event.referral_code, coupon_code="")
            programs.append(link.program if link is not None else None)
        answers = referrals_for_identities(
            tenant_id, [(cluster, program) for (_e, _s, cluster, _m), program in zip(known, programs, strict=True)]
        )
        for (event, seed, cluster, missing), (found, referral) in zip(known, answers, strict=True):
            if found:
                out[event.pk] = PersonAhead(
                    cluster=cluster, referral=referral, nodes=frozenset(cluster.nodes()) | seed, links_missing=missing
                )
    return out


def _seed_of(event: ConversionEvent) -> dict:
    """The identifiers an event's walk starts from (``identity_cluster``'s keyword arguments)."""
    return {"visitor_ids": [event.visitor_id], "emails": [event.email], "customer_ids": [event.customer_external_id]}


def _referral_nodes(referral: Referral) -> set:
    return identity_nodes(
        visitor_ids=[referral.visitor_id],
        emails=[referral.referred_email],
        customer_ids=[referral.referred_external_id],
    )


class _Touched:
    """The identifiers of the people a chunk's events have processed so far: each event's own, its cluster's (as
    read ahead, and as walked) and its referral's. A later event whose person read ahead shares none of them is
    as the chunk read it: no earlier event linked, matched, created, moved or recorded anything its reads see."""

    def __init__(self) -> None:
        self.nodes: set = set()
        self.unknown = False  # an event's referral could not be told: every later event reads for itself

    def untouched(self, person: PersonAhead) -> bool:
        return not self.unknown and self.nodes.isdisjoint(person.nodes)

    def add(self, event: ConversionEvent, person: PersonAhead | None, walked: list[IdentityCluster]) -> None:
        self.nodes |= identity_nodes(**_seed_of(event))
        if person is not None:
            self.nodes |= person.nodes
            if person.referral is not None:
                self.nodes |= _referral_nodes(person.referral)
        for cluster in walked:
            self.nodes |= cluster.nodes()
        if ConversionEvent._meta.get_field("referral").is_cached(event):
            if event.referral is not None:
                self.nodes |= _referral_nodes(event.referral)
        elif event.referral_id is not None:
            self.unknown = True


def conversion_events_waiting(*, event_id: int, limit: int) -> tuple[list[int], str]:
    """The batch a conversion's task processes, and the event's status as read: ``event_id`` first if it is
    still ``received``, then up to ``limit - 1`` other events of its workspace and source still ``received``,
    oldest first ([] when ``event_id`` is no longer waiting; its status "missing" when there is no such event).
    An event the reconciler had to queue again (a worker died on it) is never taken into another event's
    batch: it is processed alone, by its own task."""
    row = ConversionEvent.objects.filter(pk=event_id).values_list("tenant_id", "source", "status").first()
    if row is None:
        return [], "missing"
    tenant_id, source, status = row
    if status != ConversionEventStatus.RECEIVED:
        return [], status
    others = (
        ConversionEvent.objects.for_tenant(tenant_id)
        .filter(source=source, status=ConversionEventStatus.RECEIVED, requeues=0)
        .exclude(pk=event_id)
        .order_by("pk")
        .values_list("pk", flat=True)[: max(limit - 1, 0)]
    )
    return [event_id, *others], status


def conversion_event_status(*, event_id: int) -> str:
    return ConversionEvent.objects.filter(pk=event_id).values_list("status", flat=True).first() or "missing"


def _identifiers(event: ConversionEvent) -> list[str]:
    """The identifiers whose person lock an event's processing holds (``identity_lock``)."""
    return [event.email, event.customer_external_id, event.visitor_id]


def _process_and_record(
    event: ConversionEvent,
    *,
    identities_locked: bool = False,
    ahead: PersonAhead | None = None,
    walked: list | None = None,
    deferred: list | None = None,
) -> ConversionEvent:
    """Process a locked, ``received`` event and save its outcome (the caller's transaction).
    ``identities_locked``: the caller already holds the event's person lock (a chunk locks its people at once).
    The attribution rows of a processed event are written by the same statement as its outcome, inside the
    processing's savepoint (``_outcome_write``): nothing runs between the two, and a value the database refuses
    undoes the processing and fails the event, as when the rows were inserted on their own.
    ``deferred`` (a chunk whose people were read ahead): an event read ahead whose processing sent no statement at
    all (and recorded no audit row) leaves its outcome's statement in this list for the chunk to write with the
    others' (``_outcomes_flush``), and its ``conversion_processed`` hook to be told after; nothing of it was
    written, so nothing else is undone when that write fails."""
    actor = system_actor(event.tenant)
    notes: list[str] = []
    rows: list[Attribution] = []
    touchpoints: list[Touchpoint] = []  # recorded by the processing, inserted with its outcome (``_codes_later``)
    sent = [0]
    counting = connection.execute_wrapper(_counted(sent)) if deferred is not None and ahead is not None else None
    audited = audit_rows_pending()
    try:
        with transaction.atomic(), sequences_remembered(), counting or contextlib.nullcontext(), writes_with_next():
            status, referral = _process_locked_event(
                event=event,
                actor=actor,
                notes=notes,
                identities_locked=identities_locked,
                attribution_rows=rows,
                touchpoint_rows=touchpoints,
                **({"ahead": ahead} if ahead is not None else {}),
                **({"walked": walked} if walked is not None else {}),
            )
            if rows:
                _outcome_set(event, status, referral, notes)
                if (
                    counting is not None
                    and sent[0] == 0
                    and audit_rows_pending() == audited
                    and not connection.pending_writes()
                ):
                    deferred.append(_Deferred(event, rows, touchpoints, notes))
                    return event
                _outcome_write(event, rows, touchpoints)  # the writes still queued travel with it
            elif touchpoints:
                Touchpoint.objects.bulk_create(touchpoints, ignore_conflicts=True)
            connection.flush_pending_writes()  # inside the processing's savepoint (usually none is left)
    except ValidationError as exc:
        status, referral, rows = ConversionEventStatus.FAILED, None, []
        notes.append("; ".join(f"{field}: {', '.join(messages)}" for field, messages in _error_items(exc)))
    except PERMANENT_ERRORS as exc:
        # A retry would fail the same way: the event is failed with the reason, never left ``received``.
        status, referral, rows = ConversionEventStatus.FAILED, None, []
        _failed_note(event, exc, notes)
    if not rows:
        _outcome_set(event, status, referral, notes)
        event.save(update_fields=list(_OUTCOME_FIELDS))
    hooks.conversion_processed(event=event)
    return event


_OUTCOME_FIELDS = ("referral", "status", "error", "processed_at")


def _failed_note(event: ConversionEvent, exc: Exception, notes: list[str]) -> None:
    logger.exception("conversion event %s failed", event.pk)
    notes.append(f"Processing failed ({type(exc).__name__}: {exc}). Correct the event and send it again.")


def _counted(sent: list[int]):
    """An execute wrapper counting the statements sent (``sent[0]``)."""

    def wrapper(execute, sql, params, many, context):
        sent[0] += 1
        return execute(sql, params, many, context)

    return wrapper


@dataclass
class _Deferred:
    """A processed event's outcome not written yet: its attribution rows and its codes' touchpoints."""

    event: ConversionEvent
    rows: list
    touchpoints: list
    notes: list[str]


def _outcomes_flush(deferred: list[_Deferred], processed: list[ConversionEvent], handed_back: list[int]) -> None:
    """Write the outcomes ``deferred`` holds — ONE statement for all of them (``_outcomes_write_many``) — then tell
    each event's ``conversion_processed``. A write the database refuses is rolled back and each is written in a
    savepoint of its own, as ``_process_and_record`` writes it: an event whose values the database refuses is
    failed with the reason, one that meets a database error is handed back (left ``received``, out of
    ``processed``), the others are written."""
    if not deferred:
        return
    items, deferred[:] = list(deferred), []
    try:
        with transaction.atomic():
            _outcomes_write_many(items)
    except DatabaseError:
        kept = []
        for item in items:
            event = item.event
            try:
                with transaction.atomic():
                    _outcome_write(event, item.rows, item.touchpoints)
            except PERMANENT_ERRORS as exc:
                _failed_note(event, exc, item.notes)
                _outcome_set(event, ConversionEventStatus.FAILED, None, item.notes)
                event.save(update_fields=list(_OUTCOME_FIELDS))
            except DatabaseError as error:
                logger.warning("conversion event %s handed back to its own processing: %s", event.pk, error)
                handed_back.append(event.pk)
                processed.remove(event)
                continue
            kept.append(item)
        items = kept
    for item in items:
        hooks.conversion_processed(event=item.event)


def _outcomes_write_many(items: list[_Deferred]) -> None:
    """``_outcome_write`` of many events in ONE statement: their outcomes with one ``UPDATE … FROM (VALUES …)``."""
    update_sql, params = rows_update_sql([item.event for item in items], _OUTCOME_FIELDS, connection)
    _outcomes_with_rows(
        update_sql,
        params,
        [row for item in items for row in item.rows],
        [touchpoint for item in items for touchpoint in item.touchpoints],
        prepared=False,  # its VALUES grow with the chunk: one prepared statement per size would pile up
    )


def _outcome_set(event: ConversionEvent, status: str, referral: Referral | None, notes: list[str]) -> None:
    event.referral = referral
    event.status = status
    event.error = "\n".join(notes)
    event.processed_at = timezone.now()


def _outcome_write(event: ConversionEvent, rows: list[Attribution], touchpoints: list[Touchpoint] = ()) -> None:
    """Save the event's outcome, insert its new attribution rows and the touchpoints its processing left to
    insert (``ON CONFLICT DO NOTHING``, as ``touchpoint_record``) in ONE statement (the UPDATE and the
    touchpoints' INSERT in common table expressions of the rows' INSERT; issue 15)."""
    quote = connection.ops.quote_name
    meta = ConversionEvent._meta
    outcome = [meta.get_field(name) for name in _OUTCOME_FIELDS]
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in outcome)
    params = [*db_values(event, outcome, connection), event.pk]
    # Identifiers come from the models' metadata and are quoted; every value is a parameter.
    update_sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {quote('id')} = %s"  # noqa: S608
    _outcomes_with_rows(update_sql, params, rows, list(touchpoints), prepared=True)


def _outcomes_with_rows(
    update_sql: str, params: list, rows: list[Attribution], touchpoints: list[Touchpoint], *, prepared: bool
) -> None:
    """ONE statement: ``update_sql`` (the outcomes, ``params`` its values) and the touchpoints' INSERT (``ON CONFLICT
    DO NOTHING``) as common table expressions of the attribution rows' INSERT; the rows get their ids."""
    quote = connection.ops.quote_name
    sql = f"WITH outcome AS ({update_sql})"
    if touchpoints:
        columns, values = _insert_values(touchpoints, params)
        sql += (
            f", touched AS (INSERT INTO {quote(Touchpoint._meta.db_table)} ({columns}) VALUES {values} "  # noqa: S608
            "ON CONFLICT DO NOTHING)"
        )
    columns, values = _insert_values(rows, params)
    sql += f" INSERT INTO {quote(Attribution._meta.db_table)} ({columns}) VALUES {values} RETURNING {quote('id')}"  # noqa: S608
    with connection.cursor() as cursor:
        if prepared:
            execute_prepared(cursor, sql, params)
        else:
            cursor.execute(sql, params)
        ids = [pk for (pk,) in cursor.fetchall()]
    for row, pk in zip(rows, ids, strict=True):
        row.pk = pk
        row._state.adding, row._state.db = False, connection.alias


def _insert_values(objects: list, params: list) -> tuple[str, str]:
    """The column list and the VALUES rows of an INSERT of ``objects`` (one model; every concrete field but the
    primary key), their values appended to ``params``."""
    quote = connection.ops.quote_name
    fields = [field for field in objects[0]._meta.concrete_fields if not field.primary_key]
    placeholders = f"({', '.join(['%s'] * len(fields))})"
    for obj in objects:
        params += db_values(obj, fields, connection)
    return ", ".join(quote(field.column) for field in fields), ", ".join([placeholders] * len(objects))


# Errors of the event's own data (a date or amount the code cannot compute with): processing it again
# cannot succeed. Database availability errors (OperationalError) are not here: the task retries those.
PERMANENT_ERRORS = (ArithmeticError, ValueError, TypeError, KeyError, DataError)


def conversion_events_requeue_stale(*, cutoff: datetime, max_attempts: int) -> int:
    """Reconciler sweep: queue again the events still ``received`` whose processing was queued before
    ``cutoff`` (a worker died holding them); after ``max_attempts`` re-queues an event is failed with the
    reason. Returns how many events were re-queued or failed."""
    from referrals.tasks import process_conversion_event

    done = 0
    stale = (
        ConversionEvent.objects.filter(status=ConversionEventStatus.RECEIVED)
        .filter(Q(queued_at__lt=cutoff) | Q(queued_at__isnull=True, received_at__lt=cutoff))
        .order_by("pk")
        .values_list("pk", flat=True)[:1000]
    )
    for event_id in list(stale):
        with transaction.atomic():
            event = (
                ConversionEvent.objects.select_for_update(skip_locked=True)
                .filter(pk=event_id, status=ConversionEventStatus.RECEIVED)
                .first()
            )
            if event is None:  # being processed right now, or finished meanwhile
                continue
            if event.requeues >= max_attempts:
                event.status = ConversionEventStatus.FAILED
                event.error = (
                    f"Not processed after {event.requeues} re-queues by the reconciler (a worker kept dying on it, "
                    "or the queue is stuck). Send the event again to retry it."
                )
                event.processed_at = timezone.now()
                event.save(update_fields=["status", "error", "processed_at"])
            else:
                event.requeues += 1
                event.queued_at = timezone.now()
                event.save(update_fields=["requeues", "queued_at"])
                enqueue_on_commit(process_conversion_event, event.pk, alone=True)  # suspect: not in a batch
            done += 1
    return done


def _error_items(exc: ValidationError):
    if hasattr(exc, "error_dict"):
        return exc.message_dict.items()
    return [("error", exc.messages)]


def _process_locked_event(
    *,
    event: ConversionEvent,
    actor: Actor,
    notes: list[str],
    identities_locked: bool = False,
    attribution_rows: list | None = None,
    touchpoint_rows: list | None = None,
    ahead: PersonAhead | None = None,
    walked: list | None = None,
) -> tuple[str, Referral | None]:
    """``attribution_rows``: the event's new attribution rows are left in this list for the caller to insert
    (``_outcome_write``) instead of being inserted here. ``touchpoint_rows``: likewise the touchpoints of the
    event's codes, when no read of this processing can see them (``_codes_later``). ``ahead``: the person's
    cluster and referral as its chunk read them, still as they stand (``people_read_ahead``): neither is read
    again. ``walked``: a list that receives the person's cluster."""
    tenant = event.tenant
    if not identities_locked:
        identity_lock(tenant=tenant, identifiers=_identifiers(event))
    if ahead is not None:
        cluster = ahead.cluster
        if ahead.links_missing:  # recorded now, as the walk below would have; the cluster stays as read ahead
            identity_link(
                tenant=tenant,
                source=f"conversion:{event.kind}",
                visitor_id=event.visitor_id,
                email=event.email,
                customer_external_id=event.customer_external_id,
            )
    else:
        cluster = identity_link_and_cluster(  # the person's links recorded and their walk started: one statement
            tenant=tenant,
            source=f"conversion:{event.kind}",
            visitor_id=event.visitor_id,
            email=event.email,
            customer_external_id=event.customer_external_id,
        )
    if walked is not None:
        walked.append(cluster)
    # The link the event's code names is read once (matching and the code's touchpoint both use it).
    named = code_link(tenant=tenant, referral_code=event.referral_code, coupon_code=event.coupon_code)
    referral, created = _referral_for_event(
        event=event, cluster=cluster, named=named, actor=actor, notes=notes, ahead=ahead
    )
    earliest = earliest_settled_as_read(referral)  # read with it: nothing below settles an event of it first
    if referral is not None and not created:
        sequence_remember_as_read(referral, cluster)  # its credit's sequence, read with it
    later = touchpoint_rows if _codes_later(event, referral, created=created, earliest=earliest) else None
    by_code = named[0] if event.referral_code.strip() else None
    if by_code is not None:
        touchpoint_record(
            tenant=tenant,
            kind=TouchpointKind.REFERRAL_CODE,
            occurred_at=event.occurred_at,
            participant=by_code.participant,
            program=by_code.program,
            referral=referral if referral and referral.program_id == by_code.program_id else None,
            link=by_code,
            visitor_id=event.visitor_id,
            email=event.email,
            customer_external_id=event.customer_external_id,
            label=by_code.code,
            dedupe_key=f"conversion:code:{event.pk}",
            want_row=False,
            insert_later=later,
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
            want_row=False,
            insert_later=later,
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
        fill_blanks(
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
    moved = _advance_for_event(event=event, referral=referral, actor=actor, notes=notes, created=created)
    moved = referral_establish(
        referral=moved, at=event.occurred_at, actor=actor, queue_settlement=False, created=created, earliest=earliest
    )
    referral = _keep_relations(moved, read=referral)
    # The event row is locked by the caller and its referral is saved with its outcome.
    event.referral = referral
    attributions = attribution_run(
        event=event, referral=referral, walked=cluster, first=True, insert_later=attribution_rows
    )
    if not attributions:
        notes.append("No touchpoint of a participant within the cookie window: nothing to attribute.")
        return ConversionEventStatus.UNATTRIBUTED, referral
    return ConversionEventStatus.PROCESSED, referral


def _codes_later(event: ConversionEvent, referral: Referral | None, *, created: bool, earliest) -> bool:
    """Whether the touchpoints of a payment's codes can wait for its outcome's statement (``_outcome_write``)
    instead of being inserted when recorded: a payment of a referral already converted (or churned), not made
    here, that stays established before the payment — its sign-up, or else its earliest settled event as read
    with it (``earliest``), is earlier. Every touchpoint read of such a processing is bounded by the
    referral's establishment (``referral_credit``: the credit is decided there), so none of them can see a
    touchpoint at the payment's moment; and such a processing records no other touchpoint. The usual renewal
    of a billing run (issue 15)."""
    if referral is None or created or event.kind != ConversionKind.PAYMENT:
        return False
    if referral.status not in (ReferralStatus.CONVERTED, ReferralStatus.CHURNED):
        return False
    established = referral.signed_up_at
    if established is None:
        established = earliest if earliest is not EARLIEST_UNREAD else None
    return established is not None and established < event.occurred_at


def _keep_relations(referral: Referral, *, read: Referral) -> Referral:
    """A referral a stage service re-read (locked) keeps the program, rule version and tenant already read
    for it in this transaction (same ids only), so attribution does not read them again."""
    if referral is not read:
        for name in ("tenant", "program", "rule_version"):
            field = Referral._meta.get_field(name)
            if (
                field.is_cached(read)
                and not field.is_cached(referral)
                and getattr(referral, field.attname) == getattr(read, field.attname)
            ):
                field.set_cached_value(referral, field.get_cached_value(read))
    return referral


@transaction.atomic
def conversion_reattribute(*, event: ConversionEvent) -> list[Attribution]:
    """Compute the credit of a processed event again (a marketer's "Re-run attribution"); its referral's
    rewards are settled again after commit. Idempotent."""
    rows = attribution_run(event=event)
    hooks.conversion_processed(event=ConversionEvent.objects.for_tenant(event.tenant_id).get(pk=event.pk))
    return rows
