"""The money pipeline's follow-ups, run in batches inside the task that caused them (issue 15,
docs/throughput.md).

A Stripe event handled by ``rewards.webhooks.stripe_events_drain`` queues, after its commit, the
matching of its conversion (``referrals.process_conversion_event``), which queues the settlement of the
referral (``rewards.settle_referral``), a stage message and an analytics refresh — four task hops per
conversion, each with its own broker round trip, connection and re-reads. Inside ``follow_ups()`` those
tasks are collected instead (``referral_platform.celery.collect_tasks``: only after their transaction
commits, exactly as they would have been published) and run here when the block ends:

- the conversions are matched and attributed in ONE transaction, each in a savepoint of its own and in id
  order, exactly as the task does one by one (``conversion_events_process_many``; one that hits a database
  error is handed back to its task). Their people's locks are only tried at first: the events of a person
  another drain holds right now (with the later events sharing an identifier) are tried again, waiting, once
  everything else of the batch is done, instead of the whole chunk waiting for the other drain first;
- the referrals are settled in ONE batch (``referral_rewards_settle_batch``: each in its own
  transaction, a failure isolated and recorded on its evaluations);
- the stage messages are sent in this process;
- the analytics refreshes are merged into one task per tenant (one lock, one read of the buckets).

Nothing is weakened: each step is the same idempotent service the task would have run, with the same
transactions and locks. A step that raises is handed to Celery as the original task (it retries there),
and whatever is still collected when the block ends — an exception included — is published, so no
follow-up is lost to the batching. A worker killed in the middle loses only what a killed worker lost
before (work in memory): the reconciler's sweeps find conversions still ``received`` and processed
events never evaluated (referral_platform/reconcile.py).
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict

from django.db import OperationalError

from referral_platform.celery import collect_tasks
from referral_platform.tenancy.memo import batch_memo

logger = logging.getLogger(__name__)

CONVERSION = "referrals.process_conversion_event"
SETTLE = "rewards.settle_referral"
SETTLE_MANY = "rewards.settle_referrals"
STAGE_MESSAGE = "rewards.message_referral_stage"
ANALYTICS = "analytics.refresh_sources"
FOLLOW_UP_TASKS = (CONVERSION, SETTLE, SETTLE_MANY, STAGE_MESSAGE, ANALYTICS)
MAX_ROUNDS = 20  # settlement can queue later referrals' settlement; each round is one batch


@contextlib.contextmanager
def follow_ups():
    """Collect the pipeline's follow-up tasks queued in the block and run them in batches at its end."""
    with collect_tasks(*FOLLOW_UP_TASKS) as collector:
        yield collector
        run_follow_ups(collector)


def run_follow_ups(collector) -> dict:
    """Run what ``collector`` holds, round by round (a round's work may queue more), in batches."""
    done = {"conversions": 0, "settled": 0, "messages": 0, "analytics": 0}
    analytics: dict[int, list[set]] = defaultdict(lambda: [set(), set(), set()])
    tried: set[int] = set()  # conversions postponed once (their person busy elsewhere): the next try waits
    postponed: list[int] = []  # tried again once everything else is done (settlement, messages): later
    try:
        _rounds(collector, done, analytics, tried, postponed)
    finally:
        for event_id in postponed:  # more rounds than MAX_ROUNDS, or an exception: never lost
            _publish(CONVERSION, (event_id,), {"alone": True})
    collector.publish_all()  # more rounds than MAX_ROUNDS: the rest goes to the queue
    for tenant_id, (referral_ids, event_ids, reward_ids) in analytics.items():
        _publish(
            ANALYTICS,
            (tenant_id,),
            {"referral_ids": sorted(referral_ids), "event_ids": sorted(event_ids), "reward_ids": sorted(reward_ids)},
        )
        done["analytics"] += 1
    return done


