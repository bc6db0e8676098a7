"""Savepoints sent with the next statement (issue 15, referral_platform/db/base.py): the transaction sees the
same savepoints around the same statements, with fewer round trips."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from programs.models import Participant
from tests import factories as f

pytestmark = pytest.mark.django_db(transaction=True)


def statements(captured) -> list[str]:
    return [query["sql"] for query in captured.captured_queries]


def test_a_savepoint_in_which_nothing_ran_is_never_sent():
    with CaptureQueriesContext(connection) as captured, transaction.atomic():
        f.TenantFactory()
        with transaction.atomic(), transaction.atomic():
            pass
        with pytest.raises(RuntimeError), transaction.atomic():
            raise RuntimeError("nothing ran")  # rolled back, then released by Django: neither is sent
        f.TenantFactory()
    assert not any("SAVEPOINT" in sql for sql in statements(captured)), statements(captured)


def test_a_savepoint_travels_in_front_of_its_first_statement_and_is_rolled_back_to():
    program = f.ProgramFactory()
    with transaction.atomic():
        f.ParticipantFactory(program=program, external_id="kept")
        with CaptureQueriesContext(connection) as captured, pytest.raises(IntegrityError), transaction.atomic():
            f.ParticipantFactory(program=program, external_id="dup")
            f.ParticipantFactory(program=program, external_id="dup")  # unique: fails, inside the savepoint
        f.ParticipantFactory(program=program, external_id="after")  # the transaction goes on
    sent = statements(captured)
    assert sent[0].startswith('SAVEPOINT "') and "INSERT" in sent[0], sent
    assert any(sql.startswith("ROLLBACK TO SAVEPOINT") for sql in sent), sent
    assert set(Participant.objects.filter(program=program).values_list("external_id", flat=True)) == {
        "kept",
        "after",
    }


def test_nested_savepoints_released_or_rolled_back_keep_what_a_plain_backend_keeps():
    program = f.ProgramFactory()
    with transaction.atomic():
        with transaction.atomic():
            f.ParticipantFactory(program=program, external_id="a")
            with transaction.atomic():
                f.ParticipantFactory(program=program, external_id="b")  # released, RELEASE waits
        try:
            with transaction.atomic():
                with transaction.atomic():
                    f.ParticipantFactory(program=program, external_id="c")  # released inside the outer one
                f.ParticipantFactory(program=program, external_id="a")  # duplicate: the outer one rolls back
        except IntegrityError:
            pass
        with transaction.atomic():
            pass  # nothing: never sent
        f.ParticipantFactory(program=program, external_id="d")
    assert sorted(Participant.objects.filter(program=program).values_list("external_id", flat=True)) == [
        "a",
        "b",
        "d",
    ]


def test_a_rolled_back_transaction_forgets_what_was_waiting():
    program = f.ProgramFactory()
    with pytest.raises(RuntimeError), transaction.atomic():
        f.ParticipantFactory(program=program, external_id="x")
        with transaction.atomic():
            f.ParticipantFactory(program=program, external_id="y")  # its RELEASE waits for a next statement
        assert connection._pending_savepoints, "the RELEASE is waiting"
        raise RuntimeError("rolled back")
    assert connection._pending_savepoints == []
    with transaction.atomic():
        f.ParticipantFactory(program=program, external_id="z")
    assert list(Participant.objects.filter(program=program).values_list("external_id", flat=True)) == ["z"]
