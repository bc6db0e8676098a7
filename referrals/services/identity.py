"""The identity graph (which visitor ids, e-mails and customer ids are one person) and touchpoints."""

from __future__ import annotations

import functools
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from programs.models import Participant, ParticipantStatus, Program
from referral_platform.db.prepared import execute_prepared, execute_prepared_with_next
from referral_platform.tenancy.models import Tenant
from referrals.models import (
    Referral,
    ReferralLink,
    Touchpoint,
    TouchpointKind,
)
from referrals.selectors import (
    IdentityCluster,
    identity_cluster,
    identity_level_limit,
    identity_level_sql,
    identity_nodes,
    link_for_code,
    normalize_email,
    normalize_identifier,
    sequences_forget,
)


def identity_link(
    *, tenant: Tenant, source: str, visitor_id: str = "", email: str = "", customer_external_id: str = ""
) -> int:
    """Record that the given identifiers belong to one person (every pair becomes an edge; repeats
    are no-ops), with ONE prepared statement. Returns the number of identifiers linked. (A conversion chunk's event
    whose person was walked ahead records its links so, without walking again: issue 15.)"""
    nodes = sorted(identity_nodes(visitor_ids=[visitor_id], emails=[email], customer_ids=[customer_external_id]))
    sql, params = _links_insert_sql(tenant, source, nodes)
    if sql:  # nothing reads its result: it may travel with the next statement (``writes_with_next``)
        execute_prepared_with_next(sql, params)
    return len(nodes)


def identity_link_and_cluster(
    *, tenant: Tenant, source: str, visitor_id: str = "", email: str = "", customer_external_id: str = ""
) -> IdentityCluster:
    """``identity_link`` of the identifiers, then their ``identity_cluster`` — the links recorded and the walk's
    first level read by ONE statement (issue 15: conversion processing did both for every event).

    That statement's read does not see the links it inserts (one snapshot), and need not: they join only the
    identifiers the walk starts from, which it holds already, so they add nothing to the level. Only a level
    read cut at its limit might have been a different subset with them: then the level is read again, seeing
    them, exactly as the walk alone reads it."""
    nodes = sorted(identity_nodes(visitor_ids=[visitor_id], emails=[email], customer_ids=[customer_external_id]))
    seed = {"visitor_ids": [visitor_id], "emails": [email], "customer_ids": [customer_external_id]}
    insert_sql, params = _links_insert_sql(tenant, source, nodes)
    if not insert_sql:
        return identity_cluster(tenant, **seed)
    read_sql, read_params = identity_level_sql(tenant.pk, set(nodes))
    sql = f"WITH new_links AS ({insert_sql}) {read_sql}"
    with connection.cursor() as cursor:
        execute_prepared(cursor, sql, params + read_params)
        first_level = cursor.fetchall()
    if len(first_level) >= identity_level_limit():
        first_level = None  # cut at its limit: read it again, seeing the new links, as the walk alone does
    return identity_cluster(tenant, **seed, first_level=first_level)


def _links_insert_sql(tenant: Tenant, source: str, nodes: list) -> tuple[str, list]:
    """The INSERT of every pair of ``nodes`` (sorted ``identity_nodes``) as a link (``ON CONFLICT DO NOTHING``),
    with its values; ("", []) when there is no pair."""
    edges = [(a[0], a[1][:254], b[0], b[1][:254]) for index, a in enumerate(nodes) for b in nodes[index + 1 :]]
    if not edges:
        return "", []
    now = timezone.now()
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(edges))
    params = [item for edge in edges for item in (tenant.pk, *edge, source[:40], now)]
    return (
        "INSERT INTO referrals_identitylink "  # noqa: S608 - no input in the SQL's text
        "(tenant_id, a_kind, a_value, b_kind, b_value, source, created_at) "
        f"VALUES {values} ON CONFLICT DO NOTHING"
    ), params


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
    want_row: bool = True,
    insert_later: list | None = None,
) -> Touchpoint | None:
    """Record a non-click touchpoint; with ``dedupe_key`` a repeat returns the existing row.

    A touchpoint with a participant takes attribution credit in the participant's program.
    ``want_row=False`` (with a ``dedupe_key``): the caller does not need the row; it is inserted unless
    the key exists (one statement, ``ON CONFLICT DO NOTHING``) and None is returned. Sequences remembered by
    the processing that records it are forgotten (``sequences_remembered``). ``insert_later`` (with
    ``want_row=False``): the row is appended to this list, unsaved, for the caller to insert with a later
    statement (``ON CONFLICT DO NOTHING`` too) — only when nothing the caller does before can read it.
    """
    if insert_later is None:
        sequences_forget()  # (a row inserted later is not there yet: what is remembered stays true until then)
    if kind not in TouchpointKind.values:
        raise ValidationError({"kind": f"Unknown touchpoint kind {kind!r}."})
    if participant is not None:
        if participant.tenant_id != tenant.pk:
            raise ValidationError({"participant": "Unknown participant."})
        if program is not None and participant.program_id != program.pk:
            raise ValidationError({"participant": "The participant is not in this program."})
        program = program or participant.program
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
    if not want_row and insert_later is not None:
        insert_later.append(Touchpoint(tenant=tenant, dedupe_key=dedupe_key[:400], **fields))
        return None
    if not want_row:  # nothing reads its result: it may travel with the next statement (``writes_with_next``)
        _touchpoint_insert(Touchpoint(tenant=tenant, dedupe_key=dedupe_key[:400], **fields))
        return None
    touchpoint, _ = Touchpoint.objects.get_or_create(tenant=tenant, dedupe_key=dedupe_key[:400], defaults=fields)
    return touchpoint


