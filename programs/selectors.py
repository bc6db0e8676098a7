"""Reads for programs and participants. Tenant first; nothing here writes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import OuterRef, QuerySet, Subquery

from referral_platform.tenancy import rls
from referral_platform.tenancy.models import Tenant

from .models import ParticipantImport, Program, ProgramStatus, ProgramVersion
from .terms import Terms, render_terms


def program_latest_version(program: Program) -> ProgramVersion | None:
    """The program's current version (the highest number), or None without any; never writes.

    To stamp a new referral, use ``services.program_current_version(program=)``, which also creates
    version 1 for a program that has none.
    """
    return (
        ProgramVersion.objects.for_tenant(program.tenant_id).filter(program_id=program.pk).order_by("-number").first()
    )


def programs_with_current_version_number(programs: QuerySet[Program]) -> QuerySet[Program]:
    """``programs``, each with ``current_version_number`` (that of ``program_latest_version``, None
    without rules), read in the same query as the programs: lists do not ask once per program."""
    latest = (
        ProgramVersion.objects.filter(tenant_id=OuterRef("tenant_id"), program_id=OuterRef("pk"))
        .order_by("-number")
        .values("number")[:1]
    )
    return programs.annotate(current_version_number=Subquery(latest))


def program_version_in_force(program: Program, at: datetime) -> ProgramVersion | None:
    """The version that was current at ``at`` (the latest created at or before it)."""
    return (
        ProgramVersion.objects.for_tenant(program.tenant_id)
        .filter(program_id=program.pk, created_at__lte=at)
        .order_by("-number")
        .first()
    )


def program_public_get(*, tenant_slug: str, program_slug: str) -> Program | None:
    """A program participants may see publicly: active or paused (never draft or archived). A request
    still resolving its tenant is bound to the program's (row-level security)."""
    program = (
        Program.objects.select_related("tenant")
        .filter(
            tenant__slug=tenant_slug,
            slug=program_slug,
            status__in=[ProgramStatus.ACTIVE, ProgramStatus.PAUSED],
        )
        .first()
    )
    if program is not None:
        rls.bind(program.tenant_id)
    return program


def program_terms(tenant: Tenant, *, program: Program) -> Terms:
    """The plain-language terms of ``program``'s current version."""
    if program.tenant_id != tenant.pk:
        raise Program.DoesNotExist
    return render_terms(program, program_latest_version(program))


def participant_import_progress(tenant: Tenant, *, participant_import: ParticipantImport) -> dict[str, Any]:
    """What the progress bar shows: status, percent, counts and the first per-row errors."""
    if participant_import.tenant_id != tenant.pk:
        raise ParticipantImport.DoesNotExist
    job = participant_import
    return {
        "id": job.pk,
        "status": job.status,
        "is_finished": job.is_finished,
        "percent": job.percent_done,
        "total_rows": job.total_rows,
        "processed_rows": job.processed_rows,
        "created": job.created_count,
        "updated": job.updated_count,
        "error_count": job.error_count,
        "errors": job.errors[:100],
        "failure": job.failure,
    }


# --- dates ---------------------------------------------------------------------------------------
def whole_months_between(start: datetime, end: datetime) -> int:
    """Whole calendar months from ``start`` to ``end`` (0 within the first month)."""
    months = (end.year - start.year) * 12 + (end.month - start.month)
    if (end.day, end.time()) < (start.day, start.time()):
        months -= 1
    return max(months, 0)
