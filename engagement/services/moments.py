"""Trigger moments in: NPS responses (API, CSV, Typeform) and events, stored raw first, then processed.

``moment_record`` writes the row as received (unique per tenant, trigger and sender's id, so a repeated
or concurrent post keeps one) and queues ``engagement.moment_process`` after commit; processing decides
whether to ask (promoters only for NPS; the program's policy; the suppression window across every
trigger) and schedules the ask (``engagement.services.asks``).
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from programs.mailing import email_is_opted_out
from programs.models import Program
from referral_platform.celery import enqueue_on_commit
from referral_platform.tenancy.models import Tenant

from ..models import Ask, AskStatus, Moment, MomentOutcome, MomentSource, NpsImport, Trigger, TriggerPolicy

logger = logging.getLogger(__name__)

PROMOTER_MIN_SCORE = 9


@dataclass(frozen=True)
class Recorded:
    moment: Moment
    created: bool


def moment_validate(
    *,
    trigger: str,
    external_id,
    customer_external_id,
    email,
    occurred_at,
    score=None,
    name="",
    company="",
    comment="",
) -> dict:
    """The cleaned fields, or ValidationError naming every bad one (nothing is written)."""
    errors: dict[str, str] = {}
    if trigger not in Trigger.values:
        errors["trigger"] = f"Choose one of: {', '.join(Trigger.values)}."
    external_id = str(external_id or "").strip()
    if not external_id or len(external_id) > 200:
        errors["external_id"] = "Required, at most 200 characters."
    customer_external_id = str(customer_external_id or "").strip()
    if not customer_external_id or len(customer_external_id) > 200:
        errors["customer_external_id"] = "Required, at most 200 characters."
    email = str(email or "").strip().lower()
    try:
        validate_email(email)
    except ValidationError:
        errors["email"] = "Enter a valid e-mail address."
    if trigger == Trigger.NPS:
        if isinstance(score, bool) or (not isinstance(score, int) and not (isinstance(score, str) and score.isdigit())):
            errors["score"] = "Required: a whole number from 0 to 10."
        elif not 0 <= int(score) <= 10:
            errors["score"] = "Must be from 0 to 10."
    if isinstance(occurred_at, str):
        occurred_at = parse_datetime(occurred_at.strip()) if occurred_at.strip() else None
    if not isinstance(occurred_at, datetime):
        errors["answered_at" if trigger == Trigger.NPS else "occurred_at"] = "Required: an ISO 8601 date and time."
    elif timezone.is_naive(occurred_at):
        occurred_at = timezone.make_aware(occurred_at, timezone.UTC)
    if errors:
        raise ValidationError(errors)
    return {
        "trigger": trigger,
        "external_id": external_id,
        "customer_external_id": customer_external_id,
        "email": email,
        "occurred_at": occurred_at,
        "score": int(score) if trigger == Trigger.NPS else None,
        "name": str(name or "")[:200],
        "company": str(company or "")[:200],
        "comment": str(comment or ""),
    }


def moment_record(
    *, tenant: Tenant, raw: dict, source: str = MomentSource.API, program: Program | None = None, **fields
) -> Recorded:
    """Store the moment as received and queue its processing (once: a repeat returns the stored row)."""
    if program is not None and program.tenant_id != tenant.pk:
        raise ValidationError({"program": "Unknown program."})
    values = moment_validate(**fields)
    try:
        with transaction.atomic():
            moment = Moment.objects.create(tenant=tenant, source=source, program=program, raw=raw, **values)
            enqueue_on_commit(_process_task(), moment.pk)
    except IntegrityError:
        moment = Moment.objects.for_tenant(tenant).get(trigger=values["trigger"], external_id=values["external_id"])
        return Recorded(moment, False)
    return Recorded(moment, True)


def _process_task():
    from ..tasks import moment_process

    return moment_process


def _policy_for(moment: Moment) -> TriggerPolicy | None:
    policies = TriggerPolicy.objects.for_tenant(moment.tenant_id).filter(trigger=moment.trigger, is_enabled=True)
    if moment.program_id:
        policies = policies.filter(program_id=moment.program_id)
    return policies.select_related("program").order_by("pk").first()


def _lock_contact(tenant_id: int, email: str) -> None:
    """Serialise decisions about one person of one workspace (two moments of theirs arriving at once)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"engagement-contact:{tenant_id}:{email}"])


def recently_asked(*, tenant_id: int, email: str, days: int, now: datetime) -> bool:
    return (
        Ask.objects.for_tenant(tenant_id)
        .filter(
            email=email, status__in=[AskStatus.SCHEDULED, AskStatus.SENT], created_at__gte=now - timedelta(days=days)
        )
        .exists()
    )


