"""Issue 13: a worker killed mid-batch leaves nothing stuck and nothing done twice.

Two Celery workers run as separate processes with different host names, consuming one queue through the
real Redis broker, against this test run's PostgreSQL database. 100 payment conversions are queued; one
worker is killed with SIGKILL while the batch is being processed (its late-acknowledged task stays invisible
in Redis until the 12-hour visibility timeout), then restarted. The survivor plus the reconciler
(referral_platform/reconcile.py) finish the batch: every conversion is processed, attributed and rewarded
exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from referral_platform.celery import app
from referral_platform.reconcile import reconcile
from referrals.models import Attribution, ConversionEvent, ConversionEventStatus
from referrals.services import conversion_event_receive
from referrals.tasks import process_conversion_event
from rewards.models import Reward, RewardEvaluation
from rewards.tests.pipeline import program_with_rules, referrer, rules_doc
from tests import factories as f

ROOT = Path(__file__).resolve().parent.parent
CONVERSIONS = 100
CRASH_DRAIN_CHUNK = 50  # the workers' drain chunk (settings.STRIPE_DRAIN_CHUNK)
DEADLINE_SECONDS = 240  # a bound on waiting for the workers, never an assertion on timing


def _database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Workers:
    def __init__(self, queue: str):
        self.queue = queue
        self.env = dict(
            os.environ,
            DJANGO_SETTINGS_MODULE="referral_platform.settings.test",
            DATABASE_URL=_database_url(),
            DATABASE_OWNER_URL=_database_url(),  # test settings prefer it: it must name this run's database
            REDIS_URL=settings.REDIS_URL,
            CACHE_KEY_PREFIX=settings.CACHES["default"]["KEY_PREFIX"],
            CELERY_TEST_QUEUE=queue,
            STRIPE_DRAIN_CHUNK=str(CRASH_DRAIN_CHUNK),
        )
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, hostname: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "celery", "-A", "referral_platform", "worker", "-n", hostname]
        command += ["-Q", self.queue, "-P", "solo", "-c", "1", "--without-gossip", "--without-mingle"]
        command += ["--without-heartbeat", "-l", "WARNING"]
        process = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.processes[hostname] = process
        return process

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def workers():
    queue = f"crash-test-{uuid.uuid4().hex[:8]}"
    previous = (app.conf.task_always_eager, app.conf.task_default_queue)
    # This process queues through the broker too (the batch, and the reconciler's re-queues).
    app.conf.task_always_eager = False
    app.conf.task_default_queue = queue
    pool = Workers(queue)
    yield pool
    pool.stop_all()
    app.conf.task_always_eager, app.conf.task_default_queue = previous
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete(queue)
    # The killed worker's late-acknowledged message stays in kombu's shared ``unacked`` hash for the
    # visibility timeout: remove this queue's, so nothing else counting that hash sees them.
    for tag, raw in broker.hgetall("unacked").items():
        if queue.encode() in raw:
            broker.hdel("unacked", tag)
    broker.close()


def _processed() -> int:
    return ConversionEvent.objects.exclude(status=ConversionEventStatus.RECEIVED).count()


def _wait_until(predicate, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.2)


def _queue_drained(queue: str) -> bool:
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        return broker.llen(queue) == 0
    finally:
        broker.close()


@pytest.mark.heavy(18)
@pytest.mark.django_db(transaction=True)
def test_two_workers_one_killed_mid_batch_every_conversion_attributed_and_rewarded_once(world, workers):
    program = program_with_rules(world.a, rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}]))
    # One referrer brings the whole batch: bursts are this test's point, not fraud.
    f.FraudPolicyFactory(program=program, velocity_enabled=False)
    _, link = referrer(program, "Dana Whitfield")
    at = timezone.now() - timedelta(hours=1)
    events = [
        conversion_event_receive(
            tenant=world.a,
            external_event_id=f"evt_crash_{n:03d}",
            kind="payment",
            amount_minor=100_00,
            currency="USD",
            occurred_at=at,
            customer_external_id=f"cus_crash_{n:03d}",
            referral_code=link.code,
            raw={"n": n},
            queue_processing=False,
        ).event
        for n in range(CONVERSIONS)
    ]
    # Given two workers on two "hosts" consuming the batch
    doomed = workers.start("doomed@host-a")
    workers.start("survivor@host-b")
    for event in events:
        process_conversion_event.apply_async((event.pk,))

    # When one of them is killed mid-batch (and later restarted under its name)
    _wait_until(lambda: _processed() >= CONVERSIONS // 4, "a quarter of the batch")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)
    processed_at_kill = _processed()
    _wait_until(lambda: _queue_drained(workers.queue), "the survivor to drain the queue")
    workers.start("doomed@host-a")

    # ... and the reconciler runs its periods until nothing is left in a non-final state
    for _ in range(20):
        time.sleep(1.5)
        reconcile(stale_seconds=1)
        _wait_until(lambda: _queue_drained(workers.queue), "the re-queued work to be taken")
        settled = RewardEvaluation.objects.filter(conversion_event__in=events).count()
        if _processed() == CONVERSIONS and settled == CONVERSIONS:
            break

    # Then every conversion is processed, attributed and rewarded exactly once
    assert processed_at_kill < CONVERSIONS, "the kill happened after the batch was done: not mid-batch"
    statuses = dict(
        ConversionEvent.objects.filter(pk__in=[e.pk for e in events])
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    assert statuses == {ConversionEventStatus.PROCESSED: CONVERSIONS}
    attributions = Attribution.objects.filter(conversion_event__in=events)
    assert attributions.count() == CONVERSIONS
    assert set(attributions.values("conversion_event").annotate(n=Count("pk")).values_list("n", flat=True)) == {1}
    rewards = Reward.objects.filter(conversion_event__in=events, participant__program=program)
    assert rewards.count() == CONVERSIONS
    assert set(rewards.values("conversion_event").annotate(n=Count("pk")).values_list("n", flat=True)) == {1}
    assert RewardEvaluation.objects.filter(conversion_event__in=events).count() == CONVERSIONS


@pytest.mark.heavy(18)
@pytest.mark.django_db(transaction=True)
def test_a_drain_worker_killed_mid_batch_leaves_every_webhook_handled_and_rewarded_once(world, workers, settings):
    """Issue 15: the same guarantee for Stripe webhooks handled in batches by ``rewards.stripe_events_drain``
    (a chunk claimed with SKIP LOCKED, follow-ups run in the same task): the killed worker's open chunk
    rolls back and is handled again; what it had committed is finished by the survivor and the reconciler."""
    from rewards.models import StripeCredentials, StripeWebhookEvent, WebhookEventStatus
    from rewards.tests.test_webhooks import invoice_paid, sign
    from rewards.webhooks import webhook_receive

    # The reconciler runs here with a 1-second staleness; it gives an event up after (attempts + 1) such
    # periods. The killed worker's open chunk (up to 50 events) may be left to the reconciler alone — the
    # survivor may have finished its own before the kill released the chunk's locks — so it must re-queue it,
    # not give it up, however long the test has run.
    settings.RECONCILE_MAX_ATTEMPTS = 100_000
    # Four chunks: a chunk's events are marked handled together, so with two chunks the survivor could have
    # committed the second by the time the first was seen committed (no batch left to kill on a fast machine).
    # Chunks of 50 webhooks (CRASH_DRAIN_CHUNK, the workers' STRIPE_DRAIN_CHUNK; 200 by default): four chunks
    # stay a few seconds of work on a slow machine.
    total = 4 * CRASH_DRAIN_CHUNK
    program = program_with_rules(world.a, rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}]))
    f.FraudPolicyFactory(program=program, velocity_enabled=False)
    _, link = referrer(program, "Dana Drain")
    secret = f.StripeCredentialsFactory(tenant=world.a).webhook_secret
    assert StripeCredentials.objects.get(tenant=world.a).webhook_secret == secret
    # Given 100 invoice.paid webhooks stored at the door (each new one may queue a drain on the broker)
    for n in range(total):
        payload = invoice_paid(
            event_id=f"evt_drain_{n:03d}", charge=f"ch_d{n}", invoice=f"in_d{n}", customer=f"cus_drain_{n:03d}"
        )
        payload["data"]["object"]["metadata"] = {"referral_code": link.code}
        payload["data"]["object"]["customer_email"] = f"buyer{n}@drain{n}.example"
        body, header = sign(payload, secret)
        webhook_receive(tenant_slug=world.a.slug, payload=body.encode(), signature=header)
    webhooks = StripeWebhookEvent.objects.filter(tenant=world.a)
    assert webhooks.filter(status=WebhookEventStatus.RECEIVED).count() == total

    def handled() -> int:
        return webhooks.exclude(status=WebhookEventStatus.RECEIVED).count()

    # When two workers drain them and one is killed mid-batch (and later restarted under its name)
    doomed = workers.start("doomed@host-a")
    workers.start("survivor@host-b")
    _wait_until(lambda: handled() >= total // 4, "a quarter of the webhooks")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)
    handled_at_kill = handled()
    _wait_until(lambda: _queue_drained(workers.queue), "the survivor to drain the queue")
    workers.start("doomed@host-a")
    events = ConversionEvent.objects.filter(tenant=world.a, kind="payment")
    for _ in range(20):
        time.sleep(1.5)
        reconcile(stale_seconds=1)
        _wait_until(lambda: _queue_drained(workers.queue), "the re-queued work to be taken")
        settled = RewardEvaluation.objects.filter(conversion_event__in=events).count()
        if handled() == total and _processed() == total and settled == total:
            break

    # Then every webhook is handled once, and its payment processed, attributed and rewarded exactly once
    assert handled_at_kill < total, "the kill happened after the batch was done: not mid-batch"
    assert webhooks.filter(status=WebhookEventStatus.PROCESSED).count() == total
    assert events.count() == total
    assert set(events.values_list("status", flat=True)) == {ConversionEventStatus.PROCESSED}
    attributions = Attribution.objects.filter(conversion_event__in=events)
    assert attributions.count() == total
    rewards = Reward.objects.filter(conversion_event__in=events, participant__program=program)
    assert rewards.count() == total
    assert set(rewards.values("conversion_event").annotate(n=Count("pk")).values_list("n", flat=True)) == {1}
    assert RewardEvaluation.objects.filter(conversion_event__in=events).count() == total
