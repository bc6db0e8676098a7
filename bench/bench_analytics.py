"""Analytics at scale: the home, every analytics page and every CSV, read from the rollups, against the same
figures computed straight from raw rows (the baseline), in one run.

Seeds a scratch database (created with migrations, dropped at the end) with two tenants of the same size:
10 million clicks and 1 million referrals each at scale 1 (COPY, with a progress bar), plus the conversions,
attributions and rewards of the converted referrals (INSERT … SELECT), then rebuilds the rollups. Prints,
per page and CSV, the median and 95th percentile response time and the query count, and the baseline's
median beside it. Target: every page under 100 ms at the median.

    BENCH_ANALYTICS_SCALE=0.01 BENCH_ANALYTICS_REPEAT=15 python bench/bench_analytics.py

The scratch database is named after the configured one (``<DATABASE_URL's name>_bench_analytics``), so
each developer's run stays in their own database namespace. ``BENCH_ANALYTICS_KEEP=1`` keeps it after the
run and ``BENCH_ANALYTICS_REUSE=1`` measures an existing, already seeded one again (migrating it first):
seed once at full scale, then profile and re-measure without seeding again. Full scale needs about 15 GB
of disk while it exists.

The machine is shared: run it at a small scale (e.g. 0.002-0.01) unless it is yours alone.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path

from django.db import DatabaseError, transaction

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "referral_platform.settings.test"

SCALE = float(os.environ.get("BENCH_ANALYTICS_SCALE", "1"))
REPEAT = int(os.environ.get("BENCH_ANALYTICS_REPEAT", "15"))
KEEP = os.environ.get("BENCH_ANALYTICS_KEEP") == "1"
REUSE = os.environ.get("BENCH_ANALYTICS_REUSE") == "1"
CLICKS = max(1_000, int(10_000_000 * SCALE))
REFERRALS = max(100, int(1_000_000 * SCALE))
PARTICIPANTS = max(20, int(20_000 * SCALE))
DAYS = 365
CHUNK = 200_000
CHANNELS = ["email", "social", "in_app", "qr", "direct"]


def progress(label: str, done: int, total: int, started: float | None = None) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    rate = ""
    if started is not None and done:
        elapsed = time.monotonic() - started
        rate = f" {elapsed:.0f}s, {done / max(elapsed, 1e-6):,.0f}/s"
    sys.stdout.write(f"\r  {label:<26} [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,}{rate}")
    if done >= total:
        sys.stdout.write("\n")
    sys.stdout.flush()


def _database_exists(name: str) -> bool:
    from django.db import connection

    with connection._nodb_cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        return cursor.fetchone() is not None


def main() -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    name = f"{connection.settings_dict['NAME']}_bench_analytics"
    connection.settings_dict["TEST"]["NAME"] = name
    print(
        f"[bench_analytics] scale {SCALE}: {CLICKS:,} clicks and {REFERRALS:,} referrals per tenant, 2 tenants; "
        f"scratch database {name}" + (" (reused)" if REUSE else ""),
        flush=True,
    )
    if REUSE and _database_exists(name):
        old_name = connection.settings_dict["NAME"]
        connection.close()
        connection.settings_dict["NAME"] = name
        call_command("migrate", verbosity=0)
        seeded = True
    else:
        old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
        seeded = False
    try:
        run(seeded=seeded)
    finally:
        if KEEP:
            print(f"  kept {name} (BENCH_ANALYTICS_REUSE=1 measures it again; dropdb {name} frees it)")
        else:
            connection.creation.destroy_test_db(old_name, verbosity=0)


def _text(value) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _defaults(model, given: list[str]) -> dict[str, object]:
    """The NOT NULL columns of ``model`` that a seed row does not give, with the field's default (so the
    seed keeps working when a model gains a column)."""
    found = {}
    for field in model._meta.concrete_fields:
        if field.column in given or field.null or field.primary_key or field.generated:
            continue  # (a generated column is the database's to fill: COPY refuses it)
        if field.has_default():
            found[field.column] = field.get_default()
        elif field.get_internal_type() in ("CharField", "TextField"):
            found[field.column] = ""
    return found


def _copy(cursor, model, columns: list[str], chunks, total: int, label: str) -> None:
    """COPY rows (each chunk a list of tab-separated lines without the default columns) with a progress bar."""
    extra = _defaults(model, columns)
    suffix = "".join("\t" + _text(value) for value in extra.values())
    names = ", ".join([*columns, *extra])
    done, started = 0, time.monotonic()
    progress(label, 0, total, started)
    for lines in chunks:
        buffer = io.StringIO("".join(f"{line}{suffix}\n" for line in lines))
        cursor.copy_expert(f"COPY {model._meta.db_table} ({names}) FROM STDIN", buffer)
        done += len(lines)
        progress(label, done, total, started)


def _insert_select(cursor, model, columns: list[str], select: str, params: dict) -> None:
    """INSERT … SELECT with the NOT NULL columns the select does not give set to their defaults."""
    extra = _defaults(model, columns)
    values = {f"default_{index}": value for index, value in enumerate(extra.values())}
    defaults = "".join(
        f", %({key})s::jsonb" if isinstance(value, dict | list) else f", %({key})s" for key, value in values.items()
    )
    values = {key: json.dumps(value) if isinstance(value, dict | list) else value for key, value in values.items()}
    select = select.replace("{defaults}", defaults)
    cursor.execute(
        f"INSERT INTO {model._meta.db_table} ({', '.join([*columns, *extra])}) {select}",
        {**params, **values},
    )


@contextlib.contextmanager
def _seeding_role():
    """Seed as the cluster's superuser when the environment names one (``DATABASE_SUPERUSER_URL``: the
    embedded devstack's ``postgres``, never the application): COPY then bypasses row-level security and the
    foreign key triggers can be skipped. Otherwise the seed runs as the configured (owner) role."""
    from urllib.parse import unquote, urlsplit

    from django.db import connection

    url = os.environ.get("DATABASE_SUPERUSER_URL")
    if not url:
        yield
        return
    parts = urlsplit(url)
    saved = connection.settings_dict["USER"], connection.settings_dict["PASSWORD"]
    connection.close()
    connection.settings_dict["USER"] = unquote(parts.username or "")
    connection.settings_dict["PASSWORD"] = unquote(parts.password or "")
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["USER"], connection.settings_dict["PASSWORD"] = saved


def _lift_forced_rls(cursor, models, *, force: bool) -> None:
    """PostgreSQL refuses COPY FROM into a table whose row-level security applies to the role. The owner
    is subject to it only because the tables FORCE it (docs/security.md): the seed lifts FORCE for its
    COPYs and puts it back before its transaction commits (ALTER TABLE is transactional, so nothing ever
    commits without it). A superuser bypasses RLS and needs neither."""
    cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    if cursor.fetchone()[0]:
        return
    if force:  # the COPYs' deferred foreign key checks must run before the table can be altered again
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    for model in models:
        word = "FORCE" if force else "NO FORCE"
        cursor.execute(f"ALTER TABLE {model._meta.db_table} {word} ROW LEVEL SECURITY")


def _skip_foreign_key_checks(cursor) -> None:
    """Bulk load without the per-row foreign key triggers (Django's constraints are deferred, so 10 M clicks
    would mean 40 M checks at COMMIT: many minutes). The seed only references rows it just created. Needs a
    superuser (the embedded devstack's role); without one the checks simply run."""
    try:
        with transaction.atomic():
            cursor.execute("SET LOCAL session_replication_role = replica")
    except DatabaseError:
        print("  (not a superuser: foreign keys are checked at commit, which is slow at full scale)", flush=True)


def _stamps(count: int, rng: random.Random, start: datetime):
    """``count`` moments over the year, in time order (stratified: the i-th in its own slice), denser
    towards the end (growth: offset = span x u^0.8)."""
    span = DAYS * 86_400
    days = [(start + timedelta(days=index)).strftime("%Y-%m-%d") for index in range(DAYS + 2)]
    base = start.hour * 3600 + start.minute * 60 + start.second
    for index in range(count):
        offset = base + int(span * ((index + rng.random()) / count) ** 0.8)
        day, second = divmod(offset, 86_400)
        yield f"{days[day]} {second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}+00"


def seed(tenant, rng: random.Random) -> None:
    from django.db import connection, transaction

    from programs.models import Participant, Program, ProgramKind
    from referrals.models import Attribution, Click, ConversionEvent, Referral, ReferralLink
    from rewards.models import Reward

    now = datetime.now(UTC).replace(microsecond=0)
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
    cumulative = list(accumulate(1 / (1 + rank % 200) for rank in range(len(links))))
    population = range(len(links))

    def picks(count: int) -> list[int]:
        return rng.choices(population, cum_weights=cumulative, k=count)

    # Clicks: tenant, link, program, participant; stream, visitor, user agent, referer; channel, utm, bot, time.
    click_head = [f"{tenant.pk}\t{link.pk}\t{link.program_id}\t{link.participant_id}\t" for link in links]
    click_tail = [f"\t\t\t{link.channel}\t{{}}\tf\t" for link in links]

    def click_chunks():
        stamps = _stamps(CLICKS, rng, start)
        for low in range(0, CLICKS, CHUNK):
            count = min(CHUNK, CLICKS - low)
            yield [
                f"{click_head[pick]}b{index}\tv{index % 500_000}{click_tail[pick]}{next(stamps)}"
                for index, pick in zip(range(low, low + count), picks(count), strict=True)
            ]

    def referral_row(index: int, pick: int, created: datetime) -> str:
        link = links[pick]
        qualified = created + timedelta(days=rng.randrange(1, 10)) if rng.random() < 0.4 else None
        converted = qualified + timedelta(days=rng.randrange(3, 40)) if qualified and rng.random() < 0.5 else None
        converted = converted if converted and converted < now else None
        stamp = lambda value: value.isoformat() if value else "\\N"  # noqa: E731
        made = stamp(created)
        return (
            f"{tenant.pk}\t{link.program_id}\t{link.participant_id}\t{link.pk}\tv{index}\tr{index}@lead.example\t"
            f"\t\t\t\t\t\t{{}}\tlanding_form\t{'converted' if converted else 'signed_up'}\t{made}\t{made}\t"
            f"{stamp(qualified)}\t{stamp(converted)}\t{made}\t{made}\tclear\t"
        )

    def referral_chunks():
        stamps = _stamps(REFERRALS, rng, start)
        for low in range(0, REFERRALS, CHUNK):
            count = min(CHUNK, REFERRALS - low)
            yield [
                referral_row(index, pick, datetime.fromisoformat(next(stamps)))
                for index, pick in zip(range(low, low + count), picks(count), strict=True)
            ]

    with transaction.atomic(), connection.cursor() as cursor:
        _skip_foreign_key_checks(cursor)
        _lift_forced_rls(cursor, (Click, Referral), force=False)
        columns = ["tenant_id", "link_id", "program_id", "participant_id", "stream_id", "visitor_id", "user_agent"]
        columns += ["referer", "channel", "utm", "is_bot", "occurred_at"]
        _copy(cursor, Click, columns, click_chunks(), CLICKS, f"{tenant.slug}: clicks (COPY)")
        columns = ["tenant_id", "program_id", "referrer_id", "link_id", "visitor_id", "referred_email", "referred_name"]
        columns += ["referred_company", "referred_external_id", "referred_company_size", "how_did_you_hear"]
        columns += ["referred_industry", "qualification", "source", "status", "clicked_at", "signed_up_at"]
        columns += ["qualified_at", "converted_at", "established_at", "created_at", "review_status", "review_reason"]
        _copy(cursor, Referral, columns, referral_chunks(), REFERRALS, f"{tenant.slug}: referrals (COPY)")
        _lift_forced_rls(cursor, (Click, Referral), force=True)
        event, referral_table = ConversionEvent._meta.db_table, Referral._meta.db_table
        started = time.monotonic()
        columns = ["tenant_id", "external_event_id", "kind", "amount_minor", "currency", "occurred_at"]
        columns += ["customer_external_id", "email", "referral_code", "coupon_code", "visitor_id", "referral_id"]
        columns += ["raw", "raw_body", "source", "status", "error", "received_at", "processed_at"]
        _insert_select(
            cursor,
            ConversionEvent,
            columns,
            f"""SELECT tenant_id, 'pay-' || id, 'payment', 100000 + (id %% 7) * 50000, 'USD', converted_at, '', '',
                   '', '', '', id, '{{}}', '', 'bench', 'processed', '', converted_at, converted_at {{defaults}}
            FROM {referral_table} WHERE tenant_id = %(t)s AND converted_at IS NOT NULL""",  # noqa: S608
            {"t": tenant.pk},
        )
        columns = ["tenant_id", "conversion_event_id", "referral_id", "program_id", "participant_id", "model"]
        columns += ["share", "exact_share", "amount_minor", "currency", "touchpoints", "evidence", "computed_at"]
        _insert_select(
            cursor,
            Attribution,
            columns,
            f"""SELECT e.tenant_id, e.id, r.id, r.program_id, r.referrer_id, 'last_touch', 1, '1/1', e.amount_minor,
                   'USD', '[]', '{{}}', e.occurred_at {{defaults}}
            FROM {event} e JOIN {referral_table} r ON r.id = e.referral_id WHERE e.tenant_id = %(t)s""",  # noqa: S608
            {"t": tenant.pk},
        )
        columns = ["tenant_id", "program_id", "participant_id", "beneficiary_side", "kind", "description"]
        columns += ["amount_minor", "currency", "reversed_minor", "clawed_back_minor", "status", "hold_until"]
        columns += ["explanation", "explanation_text", "source_key", "slot_key", "is_current", "conversion_event_id"]
        columns += ["referral_id", "converted_at", "paid_at", "time_to_reward", "status_reason", "created_at"]
        # A few rewards still pending past their hold: the home's "waiting for you" counts something.
        _insert_select(
            cursor,
            Reward,
            columns,
            f"""SELECT e.tenant_id, r.program_id, r.referrer_id, 'referrer', 'cash', '', 5000, 'USD', 0, 0,
                   CASE WHEN r.id %% 97 = 0 THEN 'pending' WHEN r.id %% 3 = 0 THEN 'approved' ELSE 'paid' END,
                   e.occurred_at, '{{}}', '', 'b-' || r.id, '', TRUE, e.id, r.id, e.occurred_at,
                   CASE WHEN r.id %% 3 = 0 THEN NULL ELSE e.occurred_at + (r.id %% 12) * INTERVAL '1 day' END,
                   CASE WHEN r.id %% 3 = 0 THEN NULL ELSE (r.id %% 12) * INTERVAL '1 day' END, '', e.occurred_at
                   {{defaults}}
            FROM {event} e JOIN {referral_table} r ON r.id = e.referral_id WHERE e.tenant_id = %(t)s""",  # noqa: S608
            {"t": tenant.pk},
        )
        print(
            f"  {tenant.slug}: conversions, attributions, rewards (INSERT … SELECT) "
            f"in {time.monotonic() - started:.1f}s"
        )


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


def run(*, seeded: bool = False) -> None:
    from django.db import connection
    from django.test import Client
    from django.urls import reverse

    from analytics.figures import PAGES, page_figures
    from analytics.models import DailyRollup, DailyTotal, MonthlyReferrals
    from analytics.rollups import rollups_rebuild, rollups_rebuild_monthly
    from analytics.selectors import filters_from_query
    from referral_platform.tenancy.models import Membership, Role, Tenant
    from referrals.models import Click, Referral
    from rewards.models import Reward
    from tests.factories import UserFactory

    rng = random.Random(10)
    if seeded:
        tenants = list(Tenant.objects.filter(slug__in=("alpha", "beta")).order_by("slug"))
    else:
        tenants = [
            Tenant.objects.create(slug=slug, name=slug.title(), allowed_landing_domains=["b.example"])
            for slug in ("alpha", "beta")
        ]
        started = time.monotonic()
        with _seeding_role():
            for tenant in tenants:
                seed(tenant, rng)
        print(f"  seeded in {time.monotonic() - started:.1f}s", flush=True)
    with connection.cursor() as cursor:
        # Fresh statistics before the rebuild: with the empty tables' estimates PostgreSQL looks up each
        # customer's first payment by scanning every payment of the tenant.
        cursor.execute("ANALYZE")
    for tenant in tenants:
        if DailyTotal.objects.filter(tenant=tenant).exists():
            if not MonthlyReferrals.objects.filter(tenant=tenant).exists():
                # Reused, rebuilt before the monthly table existed: derive it from the daily rows.
                started = time.monotonic()
                rollups_rebuild_monthly(tenant_id=tenant.pk)
                print(f"  {tenant.slug}: monthly referrals derived in {time.monotonic() - started:.1f}s", flush=True)
            continue  # reused and already rebuilt
        started = time.monotonic()
        rows = rollups_rebuild(
            tenant_id=tenant.pk,
            progress=lambda d, t, s=tenant.slug, at=started: progress(f"{s}: rollups", d, t, at),
        )
        print(f"  {tenant.slug}: {rows:,} rollup rows in {time.monotonic() - started:.1f}s", flush=True)
    with connection.cursor() as cursor:
        # What autovacuum does after a bulk load: statistics, and the visibility map the covering indexes'
        # index-only scans need.
        for model in (DailyRollup, DailyTotal, MonthlyReferrals, Reward):
            cursor.execute("VACUUM ANALYZE " + model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
        for model in (Click, Referral, DailyRollup, DailyTotal, MonthlyReferrals):
            cursor.execute("SELECT count(*) FROM " + model._meta.db_table)  # noqa: S608
            print(f"  {model._meta.db_table}: {cursor.fetchone()[0]:,} rows", flush=True)
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        print(f"  database size {cursor.fetchone()[0]}", flush=True)
    tenant = tenants[0]
    user = UserFactory(username=f"bench-{os.getpid()}@bench.example")  # unique when the database is reused
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