@transaction.atomic
def moment_process(*, moment_id: int, now: datetime | None = None) -> Moment | None:
    """Decide about one stored moment (idempotent: a processed moment is left as it is).

    Promoters (9 to 10) and trigger events of a program with an enabled policy get an ask scheduled after the
    policy's delay, outside quiet hours; nobody is asked twice within the suppression window, whatever
    trigger asked first; an unsubscribed address is never asked.
    """
    from .asks import ask_schedule

    now = now or timezone.now()
    moment = Moment.objects.select_for_update(of=("self",)).filter(pk=moment_id).first()
    if moment is None or moment.outcome != MomentOutcome.RECEIVED:
        return moment
    outcome = MomentOutcome.ASKED
    policy = _policy_for(moment)
    if moment.trigger == Trigger.NPS and (moment.score or 0) < PROMOTER_MIN_SCORE:
        outcome = MomentOutcome.NOT_PROMOTER
    elif policy is None:
        outcome = MomentOutcome.NO_POLICY
    elif email_is_opted_out(moment.tenant_id, moment.email):
        outcome = MomentOutcome.UNSUBSCRIBED
    else:
        _lock_contact(moment.tenant_id, moment.email)
        if recently_asked(tenant_id=moment.tenant_id, email=moment.email, days=policy.suppression_days, now=now):
            outcome = MomentOutcome.SUPPRESSED
        else:
            ask_schedule(moment=moment, policy=policy, now=now)
    moment.outcome = outcome
    moment.processed_at = now
    if policy is not None and moment.program_id is None:
        moment.program_id = policy.program_id
    moment.save(update_fields=["outcome", "processed_at", "program"])
    return moment


# --- CSV import -----------------------------------------------------------------------------------

NPS_CSV_COLUMNS = ("response_id", "customer_external_id", "email", "score", "answered_at")
NPS_CSV_OPTIONAL = ("name", "company", "comment")


def nps_import_create(*, tenant: Tenant, filename: str, content: str, program: Program | None = None) -> NpsImport:
    """Keep the CSV as uploaded and queue its import; a file without the required columns is refused."""
    if program is not None and program.tenant_id != tenant.pk:
        raise ValidationError({"program": "Unknown program."})
    reader = csv.DictReader(io.StringIO(content))
    missing = [column for column in NPS_CSV_COLUMNS if column not in (reader.fieldnames or [])]
    if missing:
        raise ValidationError({"file": f"Missing column(s): {', '.join(missing)}."})
    total = sum(1 for _ in reader)
    with transaction.atomic():
        row = NpsImport.objects.create(
            tenant=tenant, filename=filename[:255], content=content, program=program, total_rows=total
        )
        from ..tasks import nps_import_run

        enqueue_on_commit(nps_import_run, row.pk)
    return row


NPS_IMPORT_BATCH = 200


def nps_import_run(*, import_id: int) -> NpsImport:
    """Import the rows in batches, committing progress with each batch (a retried task resumes)."""
    record = NpsImport.objects.get(pk=import_id)
    tenant = record.tenant
    rows = list(csv.DictReader(io.StringIO(record.content)))
    NpsImport.objects.filter(pk=import_id, status="queued").update(status="running")
    for start in range(record.processed_rows, len(rows), NPS_IMPORT_BATCH):
        with transaction.atomic():
            locked = NpsImport.objects.select_for_update().get(pk=import_id)
            if locked.processed_rows > start:
                continue
            for offset, row in enumerate(rows[start : start + NPS_IMPORT_BATCH]):
                line = start + offset + 2  # the header is line 1
                try:
                    with transaction.atomic():
                        recorded = moment_record(
                            tenant=tenant,
                            raw=dict(row),
                            source=MomentSource.CSV,
                            program=locked.program,
                            trigger=Trigger.NPS,
                            external_id=row.get("response_id"),
                            customer_external_id=row.get("customer_external_id"),
                            email=row.get("email"),
                            score=(row.get("score") or "").strip(),
                            occurred_at=row.get("answered_at") or "",
                            name=row.get("name") or "",
                            company=row.get("company") or "",
                            comment=row.get("comment") or "",
                        )
                except ValidationError as error:
                    locked.error_count += 1
                    for field, messages in error.message_dict.items():
                        if len(locked.errors) < 1000:
                            locked.errors.append({"line": line, "field": field, "message": messages[0]})
                else:
                    locked.created_count += int(recorded.created)
                locked.processed_rows += 1
            locked.save(update_fields=["processed_rows", "created_count", "error_count", "errors"])
    NpsImport.objects.filter(pk=import_id).update(status="done", finished_at=timezone.now())
    record.refresh_from_db()
    return record
