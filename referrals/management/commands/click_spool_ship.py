"""`manage.py click_spool_ship`: ship the click spool files no live web process holds (docs/hot-path.md)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from referrals.click_spool import spool_adopt_orphans


class Command(BaseCommand):
    help = (
        "Move the clicks of spool files left by web processes that died (killed, out of memory) into the "
        "Redis click stream; live processes' files are left alone. Idempotent, safe to re-run."
    )

    def add_arguments(self, parser):
        parser.add_argument("--directory", default=None, help="the spool directory (default: REFERRAL_CLICK_SPOOL_DIR)")

    def handle(self, *args, directory=None, **options):
        directory = directory or settings.REFERRAL_CLICK_SPOOL_DIR
        if not directory:
            raise CommandError("no spool directory: REFERRAL_CLICK_SPOOL_DIR is empty and --directory was not given")
        shipped = spool_adopt_orphans(directory)
        self.stdout.write(f"shipped {shipped:,} clicks from spool files no live process holds in {directory}")
