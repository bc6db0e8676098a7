"""Conversion processing walks the person's identity graph once when the credit starts from the same
identifiers (``referral_credit(walked=...)``, issue 15), and again when the referral knows more."""

from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from referral_platform.db.prepared import statements_sent
from referrals import services
from referrals.models import Attribution, ConversionEvent
from referrals.selectors import identity_cluster
from tests import factories as f

from .builders import click, program_for, referrer_with_link

NOW = timezone.now().replace(microsecond=0)


def _receive(tenant, **data) -> int:
    data = {"kind": "payment", "amount_minor": 9_000, "currency": "USD", "occurred_at": NOW, **data}
    raw = {key: (value.isoformat() if hasattr(value, "isoformat") else value) for key, value in data.items()}
    return services.conversion_event_receive(tenant=tenant, raw=raw, queue_processing=False, **data).event.pk


def _statements(captured):
    """Every statement sent (a savepoint is sent in front of the statement that follows it; a prepared one as
    its text)."""
    for query in captured.captured_queries:
        yield from statements_sent(query["sql"])


def _identity_walks(captured) -> int:
    """Levels of identity walks read (the event's first level travels with its links' INSERT: issue 15)."""
    return sum(
        sql.startswith(('SELECT "referrals_identitylink".', "WITH new_links AS (INSERT INTO referrals_identitylink"))
        for sql in _statements(captured)
    )


def _program(tenant):
    program = program_for(tenant, attribution_model="linear", cookie_window_days=30)
    f.ProgramVersionFactory(program=program)
    _dana, link = referrer_with_link(program, code=f"walk{tenant.pk}")
    return link


def test_a_referral_the_event_creates_is_credited_from_the_cluster_the_event_walked(world):
    link = _program(world.a)
    click(link, visitor_id="v-walk", at=NOW - timedelta(days=2))
    event_id = _receive(
        world.a,
        external_event_id="pay-1",
        customer_external_id="cus_w",
        email="Buyer@Walk.example",
        visitor_id="v-walk",
    )

    with CaptureQueriesContext(connection) as captured:
        event = services.conversion_event_process(event_id=event_id)

    assert event.status == "processed"
    assert _identity_walks(captured) == 1  # the event's walk; the credit did not walk again
    evidence = Attribution.objects.get(conversion_event=event).evidence
    fresh = identity_cluster(world.a, visitor_ids=["v-walk"], emails=["buyer@walk.example"], customer_ids=["cus_w"])
    assert evidence["identity"] == fresh.as_json() and fresh.visitor_ids == {"v-walk"}


def test_a_referral_that_knows_more_than_the_event_is_walked_again(world):
    link = _program(world.a)
    click(link, visitor_id="v-old", at=NOW - timedelta(days=3))
    # The sign-up made the referral with the visitor id and the e-mail; the payment carries only the customer id.
    services.signup_record(
        tenant=world.a,
        email="lee@more.example",
        visitor_id="v-old",
        customer_external_id="cus_more",
        referral_code=link.code,
        occurred_at=NOW - timedelta(days=2),
        actor="test",
    )
    event_id = _receive(world.a, external_event_id="pay-2", customer_external_id="cus_more")

    with CaptureQueriesContext(connection) as captured:
        event = services.conversion_event_process(event_id=event_id)

    assert event.status == "processed" and event.referral.visitor_id == "v-old"
    # The event's walk (two levels: the customer id, then the e-mail and visitor id it revealed), then the
    # credit's own from the referral's identifiers (one level: they reveal nothing more).
    assert _identity_walks(captured) == 3
    evidence = Attribution.objects.get(conversion_event=event).evidence
    fresh = identity_cluster(world.a, visitor_ids=["v-old"], emails=["lee@more.example"], customer_ids=["cus_more"])
    assert evidence["identity"] == fresh.as_json()
    assert [touch["kind"] for touch in evidence["sequence"]] == ["click", "referral_code"]  # the sign-up's code


def test_the_walked_cluster_is_never_another_workspaces(world):
    link_a, link_b = _program(world.a), _program(world.b)
    click(link_b, visitor_id="v-shared", at=NOW - timedelta(days=1))
    event_id = _receive(world.a, external_event_id="pay-3", customer_external_id="cus_s", visitor_id="v-shared")
    event = services.conversion_event_process(event_id=event_id)
    # Workspace B's click of the same visitor id neither creates A's referral nor is credited.
    assert event.status == "unattributed" and not Attribution.objects.filter(conversion_event=event).exists()
    assert ConversionEvent.objects.filter(tenant=world.b).count() == 0 and link_a.tenant_id == world.a.pk


