"""The root conftest's guard: a query that would lock joined rows fails the test that runs it."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from programs.models import Participant
from rewards.models import Reward
from tests import factories as f
from tests.row_locks import RowLockOfJoinedRows, locks_joined_rows


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ('SELECT * FROM "a" INNER JOIN "b" ON (a.b_id = b.id) WHERE a.id = 1 FOR UPDATE', True),
        ('SELECT * FROM "a" LEFT OUTER JOIN "b" ON (a.b_id = b.id) FOR UPDATE SKIP LOCKED', True),
        ('SELECT * FROM "a" INNER JOIN "b" ON (a.b_id = b.id) FOR NO KEY UPDATE', True),
        ('SELECT * FROM "a" INNER JOIN "b" ON (a.b_id = b.id) FOR SHARE', True),
        ('SELECT * FROM "a" INNER JOIN "b" ON (a.b_id = b.id) FOR UPDATE OF "a"', False),
        ('SELECT * FROM "a" INNER JOIN "b" ON (a.b_id = b.id) FOR NO KEY UPDATE OF "a" SKIP LOCKED', False),
        ('SELECT * FROM "a" WHERE a.id = 1 FOR UPDATE', False),
        ('SELECT * FROM "a" INNER JOIN "b" ON (a.b_id = b.id)', False),
    ],
    ids=[
        "join-for-update",
        "outer-join-skip-locked",
        "join-no-key-update",
        "join-for-share",
        "join-of-self",
        "join-no-key-of-self-skip-locked",
        "no-join",
        "join-without-lock",
    ],
)
def test_locks_joined_rows_recognises_locking_queries_with_joins_but_no_of(sql, expected):
    assert locks_joined_rows(sql) is expected


def test_the_guard_refuses_select_for_update_with_select_related_before_it_runs(db):
    reward = f.make_ledger_reward(f.ParticipantFactory(program=f.ProgramFactory()))

    with pytest.raises(RowLockOfJoinedRows) as refused, transaction.atomic():
        Reward.objects.select_for_update().select_related("participant").get(pk=reward.pk)

    assert 'JOIN "programs_participant"' in str(refused.value) and str(refused.value).endswith("FOR UPDATE")
    assert Reward.objects.filter(pk=reward.pk).exists()  # the refusal left the connection usable


def test_the_guard_lets_a_lock_of_the_row_only_through(db):
    reward = f.make_ledger_reward(f.ParticipantFactory(program=f.ProgramFactory()))

    with transaction.atomic():
        locked = Reward.objects.select_for_update(of=("self",)).select_related("participant").get(pk=reward.pk)
        plain = Participant.objects.select_for_update().get(pk=reward.participant_id)

    assert locked.participant == plain


@pytest.mark.django_db(transaction=True)
def test_the_guard_also_watches_connections_of_other_threads():
    participant = f.ParticipantFactory(program=f.ProgramFactory())
    errors = []

    def lock_with_join():
        try:
            with transaction.atomic():
                Participant.objects.select_for_update().select_related("program").get(pk=participant.pk)
        except RowLockOfJoinedRows as error:
            errors.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=lock_with_join)
    thread.start()
    thread.join()

    assert len(errors) == 1
