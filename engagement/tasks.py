"""Celery tasks of engagement: take ids, re-read state, call a service; safe to retry."""

from __future__ import annotations

from referral_platform.celery import app

from . import services


@app.task(name="engagement.moment_process")
def moment_process(moment_id: int) -> None:
    services.moment_process(moment_id=moment_id)


@app.task(name="engagement.ask_send")
def ask_send(ask_id: int) -> None:
    services.ask_send(ask_id=ask_id)


@app.task(name="engagement.asks_send_due")
def asks_send_due() -> int:
    """Every minute: send asks whose delay or quiet hours are over."""
    due = services.asks_due()
    for ask_id in due:
        services.ask_send(ask_id=ask_id)
    return len(due)


@app.task(name="engagement.communication_deliver")
def communication_deliver(communication_id: int) -> None:
    services.communication_deliver(communication_id=communication_id)


@app.task(name="engagement.nps_import_run")
def nps_import_run(import_id: int) -> None:
    services.nps_import_run(import_id=import_id)


@app.task(name="engagement.webhook_deliver")
def webhook_deliver(delivery_id: int) -> None:
    services.webhook_deliver(delivery_id=delivery_id)


@app.task(name="engagement.webhooks_retry_due")
def webhooks_retry_due() -> int:
    """Every minute: a safety net for retries whose countdown task was lost."""
    due = services.deliveries_due()
    for delivery_id in due:
        services.webhook_deliver(delivery_id=delivery_id)
    return len(due)


@app.task(name="engagement.program_update_send")
def program_update_send(program_id: int, version_id: int, previous_id: int) -> None:
    from programs.models import Program, ProgramVersion

    program = Program.objects.select_related("tenant").get(pk=program_id)
    version = ProgramVersion.objects.get(pk=version_id, tenant_id=program.tenant_id)
    previous = ProgramVersion.objects.get(pk=previous_id, tenant_id=program.tenant_id)
    services.program_update_send(program=program, version=version, previous=previous)
