"""Worker processes for the payout concurrency tests.

``python -m rewards.tests.payout_worker <count>`` loads Django once, then forks ``count`` worker
processes (each with its own database connection). It reads one JSON line per round on stdin: a list of
``count`` commands, one per worker. Each worker receives its command, waits until every worker has its
own (a barrier: they start at the same moment), runs it, and answers; the answers are printed as one
JSON line, in the same order.

Commands: ``{"do": "payouts_run"}`` (the beat task's service), ``{"do": "webhooks", "event_ids": [...]}``
(handle stored Stripe events), ``{"do": "rewards", "participant_ids": [...], "key": "..."}`` (create and
approve a reward for each participant). An answer is ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "...", "traceback": "..."}``.

Needs DJANGO_SETTINGS_MODULE and DATABASE_URL (the test database) in the environment.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import traceback

import django


def _handle(command: dict):
    from programs.models import Participant
    from referral_platform.tenancy.actors import system_actor
    from rewards.models import StripeWebhookEvent
    from rewards.payouts import payouts_run
    from rewards.services import reward_approve, reward_create
    from rewards.webhooks import stripe_event_process

    if command["do"] == "payouts_run":
        return payouts_run()
    if command["do"] == "webhooks":
        return [stripe_event_process(event=StripeWebhookEvent.objects.get(pk=pk)).status for pk in command["event_ids"]]
    if command["do"] == "rewards":
        created = []
        for participant in Participant.objects.filter(pk__in=command["participant_ids"]).order_by("pk"):
            actor = system_actor(participant.tenant)
            reward = reward_create(
                tenant=participant.tenant,
                program=participant.program,
                participant=participant,
                amount_minor=1_000,
                source_key=f"{command['key']}:{participant.pk}",
                actor=actor,
            )
            created.append(reward_approve(reward=reward, actor=actor).pk)
        return created
    raise ValueError(f"unknown command {command!r}")


def _worker(pipe, barrier) -> None:
    from django.db import connection

    while (command := pipe.recv()) is not None:
        barrier.wait()
        try:
            answer = {"ok": True, "result": _handle(command)}
        except Exception as error:
            answer = {"ok": False, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
        finally:
            connection.close()
        pipe.send(answer)


def main() -> None:
    count = int(sys.argv[1])
    django.setup()
    from django.db import connection

    from tests.row_locks import row_lock_guard_install

    row_lock_guard_install()
    connection.close()  # nothing shared across the fork
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(count)
    pipes, processes = [], []
    for _ in range(count):
        ours, theirs = context.Pipe()
        process = context.Process(target=_worker, args=(theirs, barrier), daemon=True)
        process.start()
        pipes.append(ours)
        processes.append(process)
    print(json.dumps({"ready": count}), flush=True)
    for line in sys.stdin:
        commands = json.loads(line)
        for pipe, command in zip(pipes, commands, strict=True):
            pipe.send(command)
        print(json.dumps([pipe.recv() for pipe in pipes]), flush=True)
    for pipe in pipes:
        pipe.send(None)
    for process in processes:
        process.join(timeout=30)


if __name__ == "__main__":
    main()
