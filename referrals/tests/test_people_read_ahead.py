"""A conversion chunk's people read ahead (issue 15, ``referrals.services.conversions.people_read_ahead``): the
identity clusters of a chunk's people are walked in lock step and their referrals read in ONE statement before
any event is processed, and an event whose person no earlier event of the chunk touched uses them instead of
its own two reads (its links recorded, its referral with its sequence). The end state is the one of the same
chunk without read-ahead and of the same events one by one — whatever the chunk holds (renewals, the same
person twice, new people, a payment that joins two people, a cancellation, a refund, an unknown customer) and in
any delivery order."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import given
from hypothesis import strategies as st

from referral_platform.db.prepared import statements_sent
from referral_platform.tenancy.memo import batch_memo
from referral_platform.tenancy.models import AuditEvent
from referrals import services
from referrals.models import Attribution, ConversionEvent, IdentityLink, Referral, ReferralLink
from referrals.services import conversions
from tests import factories as f
from tests.hypothesis_db import WITHOUT_SHRINKING, database_examples

from .builders import click
from .test_renewal_payments import NOW, process_received, state, workspace

# Existing customers: (customer id, e-mail, visitor id, code of the referrer who brought them).
CUSTOMERS = [
    ("cus_1", "ana@acme.example", "", "dana"),
    ("cus_2", "bo@beta.example", "", "ravi"),
    ("cus_3", "cy@gamma.example", "v-3", ""),  # found by the visitor's clicks (Dana's and Ravi's: linear credit)
    ("cus_4", "di@delta.example", "", "dana"),
]


def receive(tenant, external_id: str, *, kind="payment", at, code="", customer="", email="", visitor="", amount=9_900):
    data = {"external_event_id": external_id, "kind": kind, "occurred_at": at}
    for name, value in (("customer_external_id", customer), ("email", email), ("visitor_id", visitor)):
        if value:
            data[name] = value
    if kind in ("payment", "refund"):
        data.update(amount_minor=amount, currency="USD")
    if code:
        data["referral_code"] = code
    raw = {key: (value.isoformat() if hasattr(value, "isoformat") else value) for key, value in data.items()}
    return services.conversion_event_receive(tenant=tenant, raw=raw, queue_processing=False, **data).event


def customers_of(tenant, customers=CUSTOMERS) -> dict:
    """A linear-credit workspace whose customers converted a month ago (their links recorded)."""
    codes = workspace(tenant, model="linear")
    for code in codes.values():
        link = ReferralLink.objects.get(tenant=tenant, code=code)
        click(link, visitor_id="v-3", at=NOW - timedelta(days=40 if code.startswith("dana") else 39))
    for index, (customer, email, visitor, code) in enumerate(customers):
        receive(
            tenant,
            f"first-{customer}",
            at=NOW - timedelta(days=30, hours=index),
            code=codes.get(code, ""),
            customer=customer,
            email=email,
            visitor=visitor,
        )
    process_in_chunks(tenant)
    assert ConversionEvent.objects.filter(tenant=tenant, status="processed").count() == len(customers)
    return codes


# The chunk's possible events (name → receive's keyword arguments; codes by referrer name).
def menu(codes: dict) -> dict[str, dict]:
    day = NOW - timedelta(days=1)
    return {
        **{
            f"renew-{customer}": {"customer": customer, "email": email, "visitor": visitor, "at": day}
            for customer, email, visitor, _code in CUSTOMERS
        },
        "renew-cus_1-again": {"customer": "cus_1", "email": "ana@acme.example", "at": day + timedelta(hours=2)},
        "renew-cus_2-with-code": {"customer": "cus_2", "code": codes["dana"], "at": day + timedelta(hours=1)},
        "new-cus_9": {"customer": "cus_9", "email": "ed@eps.example", "code": codes["ravi"], "at": day},
        "joins-2-and-3": {"customer": "cus_2", "email": "cy@gamma.example", "at": day + timedelta(hours=3)},
        "email-only-of-4": {"email": "di@delta.example", "at": day + timedelta(hours=4)},
        "cancel-cus_4": {"kind": "cancellation", "customer": "cus_4", "at": day + timedelta(hours=5)},
        "refund-cus_1": {"kind": "refund", "customer": "cus_1", "amount": 4_000, "at": day + timedelta(hours=6)},
        "nobody-referred": {"customer": "cus_x", "email": "x@nowhere.example", "at": day},
        "before-the-first": {"customer": "cus_3", "visitor": "v-3", "at": NOW - timedelta(days=35)},
    }


def process_in_chunks(tenant) -> None:
    """The workspace's ``received`` events as a drain processes them: one chunk (in a ``batch_memo`` block),
    round after round (an event processed before its referral existed is queued again)."""
    for _round in range(5):
        ids = list(
            ConversionEvent.objects.filter(tenant=tenant, status="received").order_by("pk").values_list("pk", flat=True)
        )
        if not ids:
            return
        with batch_memo():
            processed, handed_back = services.conversion_events_process_many(event_ids=ids)
        assert handed_back == [] and len(processed) == len(ids)
    raise AssertionError("events still received after 5 rounds")


def audit_trail(tenant) -> Counter:
    return Counter(
        AuditEvent.objects.filter(tenant=tenant).values_list("action", "object_type", "from_state", "to_state")
    )


def links(tenant) -> list:
    """The workspace's identity graph (who is known to be one person)."""
    return sorted(IdentityLink.objects.filter(tenant=tenant).values_list("a_kind", "a_value", "b_kind", "b_value"))


