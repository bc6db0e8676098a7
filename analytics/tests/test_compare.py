"""Side-by-side comparison: two periods, two programs, two rule versions (the days each was current)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from analytics.figures import compare_filters
from analytics.rollups import rollups_rebuild
from analytics.selectors import compare
from tests import factories as f

pytestmark = pytest.mark.django_db


def _rows(tenant, query):
    left, right, label = compare_filters(tenant, query)
    return {row["figure"]: row for row in compare(tenant, left, right)}, left, right, label


def test_two_programs_side_by_side_with_the_change(world):
    now = timezone.now() - timedelta(hours=1)
    first, second = (f.ProgramFactory(tenant=world.a, currency="USD") for _ in range(2))
    for program, clicks in ((first, 4), (second, 6)):
        link = f.ReferralLinkFactory(participant=f.ParticipantFactory(program=program))
        for _ in range(clicks):
            f.ClickFactory(link=link, occurred_at=now)
    rollups_rebuild(tenant_id=world.a.pk)

    rows, _, _, _ = _rows(world.a, {"a_program": str(first.pk), "b_program": str(second.pk)})

    assert (rows["clicks"]["a"], rows["clicks"]["b"]) == (4, 6)
    assert rows["clicks"]["change"] == pytest.approx((6 - 4) / 4 * 100)
    assert rows["clicks per day"]["a"] == pytest.approx(4 / 30)
    assert rows["conversion_rate"]["a"] is None and rows["conversion_rate"]["change"] is None


def test_without_a_choice_this_period_is_compared_with_the_one_before(world):
    _, left, right, _ = _rows(world.a, {})

    assert right.end == timezone.now().date() and left.end == right.start - timedelta(days=1)
    assert left.days == right.days == 30


def test_two_rule_versions_compare_the_days_each_was_current(world):
    program = f.ProgramFactory(tenant=world.a)
    old = f.ProgramVersionFactory(program=program, number=1)
    new = f.ProgramVersionFactory(program=program, number=2)
    _, left, right, label = _rows(world.a, {"a_version": str(old.pk), "b_version": str(new.pk)})

    assert label == "Two rule versions"
    assert left.program_id == right.program_id == program.pk
    assert left.start == old.created_at.date() and right.start == new.created_at.date()
    assert right.end == timezone.now().date()


def test_another_tenants_program_or_version_is_ignored(world):
    foreign = f.ProgramFactory(tenant=world.b)
    foreign_version = f.ProgramVersionFactory(program=foreign, number=1)

    _, left, right, label = _rows(world.a, {"a_program": str(foreign.pk), "b_version": str(foreign_version.pk)})

    assert left.program_id is None and right.program_id is None and label != "Two rule versions"
