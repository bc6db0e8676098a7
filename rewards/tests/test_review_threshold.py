"""The review threshold, defined once (rewards/selectors.py): a reward whose net value is above its
program's auto-approve limit waits for a marketer. The one-row test and the filter agree."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from rewards.models import Reward, RewardStatus
from rewards.selectors import (
    needs_review_q,
    reward_needs_review,
    rewards_due_for_auto_approval,
    rewards_pending_review,
)
from tests import factories as f

pytestmark = pytest.mark.django_db

LIMIT = 50_000


@pytest.mark.parametrize(
    ("amount", "reversed_minor", "clawed_back", "needs_review"),
    [
        (50_000, 0, 0, False),
        (50_001, 0, 0, True),
        (60_000, 10_000, 0, False),
        (60_000, 9_999, 0, True),
        (60_000, 5_000, 5_000, False),
        (60_000, 5_000, 4_999, True),
        (0, 0, 0, False),
    ],
    ids=["at-limit", "one-above", "reversed-to-limit", "reversed-above", "both-to-limit", "both-above", "zero"],
)
def test_one_row_and_the_filter_agree_on_the_net_value_against_the_limit(
    world, amount, reversed_minor, clawed_back, needs_review
):
    program = f.ProgramFactory(tenant=world.a, auto_approve_limit_minor=LIMIT)
    reward = f.RewardFactory(
        participant=f.ParticipantFactory(program=program),
        amount_minor=amount,
        reversed_minor=reversed_minor,
        clawed_back_minor=clawed_back,
        hold_until=timezone.now() - timedelta(hours=1),
    )
    now = timezone.now()

    assert reward_needs_review(reward) is needs_review
    assert Reward.objects.filter(pk=reward.pk).filter(needs_review_q()).exists() is needs_review
    assert rewards_pending_review(world.a, now=now).filter(pk=reward.pk).exists() is needs_review
    assert rewards_due_for_auto_approval(world.a, now=now).filter(pk=reward.pk).exists() is not needs_review


def test_only_pending_rewards_past_their_hold_are_in_the_queue_or_due(world):
    program = f.ProgramFactory(tenant=world.a, auto_approve_limit_minor=LIMIT)
    participant = f.ParticipantFactory(program=program)
    held = f.RewardFactory(participant=participant, amount_minor=90_000, hold_until=timezone.now() + timedelta(days=1))
    approved = f.RewardFactory(participant=participant, amount_minor=90_000, status=RewardStatus.APPROVED)
    now = timezone.now() + timedelta(seconds=1)

    queue = set(rewards_pending_review(world.a, now=now).values_list("pk", flat=True))
    due = set(rewards_due_for_auto_approval(world.a, now=now).values_list("pk", flat=True))

    assert held.pk not in queue | due and approved.pk not in queue | due
