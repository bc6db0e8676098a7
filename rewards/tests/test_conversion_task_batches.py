"""Issue 15: a conversions-API event's task processes its workspace's waiting events in ONE batch, their
follow-ups (settlement, messages, analytics) batched too (referrals.tasks.process_conversion_event, the
``conversions_process_batch`` hook, rewards.pipeline). Every event is still processed exactly once, a bad
one fails alone with its reason, another workspace's (or another source's) events are never taken."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from referral_platform.celery import collect_tasks
from referrals.models import Attribution, ConversionEvent, ConversionEventStatus, Referral
from referrals.services import conversion_event_receive, conversions
from referrals.tasks import process_conversion_event
from rewards.models import Reward
from tests import factories as f

from .pipeline import program_with_rules, referrer, rules_doc

pytestmark = pytest.mark.django_db(transaction=True)

TASK = "referrals.process_conversion_event"
PAID = timezone.now().replace(microsecond=0) - timedelta(hours=2)


def _workspace(tenant, referrers: int = 3):
    program = program_with_rules(tenant, rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}]))
    f.FraudPolicyFactory(tenant=tenant, program=program, velocity_max_per_hour=1_000)
    return [referrer(program, f"Referrer {tenant.slug[-1]}{i}")[1] for i in range(referrers)]


def _post(world, key, links, count: int, *, prefix: str, **fields) -> list[tuple[int, dict]]:
    """``count`` payments posted to the conversions API; their processing tasks are held, not run. Returns
    (event id, the task's kwargs) in posting order."""
    client = world.api(key)
    with collect_tasks(TASK) as held:
        for number in range(count):
            payload = {
                "external_event_id": f"{prefix}-{number}",
                "kind": "payment",
                "amount_minor": 120_00,
                "currency": "USD",
                "occurred_at": (PAID + timedelta(minutes=number)).isoformat(),
                "customer_external_id": f"cus_{prefix}_{number}",
                "referral_code": links[number % len(links)].code,
                **fields,
            }
            response = client.post("/api/v1/conversions", payload, format="json")
            assert response.status_code == 201, response.content
        calls = held.take()
    assert [task.name for task, _args, _kwargs in calls] == [TASK] * count
    return [(args[0], kwargs) for _task, args, kwargs in calls]


def _state(tenant) -> dict:
    events = ConversionEvent.objects.filter(tenant=tenant)
    return {
        "statuses": sorted(events.values_list("status", flat=True)),
        "attributions": Attribution.objects.filter(tenant=tenant).count(),
        "referrals": Referral.objects.filter(tenant=tenant).count(),
        "rewards": sorted(Reward.objects.filter(tenant=tenant).values_list("conversion_event_id", flat=True)),
    }


def test_one_task_processes_the_waiting_events_and_their_own_tasks_then_find_them_done(world):
    links_a, links_b = _workspace(world.a), _workspace(world.b)
    tasks_a = _post(world, world.key_a, links_a, 6, prefix="a")
    tasks_b = _post(world, world.key_b, links_b, 2, prefix="b")
    stripe = conversion_event_receive(  # another source's waiting event: the Stripe drain's, not this batch's
        tenant=world.a,
        external_event_id="evt_stripe",
        kind="payment",
        occurred_at=PAID,
        raw={"id": "evt_stripe"},
        source="stripe",
        amount_minor=100,
        currency="USD",
        customer_external_id="cus_stripe",
        referral_code=links_a[0].code,
        queue_processing=False,
    ).event

    first_id, first_kwargs = tasks_a[0]
    assert process_conversion_event(first_id, **first_kwargs) == ConversionEventStatus.PROCESSED

    ids_a = [event_id for event_id, _kwargs in tasks_a]
    assert set(ConversionEvent.objects.filter(pk__in=ids_a).values_list("status", flat=True)) == {"processed"}
    after_batch = _state(world.a)
    assert after_batch["attributions"] == 6 and after_batch["referrals"] == 6
    assert after_batch["rewards"] == sorted(ids_a), "each payment rewarded once, settled in the same task"
    assert ConversionEvent.objects.get(pk=stripe.pk).status == ConversionEventStatus.RECEIVED
    assert set(ConversionEvent.objects.filter(tenant=world.b).values_list("status", flat=True)) == {"received"}

    for event_id, kwargs in tasks_a[1:]:  # their own tasks, delivered later: one read each, nothing done
        with CaptureQueriesContext(connection) as queries:
            assert process_conversion_event(event_id, **kwargs) == ConversionEventStatus.PROCESSED
        assert len(queries) == 1, [query["sql"] for query in queries]
    assert _state(world.a) == after_batch

    for event_id, kwargs in tasks_b:
        process_conversion_event(event_id, **kwargs)
    state_b = _state(world.b)
    assert state_b["statuses"] == ["processed", "processed"] and len(state_b["rewards"]) == 2
    assert _state(world.a) == after_batch, "workspace B's tasks touched nothing of A"


def test_one_bad_event_among_many_fails_with_its_reason_and_the_others_commit_once(world):
    links = _workspace(world.a)
    tasks = _post(world, world.key_a, links, 12, prefix="good")
    bad = _post(world, world.key_a, links, 1, prefix="eur", currency="EUR")  # the program pays in USD
    tasks += _post(world, world.key_a, links, 12, prefix="more")

    for event_id, kwargs in [*bad, *tasks]:
        process_conversion_event(event_id, **kwargs)

    failed = ConversionEvent.objects.get(pk=bad[0][0])
    assert failed.status == ConversionEventStatus.FAILED
    assert "the event is in EUR but the program pays in USD" in failed.error
    good_ids = sorted(event_id for event_id, _kwargs in tasks)
    assert _state(world.a)["rewards"] == good_ids
    assert set(ConversionEvent.objects.filter(pk__in=good_ids).values_list("status", flat=True)) == {"processed"}


def test_an_event_the_batch_hands_back_is_processed_alone(world, monkeypatch):
    links = _workspace(world.a)
    tasks = _post(world, world.key_a, links, 5, prefix="a")
    unlucky = tasks[2][0]
    process = conversions._process_locked_event
    refused: list[int] = []

    def deadlocked_once(*, event, actor, notes, **options):
        outcome = process(event=event, actor=actor, notes=notes, **options)
        if event.pk == unlucky and not refused:
            refused.append(event.pk)
            raise OperationalError("deadlock detected")  # its savepoint is rolled back, the others commit
        return outcome

    monkeypatch.setattr(conversions, "_process_locked_event", deadlocked_once)
    published = []
    original = process_conversion_event.apply_async
    monkeypatch.setattr(
        process_conversion_event,
        "apply_async",
        lambda args=None, kwargs=None, **options: published.append((args, kwargs)) or original(args, kwargs, **options),
    )

    process_conversion_event(tasks[0][0])

    assert refused == [unlucky]
    assert published == [((unlucky,), {"alone": True})], "handed back to a task of its own, never batched again"
    ids = [event_id for event_id, _kwargs in tasks]
    assert set(ConversionEvent.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"processed"}
    assert _state(world.a)["rewards"] == sorted(ids)


def test_a_batch_that_raises_leaves_each_event_to_its_own_task(world, monkeypatch):
    links = _workspace(world.a)
    tasks = _post(world, world.key_a, links, 4, prefix="a")
    poison = tasks[1][0]
    process = conversions._process_locked_event

    def broken(*, event, actor, notes, **options):
        if event.pk == poison:
            raise RuntimeError("a bug in this event's processing")  # not an error of the event: rolls back all
        return process(event=event, actor=actor, notes=notes, **options)

    monkeypatch.setattr(conversions, "_process_locked_event", broken)

    assert process_conversion_event(*tasks[0][:1]) == ConversionEventStatus.PROCESSED  # alone, after the batch
    with pytest.raises(RuntimeError):
        process_conversion_event(poison)  # its own task fails as it did before batching (the reconciler's)
    for event_id, kwargs in tasks[2:]:
        assert process_conversion_event(event_id, **kwargs) == ConversionEventStatus.PROCESSED

    assert ConversionEvent.objects.get(pk=poison).status == ConversionEventStatus.RECEIVED
    good = sorted(event_id for event_id, _kwargs in tasks if event_id != poison)
    assert _state(world.a)["rewards"] == good


def test_an_event_the_reconciler_queued_again_is_never_taken_into_another_batch(world):
    links = _workspace(world.a)
    tasks = _post(world, world.key_a, links, 3, prefix="a")
    suspect = tasks[0][0]
    ConversionEvent.objects.filter(pk=suspect).update(requeues=1)

    process_conversion_event(tasks[1][0])

    assert ConversionEvent.objects.get(pk=suspect).status == ConversionEventStatus.RECEIVED
    assert ConversionEvent.objects.get(pk=tasks[2][0]).status == ConversionEventStatus.PROCESSED
    assert process_conversion_event(suspect, alone=True) == ConversionEventStatus.PROCESSED


def test_with_a_batch_of_one_each_task_processes_its_own_event_only(world, settings):
    settings.CONVERSION_TASK_BATCH = 1
    links = _workspace(world.a)
    tasks = _post(world, world.key_a, links, 3, prefix="a")

    process_conversion_event(tasks[0][0])

    statuses = [ConversionEvent.objects.get(pk=event_id).status for event_id, _kwargs in tasks]
    assert statuses == ["processed", "received", "received"]


def test_concurrent_tasks_of_one_workspace_process_every_event_exactly_once(world):
    links = _workspace(world.a, referrers=4)
    tasks = _post(world, world.key_a, links, 40, prefix="a")
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def worker(share):
        try:
            start.wait(10)
            for event_id, kwargs in share:
                process_conversion_event(event_id, **kwargs)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(tasks[index::4],)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert errors == []
    ids = sorted(event_id for event_id, _kwargs in tasks)
    state = _state(world.a)
    assert state["statuses"] == ["processed"] * 40
    assert state["attributions"] == 40 and state["referrals"] == 40
    assert state["rewards"] == ids, "every payment rewarded exactly once"


def test_a_task_for_an_unknown_or_malformed_event_id_writes_nothing(world):
    links = _workspace(world.a)
    tasks = _post(world, world.key_a, links, 2, prefix="a")

    assert process_conversion_event(999_999_999) == "missing"
    with pytest.raises(ValueError, match="expected a number"):
        process_conversion_event("1; DROP TABLE referrals_conversionevent")

    assert _state(world.a)["statuses"] == ["received", "received"], "nobody's events were taken"
    assert _state(world.a)["attributions"] == 0 and _state(world.a)["rewards"] == []
    assert process_conversion_event(tasks[0][0]) == ConversionEventStatus.PROCESSED