def _touchpoint_insert(touchpoint: Touchpoint) -> None:
    """INSERT ``touchpoint`` (``ON CONFLICT DO NOTHING``, as ``bulk_create(ignore_conflicts=True)``) with a prepared
    statement, which inside ``writes_with_next`` travels in front of the next one (``execute_prepared_with_next``):
    every later read of the transaction sees it, as if it had been sent alone."""
    fields, sql = _touchpoint_insert_sql()
    execute_prepared_with_next(
        sql, [field.get_db_prep_save(field.pre_save(touchpoint, True), connection) for field in fields]
    )


@functools.cache
def _touchpoint_insert_sql() -> tuple[list, str]:
    """``_touchpoint_insert``'s fields and statement (built once per process)."""
    meta = Touchpoint._meta
    quote = connection.ops.quote_name
    fields = [field for field in meta.local_concrete_fields if not field.primary_key and not field.generated]
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(field.column) for field in fields)}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(fields))}) ON CONFLICT DO NOTHING"
    )
    return fields, sql


def participant_named_by(*, tenant: Tenant, answer: str, program: Program | None) -> Participant | None:
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


def identity_lock(*, tenant: Tenant, identifiers: list[str]) -> None:
    """Serialise work on one person (a sign-up and a payment of the same customer processed at once):
    a transaction-scoped advisory lock per identifier, taken in sorted order (no deadlocks). Without it,
    a payment processed while the sign-up that establishes its referral commits could miss it."""
    identity_lock_many([(tenant.pk, identifiers)])


def identity_lock_many(people: list[tuple[int, list[str]]], *, wait: bool = True) -> set[str]:
    """``identity_lock`` for many people at once (a chunk of events): ``people`` is (tenant id, identifiers)
    per person; every key is taken in ONE statement, in one sorted order, so two chunks sharing people
    wait for each other instead of deadlocking. Returns the keys (``identity_key``) NOT taken: none when
    ``wait``; without ``wait`` each key is only tried (``pg_try_advisory_xact_lock``: nothing waits, so
    nothing can deadlock either) and those another transaction holds are returned."""
    keys = sorted(
        {identity_key(tenant_id, value) for tenant_id, identifiers in people for value in identifiers if value}
    )
    if not keys:
        return set()
    with connection.cursor() as cursor:  # one statement; the array's order (sorted) is the locking order
        if not wait:
            cursor.execute(
                "SELECT key FROM unnest(%s::text[]) WITH ORDINALITY AS keys(key, position) "
                "WHERE NOT pg_try_advisory_xact_lock(hashtextextended(key, 0)) ORDER BY position",
                [keys],
            )
            return {key for (key,) in cursor.fetchall()}
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(key, 0)) "
            "FROM unnest(%s::text[]) WITH ORDINALITY AS keys(key, position) ORDER BY position",
            [keys],
        )
    return set()


def identity_key(tenant_id: int, value: str) -> str:
    """The advisory lock key of one identifier of a person (``identity_lock``)."""
    return f"{tenant_id}:{value}"