def _attribution_statements(captured, verb: str) -> int:
    return sum(
        sql.startswith(verb) and '"referrals_attribution"' in sql.split(" WHERE ")[0] for sql in _statements(captured)
    )


def _two_referrers(tenant):
    """A linear program (30-day window, a rule version) with Dana's and Ravi's links."""
    program = program_for(tenant, attribution_model="linear", cookie_window_days=30)
    f.ProgramVersionFactory(program=program)
    _dana, dana = referrer_with_link(program, code=f"dana{tenant.pk}")
    _ravi, ravi = referrer_with_link(program, name="Ravi Menon", company="Contoso", code=f"ravi{tenant.pk}")
    return dana, ravi


def test_a_first_processing_writes_its_credit_in_one_insert_and_reads_none(world):
    dana, ravi = _two_referrers(world.a)
    click(dana, visitor_id="v-two", at=NOW - timedelta(days=3))
    click(ravi, visitor_id="v-two", at=NOW - timedelta(days=2))
    event_id = _receive(world.a, external_event_id="pay-4", customer_external_id="cus_two", visitor_id="v-two")

    with CaptureQueriesContext(connection) as captured:
        event = services.conversion_event_process(event_id=event_id)

    assert event.status == "processed"
    inserts = [sql for sql in _statements(captured) if 'INSERT INTO "referrals_attribution"' in sql]
    assert _attribution_statements(captured, "SELECT") == 0 and len(inserts) == 1
    # ... written by the same statement as the event's outcome (issue 15), which is not saved on its own
    assert inserts[0].startswith('WITH outcome AS (UPDATE "referrals_conversionevent"')
    assert not any(sql.startswith('UPDATE "referrals_conversionevent"') for sql in _statements(captured))
    rows = list(Attribution.objects.filter(conversion_event=event).order_by("participant__name"))
    assert [(row.participant.name, str(row.share), row.amount_minor) for row in rows] == [
        ("Dana Whitfield", "0.500000", 4_500),
        ("Ravi Menon", "0.500000", 4_500),
    ]
    # Computing it again (a marketer's "Re-run attribution") reads the rows and keeps them: same ids, same values.
    again = services.conversion_reattribute(event=event)
    assert sorted(row.pk for row in again) == sorted(row.pk for row in rows)
    assert Attribution.objects.filter(conversion_event=event).count() == 2


def test_an_event_processed_again_after_its_referral_appeared_is_credited_once(world):
    link = _program(world.a)
    # The payment arrives before the sign-up that makes its referral: unattributed, then queued again.
    event_id = _receive(world.a, external_event_id="pay-5", customer_external_id="cus_late", occurred_at=NOW)
    assert services.conversion_event_process(event_id=event_id).status == "unattributed"
    # Another workspace's unattributed payment of the same customer id is never queued again by A's referral.
    theirs = _receive(world.b, external_event_id="pay-5", customer_external_id="cus_late", occurred_at=NOW)
    assert services.conversion_event_process(event_id=theirs).status == "unattributed"
    services.signup_record(
        tenant=world.a,
        email="late@later.example",
        customer_external_id="cus_late",
        referral_code=link.code,
        occurred_at=NOW - timedelta(hours=1),
        actor="test",
    )
    assert ConversionEvent.objects.get(pk=event_id).status == "received"
    assert ConversionEvent.objects.get(pk=event_id).error.startswith("Processed again: referral #")
    assert ConversionEvent.objects.get(pk=theirs).status == "unattributed"
    event = services.conversion_event_process(event_id=event_id)
    assert event.status == "processed"
    assert list(Attribution.objects.filter(conversion_event=event).values_list("participant_id", "amount_minor")) == [
        (link.participant_id, 9_000)
    ]


