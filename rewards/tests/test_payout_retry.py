"""Retrying a failed payout: one service (``payout_retry_queue``) sets the next attempt to now and queues
the payout's execution once the transaction commits; the admin's "retry" action calls it."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from referral_platform.tenancy.actors import Actor
from referral_platform.tenancy.models import AuditEvent, Role
from rewards import tasks
from rewards.models import Payout, PayoutStatus
from rewards.payouts import payout_retry_queue
from tests import factories as f

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(monkeypatch):
    sent = []
    monkeypatch.setattr(tasks.payout_execute, "apply_async", lambda args=(), kwargs=None, **options: sent.append(args))
    return sent


def marketer(world):
    return Actor(kind="member", tenant=world.a, user=world.marketer_a, role=Role.MARKETER)


def failed_payout(world, status=PayoutStatus.FAILED):
    participant = f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))
    return f.PayoutFactory(participant=participant, method="transfer", status=status, attempts=3, next_attempt_at=None)


@pytest.mark.parametrize("status", [PayoutStatus.FAILED, PayoutStatus.ABANDONED])
def test_a_retry_is_due_now_and_its_execution_is_queued_after_commit(
    world, queued, django_capture_on_commit_callbacks, status
):
    payout = failed_payout(world, status)
    now = timezone.now()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        retried = payout_retry_queue(payout=payout, actor=marketer(world), now=now)
    assert queued == []  # nothing is sent before the commit
    for callback in callbacks:
        callback()

    assert queued == [(payout.pk,)]
    assert (retried.status, retried.next_attempt_at) == (PayoutStatus.FAILED, now)
    moved = AuditEvent.objects.filter(object_id=str(payout.pk), action="payout.failed")
    assert moved.count() == (1 if status == PayoutStatus.ABANDONED else 0)


def test_a_payout_that_did_not_fail_is_not_retried_and_nothing_is_queued(
    world, queued, django_capture_on_commit_callbacks
):
    payout = failed_payout(world, PayoutStatus.PAID)

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(ValidationError):
        payout_retry_queue(payout=payout, actor=marketer(world))

    assert queued == [] and Payout.objects.get(pk=payout.pk).next_attempt_at is None


def test_the_admin_retry_action_queues_through_the_service(client, world, queued, django_capture_on_commit_callbacks):
    retry, paid = failed_payout(world), failed_payout(world, PayoutStatus.PAID)
    client.force_login(world.marketer_a)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:rewards_payout_changelist"),
            {"action": "retry_payouts", ACTION_CHECKBOX_NAME: [retry.pk, paid.pk]},
            follow=True,
        )

    assert queued == [(retry.pk,)]
    assert "1 payout(s) queued for a new attempt, 1 refused: " in response.content.decode()
    assert f"#{paid.pk}: Only failed payouts can be retried; this one is paid." in response.content.decode()
