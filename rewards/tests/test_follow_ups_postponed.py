"""A drain's follow-ups do not wait for a person another drain holds (issue 15, ``rewards.pipeline``): the
conversions of a round only try their people's locks; one whose person another transaction holds (the same
customer's other payment in a concurrent chunk) is processed in the next round, waiting then — after the
round's other conversions are processed and committed. Every event is still processed and rewarded once."""

from __future__ import annotations

import threading

import pytest
from django.utils import timezone

from referral_platform.tenancy.memo import batch_memo
from referrals.models import ConversionEvent
from referrals.tests.test_conversion_chunks import person_held_elsewhere
from rewards.pipeline import follow_ups

from .test_conversion_task_batches import _post, _state, _workspace

pytestmark = pytest.mark.django_db(transaction=True)


def _hold_for(tenant, identifiers: list[str], seconds: float) -> tuple[threading.Thread, dict, threading.Event]:
    """A real thread holding the person's lock for ``seconds``, on its own connection."""
    held, out = threading.Event(), {}

    def hold():
        with person_held_elsewhere(tenant, identifiers) as released:
            held.set()
            threading.Event().wait(seconds)
        out["released"] = released["at"]

    thread = threading.Thread(target=hold)
    thread.start()
    return thread, out, held


def _follow_ups_while_held(tasks, tenant, customer: str, seconds: float = 1.5) -> tuple[dict, object]:
    """The drain's follow-ups of ``tasks`` (conversion tasks held at the API) while another transaction holds
    ``customer``'s person lock in ``tenant`` for ``seconds``. Returns (when it let go, when the follow-ups ended)."""
    from referral_platform.celery import app

    holder, out, held = _hold_for(tenant, [customer], seconds)
    assert held.wait(10)
    try:
        task = app.tasks["referrals.process_conversion_event"]
        with batch_memo(), follow_ups() as collector:
            collector.calls.extend((task, (event_id,), {}) for event_id, _kwargs in tasks)
        done_at = timezone.now()
    finally:
        holder.join(30)
    return out, done_at


def test_a_round_goes_on_without_a_busy_person_and_the_next_round_processes_it_once(world):
    links = _workspace(world.a)
    tasks = _post(world, world.key_a, links, 5, prefix="p")
    busy_id = tasks[1][0]
    busy_customer = ConversionEvent.objects.get(pk=busy_id).customer_external_id
    out, done_at = _follow_ups_while_held(tasks, world.a, busy_customer)

    events = dict(
        ConversionEvent.objects.filter(pk__in=[event_id for event_id, _ in tasks]).values_list("pk", "processed_at")
    )
    others = [at for pk, at in events.items() if pk != busy_id]
    assert max(others) < out["released"], "the round waited for the other drain"
    assert events[busy_id] >= out["released"]
    state = _state(world.a)
    assert state["statuses"] == ["processed"] * 5 and state["attributions"] == 5 and state["referrals"] == 5
    assert state["rewards"] == sorted(event_id for event_id, _ in tasks), "each payment rewarded exactly once"
    assert done_at >= out["released"]


def test_another_workspaces_busy_person_never_delays_or_touches_this_one(world):
    """The lock keys carry the workspace: the same customer id held in workspace B postpones nothing of A."""
    links = _workspace(world.a)
    _workspace(world.b)
    tasks = _post(world, world.key_a, links, 3, prefix="p")
    customer = ConversionEvent.objects.get(pk=tasks[0][0]).customer_external_id
    out, done_at = _follow_ups_while_held(tasks, world.b, customer)
    assert done_at < out["released"]
    assert _state(world.a)["statuses"] == ["processed"] * 3
    assert not ConversionEvent.objects.filter(tenant=world.b).exists()
