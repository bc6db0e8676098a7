"""``referral_platform.db.sql.rows_update``: the hand-written ``UPDATE … FROM (VALUES …)`` the hot paths use
instead of ``bulk_update`` (issue 15) writes exactly what ``bulk_update`` writes — JSON, null foreign keys,
times, counters, text with quotes and percent signs — in one statement, and nothing else (other rows, other
workspaces, other columns untouched)."""

from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from referral_platform.db.sql import rows_update
from rewards.models import RewardEvaluation
from tests import factories as f

FIELDS = ["referral", "status", "notes", "detail", "evaluated_at", "attempts", "rewards_created"]


def _evaluations(tenant, count: int) -> list[RewardEvaluation]:
    program = f.ProgramFactory(tenant=tenant)
    referral = f.ReferralFactory(tenant=tenant, program=program)
    rows = []
    for index in range(count):
        event = f.ConversionEventFactory(tenant=tenant, external_event_id=f"evt-{index}")
        rows.append(
            RewardEvaluation.objects.create(
                tenant=tenant, conversion_event=event, referral=referral, status="done", notes=["first"], attempts=1
            )
        )
    return rows


def _changed(rows: list[RewardEvaluation], at) -> None:
    for index, row in enumerate(rows):
        row.status = "nothing_yet" if index % 2 else "done"
        row.notes = [f"50 % of 'the' \"payment\" #{index}", {"nested": [index, None, True]}]
        row.detail = {"amount_minor": 1_000 * index, "why": "it's 100%"}
        row.evaluated_at = at + timedelta(seconds=index)
        row.attempts += index
        row.rewards_created = index
        if index == 1:
            row.referral = None


def _state(rows) -> list[tuple]:
    """Each row's written values (its referral as present or not: the workspaces' referrals differ)."""
    return [
        (
            row.referral_id is not None,
            *(getattr(row, name) for name in ["status", "notes", "detail", "evaluated_at", "attempts"]),
            row.rewards_created,
            row.conversion_event.external_event_id,
        )
        for row in RewardEvaluation.objects.filter(pk__in=[row.pk for row in rows]).order_by(
            "conversion_event__external_event_id"
        )
    ]


def test_rows_update_writes_what_bulk_update_writes_in_one_statement(world):
    at = timezone.now().replace(microsecond=0)
    ours, theirs = _evaluations(world.a, 4), _evaluations(world.b, 4)
    untouched = RewardEvaluation.objects.get(pk=ours[3].pk)
    _changed(ours[:3], at)
    _changed(theirs[:3], at)

    with CaptureQueriesContext(connection) as captured:
        assert rows_update(ours[:3], FIELDS, connection) == 3
    assert len(captured.captured_queries) == 1
    RewardEvaluation.objects.bulk_update(theirs[:3], FIELDS)

    assert _state(ours[:3]) == _state(theirs[:3])
    assert _state(ours)[1][0] is False and _state(ours)[0][2][0] == "50 % of 'the' \"payment\" #0"
    assert _state([untouched]) == _state([RewardEvaluation.objects.get(pk=untouched.pk)])


def test_rows_update_touches_only_its_rows_and_columns(world):
    at = timezone.now().replace(microsecond=0)
    ours, theirs = _evaluations(world.a, 2), _evaluations(world.b, 2)
    before = _state(theirs)
    ours[0].status, ours[0].notes = "failed", ["changed"]
    rows_update([ours[0]], ["status"], connection)  # notes is not among the fields: not written
    row = RewardEvaluation.objects.get(pk=ours[0].pk)
    assert (row.status, row.notes) == ("failed", ["first"])
    assert RewardEvaluation.objects.get(pk=ours[1].pk).status == "done"
    assert _state(theirs) == before
    assert rows_update([], ["status"], connection) == 0
    assert at  # (the same clock as the other test's rows)
