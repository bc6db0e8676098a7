"""Celery tasks of the programs app: take ids, re-read state, call a service; safe to retry."""

from __future__ import annotations

from referral_platform.celery import app
from referral_platform.tenancy.actors import system_actor

from .models import ParticipantImport
from .services import participant_import_run


@app.task(name="programs.participant_import", acks_late=True, reject_on_worker_lost=True)
def participant_import_task(participant_import_id: int) -> str:
    """Import a queued CSV of participants in batches; a rerun resumes after the last committed batch."""
    job = ParticipantImport.objects.select_related("tenant", "program").filter(pk=participant_import_id).first()
    if job is None:
        return "missing"
    job = participant_import_run(participant_import=job, actor=system_actor(job.tenant))
    return job.status
