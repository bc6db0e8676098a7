"""`manage.py flush_clicks`: drain the click stream into Postgres now, with a progress line."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from referrals.click_buffer import FlushResult, clicks_flush, stream_backlog


class Command(BaseCommand):
    help = "Move every buffered click from the Redis stream into Postgres (idempotent, safe to re-run)."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=None, help="entries per COPY (default: setting)")
        parser.add_argument(
            "--claim-idle-ms",
            type=int,
            default=None,
            help="take over entries a dead flush left unacknowledged for this long (default: setting)",
        )

    def handle(self, *args, batch_size=None, claim_idle_ms=None, **options):
        backlog = stream_backlog()
        self.stderr.write(f"[flush_clicks] {backlog:,} stream entries waiting (a spooled entry holds up to 50 clicks)")

        def progress(total: FlushResult) -> None:
            rate = total.read / total.seconds if total.seconds else 0
            done = min(100, round(100 * total.entries / backlog)) if backlog else 100
            self.stderr.write(
                f"\r[flush_clicks] {done:3d}%  {total.read:,} read, {total.written:,} written "
                f"({total.bots:,} bots flagged), {total.skipped:,} already there  {rate:,.0f} clicks/s",
                ending="",
            )
            self.stderr.flush()

        total = clicks_flush(batch_size=batch_size, claim_idle_ms=claim_idle_ms, progress=progress)
        self.stderr.write("")
        self.stdout.write(
            f"flushed {total.written:,} clicks ({total.bots:,} flagged as bots: stored, not counted; "
            f"{total.skipped:,} already written or orphaned; {total.malformed:,} malformed) in {total.seconds:.1f}s"
        )
