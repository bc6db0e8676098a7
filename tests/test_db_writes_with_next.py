"""Writes that travel with the next statement (issue 15, referral_platform/db/base.py ``write_with_next`` and
``execute_prepared_with_next``): a write whose result nobody reads is sent in front of the connection's next
statement — before it, so that statement and every later one see it — or in front of the COMMIT; rolled back
with the savepoint it was queued in, kept when that savepoint is released, its error raised by the statement it
travels with and undone by the savepoint around both. Real PostgreSQL, real transactions."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from programs.models import Participant
from referral_platform.db.prepared import execute_prepared_with_next, writes_with_next
from referral_platform.db.sql import save_fields
from referrals.models import Referral
from tests import factories as f

pytestmark = pytest.mark.django_db(transaction=True)

RENAME = "UPDATE programs_participant SET name = %s WHERE id = %s"


def names(program) -> dict:
    return dict(Participant.objects.filter(program=program).values_list("external_id", "name"))


def rename_later(participant, name: str) -> None:
    with writes_with_next():
        execute_prepared_with_next(RENAME, [name, participant.pk])


def test_a_queued_write_travels_with_the_next_statement_which_sees_it():
    participant = f.ParticipantFactory(external_id="p", name="Before")
    with transaction.atomic():
        rename_later(participant, "First")  # the statement's first use on this connection: sent on its own
        with CaptureQueriesContext(connection) as captured:
            rename_later(participant, "Second 100% sure")  # prepared by now: queued, nothing sent
            assert captured.captured_queries == [] and connection.pending_writes()
            seen = Participant.objects.get(pk=participant.pk).name  # one round trip carries both
        assert len(captured.captured_queries) == 1
        assert captured.captured_queries[0]["sql"].startswith("EXECUTE rp_")
        assert not connection.pending_writes()
    assert seen == "Second 100% sure"  # a '%' in its values survives a statement with parameters after it
    assert Participant.objects.get(pk=participant.pk).name == "Second 100% sure"


def test_a_write_still_queued_is_sent_in_front_of_the_commit():
    participant = f.ParticipantFactory(external_id="p", name="Before")
    with transaction.atomic():
        rename_later(participant, "First")
        rename_later(participant, "50% off")
        assert connection.pending_writes()
    assert Participant.objects.get(pk=participant.pk).name == "50% off"


def test_a_queued_write_is_rolled_back_with_its_savepoint_and_kept_when_it_is_released():
    program = f.ProgramFactory()
    kept = f.ParticipantFactory(program=program, external_id="kept", name="Before")
    dropped = f.ParticipantFactory(program=program, external_id="dropped", name="Before")
    sent = f.ParticipantFactory(program=program, external_id="sent", name="Before")
    with transaction.atomic():
        rename_later(kept, "warm-up")
        with transaction.atomic(), transaction.atomic():
            rename_later(kept, "Kept")  # released twice without being sent: it stays queued
        with pytest.raises(RuntimeError), transaction.atomic():
            rename_later(dropped, "Dropped")  # never sent: simply dropped
            raise RuntimeError("undo")
        with pytest.raises(RuntimeError), transaction.atomic():
            Participant.objects.filter(pk=sent.pk).update(name="Sent")  # the savepoint is sent with this one
            rename_later(sent, "Sent later")
            raise RuntimeError("undo")  # rolled back to: both undone ("Kept" went out in front of its savepoint)
    assert names(program) == {"kept": "Kept", "dropped": "Before", "sent": "Before"}


def test_a_queued_writes_error_comes_with_the_next_statement_and_its_savepoint_undoes_both():
    program = f.ProgramFactory()
    first = f.ParticipantFactory(program=program, external_id="a", name="A")
    f.ParticipantFactory(program=program, external_id="b", name="B")
    retag = "UPDATE programs_participant SET external_id = %s WHERE id = %s"
    with transaction.atomic():
        with writes_with_next():
            execute_prepared_with_next(retag, ["a", first.pk])  # first use: sent alone
        with pytest.raises(IntegrityError), transaction.atomic():
            with writes_with_next():
                execute_prepared_with_next(retag, ["b", first.pk])  # queued: a duplicate of b's (program, external id)
            Participant.objects.filter(pk=first.pk).update(name="Renamed")  # raises the queued write's error
        f.ParticipantFactory(program=program, external_id="c", name="C")  # the transaction goes on
    assert names(program) == {"a": "A", "b": "B", "c": "C"}


def test_outside_a_transaction_or_outside_writes_with_next_a_write_is_sent_at_once():
    participant = f.ParticipantFactory(external_id="p", name="Before")
    with transaction.atomic():
        rename_later(participant, "warm-up")  # prepared on this connection
        with CaptureQueriesContext(connection) as captured:
            execute_prepared_with_next(RENAME, ["Not asked to travel", participant.pk])
        assert len(captured.captured_queries) == 1 and not connection.pending_writes()
    with CaptureQueriesContext(connection) as captured:
        rename_later(participant, "Autocommit")
    assert len(captured.captured_queries) == 1 and not connection.pending_writes()
    assert Participant.objects.get(pk=participant.pk).name == "Autocommit"


def test_save_fields_of_a_held_row_travels_only_inside_writes_with_next():
    referral = f.ReferralFactory(referred_name="Before")
    with transaction.atomic():
        referral.referred_name = "One"
        save_fields(referral, ["referred_name"], held=True)  # not asked for: sent now (and prepares the statement)
        assert not connection.pending_writes()
        with writes_with_next():
            referral.referred_name = "Two"
            save_fields(referral, ["referred_name"])  # not held: its row count is read, so it is sent now
            assert not connection.pending_writes()
            referral.referred_name = "Three"
            save_fields(referral, ["referred_name"], held=True)
            assert connection.pending_writes()
        assert Referral.objects.get(pk=referral.pk).referred_name == "Three"


def test_another_tenants_row_is_never_written_by_a_queued_write(world):
    """A queued write runs with the row-level-security state of the statement it travels with, which is the
    state it was queued under in every use (a chunk binds one workspace): bound to A, B's row is untouched."""
    from referral_platform.tenancy import rls

    other = f.ParticipantFactory(program=f.ProgramFactory(tenant=world.b), external_id="b", name="B's")
    mine = f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a), external_id="a", name="A's")
    with rls.tenant(world.a.pk), transaction.atomic():
        rename_later(mine, "warm-up")
        rename_later(other, "Overwritten")
        rename_later(mine, "Mine")
        assert Participant.objects.filter(pk=mine.pk).values_list("name", flat=True).get() == "Mine"
    assert Participant.objects.get(pk=other.pk).name == "B's"
