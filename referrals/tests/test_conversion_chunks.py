"""Conversions processed in chunks (issue 15: the Stripe drain's follow-ups): one transaction, each event in a
savepoint of its own and in id order — the same outcome as one by one, whatever the delivery order; a
database error hands back only its event; an event another run holds is left to it; a chunk bound to one
workspace never touches another's events."""

from __future__ import annotations

import contextlib
import random
import re
import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import OperationalError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from referral_platform.db.prepared import statements_sent
from referral_platform.tenancy import rls
from referral_platform.tenancy.memo import batch_memo
from referral_platform.tenancy.models import AuditEvent
from referrals import services
from referrals.models import Attribution, ConversionEvent, ConversionEventStatus, Referral, Touchpoint
from referrals.services import conversions
from tests import factories as f

from .builders import click, program_for, referrer_with_link

NOW = timezone.now().replace(microsecond=0)


def workspace(tenant):
    """A linear program with two referrers; visitor clicks for a multi-touch customer."""
    program = program_for(tenant, attribution_model="linear", cookie_window_days=30)
    f.ProgramVersionFactory(program=program)
    _dana, dana_link = referrer_with_link(program, code=f"dana{tenant.pk}")
    _ravi, ravi_link = referrer_with_link(program, name="Ravi Menon", company="Contoso", code=f"ravi{tenant.pk}")
    click(dana_link, visitor_id="v-multi", at=NOW - timedelta(days=3))
    click(ravi_link, visitor_id="v-multi", at=NOW - timedelta(days=2))
    return {"dana": dana_link.code, "ravi": ravi_link.code}


def events_for(codes: dict) -> list[dict]:
    """A day of a workspace's conversions: sign-ups then payments of the same people (the payment matches the
    referral the sign-up made), a multi-touch payment, a second payment, a cancellation, a currency the
    program does not pay in, and a customer nobody referred."""
    at = NOW - timedelta(hours=5)
    return [
        {
            "external_event_id": "su-1",
            "kind": "sign_up",
            "customer_external_id": "cus_1",
            "referral_code": codes["dana"],
        },
        {"external_event_id": "pay-1", "kind": "payment", "customer_external_id": "cus_1", "amount_minor": 9_900},
        {"external_event_id": "pay-1b", "kind": "payment", "customer_external_id": "cus_1", "amount_minor": 4_900},
        {"external_event_id": "pay-2", "kind": "payment", "customer_external_id": "cus_2", "visitor_id": "v-multi"},
        {
            "external_event_id": "pay-3",
            "kind": "payment",
            "customer_external_id": "cus_3",
            "referral_code": codes["ravi"],
        },
        {"external_event_id": "cancel-3", "kind": "cancellation", "customer_external_id": "cus_3"},
        {
            "external_event_id": "eur-4",
            "kind": "payment",
            "customer_external_id": "cus_4",
            "currency": "EUR",
            "referral_code": codes["dana"],
        },
        {"external_event_id": "pay-5", "kind": "payment", "customer_external_id": "cus_5", "amount_minor": 100},
    ], at


def receive_all(tenant, rng: random.Random) -> list[int]:
    """The events stored in a shuffled delivery order (ids follow it); occurred_at keeps the real order."""
    specs, at = events_for(workspace(tenant))
    timed = [(spec, at + timedelta(minutes=index)) for index, spec in enumerate(specs)]
    rng.shuffle(timed)
    ids = []
    for spec, occurred in timed:
        data = {"amount_minor": 12_000, "currency": "USD", **spec, "occurred_at": occurred}
        if data["kind"] in ("sign_up", "cancellation"):
            data.pop("amount_minor"), data.pop("currency")
        raw = {key: (value.isoformat() if hasattr(value, "isoformat") else value) for key, value in data.items()}
        ids.append(services.conversion_event_receive(tenant=tenant, raw=raw, queue_processing=False, **data).event.pk)
    return ids


def outcome(tenant) -> dict:
    """Per external event id: status, reason (ids masked), referral stage and the credit by referrer."""
    out = {}
    for event in ConversionEvent.objects.filter(tenant=tenant).select_related("referral"):
        credit = sorted(
            Attribution.objects.filter(conversion_event=event).values_list("participant__name", "share", "amount_minor")
        )
        out[event.external_event_id] = (
            event.status,
            re.sub(r"#\d+", "#N", event.error),
            event.referral.status if event.referral else None,
            credit,
        )
    return out


def audit_trail(tenant) -> Counter:
    """The workspace's audit rows by (action, object type, from, to)."""
    return Counter(
        AuditEvent.objects.filter(tenant=tenant).values_list("action", "object_type", "from_state", "to_state")
    )


