"""Analytics at scale: the home, every analytics page and every CSV, read from the rollups, against the same
figures computed straight from raw rows (the baseline), in one run.

Seeds a scratch database (created with migrations, dropped at the end) with two tenants of the same size:
10 million clicks and 1 million referrals each at scale 1 (COPY, with a progress bar), plus the conversions,
attributions and rewards of the converted referrals (INSERT … SELECT), then rebuilds the rollups. Prints,
per page and CSV, the median and 95th percentile response time and the query count, and the baseline's
median beside it. Target: every page under 100 ms at the median.

    BENCH_ANALYTICS_SCALE=0.01 BENCH_ANALYTICS_REPEAT=15 python bench/bench_analytics.py

The machine is shared: run it at a small scale (e.g. 0.002-0.01) unless it is yours alone.
"""

from __future__ import annotations

import io
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "referral_platform.settings.test"

SCALE = float(os.environ.get("BENCH_ANALYTICS_SCALE", "1"))
REPEAT = int(os.environ.get("BENCH_ANALYTICS_REPEAT", "15"))
CLICKS = max(1_000, int(10_000_000 * SCALE))
REFERRALS = max(100, int(1_000_000 * SCALE))
PARTICIPANTS = max(20, int(20_000 * SCALE))
DAYS = 365
CHUNK = 100_000
CHANNELS = ["email", "social", "in_app", "qr", "direct"]


def progress(label: str, done: int, total: int) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    sys.stdout.write(f"\r  {label:<26} [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,}")
    if done >= total:
        sys.stdout.write("\n")
    sys.stdout.flush()


def main() -> None:
    import django

    django.setup()
    from django.db import connection

    connection.settings_dict["TEST"]["NAME"] = f"bench_analytics_{os.getpid()}"
    print(
        f"[bench_analytics] scale {SCALE}: {CLICKS:,} clicks and {REFERRALS:,} referrals per tenant, 2 tenants; "
        f"scratch database {connection.settings_dict['TEST']['NAME']}",
        flush=True,
    )
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        run()
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def _copy(cursor, table: str, columns: list[str], rows, total: int, label: str) -> None:
    buffer = io.StringIO()
    for done, row in enumerate(rows, start=1):
        buffer.write("\t".join("\\N" if value is None else str(value) for value in row))
        buffer.write("\n")
        if done % CHUNK == 0 or done == total:
            buffer.seek(0)
            cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", buffer)
            buffer = io.StringIO()
            progress(label, done, total)