def _rounds(collector, done: dict, analytics: dict, tried: set[int], postponed: list[int]) -> None:
    """``run_follow_ups``'s rounds: each takes what the collector holds (what the last round's commits queued)."""
    from referrals.services import conversion_events_process_many

    from .evaluation import referral_rewards_settle_batch
    from .messages import messages_referral_stage_many

    conversion_task = None
    for _round in range(MAX_ROUNDS):
        calls = collector.take()
        if not calls and postponed:  # the rest is done: the postponed conversions now, waiting for their people
            calls = [(conversion_task, (event_id,), {}) for event_id in postponed]
            postponed.clear()
        if not calls:
            break
        conversions: list[int] = []
        referrals: set[int] = set()
        later: list = []
        for task, args, kwargs in calls:
            if task.name == CONVERSION:
                conversion_task = task
                conversions.append(args[0])
            elif task.name == SETTLE:
                referrals.add(args[0])
            elif task.name == SETTLE_MANY:
                referrals.update(args[0])
            elif task.name == ANALYTICS:
                merged = analytics[args[0]]
                for index, name in enumerate(("referral_ids", "event_ids", "reward_ids")):
                    merged[index].update(kwargs.get(name) or ())
            else:
                later.append((task, args, kwargs))
        if conversions:
            conversions = list(dict.fromkeys(conversions))
            # Events never postponed yet only try their people's locks: one whose person another drain holds (the
            # same customer's other payment in a concurrent chunk) is tried again once the rest of this batch is
            # done, instead of the whole chunk waiting for the other drain's transaction first.
            first_try = not tried.intersection(conversions)
            busy: list[int] = []
            try:
                processed, handed_back = conversion_events_process_many(
                    event_ids=conversions, **({"postponed": busy} if first_try else {})
                )
                done["conversions"] += len(processed)
            except Exception:
                logger.exception("%d conversion events: handed back to their tasks", len(conversions))
                handed_back, busy = conversions, []
            for event_id in handed_back:
                _publish(CONVERSION, (event_id,), {"alone": True})
            tried.update(busy)
            postponed.extend(busy)
        if referrals:
            try:
                result = referral_rewards_settle_batch(referral_ids=referrals)
                done["settled"] += len(result.settled)
            except OperationalError:
                logger.exception("settling %d referrals: handed back to the settle_referrals task", len(referrals))
                _publish(SETTLE_MANY, (sorted(referrals),), {})
        stage_messages = [(task, args, kwargs) for task, args, kwargs in later if task.name == STAGE_MESSAGE]
        if stage_messages:
            try:  # all at once, in this process (each still sent once per referral and stage)
                done["messages"] += messages_referral_stage_many([tuple(args) for _task, args, _kw in stage_messages])
            except Exception:
                logger.exception("%d stage messages: handed back to their tasks", len(stage_messages))
                for task, args, kwargs in stage_messages:
                    task.apply_async(args=args, kwargs=kwargs)
        for task, args, kwargs in later:
            if task.name == STAGE_MESSAGE:
                continue
            try:
                task(*args, **kwargs)  # runs in this process
                done["messages"] += 1
            except Exception:
                logger.exception("%s%r: handed back to its task", task.name, args)
                task.apply_async(args=args, kwargs=kwargs)


def conversions_process_batch(*, event_ids: list[int]) -> list[int]:
    """The ``conversions_process_batch`` hook (a conversion task of the conversions API, referrals.tasks): the
    events matched and attributed in ONE transaction (``conversion_events_process_many``: a savepoint each, id
    order) and their follow-ups in batches (``follow_ups``), as the Stripe drain does. Returns the ids handed
    back (a database error of their own): their caller processes them alone."""
    from referrals.services import conversion_events_process_many

    with batch_memo(), follow_ups():
        _processed, handed_back = conversion_events_process_many(event_ids=event_ids)
    return handed_back


def _publish(name: str, args: tuple, kwargs: dict) -> None:
    from referral_platform.celery import app

    app.tasks[name].apply_async(args=args, kwargs=kwargs)