def until_none_received(tenant, process) -> int:
    """Process the workspace's ``received`` events, round after round: an event processed before the referral
    it belongs to existed is queued again (``orphans_requeue``), as the drain's next round would run it."""
    rounds = 0
    while ids := list(
        ConversionEvent.objects.filter(tenant=tenant, status="received").order_by("pk").values_list("pk", flat=True)
    ):
        process(ids)
        rounds += 1
        assert rounds < 5
    return rounds


@pytest.mark.parametrize("memo", [False, True], ids=["plain", "in-batch-memo"])
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_chunk_ends_exactly_as_one_by_one_whatever_the_delivery_order(world, seed, memo):
    """``memo``: the chunk runs inside a ``batch_memo`` block, as the drains run it (rows read once per chunk:
    the links its codes name, rules versions, fraud policies)."""
    receive_all(world.a, random.Random(seed))
    receive_all(world.b, random.Random(seed))
    chunks = []

    def one_by_one(ids):
        for event_id in ids:
            services.conversion_event_process(event_id=event_id)

    def in_a_chunk(ids):
        with batch_memo() if memo else contextlib.nullcontext():
            processed, handed_back = services.conversion_events_process_many(event_ids=ids)
        assert handed_back == [] and sorted(event.pk for event in processed) == ids
        chunks.append(len(ids))

    until_none_received(world.a, one_by_one)
    until_none_received(world.b, in_a_chunk)

    expected, got = outcome(world.a), outcome(world.b)
    assert got == expected
    # The same audit trail (written at the chunk's end in one INSERT: audit_rows_deferred).
    assert audit_trail(world.b) == audit_trail(world.a) and audit_trail(world.b)
    assert chunks[0] == len(events_for({"dana": "", "ravi": ""})[0])
    assert got["pay-1"][0] == "processed" and {name for name, *_ in got["pay-2"][3]} == {"Dana Whitfield", "Ravi Menon"}
    assert got["eur-4"][0] == "failed" and got["pay-5"][0] == "unattributed" and got["cancel-3"][2] == "churned"


def test_a_database_error_hands_back_only_its_event_and_the_others_commit(world, monkeypatch):
    ids = receive_all(world.a, random.Random(7))
    unlucky = ConversionEvent.objects.get(external_event_id="pay-3").pk
    process = conversions._process_locked_event

    def deadlocked(*, event, actor, notes, **options):
        # its referral, stage, credit: all written...
        outcome = process(event=event, actor=actor, notes=notes, **options)
        if event.pk == unlucky:
            raise OperationalError("deadlock detected")  # ...then the database refuses a statement
        return outcome

    monkeypatch.setattr(conversions, "_process_locked_event", deadlocked)
    processed, handed_back = services.conversion_events_process_many(event_ids=ids)

    assert handed_back == [unlucky] and len(processed) == len(ids) - 1
    left = ConversionEvent.objects.get(pk=unlucky)
    assert (left.status, left.referral_id, left.processed_at) == ("received", None, None)
    assert not Referral.objects.filter(referred_external_id="cus_3", tenant=world.a).exists(), "nothing of it kept"
    referral_rows = AuditEvent.objects.filter(tenant=world.a, object_type="referrals.referral")
    assert referral_rows.exists()
    assert {int(pk) for pk in referral_rows.values_list("object_id", flat=True)} <= set(
        Referral.objects.filter(tenant=world.a).values_list("pk", flat=True)
    ), "its audit rows went with its savepoint"
    requeued = ConversionEvent.objects.filter(tenant=world.a, status="received").exclude(pk=unlucky)
    assert all(event.error.startswith("Processed again") for event in requeued)  # orphans queued again, as ever
    monkeypatch.undo()
    assert services.conversion_event_process(event_id=unlucky).status == "processed"  # its own task, later


@pytest.mark.django_db(transaction=True)
def test_an_event_held_by_another_run_is_left_to_it(world):
    ids = receive_all(world.a, random.Random(3))
    held = ids[0]
    locked, release = threading.Event(), threading.Event()

    def other_run():
        with transaction.atomic():
            ConversionEvent.objects.select_for_update().filter(pk=held).first()
            locked.set()
            release.wait(30)
        connection.close()

    thread = threading.Thread(target=other_run)
    thread.start()
    locked.wait(10)
    try:
        processed, handed_back = services.conversion_events_process_many(event_ids=ids)
    finally:
        release.set()
        thread.join()

    assert held not in {event.pk for event in processed} and handed_back == []
    assert ConversionEvent.objects.get(pk=held).status == "received"
    assert ConversionEvent.objects.filter(pk__in=ids).exclude(pk=held).filter(status="received").count() == 0