def seed(tenant, rng: random.Random) -> None:
    from django.db import connection, transaction

    from programs.models import Participant, Program, ProgramKind
    from referrals.models import Attribution, Click, ConversionEvent, Referral, ReferralLink
    from rewards.models import Reward

    now = datetime.now(UTC)
    start = now - timedelta(days=DAYS)
    programs = [
        Program.objects.create(
            tenant=tenant, name=f"{kind} program", slug=kind, kind=kind, landing_url="https://b.example/"
        )
        for kind in (ProgramKind.CUSTOMER, ProgramKind.PARTNER)
    ]
    people = Participant.objects.bulk_create(
        [
            Participant(
                tenant=tenant,
                program=programs[index % 10 == 0],
                external_id=f"p{index}",
                name=f"Participant {index}",
                email=f"p{index}@{tenant.slug}.example",
            )
            for index in range(PARTICIPANTS)
        ],
        batch_size=5_000,
    )
    links = ReferralLink.objects.bulk_create(
        [
            ReferralLink(
                tenant=tenant,
                program_id=person.program_id,
                participant=person,
                code=f"{tenant.slug[:3]}{person.pk}{channel[:2]}",
                channel=channel,
            )
            for person in people
            for channel in CHANNELS[:2]
        ],
        batch_size=5_000,
    )
    weights = [1 / (1 + rank % 200) for rank in range(len(links))]
    span = DAYS * 86_400

    def moment(offset_fraction: float) -> datetime:
        return start + timedelta(seconds=int(span * offset_fraction))

    with transaction.atomic(), connection.cursor() as cursor:
        picks = rng.choices(range(len(links)), weights, k=CLICKS)
        clicks = (
            (
                tenant.pk,
                links[pick].pk,
                links[pick].program_id,
                links[pick].participant_id,
                f"b{index}",
                f"v{index % 500_000}",
                "",
                "",
                links[pick].channel,
                "{}",
                "f",
                moment(rng.random() ** 0.8).isoformat(),
            )
            for index, pick in enumerate(picks)
        )
        columns = ["tenant_id", "link_id", "program_id", "participant_id", "stream_id", "visitor_id", "user_agent"]
        columns += ["referer", "channel", "utm", "is_bot", "occurred_at"]
        _copy(cursor, Click._meta.db_table, columns, clicks, CLICKS, f"{tenant.slug}: clicks (COPY)")

        def referral(index: int):
            link = links[rng.choices(range(len(links)), weights)[0]]
            created = moment(rng.random() ** 0.8)
            qualified = created + timedelta(days=rng.randrange(1, 10)) if rng.random() < 0.4 else None
            converted = qualified + timedelta(days=rng.randrange(3, 40)) if qualified and rng.random() < 0.5 else None
            converted = converted if converted and converted < now else None
            stamp = lambda value: value.isoformat() if value else None  # noqa: E731
            return (
                tenant.pk,
                link.program_id,
                link.participant_id,
                link.pk,
                f"v{index}",
                f"r{index}@lead.example",
                "",
                "",
                "",
                "",
                "",
                "",
                "{}",
                "landing_form",
                "converted" if converted else "signed_up",
                stamp(created),
                stamp(created),
                stamp(qualified),
                stamp(converted),
                stamp(created),
                stamp(created),
                "clear",
                "",
            )

        columns = ["tenant_id", "program_id", "referrer_id", "link_id", "visitor_id", "referred_email", "referred_name"]
        columns += ["referred_company", "referred_external_id", "referred_company_size", "how_did_you_hear"]
        columns += ["referred_industry", "qualification", "source", "status", "clicked_at", "signed_up_at"]
        columns += ["qualified_at", "converted_at", "established_at", "created_at", "review_status", "review_reason"]
        _copy(
            cursor,
            Referral._meta.db_table,
            columns,
            (referral(index) for index in range(REFERRALS)),
            REFERRALS,
            f"{tenant.slug}: referrals (COPY)",
        )
        event, attribution, reward, referral_table = (
            ConversionEvent._meta.db_table,
            Attribution._meta.db_table,
            Reward._meta.db_table,
            Referral._meta.db_table,
        )
        cursor.execute(
            f"""INSERT INTO {event} (tenant_id, external_event_id, kind, amount_minor, currency, occurred_at,
                customer_external_id, email, referral_code, coupon_code, visitor_id, referral_id, raw, raw_body,
                source, status, error, received_at, processed_at)
            SELECT tenant_id, 'pay-' || id, 'payment', 100000 + (id %% 7) * 50000, 'USD', converted_at, '', '', '',
                   '', '', id, '{{}}', '', 'bench', 'processed', '', converted_at, converted_at
            FROM {referral_table} WHERE tenant_id = %s AND converted_at IS NOT NULL""",  # noqa: S608
            [tenant.pk],
        )
        cursor.execute(
            f"""INSERT INTO {attribution} (tenant_id, conversion_event_id, referral_id, program_id, participant_id,
                model, share, exact_share, amount_minor, currency, touchpoints, evidence, computed_at)
            SELECT e.tenant_id, e.id, r.id, r.program_id, r.referrer_id, 'last_touch', 1, '1/1', e.amount_minor,
                   'USD', '[]', '{{}}', e.occurred_at
            FROM {event} e JOIN {referral_table} r ON r.id = e.referral_id WHERE e.tenant_id = %s""",  # noqa: S608
            [tenant.pk],
        )
        cursor.execute(
            f"""INSERT INTO {reward} (tenant_id, program_id, participant_id, beneficiary_side, kind, description,
                amount_minor, currency, reversed_minor, clawed_back_minor, status, hold_until, explanation,
                explanation_text, source_key, slot_key, is_current, conversion_event_id, referral_id, converted_at,
                paid_at, time_to_reward, status_reason, created_at)
            SELECT e.tenant_id, r.program_id, r.referrer_id, 'referrer', 'cash', '', 5000, 'USD', 0, 0,
                   CASE WHEN r.id %% 3 = 0 THEN 'approved' ELSE 'paid' END, e.occurred_at, '{{}}', '', 'b-' || r.id, '',
                   TRUE, e.id, r.id, e.occurred_at,
                   CASE WHEN r.id %% 3 = 0 THEN NULL ELSE e.occurred_at + (r.id %% 12) * INTERVAL '1 day' END,
                   CASE WHEN r.id %% 3 = 0 THEN NULL ELSE (r.id %% 12) * INTERVAL '1 day' END, '', e.occurred_at
            FROM {event} e JOIN {referral_table} r ON r.id = e.referral_id WHERE e.tenant_id = %s""",  # noqa: S608
            [tenant.pk],
        )
        cursor.execute("ANALYZE")


