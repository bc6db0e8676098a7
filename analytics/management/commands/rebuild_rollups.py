"""``manage.py rebuild_rollups [--tenant slug]``: recompute every daily rollup from raw rows."""

from __future__ import annotations

import time
from functools import partial

from django.core.management.base import BaseCommand, CommandError

from analytics.rollups import rollups_rebuild
from referral_platform import console
from referral_platform.tenancy.models import Tenant


def progress_bar(label: str):
    """The workspace's progress, drawn by the project's one progress bar (referral_platform.console)."""
    return partial(console.progress_bar, label)


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