def counting_read_ahead(monkeypatch) -> list[int]:
    """How many events each chunk's read-ahead answered (the real function, counted)."""
    answered: list[int] = []
    real = conversions.people_read_ahead

    def counted(events):
        found = real(events)
        answered.append(len(found))
        return found

    monkeypatch.setattr(conversions, "people_read_ahead", counted)
    return answered


@pytest.mark.django_db
@database_examples(12, phases=WITHOUT_SHRINKING)
@given(
    chosen=st.lists(st.sampled_from(sorted(menu({"dana": "", "ravi": ""}))), min_size=3, max_size=9, unique=True),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_a_chunk_read_ahead_ends_as_without_it_and_as_one_by_one_in_any_order(chosen, seed, monkeypatch):
    ends = []
    for way in ("read ahead", "without read-ahead", "one by one"):
        with monkeypatch.context() as patch:
            answered = counting_read_ahead(patch)
            if way == "without read-ahead":
                patch.setattr(conversions, "people_read_ahead", lambda events: {})
            tenant = f.TenantFactory()
            codes = customers_of(tenant)
            answered.clear()
            events = menu(codes)
            order = list(chosen)
            random.Random(seed).shuffle(order)
            for name in order:
                receive(tenant, name, **events[name])
            (process_received if way == "one by one" else process_in_chunks)(tenant)
            ends.append((state(tenant), audit_trail(tenant), links(tenant)))
            if way == "read ahead" and any(name.startswith("renew-") for name in chosen):
                assert sum(answered) >= 1, "a renewal's person is read ahead"
    read_ahead, without, one_by_one = ends
    assert read_ahead == without
    assert read_ahead == one_by_one


def test_a_chunk_of_renewals_reads_its_people_with_two_statements_instead_of_two_each(world, monkeypatch):
    for tenant in (world.a, world.b):
        customers_of(tenant)
        for customer, email, visitor, _code in CUSTOMERS:
            receive(tenant, f"renew-{customer}", customer=customer, email=email, visitor=visitor, at=NOW)
    answered = counting_read_ahead(monkeypatch)

    def statements(tenant) -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            process_in_chunks(tenant)
        return [query["sql"] for query in captured.captured_queries]

    ahead = statements(world.a)
    assert answered == [len(CUSTOMERS)], "every renewal's person answered by the read-ahead"
    monkeypatch.setattr(conversions, "people_read_ahead", lambda events: {})
    alone = statements(world.b)

    def count(sqls, marker: str) -> int:
        return sum(marker in sql for sql in sqls)

    # The outcomes of the chunk's renewals: one statement for all of them.
    assert count(ahead, 'INSERT INTO "referrals_attribution"') == 1
    assert count(alone, 'INSERT INTO "referrals_attribution"') == len(CUSTOMERS)
    assert count(ahead, "INSERT INTO referrals_identitylink") == 0
    assert count(alone, "INSERT INTO referrals_identitylink") == len(CUSTOMERS)
    assert count(ahead, "jsonb_to_recordset") == 1
    # The walk: one statement per level for everyone (the visitor's clicks' person has a second level).
    assert len(alone) - len(ahead) >= 3 * len(CUSTOMERS) - 4
    assert state(world.a) == state(world.b) and audit_trail(world.a) == audit_trail(world.b)
    assert links(world.a) == links(world.b)
    statuses = set(ConversionEvent.objects.filter(tenant=world.a).values_list("status", flat=True))
    assert statuses == {"processed"}


def test_a_person_touched_earlier_in_the_chunk_reads_for_itself(world, monkeypatch):
    """cus_2 pays twice in one chunk: the second payment's person was read before the first moved its referral, so
    the second reads again (its link statement and its referral's read), and sees the first's outcome."""
    customers_of(world.a)
    receive(world.a, "renew-1", customer="cus_2", email="bo@beta.example", at=NOW - timedelta(days=2))
    receive(world.a, "renew-2", customer="cus_2", email="bo@beta.example", at=NOW - timedelta(days=1))
    used: list = []
    real = conversions._process_locked_event

    def spy(**options):
        used.append(options.get("ahead") is not None)
        return real(**options)

    monkeypatch.setattr(conversions, "_process_locked_event", spy)
    process_in_chunks(world.a)
    assert used == [True, False]
    referral = Referral.objects.get(tenant=world.a, referred_external_id="cus_2")
    assert ConversionEvent.objects.filter(referral=referral, status="processed").count() == 3


def test_another_workspaces_people_are_never_read_ahead_for_a_chunk(world, monkeypatch):
    """The same customer ids in two workspaces: workspace A's chunk reads only A's people and referrals, and
    B's rows are untouched."""
    customers_of(world.a)
    customers_of(world.b)
    before_b = state(world.b)
    for customer, email, visitor, _code in CUSTOMERS:
        receive(world.a, f"renew-{customer}", customer=customer, email=email, visitor=visitor, at=NOW)
    found = conversions.people_read_ahead(
        list(ConversionEvent.objects.filter(tenant=world.a, status="received").select_related("tenant"))
    )
    assert len(found) == len(CUSTOMERS)
    assert {person.referral.tenant_id for person in found.values()} == {world.a.pk}
    process_in_chunks(world.a)
    assert state(world.b) == before_b
    assert not ConversionEvent.objects.filter(tenant=world.b, status="received").exists()


def test_one_refused_renewal_among_a_hundred_fails_alone_and_the_other_99_are_written_once(world, monkeypatch):
    """The issue's batch that fails halfway: the chunk's outcomes are written together; the database refuses one
    renewal's credit (a currency longer than its column), so that write is rolled back and each is written on its
    own — the 99 good ones once, the bad one failed with its reason — and every event's hook is told once."""
    customers = [(f"cus_{i}", f"p{i}@acme.example", "", "dana") for i in range(100)]
    customers_of(world.a, customers)
    renewals = [receive(world.a, f"renew-{c}", customer=c, email=e, at=NOW) for c, e, _v, _code in customers]
    unlucky = renewals[57].pk
    real = conversions.attribution_run

    def refused_once(*, event, **options):
        made = real(event=event, **options)
        if event.pk == unlucky:
            for row in options["insert_later"]:
                row.currency = "USDX"  # longer than the column: the database refuses the row
        return made

    monkeypatch.setattr(conversions, "attribution_run", refused_once)
    told: list[tuple[int, str]] = []
    from referral_platform.hooks import hooks

    def tell(*, event):
        told.append((event.pk, event.status))

    hooks.register("conversion_processed", tell)
    try:
        with CaptureQueriesContext(connection) as captured:
            process_in_chunks(world.a)
    finally:
        hooks.unregister("conversion_processed", tell)

    bad = ConversionEvent.objects.get(pk=unlucky)
    assert bad.status == "failed" and bad.referral_id is None
    assert "DataError" in bad.error and "Correct the event and send it again" in bad.error
    good = ConversionEvent.objects.filter(pk__in=[event.pk for event in renewals]).exclude(pk=unlucky)
    assert set(good.values_list("status", flat=True)) == {"processed"} and good.count() == 99
    credited = Counter(
        Attribution.objects.filter(conversion_event__in=[event.pk for event in renewals]).values_list(
            "conversion_event_id", flat=True
        )
    )
    assert set(credited) == {event.pk for event in good} and set(credited.values()) == {1}, "each written once"
    assert sorted(told) == sorted([(event.pk, "processed") for event in good] + [(unlucky, "failed")])
    writes = [q["sql"] for q in captured.captured_queries if 'INSERT INTO "referrals_attribution"' in q["sql"]]
    assert len(writes) == 1 + 100, "the chunk's write, then each on its own"


def test_a_chunk_with_a_new_person_writes_the_earlier_renewals_before_it_reads(world, monkeypatch):
    """A renewal read ahead, then an event that reads for itself (the same customer's second payment): the
    renewal's outcome is written before that read (so any read of it would see it, as one by one), and the end
    state is the one of the same payments one by one."""
    customers_of(world.a)
    receive(world.a, "renew-a", customer="cus_1", email="ana@acme.example", at=NOW - timedelta(days=2))
    receive(world.a, "renew-b", customer="cus_1", email="ana@acme.example", at=NOW - timedelta(days=1))
    with CaptureQueriesContext(connection) as captured:
        process_in_chunks(world.a)
    writes = [q["sql"] for q in captured.captured_queries if 'INSERT INTO "referrals_attribution"' in q["sql"]]
    assert len(writes) == 2
    assert set(ConversionEvent.objects.filter(tenant=world.a).values_list("status", flat=True)) == {"processed"}
    customers_of(world.b)
    receive(world.b, "renew-a", customer="cus_1", email="ana@acme.example", at=NOW - timedelta(days=2))
    receive(world.b, "renew-b", customer="cus_1", email="ana@acme.example", at=NOW - timedelta(days=1))
    process_received(world.b)
    assert state(world.a) == state(world.b)


def test_the_people_read_answers_each_person_as_the_one_person_read(world):
    """``referrals_for_identities`` against ``referral_for_identity(with_sequence=True)`` person by person:
    precedence (customer id, then e-mail, then visitor id; the oldest within each), a program named by a code,
    nobody, an empty person, a person with more referrals than one read takes (not answered: read alone), and
    another workspace's referrals with the same identifiers (never candidates)."""
    from programs.models import Participant
    from referrals.selectors import (
        REFERRAL_MATCH_CANDIDATES,
        IdentityCluster,
        earliest_settled_as_read,
        referral_for_identity,
        referrals_for_identities,
    )

    codes = customers_of(world.a)
    customers_of(world.b)
    dana = Participant.objects.get(tenant=world.a, links__code=codes["dana"])
    other = f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a, currency="USD"))
    f.ReferralFactory(referrer=other, referred_external_id="cus_1", referred_email="zed@acme.example")
    f.ReferralFactory(referrer=dana, referred_email="ana2@acme.example", visitor_id="v-ana")
    for index in range(REFERRAL_MATCH_CANDIDATES + 1):
        f.ReferralFactory(referrer=dana, referred_email=f"many{index}@acme.example", visitor_id="v-crowd")
    people = [
        (IdentityCluster(customer_ids={"cus_2"}, emails={"ana2@acme.example"}, visitor_ids={"v-ana"}), None),
        (IdentityCluster(emails={"ana2@acme.example"}, visitor_ids={"v-3"}), None),
        (IdentityCluster(visitor_ids={"v-ana"}), None),
        (IdentityCluster(customer_ids={"cus_1"}), other.program),
        (IdentityCluster(customer_ids={"cus_3"}, visitor_ids={"v-3"}), dana.program),
        (IdentityCluster(customer_ids={"cus_nobody"}), None),
        (IdentityCluster(), None),
        (IdentityCluster(visitor_ids={"v-crowd"}), None),
    ]
    answers = referrals_for_identities(world.a, people)
    assert [found for found, _referral in answers] == [True] * 7 + [False]
    for (cluster, program), (_found, referral) in list(zip(people, answers, strict=True))[:7]:
        alone = referral_for_identity(world.a, cluster=cluster, program=program, with_sequence=True)
        assert (referral.pk if referral else None) == (alone.pk if alone else None)
        if referral is not None:
            assert referral.tenant_id == world.a.pk
            assert earliest_settled_as_read(referral) == earliest_settled_as_read(alone)
            assert referral._touch_rows_as_read == alone._touch_rows_as_read
            assert (referral.program, referral.referrer, referral.rule_version) == (
                alone.program,
                alone.referrer,
                alone.rule_version,
            )
    assert answers[0][1].referred_external_id == "cus_2" and answers[1][1].referred_email == "ana2@acme.example"
    assert answers[3][1].program_id == other.program_id
    assert answers[4][1] is not None and answers[4][1]._touch_rows_as_read, "the visitor's clicks come with it"
    assert answers[5] == (True, None) and answers[6] == (True, None)
    assert referrals_for_identities(world.a, []) == []