# --- the baseline: the same figures straight from raw rows ---------------------------------------------
def raw_home(cursor, tenant_id: int, start, end) -> None:
    from referrals.models import Attribution, Click, ConversionEvent, Referral
    from rewards.models import Reward

    params = {"t": tenant_id, "s": start, "e": end}
    for low, high in ((start, end), (start - (end - start), start)):
        params = {"t": tenant_id, "s": low, "e": high}
        cursor.execute(
            f"SELECT date(occurred_at), channel, count(*) FROM {Click._meta.db_table} "  # noqa: S608
            "WHERE tenant_id = %(t)s AND occurred_at >= %(s)s AND occurred_at < %(e)s AND NOT is_bot GROUP BY 1, 2",
            params,
        )
        cursor.fetchall()
        for column in ("signed_up_at", "qualified_at", "converted_at", "created_at"):
            cursor.execute(
                f"SELECT date({column}), count(*) FROM {Referral._meta.db_table} WHERE tenant_id = %(t)s "  # noqa: S608
                f"AND {column} >= %(s)s AND {column} < %(e)s GROUP BY 1",
                params,
            )
            cursor.fetchall()
        cursor.execute(
            f"SELECT date(e.occurred_at), sum(a.amount_minor) FROM {Attribution._meta.db_table} a "  # noqa: S608
            f"JOIN {ConversionEvent._meta.db_table} e ON e.id = a.conversion_event_id WHERE a.tenant_id = %(t)s "
            "AND e.occurred_at >= %(s)s AND e.occurred_at < %(e)s GROUP BY 1",
            params,
        )
        cursor.fetchall()
        cursor.execute(
            f"SELECT sum(amount_minor), sum(CASE WHEN status = 'paid' THEN amount_minor END) "  # noqa: S608
            f"FROM {Reward._meta.db_table} WHERE tenant_id = %(t)s AND converted_at >= %(s)s AND converted_at < %(e)s",
            params,
        )
        cursor.fetchall()
    params = {"t": tenant_id, "s": start, "e": end}
    cursor.execute(
        f"SELECT participant_id, count(*) FROM {Click._meta.db_table} WHERE tenant_id = %(t)s "  # noqa: S608
        "AND occurred_at >= %(s)s AND occurred_at < %(e)s GROUP BY 1 ORDER BY 2 DESC LIMIT 10",
        params,
    )
    cursor.fetchall()


def timed(call, repeat: int) -> tuple[float, float, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    samples, queries = [], 0
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            call()
            samples.append((time.perf_counter() - started) * 1000)
        queries = len(captured.captured_queries)
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return statistics.median(samples), p95, queries


def run() -> None:
    from django.db import connection
    from django.test import Client
    from django.urls import reverse

    from analytics.figures import PAGES, page_figures
    from analytics.rollups import rollups_rebuild
    from analytics.selectors import filters_from_query
    from referral_platform.tenancy.models import Membership, Role, Tenant
    from tests.factories import UserFactory

    rng = random.Random(10)
    tenants = [
        Tenant.objects.create(slug=slug, name=slug.title(), allowed_landing_domains=["b.example"])
        for slug in ("alpha", "beta")
    ]
    started = time.monotonic()
    for tenant in tenants:
        seed(tenant, rng)
    print(f"  seeded in {time.monotonic() - started:.1f}s", flush=True)
    for tenant in tenants:
        started = time.monotonic()
        rows = rollups_rebuild(
            tenant_id=tenant.pk, progress=lambda d, t, s=tenant.slug: progress(f"{s}: rollups", d, t)
        )
        print(f"  {tenant.slug}: {rows:,} rollup rows in {time.monotonic() - started:.1f}s", flush=True)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    tenant = tenants[0]
    user = UserFactory()
    Membership.objects.create(tenant=tenant, user=user, role=Role.MARKETER)
    client = Client()
    client.force_login(user)
    period = "?period=90d"
    filters = filters_from_query(tenant, {"period": "90d"})
    targets = [("home", "/" + period)]
    for slug in [*PAGES, "compare"]:
        targets.append((f"page {slug}", reverse(f"analytics_{slug}") + period))
        for figure in page_figures(slug, tenant, filters, {}):
            targets.append(
                (f"csv {slug}/{figure.slug}", reverse(f"analytics_{slug}_csv") + f"{period}&figure={figure.slug}")
            )
    low = datetime.combine(filters.start, datetime.min.time(), tzinfo=UTC)
    high = datetime.combine(filters.end + timedelta(days=1), datetime.min.time(), tzinfo=UTC)

    def baseline():
        with connection.cursor() as cursor:
            raw_home(cursor, tenant.pk, low, high)

    base_median, base_p95, base_queries = timed(baseline, max(3, REPEAT // 3))
    print(
        f"\n  baseline (the home's figures from raw rows): median {base_median:.1f} ms, p95 {base_p95:.1f} ms, "
        f"{base_queries} queries\n"
    )
    print(f"  {'route':<44} {'median ms':>10} {'p95 ms':>8} {'queries':>8} {'x baseline':>11}  target")
    slow = []
    for label, url in targets:
        median, p95, queries = timed(lambda url=url: client.get(url), REPEAT)
        ok = median < 100
        slow += [] if ok else [label]
        print(
            f"  {label:<44} {median:>10.1f} {p95:>8.1f} {queries:>8} {median / base_median:>10.2f}x  "
            + ("ok" if ok else "SLOW")
        )
    print(
        f"\n  {len(targets) - len(slow)}/{len(targets)} routes under 100 ms at the median"
        + (f"; slow: {slow}" if slow else "")
    )


if __name__ == "__main__":
    main()
