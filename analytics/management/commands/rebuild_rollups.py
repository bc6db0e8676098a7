"""``manage.py rebuild_rollups [--tenant slug]``: recompute every daily rollup from raw rows."""

from __future__ import annotations

import sys
import time

from django.core.management.base import BaseCommand, CommandError

from analytics.rollups import rollups_rebuild
from referral_platform.tenancy.models import Tenant


def progress_bar(label: str):
    def show(done: int, total: int) -> None:
        width = 30
        filled = int(width * done / total) if total else width
        sys.stdout.write(f"\r  {label:<24} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done >= total:
            sys.stdout.write("\n")
        sys.stdout.flush()

    return show


class Command(BaseCommand):
    help = "Recompute the analytics daily rollups from raw clicks, referrals, conversions and rewards."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="Only this workspace (slug); default: every workspace.")

    def handle(self, *args, tenant=None, **options):
        tenants = Tenant.objects.order_by("pk")
        if tenant:
            tenants = tenants.filter(slug=tenant)
            if not tenants.exists():
                raise CommandError(f"No workspace {tenant!r}.")
        for workspace in tenants:
            started = time.monotonic()
            rows = rollups_rebuild(tenant_id=workspace.pk, progress=progress_bar(workspace.slug))
            self.stdout.write(f"  {workspace.slug}: {rows} rollup rows in {time.monotonic() - started:.1f}s")