def test_a_credit_the_database_refuses_undoes_the_processing_and_fails_the_event(world):
    """The rows and the outcome are one statement inside the processing's savepoint: a value PostgreSQL refuses
    (here a trigger raising a data exception, SQLSTATE 22003) rolls back the referral the payment created and
    fails the event with the reason — as when the rows were inserted on their own."""
    from referrals.models import Referral

    dana, _ravi = _two_referrers(world.a)
    click(dana, visitor_id="v-refused", at=NOW - timedelta(days=3))
    event_id = _receive(world.a, external_event_id="pay-refused", customer_external_id="cus_r", visitor_id="v-refused")
    from tests.app_role import as_table_owner

    with as_table_owner(connection), connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_refuse_credit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'credit refused' USING ERRCODE = 'numeric_value_out_of_range'; END $$; "
            "CREATE TRIGGER test_refuse_credit BEFORE INSERT ON referrals_attribution "
            "FOR EACH ROW EXECUTE FUNCTION test_refuse_credit()"
        )

    event = services.conversion_event_process(event_id=event_id)

    assert event.status == "failed" and "DataError" in event.error and "credit refused" in event.error
    stored = ConversionEvent.objects.get(pk=event_id)
    assert (stored.status, stored.referral_id) == ("failed", None)
    assert not Referral.objects.filter(tenant=world.a).exists()
    assert not Attribution.objects.filter(conversion_event_id=event_id).exists()


def test_a_payment_matched_by_clicks_reads_the_persons_sequence_once(world):
    """The link the clicks establish the referral through, its first click and its credit all come from ONE
    read of the person's clicks and touchpoints (``sequences_remembered``, issue 15) — the same referral and
    credit as reading afresh; a code the payment carries is recorded first and is in the credit's sequence."""
    from referrals.models import Referral
    from referrals.selectors import referral_credit

    dana, ravi = _two_referrers(world.a)
    click(dana, visitor_id="v-seq", at=NOW - timedelta(days=4))
    click(ravi, visitor_id="v-seq", at=NOW - timedelta(days=1))
    click(ravi, visitor_id="v-seq", at=NOW + timedelta(days=1))  # after the payment: never counted
    event_id = _receive(world.a, external_event_id="pay-seq", customer_external_id="cus_seq", visitor_id="v-seq")

    with CaptureQueriesContext(connection) as captured:
        event = services.conversion_event_process(event_id=event_id)

    # (The person's referral is read with its credit's sequence, ``with_sequence``: that statement is not a read of
    # the sequence of its own, and here it finds no referral.)
    reads = [
        sql
        for sql in _statements(captured)
        if ("FROM referrals_click c" in sql or '"referrals_click"' in sql)
        and "json_agg(json_build_array(src" not in sql
    ]
    assert event.status == "processed"
    referral = Referral.objects.get(pk=event.referral_id)
    assert referral.clicked_at == NOW - timedelta(days=4)  # the first click, answered from the sequence
    fresh = referral_credit(referral)
    rows = {row.participant_id: row.touchpoints for row in Attribution.objects.filter(conversion_event=event)}
    assert sorted(rows) == sorted(fresh.result.participant_exact)
    assert len(rows[dana.participant_id]) == 1 and len(rows[ravi.participant_id]) == 1
    # one sequence read for the link; the latest click read by link_by_model; no first-click read, no second sequence
    assert sum("FROM referrals_click c" in sql for sql in reads) == 1
    assert not any(sql.startswith('SELECT "referrals_click"."occurred_at"') for sql in reads)

    # A coupon recorded after the link was found forgets the remembered sequence: the credit's evidence has it.
    click(dana, visitor_id="v-cp", at=NOW - timedelta(days=2))
    coupon_event = _receive(
        world.a, external_event_id="pay-coupon", customer_external_id="cus_cp", visitor_id="v-cp", coupon_code="SPRING"
    )
    event = services.conversion_event_process(event_id=coupon_event)
    evidence = Attribution.objects.filter(conversion_event=event).first().evidence
    assert [touch["kind"] for touch in evidence["uncredited"]] == ["coupon_code"]

    # A payment with a code: its touchpoint is recorded, so the credit reads the sequence again and counts it.
    code_event = _receive(
        world.a,
        external_event_id="pay-code",
        customer_external_id="cus_code",
        visitor_id="v-code",
        referral_code=dana.code,
    )
    event = services.conversion_event_process(event_id=code_event)
    (row,) = Attribution.objects.filter(conversion_event=event)
    assert row.participant_id == dana.participant_id
    assert [touch["kind"] for touch in row.touchpoints] == ["referral_code"]