def test_a_chunk_bound_to_one_workspace_never_processes_another_workspaces_events(world):
    ids_a = receive_all(world.a, random.Random(5))
    ids_b = receive_all(world.b, random.Random(5))

    with rls.tenant(world.a.pk):
        processed, handed_back = services.conversion_events_process_many(event_ids=ids_a + ids_b)

    assert {event.tenant_id for event in processed} == {world.a.pk} and handed_back == []
    assert ConversionEvent.objects.filter(tenant=world.b, status=ConversionEventStatus.RECEIVED).count() == len(ids_b)
    for referral in Referral.objects.filter(tenant=world.a):
        assert referral.referrer.tenant_id == world.a.pk and referral.program.tenant_id == world.a.pk


def test_bad_event_ids_are_refused_before_anything_is_written(world):
    ids = receive_all(world.a, random.Random(9))
    with pytest.raises(ValueError, match="expected a number"):
        services.conversion_events_process_many(event_ids=[ids[0], "1; DROP TABLE x"])
    assert ConversionEvent.objects.filter(tenant=world.a, status="received").count() == len(ids)
    assert not Referral.objects.filter(tenant=world.a).exists()
    processed, handed_back = services.conversion_events_process_many(event_ids=[999_999_999])  # unknown id
    assert (processed, handed_back) == ([], [])


def _payments(tenant, code: str, people: range, *, prefix: str, minute: int) -> list[int]:
    at = NOW - timedelta(hours=2) + timedelta(minutes=minute)
    ids = []
    for person in people:
        data = {
            "external_event_id": f"{prefix}-{person}",
            "kind": "payment",
            "customer_external_id": f"cus_p{person}",
            "email": f"buyer{person}@people.example",
            "referral_code": code,
            "amount_minor": 5_000,
            "currency": "USD",
            "occurred_at": at,
        }
        raw = {key: (value.isoformat() if hasattr(value, "isoformat") else value) for key, value in data.items()}
        ids.append(services.conversion_event_receive(tenant=tenant, raw=raw, queue_processing=False, **data).event.pk)
    return ids