def test_a_renewal_whose_processing_records_an_audit_row_writes_its_outcome_at_once(world, monkeypatch):
    """Only an event whose processing wrote nothing at all — no statement, no audit row waiting for the chunk's
    end — leaves its outcome to the chunk's write: such a row would otherwise outlive its event's failure."""
    from referral_platform.tenancy.actors import system_actor
    from referral_platform.tenancy.services import audit_record

    customers_of(world.a)
    renewals = {
        customer: receive(world.a, f"renew-{customer}", customer=customer, email=email, visitor=visitor, at=NOW)
        for customer, email, visitor, _code in CUSTOMERS
    }
    real = conversions.attribution_run

    def noted(*, event, **options):
        if event.pk == renewals["cus_2"].pk:
            audit_record(tenant=event.tenant, actor=system_actor(event.tenant), action="test.noted", obj=event)
        return real(event=event, **options)

    monkeypatch.setattr(conversions, "attribution_run", noted)
    with CaptureQueriesContext(connection) as captured:
        process_in_chunks(world.a)
    writes = [q["sql"] for q in captured.captured_queries if 'INSERT INTO "referrals_attribution"' in q["sql"]]
    assert len(writes) == 2, "cus_2's outcome at once, the three others' together at the chunk's end"
    assert AuditEvent.objects.filter(tenant=world.a, action="test.noted").count() == 1
    assert set(ConversionEvent.objects.filter(tenant=world.a).values_list("status", flat=True)) == {"processed"}


