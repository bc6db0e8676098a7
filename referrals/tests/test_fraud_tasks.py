"""referral_screen_task: takes an id, re-reads, screens; repeats add nothing."""

from __future__ import annotations

import time
import uuid

import pytest
from celery.contrib.testing.worker import start_worker
from django.db import transaction

from referral_platform.celery import app, enqueue_on_commit
from referrals.models import FraudFlag, Referral, ReviewStatus
from referrals.tasks import referral_screen_task
from tests import factories as f


@pytest.mark.django_db
def test_the_task_screens_by_id_and_repeats_add_nothing(world):
    referral = f.ReferralFactory(
        referrer=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)), referred_email="a@mailinator.com"
    )

    first = referral_screen_task.apply(args=[referral.pk]).get()
    second = referral_screen_task.apply(args=[referral.pk]).get()

    assert first == second == ["disposable_email"]
    assert list(FraudFlag.objects.filter(referral=referral).values_list("code", flat=True)) == ["disposable_email"]
    assert Referral.objects.get(pk=referral.pk).review_status == ReviewStatus.FLAGGED


@pytest.mark.django_db
def test_the_task_for_a_deleted_referral_does_nothing(world):
    assert referral_screen_task.apply(args=[987_654]).get() == []
    assert not FraudFlag.objects.exists()


@pytest.mark.django_db
def test_the_task_only_reads_its_referrals_tenant(world):
    """Tenant B has the same company and a burst from a same-named referrer; A's referral is clean."""
    program_b = f.ProgramFactory(tenant=world.b)
    f.ReferralFactory(referrer=f.ParticipantFactory(program=program_b), referred_company="Shared Name")
    referral = f.ReferralFactory(
        referrer=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)), referred_company="Shared Name"
    )

    assert referral_screen_task.apply(args=[referral.pk]).get() == []
    assert not FraudFlag.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_screens_a_referral_queued_after_commit():
    program = f.ProgramFactory()
    referral = f.ReferralFactory(referrer=f.ParticipantFactory(program=program), referred_email="b@yopmail.com")
    queue = f"fraud-test-{uuid.uuid4().hex}"  # the Redis broker is shared with other test runs

    with start_worker(app, perform_ping_check=False, pool="solo", loglevel="WARNING", queues=[queue]):
        with transaction.atomic():
            enqueue_on_commit(referral_screen_task.s(referral.pk).set(queue=queue))
        deadline = time.monotonic() + 30
        while not FraudFlag.objects.filter(referral=referral).exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    assert list(FraudFlag.objects.filter(referral=referral).values_list("code", flat=True)) == ["disposable_email"]