@pytest.mark.django_db(transaction=True)
def test_two_chunks_of_the_same_people_in_opposite_orders_wait_for_each_other_and_never_deadlock(world):
    """A chunk takes the person locks of all its events at once, in one sorted order (``identity_lock_many``):
    two drains whose chunks share people, in opposite orders, run one after the other instead of deadlocking
    (one event at a time, each would hold one person the other one wants next)."""
    codes = workspace(world.a)
    people = range(12)
    first = _payments(world.a, codes["dana"], people, prefix="first", minute=0)
    second = _payments(world.a, codes["dana"], people[::-1], prefix="second", minute=30)  # ids: people reversed
    start = threading.Barrier(2)
    results, errors = {}, []

    def drain(name, ids):
        try:
            start.wait(10)
            with rls.tenant(world.a.pk):
                results[name] = services.conversion_events_process_many(event_ids=ids)
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=drain, args=args) for args in (("first", first), ("second", second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    for name, ids in (("first", first), ("second", second)):
        processed, handed_back = results[name]
        assert handed_back == [], f"{name}: events handed back (a deadlock)"
        assert sorted(event.pk for event in processed) == sorted(ids)
    events = ConversionEvent.objects.filter(pk__in=first + second)
    assert set(events.values_list("status", flat=True)) == {"processed"}
    # One referral per person (the later chunk saw the earlier one's), each event credited exactly once.
    assert Referral.objects.filter(tenant=world.a).count() == len(people)
    assert Counter(
        Attribution.objects.filter(conversion_event__in=events).values_list("conversion_event_id", flat=True)
    ) == {event_id: 1 for event_id in first + second}


def test_a_chunk_takes_its_peoples_locks_in_one_statement(world):
    code = workspace(world.a)["dana"]
    ids = _payments(world.a, code, range(5), prefix="pay", minute=0)
    with CaptureQueriesContext(connection) as captured:
        services.conversion_events_process_many(event_ids=ids)
    locks = [query["sql"] for query in captured.captured_queries if "pg_advisory_xact_lock" in query["sql"]]
    assert len(locks) == 1
    assert set(ConversionEvent.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"processed"}
    # One event on its own still takes its own person's lock.
    alone = _payments(world.a, code, range(5, 6), prefix="pay", minute=5)
    with CaptureQueriesContext(connection) as captured:
        services.conversion_event_process(event_id=alone[0])
    assert sum("pg_advisory_xact_lock" in query["sql"] for query in captured.captured_queries) == 1


def test_a_chunk_reads_the_links_its_codes_name_once(world):
    """Inside ``batch_memo`` (the drains), the links a chunk's referral codes name are read in one statement
    at its start; no event reads its code's link again. Outside a block each event reads its own."""
    codes = workspace(world.a)
    ids = _payments(world.a, codes["dana"], range(4), prefix="dana", minute=0)
    ids += _payments(world.a, codes["ravi"], range(4, 8), prefix="ravi", minute=1)
    ids += _payments(world.a, "nobody-has-this", range(8, 9), prefix="unknown", minute=2)

    def link_reads(captured) -> list[str]:
        return [q["sql"] for q in captured.captured_queries if 'FROM "referrals_referrallink"' in q["sql"]]

    with batch_memo(), CaptureQueriesContext(connection) as captured:
        processed, handed_back = services.conversion_events_process_many(event_ids=ids)
    reads = link_reads(captured)
    assert len(reads) == 1 and '"referrals_referrallink"."code" IN' in reads[0]
    assert handed_back == [] and len(processed) == len(ids)
    statuses = dict(ConversionEvent.objects.filter(pk__in=ids).values_list("external_event_id", "status"))
    processed_ones = {f"{code}-{i}": "processed" for code, people in (("dana", range(4)), ("ravi", range(4, 8)))
                      for i in people}  # fmt: skip
    assert statuses == {**processed_ones, "unknown-8": "unattributed"}
    referrers = Referral.objects.filter(tenant=world.a).values_list("referred_external_id", "link__code")
    assert sorted(referrers) == sorted(
        [(f"cus_p{i}", codes["dana"]) for i in range(4)] + [(f"cus_p{i}", codes["ravi"]) for i in range(4, 8)]
    )

    more = _payments(world.a, codes["dana"], range(20, 23), prefix="plain", minute=3)
    with CaptureQueriesContext(connection) as captured:
        services.conversion_events_process_many(event_ids=more)
    assert len([sql for sql in link_reads(captured) if '"code" = ' in sql]) == 3  # outside a block: one each


def test_a_payment_matched_by_its_clicks_reads_the_links_participant_and_program_with_the_click(world):
    """The referral a click-only payment creates goes through the latest click's link; whether that link still
    accepts referrals (its participant, its program) is answered from the click's own read."""
    workspace(world.a)
    data = {"external_event_id": "clicks-1", "kind": "payment", "customer_external_id": "cus_c1",
            "visitor_id": "v-multi", "amount_minor": 5_000, "currency": "USD", "occurred_at": NOW}  # fmt: skip
    raw = {key: (value.isoformat() if hasattr(value, "isoformat") else value) for key, value in data.items()}
    event = services.conversion_event_receive(tenant=world.a, raw=raw, queue_processing=False, **data).event
    with CaptureQueriesContext(connection) as captured:
        processed = services.conversion_event_process(event_id=event.pk)
    alone = [
        query["sql"]
        for query in captured.captured_queries
        if query["sql"].startswith(('SELECT "programs_participant".', 'SELECT "programs_program".'))
    ]
    assert alone == []
    assert processed.status == "processed" and processed.referral.link.code == "ravi" + str(world.a.pk)


@contextlib.contextmanager
def person_held_elsewhere(tenant, identifiers: list[str]):
    """Another transaction (a real thread with its own connection) holds a person's lock until the block ends;
    yields the moment it let go (filled in when it has)."""
    locked, release, released = threading.Event(), threading.Event(), {}

    def other_drain():
        try:
            with transaction.atomic():
                services.identity.identity_lock(tenant=tenant, identifiers=identifiers)
                locked.set()
                release.wait(30)
                released["at"] = timezone.now()
        finally:
            connection.close()

    thread = threading.Thread(target=other_drain)
    thread.start()
    assert locked.wait(10)
    try:
        yield released
    finally:
        release.set()
        thread.join(30)


@pytest.mark.django_db(transaction=True)
def test_a_chunk_postpones_a_person_another_drain_holds_and_goes_on_with_the_others(world):
    """With ``postponed``, a chunk only tries its people's locks: the events of a person another transaction
    holds (and a later event sharing an identifier with one of them) are left ``received`` and their ids
    handed to the caller, in order; the others are processed at once, without waiting for the other
    transaction. Tried again (waiting) once it has let go, each is processed exactly once."""
    code = workspace(world.a)["dana"]
    ids = _payments(world.a, code, range(4), prefix="pay", minute=0)  # buyers 0..3
    # A later payment sharing buyer 1's e-mail under another customer id: it must wait for buyer 1's.
    data = {
        "external_event_id": "pay-1-again",
        "kind": "payment",
        "customer_external_id": "cus_other",
        "email": "buyer1@people.example",
        "amount_minor": 5_000,
        "currency": "USD",
        "occurred_at": NOW - timedelta(hours=1),
    }
    raw = {key: (value.isoformat() if hasattr(value, "isoformat") else value) for key, value in data.items()}
    ids.append(services.conversion_event_receive(tenant=world.a, raw=raw, queue_processing=False, **data).event.pk)

    postponed: list[int] = []
    with person_held_elsewhere(world.a, ["cus_p1"]) as released:
        processed, handed_back = services.conversion_events_process_many(event_ids=ids, postponed=postponed)
        done_at = timezone.now()
    assert done_at < released["at"], "the chunk waited for the other transaction"
    assert postponed == [ids[1], ids[4]] and handed_back == []
    assert sorted(event.pk for event in processed) == [ids[0], ids[2], ids[3]]
    statuses = dict(ConversionEvent.objects.filter(pk__in=ids).values_list("pk", "status"))
    assert [statuses[pk] for pk in ids] == ["processed", "received", "processed", "processed", "received"]

    processed, handed_back = services.conversion_events_process_many(event_ids=postponed)  # now free: waits
    assert sorted(event.pk for event in processed) == postponed and handed_back == []
    events = ConversionEvent.objects.filter(pk__in=ids)
    assert set(events.values_list("status", flat=True)) == {"processed"}
    assert Referral.objects.filter(tenant=world.a).count() == 4  # buyer 1's second payment found its referral
    assert Counter(
        Attribution.objects.filter(conversion_event__in=events).values_list("conversion_event_id", flat=True)
    ) == {event_id: 1 for event_id in ids}


@pytest.mark.django_db(transaction=True)
def test_without_postponed_a_chunk_waits_for_a_person_another_drain_holds(world):
    code = workspace(world.a)["dana"]
    ids = _payments(world.a, code, range(3), prefix="pay", minute=0)
    results = {}

    def hold_briefly():
        with person_held_elsewhere(world.a, ["cus_p1"]) as released:
            started.set()
            threading.Event().wait(0.5)
        results["released"] = released["at"]

    started = threading.Event()
    holder = threading.Thread(target=hold_briefly)
    holder.start()
    assert started.wait(10)
    processed, handed_back = services.conversion_events_process_many(event_ids=ids)
    done_at = timezone.now()
    holder.join(30)
    assert done_at >= results["released"]
    assert sorted(event.pk for event in processed) == ids and handed_back == []


def test_a_new_referrals_stage_move_and_links_travel_with_the_next_statement(world):
    """A first payment that creates its referral moves it to converted and records the person's links and its
    code's touchpoint with writes nobody reads the result of: they travel in front of the event's next statement
    instead of on their own (``writes_with_next``; issue 15) — and the chunk ends as before, each event processed
    and credited."""
    code = workspace(world.a)["dana"]
    _payments(world.a, code, range(3), prefix="warm", minute=0)  # prepares the statements on this connection
    with batch_memo():
        services.conversion_events_process_many(
            event_ids=list(ConversionEvent.objects.filter(tenant=world.a).values_list("pk", flat=True))
        )
    ids = _payments(world.a, code, range(3, 9), prefix="pay", minute=5)
    with CaptureQueriesContext(connection) as captured, batch_memo():
        processed, handed_back = services.conversion_events_process_many(event_ids=ids)
    assert sorted(event.pk for event in processed) == ids and handed_back == []
    writes = (
        'UPDATE "referrals_referral" SET "status"',
        "INSERT INTO referrals_identitylink",
        'INSERT INTO "referrals_touchpoint"',
    )
    sent = [
        [part for part in statements_sent(query["sql"]) if not part.startswith(("SAVEPOINT", "RELEASE"))]
        for query in captured.captured_queries
    ]
    alone = [parts for parts in sent if len(parts) == 1 and parts[0].startswith(writes)]
    assert alone == [], alone
    moved = [part for parts in sent for part in parts if part.startswith(writes[0])]
    assert len(moved) == len(ids), "each stage move went out, with another statement"
    assert Touchpoint.objects.filter(
        tenant=world.a, dedupe_key__in=[f"conversion:code:{pk}" for pk in ids]
    ).count() == len(ids)
    assert set(Referral.objects.filter(conversion_events__pk__in=ids).values_list("status", flat=True)) == {"converted"}
    assert Counter(
        Attribution.objects.filter(conversion_event__in=ids).values_list("conversion_event_id", flat=True)
    ) == {event_id: 1 for event_id in ids}