NEW_CUSTOMERS = [  # first payments: every link of theirs still to record
    ("cus_n1", "nia@one.example", "", "dana"),
    ("cus_n2", "ned@two.example", "v-n2", "ravi"),
    ("cus_n3", "noa@three.example", "v-3", ""),  # found by the visitor's clicks
    ("cus_n4", "", "v-n4", "dana"),
]


def test_a_chunk_of_new_customers_is_read_ahead_and_records_their_links_without_walking_again(world, monkeypatch):
    """First payments (issue 15: a billing run's first month): each person's links are not recorded yet, yet the
    cluster the chunk walked before they exist is the one walked after, so the person is read ahead too — the
    event records its links with one INSERT and no walk of its own, the chunk reads the referrals once — and the
    end state is the one without read-ahead: referrals created, links, credit, audit trail."""
    for tenant in (world.a, world.b):
        codes = workspace(tenant, model="linear")
        for code in codes.values():
            link = ReferralLink.objects.get(tenant=tenant, code=code)
            click(link, visitor_id="v-3", at=NOW - timedelta(days=4 if code.startswith("dana") else 3))
        for customer, email, visitor, code in NEW_CUSTOMERS:
            receive(
                tenant,
                f"first-{customer}",
                code=codes.get(code, ""),
                customer=customer,
                email=email,
                visitor=visitor,
                at=NOW - timedelta(days=1),
            )
    answered = counting_read_ahead(monkeypatch)
    missing: list[bool] = []
    real = conversions._process_locked_event

    def spy(**options):
        missing.append(options["ahead"].links_missing if options.get("ahead") is not None else None)
        return real(**options)

    monkeypatch.setattr(conversions, "_process_locked_event", spy)
    one_person_reads: list = []
    read_one = conversions.referral_for_identity
    monkeypatch.setattr(
        conversions, "referral_for_identity", lambda *a, **k: one_person_reads.append(1) or read_one(*a, **k)
    )

    def statements(tenant) -> tuple[list[str], int]:
        one_person_reads.clear()
        with CaptureQueriesContext(connection) as captured:
            process_in_chunks(tenant)
        return [sql for query in captured.captured_queries for sql in statements_sent(query["sql"])], len(
            one_person_reads
        )

    ahead, reads_ahead = statements(world.a)
    assert answered == [len(NEW_CUSTOMERS)] and missing == [True] * len(NEW_CUSTOMERS)
    monkeypatch.setattr(conversions, "people_read_ahead", lambda events: {})
    alone, reads_alone = statements(world.b)
    assert (reads_ahead, reads_alone) == (0, len(NEW_CUSTOMERS))  # each person's referral read: none of its own

    def count(sqls, prefix: str) -> int:
        return sum(sql.startswith(prefix) for sql in sqls)

    assert count(ahead, "INSERT INTO referrals_identitylink") == len(NEW_CUSTOMERS)  # the links, no walk with them
    assert count(ahead, "WITH new_links AS") == 0
    assert count(alone, "WITH new_links AS") == len(NEW_CUSTOMERS)  # links + the walk's first level, per event
    assert sum("jsonb_to_recordset" in sql for sql in ahead) == 1  # the people's referrals: one read
    assert Referral.objects.filter(tenant=world.a).count() == len(NEW_CUSTOMERS)
    assert state(world.a) == state(world.b) and audit_trail(world.a) == audit_trail(world.b)
    assert links(world.a) == links(world.b) and len(links(world.a)) >= len(NEW_CUSTOMERS)
    assert set(ConversionEvent.objects.filter(tenant=world.a).values_list("status", flat=True)) == {"processed"}
