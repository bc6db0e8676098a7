"""A tenant's rollup refreshes gathered and run together (analytics/debounce.py): against real Redis (the
pending sets and the broker) and PostgreSQL (the rollup lock held by another connection)."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import uuid

import pytest
import redis
from django.db import connection, transaction
from django.test import override_settings

from analytics import debounce
from analytics.models import DailyRollup
from analytics.rollups import LOCK_NAMESPACE
from analytics.tasks import refresh_pending, refresh_sources
from referral_platform.celery import app
from referrals import hot_redis
from rewards.models import Reward
from rewards.tests.pipeline import Pipeline, program_with_rules, referrer, rules_doc

from .test_rollups import snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def pipe(world, django_capture_on_commit_callbacks):
    return Pipeline(world, django_capture_on_commit_callbacks)


@pytest.fixture
def clean_pending(world):
    def wipe():
        for tenant in (world.a, world.b):
            hot_redis.client().delete(*debounce.pending_keys(tenant.pk))

    wipe()
    yield
    wipe()


@contextlib.contextmanager
def broker_queue():
    """Tasks published in the block go to a queue of its own on the real Redis broker (not run in-process)."""
    queue = f"rp-test-debounce-{uuid.uuid4().hex}"
    previous = (app.conf.task_always_eager, app.conf.task_default_queue)
    app.conf.task_always_eager, app.conf.task_default_queue = False, queue
    broker = redis.Redis.from_url(app.conf.broker_url)
    try:
        yield lambda: [json.loads(raw) for raw in broker.lrange(queue, 0, -1)]
    finally:
        app.conf.task_always_eager, app.conf.task_default_queue = previous
        broker.delete(queue)


def paid_referral(world, pipe, name: str, customer: str, *, tenant=None):
    """A referral and its payment in ``tenant`` (tenant A), posted through ``pipe`` (that tenant's API key)."""
    rules = rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}])
    program = program_with_rules(tenant or world.a, rules, cookie_window_days=365)
    _participant, link = referrer(program, name)
    referral = pipe.sign_up(email=f"{customer}@buyer.example", customer=customer, code=link.code)
    event = pipe.pay(f"pay_{customer}", customer=customer, amount=20_000)
    return referral, event


def test_requests_are_gathered_into_one_scheduled_refresh(world, pipe, clean_pending):
    referral, event = paid_referral(world, pipe, "Ada Ref", "cus_ada")
    rewards = list(Reward.objects.for_tenant(world.a).values_list("pk", flat=True))
    assert rewards
    expected = snapshot(world.a)
    assert expected
    DailyRollup.objects.for_tenant(world.a).delete()

    with broker_queue() as queued:
        assert debounce.refresh_later(world.a.pk, referral_ids=[referral.pk]) is True
        assert debounce.refresh_later(world.a.pk, event_ids=[event.pk]) is False
        assert debounce.refresh_later(world.a.pk, reward_ids=rewards, event_ids=[event.pk]) is False
        messages = queued()
    assert [m["headers"]["task"] for m in messages] == ["analytics.refresh_pending"]
    assert json.loads(base64.b64decode(messages[0]["body"]))[0] == [world.a.pk]
    assert messages[0]["headers"]["eta"]  # scheduled later, not now
    assert debounce.pending_count(world.a.pk) == 2 + len(rewards)
    assert DailyRollup.objects.for_tenant(world.a).count() == 0

    with pipe.capture(execute=True):
        written = debounce.refresh_pending_now(world.a.pk)

    assert written == len(expected)
    assert snapshot(world.a) == expected
    assert debounce.pending_count(world.a.pk) == 0
    # The mark is gone: the next request schedules the next refresh.
    with broker_queue() as queued:
        assert debounce.refresh_later(world.a.pk, event_ids=[event.pk]) is True
        assert [m["headers"]["task"] for m in queued()] == ["analytics.refresh_pending"]


def _hold_the_lock(tenant_id: int, held: threading.Event, release: threading.Event) -> None:
    from django.db import connection as own

    try:
        with transaction.atomic(), own.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [LOCK_NAMESPACE, tenant_id])
            held.set()
            release.wait(30)
    finally:
        own.close()


@pytest.mark.django_db(transaction=True)  # committed: the set-up's own refreshes release the lock
def test_a_refresh_never_waits_for_the_lock_and_takes_nothing_while_it_is_held(world, pipe, clean_pending):
    referral, _event = paid_referral(world, pipe, "Ada Ref", "cus_ada")
    expected = snapshot(world.a)
    DailyRollup.objects.for_tenant(world.a).delete()
    hot_redis.client().sadd(debounce.pending_keys(world.a.pk)[0], f"r{referral.pk}")
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_the_lock, args=(world.a.pk, held, release))
    holder.start()
    try:
        assert held.wait(10)
        with connection.cursor() as cursor:  # a refresh that waited would fail here instead of returning
            cursor.execute("SET lock_timeout = '20s'")
        assert debounce.refresh_pending_now(world.a.pk) is None
        assert debounce.pending_count(world.a.pk) == 1
        assert DailyRollup.objects.for_tenant(world.a).count() == 0
        # The task, run by a worker (not eager): it schedules itself again and renews the mark.
        with broker_queue() as queued:
            assert refresh_pending.run(world.a.pk) == 0
            assert [m["headers"]["task"] for m in queued()] == ["analytics.refresh_pending"]
        assert hot_redis.client().exists(debounce.pending_keys(world.a.pk)[1])
        assert debounce.pending_count(world.a.pk) == 1
    finally:
        release.set()
        holder.join(10)
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")

    with pipe.capture(execute=True):
        assert debounce.refresh_pending_now(world.a.pk) == len(expected)
    assert snapshot(world.a) == expected
    assert debounce.pending_count(world.a.pk) == 0


