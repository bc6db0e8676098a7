"""Participant CSV imports: inspect, create, run in batches with progress."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from programs.models import (
    ImportStatus,
    ParticipantImport,
    Program,
    ProgramStatus,
)
from referral_platform.celery import enqueue_on_commit
from referral_platform.tenancy.actors import Actor
from referral_platform.tenancy.models import Tenant
from referral_platform.tenancy.services import audit_record

from .participants import participant_upsert

IMPORT_REQUIRED_COLUMNS = ("external_id", "name", "email")

IMPORT_OPTIONAL_COLUMNS = ("company",)

IMPORT_MAX_STORED_ERRORS = 1000


def _decode_csv(content: bytes | str) -> str:
    if isinstance(content, str):
        return content.lstrip("\ufeff")
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError({"file": f"The file is not UTF-8 text (byte {exc.start} cannot be read)."}) from exc


def _csv_reader(text: str) -> csv.DictReader:
    return csv.DictReader(io.StringIO(text, newline=""))


def participant_import_inspect(content: bytes | str) -> tuple[str, int]:
    """The CSV as text and its number of data rows, or ``ValidationError({"file": ...})`` when the
    whole file is unusable (too large, not UTF-8, no header columns external_id / name / email, no rows)."""
    raw_size = len(content.encode() if isinstance(content, str) else content)
    if raw_size > settings.PARTICIPANT_IMPORT_MAX_BYTES:
        raise ValidationError({"file": f"The file is larger than {settings.PARTICIPANT_IMPORT_MAX_BYTES:,} bytes."})
    text = _decode_csv(content)
    if "\x00" in text:
        raise ValidationError({"file": "The file contains NUL bytes; upload a CSV text file."})
    try:
        reader = _csv_reader(text)
        header = [name.strip().lower() for name in (reader.fieldnames or [])]
        total = sum(1 for _ in reader)
    except csv.Error as exc:
        raise ValidationError({"file": f"Not a readable CSV file: {exc}."}) from exc
    missing = [name for name in IMPORT_REQUIRED_COLUMNS if name not in header]
    if missing:
        raise ValidationError({"file": f"Line 1: the header lacks the column(s) {', '.join(missing)}."})
    if total == 0:
        raise ValidationError({"file": "The file has a header but no rows."})
    return text, total


@transaction.atomic
def participant_import_create(
    *,
    tenant: Tenant,
    program: Program,
    actor: Actor,
    filename: str,
    content: bytes | str,
    enqueue: bool = True,
    send_welcome: bool = True,
) -> ParticipantImport:
    """Store an uploaded CSV as received and (``enqueue``) queue its import task once committed.

    The header must name ``external_id``, ``name`` and ``email`` (``company`` optional). The file is
    checked here only for what makes the whole file unusable; row problems are reported per row.
    """
    if program.tenant_id != tenant.pk:
        raise ValidationError({"program": "Unknown program."})
    if program.status == ProgramStatus.ARCHIVED:
        raise ValidationError({"program": "This program is archived; nobody can join it."})
    text, total = participant_import_inspect(content)
    job = ParticipantImport.objects.create(
        tenant=tenant,
        program=program,
        filename=(filename or "upload.csv")[:255],
        content=text,
        total_rows=total,
        created_by=actor.label,
        send_welcome=send_welcome,
    )
    audit_record(tenant=tenant, actor=actor, action="participant_import.queued", obj=job, to_state=job.status)
    if enqueue:
        from programs.tasks import participant_import_task

        enqueue_on_commit(participant_import_task, job.pk)
    return job


def participant_import_run(
    *,
    participant_import: ParticipantImport,
    actor: Actor,
    batch_size: int | None = None,
    on_progress: Callable[[ParticipantImport], None] | None = None,
) -> ParticipantImport:
    """Import the job's rows in batches; each batch commits its rows with the progress counters.

    Safe to run again (a retried task, a crashed worker): it resumes after the last committed batch,
    and re-importing a row is an idempotent upsert anyway. Bad rows are recorded with their line
    number and field; the other rows are imported.
    """
    batch_size = batch_size or settings.PARTICIPANT_IMPORT_BATCH_SIZE
    with transaction.atomic():
        job = ParticipantImport.objects.select_for_update().get(pk=participant_import.pk)
        if job.is_finished:
            return job
        if job.status == ImportStatus.QUEUED:
            job.status = ImportStatus.RUNNING
            job.started_at = timezone.now()
            job.save(update_fields=["status", "started_at"])
    program = job.program
    if on_progress:
        on_progress(job)
    try:
        reader = _csv_reader(job.content)
        reader.fieldnames = [name.strip().lower() for name in (reader.fieldnames or [])]
        batch: list[tuple[int, dict]] = []
        index = 0
        for index, row in enumerate(reader, start=1):
            if index <= job.processed_rows:
                continue
            # reader.line_num is the physical line the row ended on (quoted fields may span lines).
            batch.append((reader.line_num, row))
            if len(batch) >= batch_size:
                job = _import_batch(job=job, program=program, actor=actor, batch=batch)
                batch = []
                if on_progress:
                    on_progress(job)
        if batch:
            job = _import_batch(job=job, program=program, actor=actor, batch=batch)
            if on_progress:
                on_progress(job)
    except csv.Error as exc:
        return _import_finish(job=job, actor=actor, status=ImportStatus.FAILED, failure=f"Unreadable CSV: {exc}")
    job = _import_finish(job=job, actor=actor, status=ImportStatus.DONE)
    if on_progress:
        on_progress(job)
    return job


@transaction.atomic
def _import_batch(*, job: ParticipantImport, program: Program, actor: Actor, batch: list[tuple[int, dict]]):
    job = ParticipantImport.objects.select_for_update().get(pk=job.pk)
    errors = list(job.errors)
    for line, row in batch:
        extra = row.get(None)
        if extra:
            problem = {"line": line, "field": "row", "message": f"{len(extra)} more value(s) than header columns."}
            job.error_count += 1
            if len(errors) < IMPORT_MAX_STORED_ERRORS:
                errors.append(problem)
            continue
        try:
            enrolment = participant_upsert(
                tenant=program.tenant,
                program=program,
                external_id=row.get("external_id") or "",
                name=row.get("name") or "",
                email=row.get("email") or "",
                company=row.get("company") or "",
                actor=actor,
                source="import",
                welcome=job.send_welcome,
            )
        except ValidationError as exc:
            job.error_count += 1
            for field_name, messages in exc.message_dict.items():
                if len(errors) < IMPORT_MAX_STORED_ERRORS:
                    errors.append({"line": line, "field": field_name, "message": " ".join(messages)})
            continue
        if enrolment.created:
            job.created_count += 1
        else:
            job.updated_count += 1
    job.processed_rows += len(batch)
    job.errors = errors
    job.save(update_fields=["processed_rows", "created_count", "updated_count", "error_count", "errors"])
    return job


@transaction.atomic
def _import_finish(*, job: ParticipantImport, actor: Actor, status: str, failure: str = "") -> ParticipantImport:
    job = ParticipantImport.objects.select_for_update().get(pk=job.pk)
    from_state = job.status
    job.status = status
    job.failure = failure
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "failure", "finished_at"])
    audit_record(
        tenant=job.tenant,
        actor=actor,
        action=f"participant_import.{status}",
        obj=job,
        from_state=from_state,
        to_state=status,
        reason=failure,
        data={"created": job.created_count, "updated": job.updated_count, "errors": job.error_count},
    )
    return job
