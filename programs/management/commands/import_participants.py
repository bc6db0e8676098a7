"""``manage.py import_participants <program> <file.csv>``: the admin's CSV import, in the terminal.

<program> is ``<tenant_slug>/<program_slug>`` or a program id. The import runs here (not on a
worker) with a progress bar, through the same services as the admin upload; bad rows are listed
with their line number and field.
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from programs.models import ImportStatus, ParticipantImport, Program
from programs.services import participant_import_create, participant_import_run
from referral_platform.tenancy.actors import system_actor


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = int(width * done / total) if total else width
    percent = done * 100 // total if total else 100
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} rows ({percent} %)"


class Command(BaseCommand):
    help = "Import participants from a CSV (external_id, name, email[, company]) into a program, with progress."

    def add_arguments(self, parser):
        parser.add_argument("program", help="<tenant_slug>/<program_slug>, or the program's id")
        parser.add_argument("file", help="Path of the UTF-8 CSV file")
        parser.add_argument("--batch-size", type=int, default=None, help="Rows committed together (default: setting)")

    def _program(self, spec: str) -> Program:
        queryset = Program.objects.select_related("tenant")
        if spec.isdigit():
            program = queryset.filter(pk=int(spec)).first()
        elif spec.count("/") == 1:
            tenant_slug, program_slug = spec.split("/")
            program = queryset.filter(tenant__slug=tenant_slug, slug=program_slug).first()
        else:
            raise CommandError("Name the program as <tenant_slug>/<program_slug> or by its id.")
        if program is None:
            raise CommandError(f"No program {spec!r}.")
        return program

    def handle(self, *args, program, file, batch_size=None, **options):
        program = self._program(program)
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"No file {file!r}.")
        actor = system_actor(program.tenant)
        try:
            job = participant_import_create(
                tenant=program.tenant,
                program=program,
                actor=actor,
                filename=path.name,
                content=path.read_bytes(),
                enqueue=False,
            )
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from exc
        self.stdout.write(f"Importing {job.total_rows} row(s) into {program} ({program.tenant.slug}/{program.slug})")
        interactive = sys.stdout.isatty()
        shown: list[int] = []

        def show(current: ParticipantImport) -> None:
            if shown and shown[-1] == current.processed_rows:
                return  # the final "done" report repeats the last batch's count
            shown.append(current.processed_rows)
            line = _bar(current.processed_rows, current.total_rows)
            if interactive:
                self.stdout.write(f"\r  {line}", ending="")
                self.stdout.flush()
            else:
                self.stdout.write(f"  {line}")

        job = participant_import_run(participant_import=job, actor=actor, batch_size=batch_size, on_progress=show)
        if interactive:
            self.stdout.write("")
        summary = f"{job.created_count} new, {job.updated_count} updated, {job.error_count} row(s) with errors."
        for error in job.errors:
            self.stdout.write(self.style.WARNING(f"  line {error['line']}, {error['field']}: {error['message']}"))
        if job.status == ImportStatus.FAILED:
            raise CommandError(f"Import failed: {job.failure} ({summary})")
        self.stdout.write(self.style.SUCCESS(f"Done: {summary}"))