def test_a_refresh_that_rolls_back_leaves_its_sources_pending(world, pipe, clean_pending):
    referral, _event = paid_referral(world, pipe, "Ada Ref", "cus_ada")
    expected = snapshot(world.a)
    DailyRollup.objects.for_tenant(world.a).delete()
    hot_redis.client().sadd(debounce.pending_keys(world.a.pk)[0], f"r{referral.pk}")

    with pipe.capture(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        assert debounce.refresh_pending_now(world.a.pk) == len(expected)
        raise RuntimeError("the worker's transaction fails after the refresh")

    assert debounce.pending_count(world.a.pk) == 1
    assert DailyRollup.objects.for_tenant(world.a).count() == 0
    with pipe.capture(execute=True):
        refresh_pending.delay(world.a.pk)  # in-process (eager): the next refresh takes them
    assert snapshot(world.a) == expected
    assert debounce.pending_count(world.a.pk) == 0


def test_a_tenants_refresh_leaves_another_tenants_pending_sources_and_rollups(world, pipe, clean_pending):
    referral_a, _event_a = paid_referral(world, pipe, "Ada Ref", "cus_ada")
    expected_a = snapshot(world.a)
    # Tenant B: its own referral and payment, through its own API key.
    pipe_b = Pipeline(world, pipe.capture)
    pipe_b.client = world.api(world.key_b)
    referral_b, _event_b = paid_referral(world, pipe_b, "Bea Ref", "cus_bea", tenant=world.b)
    expected_b = snapshot(world.b)
    assert expected_a and expected_b
    DailyRollup.objects.for_tenant(world.a).delete()
    DailyRollup.objects.for_tenant(world.b).delete()
    client = hot_redis.client()
    # B's referral even named in A's pending set (it never is by the pipeline) does not reach B's rollups.
    client.sadd(debounce.pending_keys(world.a.pk)[0], f"r{referral_a.pk}", f"r{referral_b.pk}")
    client.sadd(debounce.pending_keys(world.b.pk)[0], f"r{referral_b.pk}")

    with pipe.capture(execute=True):
        debounce.refresh_pending_now(world.a.pk)

    assert snapshot(world.a) == expected_a
    assert DailyRollup.objects.for_tenant(world.b).count() == 0
    assert not DailyRollup.objects.for_tenant(world.a).filter(participant__program=referral_b.program_id).exists()
    assert debounce.pending_count(world.a.pk) == 0
    assert client.smembers(debounce.pending_keys(world.b.pk)[0]) == {f"r{referral_b.pk}".encode()}

    with pipe.capture(execute=True):
        debounce.refresh_pending_now(world.b.pk)
    assert snapshot(world.b) == expected_b


@pytest.mark.parametrize("how", ["debounce off", "redis unreachable"])
def test_without_the_debounce_a_request_refreshes_at_once(world, pipe, clean_pending, how):
    referral, _event = paid_referral(world, pipe, "Ada Ref", "cus_ada")
    expected = snapshot(world.a)
    DailyRollup.objects.for_tenant(world.a).delete()
    changed = (
        {"ANALYTICS_REFRESH_DEBOUNCE_SECONDS": 0}
        if how == "debounce off"
        else {"REFERRAL_REDIS_URL": "redis://127.0.0.1:9/0"}  # nothing listens on the discard port
    )
    with override_settings(**changed), pipe.capture(execute=True):
        written = refresh_sources(world.a.pk, referral_ids=[referral.pk])

    assert written == len(expected)
    assert snapshot(world.a) == expected
    assert debounce.pending_count(world.a.pk) == 0


def test_a_request_with_an_id_that_is_not_a_number_fails_before_anything_is_pending(world, clean_pending):
    with pytest.raises(ValueError):
        refresh_sources(world.a.pk, referral_ids=[1, "1; DROP TABLE x"], event_ids=[2])
    assert debounce.pending_count(world.a.pk) == 0
    assert not hot_redis.client().exists(debounce.pending_keys(world.a.pk)[1])


def test_the_pending_refresh_of_a_workspace_with_nothing_pending_writes_nothing(world, clean_pending):
    before = DailyRollup.objects.count()
    assert debounce.refresh_pending_now(world.b.pk) == 0
    assert debounce.refresh_pending_now(10**9) == 0  # no such workspace
    assert DailyRollup.objects.count() == before
