"""Benchmark of the public referral redirect and the click flush (`make bench`).

Serves the project with gunicorn on 127.0.0.1 (production settings, DEBUG off, persistent DB
connections; bench/django_settings.py) against DATABASE_URL / REDIS_URL, and drives it with wrk
(many codes, a fresh visitor per request) in ONE interleaved run: rounds of

  ours   GET /r/<code>                our redirect (cached link + buffered click)
  bare   GET /bench/bare/<code>       a Django view that only returns a 302 (the floor)
  pinax  GET /pinax/<code>/           pinax-referrals' tracking view (the peer)
  raw    GET /bench/raw/<code>        a raw WSGI callable answering a fixed 302 (the physical floor of
                                      this gunicorn + workers: bench/raw_wsgi.py)

with the same duration, connections and server, the order rotating each round. Prints requests/s
and p50/p99 of each, the ratios against the targets, then the flush rate: the click stream filled
to FLUSH_ENTRIES entries and moved into Postgres by referrals.click_buffer.clicks_flush().

Environment knobs: BENCH_ROUNDS (4), BENCH_SECONDS (7), BENCH_CONNECTIONS (16), BENCH_WORKERS
(4), BENCH_LINKS (2000), BENCH_FLUSH_ENTRIES (200000), BENCH_RLS_COMPARE (1: measure ours, raw and the
flush again with row-level security switched off and print both side by side). Everything it creates is
removed at the end.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench.servers import gunicorn_worker_class, worker_words  # noqa: E402

HERE = Path(__file__).resolve().parent

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "7"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "4"))
# Threads per worker (gthread worker class when above 1), the same for every endpoint compared.
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
LINKS = int(os.environ.get("BENCH_LINKS", "2000"))
FLUSH_ENTRIES = int(os.environ.get("BENCH_FLUSH_ENTRIES", "200000"))
RLS_COMPARE = os.environ.get("BENCH_RLS_COMPARE", "1") != "0"

TARGETS = {
    "ours/raw rps": (0.8, ">="),
    "ours p99/raw p99": (1.5, "<="),
    "ours/bare rps": (0.7, ">="),
    "ours/pinax rps": (6.0, ">="),
    "ours p99/bare p99": (2.0, "<="),
    "flush clicks/s": (30_000, ">="),
}


def log(message: str) -> None:
    print(f"[bench_redirect] {message}", flush=True)


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("wrk is not installed: run `apt-get install -y wrk` (Debian) and retry")
    log("installing wrk from Debian (apt-get install -y wrk)")
    if subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, check=False)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], capture_output=True, check=True)
    return shutil.which("wrk") or "wrk"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def configure_environment() -> dict:
    for name in ("DATABASE_URL", "REDIS_URL"):
        if not os.environ.get(name):
            raise SystemExit(f"{name} is not set: run through `make bench` (scripts/devstack.py provides it)")
    env = {
        "DJANGO_SETTINGS_MODULE": "bench.django_settings",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "CACHE_KEY_PREFIX": f"rp-bench-{os.getpid()}",
        "SECURE_SSL_REDIRECT": "false",
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    return dict(os.environ)


def prepare_database() -> None:
    from django.core.management import call_command

    log("migrating (project + pinax-referrals tables)")
    if os.environ.get("DATABASE_OWNER_URL"):  # the app runs restricted: migrate as the owner, separately
        env = dict(os.environ, DATABASE_URL=os.environ["DATABASE_OWNER_URL"])
        for extra in ([], ["--run-syncdb"]):
            command = [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0", *extra]
            subprocess.run(command, env=env, cwd=ROOT, check=True)
        return
    call_command("migrate", "--no-input", verbosity=0)
    # Then the tables of the app without migrations (its foreign keys need auth_user first).
    call_command("migrate", "--no-input", "--run-syncdb", verbosity=0)


def database_role() -> str:
    """Which role the figures were measured with (issue 14: the app runs as a restricted role)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        role, superuser, bypassrls = cursor.fetchone()
    if superuser or bypassrls:
        return f"database role: {role} (superuser or BYPASSRLS: row-level security does NOT apply to these figures)"
    return f"database role: {role} (restricted, no superuser, row-level security applies)"


def create_fixtures() -> dict:
    """A bench tenant with an active program and LINKS links; as many pinax referrals."""
    from pinax.referrals.models import Referral as PinaxReferral

    from programs.models import Participant, Program, ProgramStatus
    from referral_platform.tenancy.models import Tenant
    from referrals.link_cache import link_cache_warm
    from referrals.models import ReferralLink
    from referrals.services import new_referral_code

    suffix = secrets.token_hex(4)
    tenant = Tenant.objects.create(
        slug=f"bench-{suffix}", name=f"Bench {suffix}", allowed_landing_domains=["bench.example"]
    )
    program = Program.objects.create(
        tenant=tenant,
        name="Bench program",
        slug="bench",
        status=ProgramStatus.ACTIVE,
        landing_url="https://bench.example/landing?src=referral",
    )
    participants = Participant.objects.bulk_create(
        Participant(tenant=tenant, program=program, external_id=f"p{i}", name=f"P {i}", email=f"p{i}@bench.example")
        for i in range(LINKS)
    )
    links = ReferralLink.objects.bulk_create(
        ReferralLink(tenant=tenant, program=program, participant=participant, code=new_referral_code())
        for participant in participants
    )
    codes = [link.code for link in links]
    warmed = link_cache_warm(codes)
    pinax = PinaxReferral.objects.bulk_create(
        PinaxReferral(code=f"bench{suffix}{i:06d}", redirect_to="https://bench.example/landing", label="bench")
        for i in range(LINKS)
    )
    log(f"created tenant {tenant.slug}: {len(codes)} links ({warmed} cached), {len(pinax)} pinax referrals")
    return {"tenant": tenant, "codes": codes, "pinax_codes": [referral.code for referral in pinax]}


def start_gunicorn(env: dict, port: int) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "bench.raw_wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(WORKERS),
        *gunicorn_worker_class(THREADS),
        "--backlog",
        "2048",
        "--log-level",
        "warning",
        "--access-logfile",
        "/dev/null",
    ]
    log(f"starting gunicorn: {WORKERS} {worker_words(THREADS)} on 127.0.0.1:{port}")
    server = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    opener = urllib.request.build_opener(NoRedirect)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            opener.open(f"http://127.0.0.1:{port}/bench/bare/warmup", timeout=2)
        except urllib.error.HTTPError:
            return server  # any HTTP answer (here the 302, not followed) means it is up
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if server.poll() is not None:
                raise SystemExit("gunicorn exited during start-up") from None
            time.sleep(0.3)
        else:
            return server
    server.terminate()
    raise SystemExit("gunicorn did not answer within 60s")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def check_endpoints(port: int, fixtures: dict) -> None:
    """Each endpoint answers a 302 to where it should before anything is measured."""
    opener = urllib.request.build_opener(NoRedirect)
    for name, path, expected in [
        ("ours", f"/r/{fixtures['codes'][0]}", "https://bench.example/landing?src=referral&ref="),
        ("bare", "/bench/bare/x", "https://bench.example/landing"),
        ("pinax", f"/pinax/{fixtures['pinax_codes'][0]}/", "https://bench.example/landing"),
        ("raw", "/bench/raw/x", "https://bench.example/landing"),
    ]:
        try:
            opener.open(f"http://127.0.0.1:{port}{path}", timeout=10)
            raise SystemExit(f"{name}: expected a 302")
        except urllib.error.HTTPError as answer:
            location = answer.headers.get("Location", "")
            if answer.code != 302 or not location.startswith(expected):
                raise SystemExit(f"{name}: answered {answer.code} {location!r}, expected 302 to {expected}") from None


def run_wrk(wrk: str, port: int, endpoint: dict, seconds: int) -> dict:
    env = dict(
        os.environ,
        BENCH_PREFIX=endpoint["prefix"],
        BENCH_SUFFIX=endpoint["suffix"],
        BENCH_CODES=endpoint["codes_file"],
    )
    result = subprocess.run(
        [
            wrk,
            "-t2",
            f"-c{CONNECTIONS}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "-s",
            str(HERE / "redirect.lua"),
            f"http://127.0.0.1:{port}",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"^RESULT (\{.*\})$", result.stdout, re.MULTILINE)
    if not match:
        raise SystemExit(f"wrk printed no result:\n{result.stdout}\n{result.stderr}")
    figures = json.loads(match.group(1))
    figures["rps"] = figures["requests"] / (figures["duration_us"] / 1e6)
    return figures


def measure(wrk: str, port: int, fixtures: dict, workdir: Path, only: tuple[str, ...] = ()) -> dict:
    endpoints = {}
    for name, prefix, suffix, codes in [
        ("ours", "/r/", "", fixtures["codes"]),
        ("bare", "/bench/bare/", "", fixtures["codes"]),
        ("pinax", "/pinax/", "/", fixtures["pinax_codes"]),
        ("raw", "/bench/raw/", "", fixtures["codes"]),
    ]:
        if only and name not in only:
            continue
        codes_file = workdir / f"{name}.codes"
        codes_file.write_text("\n".join(codes) + "\n")
        endpoints[name] = {"prefix": prefix, "suffix": suffix, "codes_file": str(codes_file)}

    log("warm-up: 2s per endpoint")
    for endpoint in endpoints.values():
        run_wrk(wrk, port, endpoint, 2)

    order = list(endpoints)
    rounds: dict[str, list[dict]] = {name: [] for name in endpoints}
    total = ROUNDS * len(order)
    step = 0
    for round_index in range(ROUNDS):
        rotated = order[round_index % len(order) :] + order[: round_index % len(order)]
        for name in rotated:
            step += 1
            figures = run_wrk(wrk, port, endpoints[name], SECONDS)
            rounds[name].append(figures)
            errors = figures["status_errors"] + figures["connect_errors"] + figures["read_errors"] + figures["timeouts"]
            log(
                f"[{step:2d}/{total}] round {round_index + 1} {name:5s} {figures['rps']:8.0f} req/s  "
                f"p50 {figures['p50_us'] / 1000:6.2f} ms  p99 {figures['p99_us'] / 1000:6.2f} ms"
                + f"  (load {os.getloadavg()[0]:.1f})"
                + (f"  ERRORS {errors}" if errors else "")
            )
    return rounds


def summarise(rounds: dict) -> dict:
    summary = {}
    for name, results in rounds.items():
        requests = sum(r["requests"] for r in results)
        seconds = sum(r["duration_us"] for r in results) / 1e6
        summary[name] = {
            "rps": requests / seconds,
            "p50_ms": statistics.median(r["p50_us"] for r in results) / 1000,
            "p99_ms": statistics.median(r["p99_us"] for r in results) / 1000,
            "requests": requests,
            "errors": sum(r["status_errors"] + r["connect_errors"] + r["read_errors"] + r["timeouts"] for r in results),
        }
    return summary


def wait_for_spools(seconds: float = 10.0) -> None:
    """Until the web workers' click spools (referrals/click_spool.py) are shipped: each empties its file
    every REFERRAL_CLICK_SPOOL_SHIP_SECONDS."""
    from django.conf import settings

    directory = Path(settings.REFERRAL_CLICK_SPOOL_DIR) if settings.REFERRAL_CLICK_SPOOL_DIR else None
    deadline = time.monotonic() + seconds
    while directory is not None and directory.is_dir() and time.monotonic() < deadline:
        if all(path.stat().st_size == 0 for path in directory.glob("*.spool")):
            return
        time.sleep(0.1)


def clicks_in_stream(client) -> int:
    """Clicks (not entries: a spooled batch is one entry) in the click stream."""
    from referrals.click_buffer import stream_click_keys

    return len(stream_click_keys(client))


def measure_flush(fixtures: dict) -> dict:
    """Fill the click stream to FLUSH_ENTRIES entries and time moving them into Postgres."""
    from referrals import hot_redis
    from referrals.click_buffer import SEPARATOR, clicks_flush
    from referrals.models import Click, ReferralLink

    client = hot_redis.client()
    stream = hot_redis.click_stream_key()
    wait_for_spools()
    already = clicks_in_stream(client)
    links = list(
        ReferralLink.objects.filter(tenant=fixtures["tenant"]).values_list("pk", "program_id", "participant_id")
    )
    tenant_id = fixtures["tenant"].pk
    agents = [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Version/17.5 Mobile Safari/604.1",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    ]
    missing = max(0, FLUSH_ENTRIES - already)
    log(f"filling the click stream: {already:,} clicks from the rounds + {missing:,} more")
    with client.pipeline(transaction=False) as pipe:
        for index in range(missing):
            link_id, program_id, participant_id = links[index % len(links)]
            payload = SEPARATOR.join(
                (
                    f"{tenant_id}:{link_id}:{program_id}:{participant_id}:direct",
                    fixtures["codes"][index % len(fixtures["codes"])],
                    secrets.token_urlsafe(16),
                    f"198.51.100.{index % 250 + 1}",
                    agents[index % len(agents)],
                    "https://mail.example/inbox",
                    "utm_source=newsletter&utm_campaign=spring" if index % 3 == 0 else "",
                )
            )
            pipe.xadd(stream, {"c": payload})
            if index % 10_000 == 9_999:
                pipe.execute()
        pipe.execute()
    entries = clicks_in_stream(client)
    before = Click.objects.filter(tenant=fixtures["tenant"]).count()

    def progress(total) -> None:
        print(
            f"\r[bench_redirect] flushing: {total.read:,}/{entries:,} clicks, {total.written:,} written, "
            f"{total.read / total.seconds:,.0f} clicks/s",
            end="",
            flush=True,
        )

    load_before = os.getloadavg()[0]
    result = clicks_flush(progress=progress)
    print(flush=True)
    written = Click.objects.filter(tenant=fixtures["tenant"]).count() - before
    if written != entries or client.xlen(stream) != 0:
        raise SystemExit(f"flush moved {written:,} of {entries:,} clicks; {client.xlen(stream):,} entries left")
    return {
        "entries": entries,
        "seconds": result.seconds,
        "rate": written / result.seconds,
        "bots": result.bots,
        "load": (load_before, os.getloadavg()[0]),
    }


def set_row_level_security(enabled: bool) -> None:
    """Issue 14's comparison: switch the tenant policy off (and back on) on every tenant-owned table, as the
    owner role (DATABASE_OWNER_URL when the app runs restricted, else DATABASE_URL)."""
    import psycopg2
    from django.db import connection

    from referral_platform.tenancy import rls

    owner = psycopg2.connect(os.environ.get("DATABASE_OWNER_URL") or os.environ["DATABASE_URL"])
    owner.autocommit = True
    try:
        wrapper = SimpleNamespace(cursor=owner.cursor, ops=connection.ops)
        if enabled:
            rls.policy_install(wrapper)
        else:
            rls.policy_uninstall(wrapper)
    finally:
        owner.close()
    log(f"row-level security {'ON' if enabled else 'OFF'} on every tenant-owned table")


def _delete_as_owner(tenant) -> None:
    """The application role may not DELETE from the ledger tables, even zero rows of them, so the bench
    tenant (which has no ledger rows: the append-only triggers would refuse those) goes as the owner."""
    import dj_database_url
    from django.db import connections

    from referral_platform.tenancy import rls

    owner_url = os.environ.get("DATABASE_OWNER_URL")
    if not owner_url:
        tenant.delete()
        return
    connections.settings["owner"] = {
        **connections.settings["default"],
        **dj_database_url.parse(owner_url, engine=connections.settings["default"]["ENGINE"]),
    }
    try:
        with rls.bypass("bench cleanup"):
            tenant.delete(using="owner")
    finally:
        connections["owner"].close()


def cleanup(fixtures: dict | None) -> None:
    from django.contrib.sessions.models import Session
    from pinax.referrals.models import Referral as PinaxReferral
    from pinax.referrals.models import ReferralResponse

    from referrals import hot_redis

    if fixtures:
        log("removing the bench tenant, pinax rows and sessions")
        session_keys = ReferralResponse.objects.filter(referral__label="bench").values_list("session_key", flat=True)
        Session.objects.filter(session_key__in=session_keys).delete()
        PinaxReferral.objects.filter(code__in=fixtures["pinax_codes"]).delete()
        _delete_as_owner(fixtures["tenant"])
    client = hot_redis.client()
    keys = list(client.scan_iter(match=f"{os.environ['CACHE_KEY_PREFIX']}:*", count=5000))
    for start in range(0, len(keys), 5000):
        client.delete(*keys[start : start + 5000])


def verdict(name: str, value: float) -> str:
    target, op = TARGETS[name]
    met = value >= target if op == ">=" else value <= target
    return f"target {op} {target:g}: {'met' if met else 'MISSED'}"


def main() -> int:
    """Runs the benchmark in a child process: it configures Django (bench settings, a generated
    SECRET_KEY) and environment variables that must not leak into other benchmarks of run_all."""
    if "--in-process" in sys.argv:
        return run()
    return subprocess.call([sys.executable, str(Path(__file__).resolve()), "--in-process"], cwd=ROOT)


def run() -> int:
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    wrk = ensure_wrk()
    env = configure_environment()
    import django

    django.setup()
    prepare_database()
    log(database_role())
    fixtures = None
    server = None
    try:
        fixtures = create_fixtures()
        port = free_port()
        server = start_gunicorn(env, port)
        check_endpoints(port, fixtures)
        with tempfile.TemporaryDirectory() as workdir:
            rounds = measure(wrk, port, fixtures, Path(workdir))
            summary = summarise(rounds)
            flush = measure_flush(fixtures)
            if RLS_COMPARE:
                # The same redirect (ours and the raw floor) and flush with the tenant policy switched off.
                set_row_level_security(False)
                try:
                    rls_off = summarise(measure(wrk, port, fixtures, Path(workdir), only=("ours", "raw")))
                    rls_off_flush = measure_flush(fixtures)
                finally:
                    set_row_level_security(True)
        server.terminate()
        server.wait(20)
        server = None
    finally:
        if server is not None:
            server.terminate()
            server.wait(20)
        cleanup(fixtures)

    ours, bare, pinax, raw = summary["ours"], summary["bare"], summary["pinax"], summary["raw"]
    ratios = {
        "ours/raw rps": ours["rps"] / raw["rps"],
        "ours p99/raw p99": ours["p99_ms"] / raw["p99_ms"],
        "ours/bare rps": ours["rps"] / bare["rps"],
        "ours/pinax rps": ours["rps"] / pinax["rps"],
        "ours p99/bare p99": ours["p99_ms"] / bare["p99_ms"],
    }
    print()
    print(
        f"Redirect: {ROUNDS} interleaved rounds x {SECONDS}s per endpoint, wrk -t2 -c{CONNECTIONS}, "
        f"gunicorn {WORKERS} {worker_words(THREADS)}, {os.cpu_count()} CPUs"
    )
    print(f"  {'endpoint':30s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'requests':>9s} {'errors':>7s}")
    for label, name in [
        ("ours   /r/<code>", "ours"),
        ("bare   302 view (floor)", "bare"),
        ("pinax  referrals (peer)", "pinax"),
        ("raw    WSGI 302 (stack floor)", "raw"),
    ]:
        row = summary[name]
        print(
            f"  {label:30s} {row['rps']:9.0f} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} "
            f"{row['requests']:9d} {row['errors']:7d}"
        )
    for name, value in ratios.items():
        print(f"  {name:20s} {value:6.2f}x   {verdict(name, value)}")
    print(
        f"Flush: {flush['entries']:,} clicks -> Postgres in {flush['seconds']:.2f}s = "
        f"{flush['rate']:,.0f} clicks/s ({flush['bots']:,} bots flagged)   {verdict('flush clicks/s', flush['rate'])}"
    )
    print(
        f"Machine load (1-min average): {load_start:.1f} at start, {flush['load'][0]:.1f} before the flush, "
        f"{flush['load'][1]:.1f} after it"
    )
    if RLS_COMPARE:
        off = rls_off["ours"]
        print("Row-level security (issue 14): the same measurements with the tenant policy ON and OFF")
        print(f"  {'figure':28s} {'RLS on':>10s} {'RLS off':>10s} {'on/off':>7s}")
        for label, on_value, off_value in [
            ("redirect req/s", ours["rps"], off["rps"]),
            ("redirect p99 ms", ours["p99_ms"], off["p99_ms"]),
            ("redirect ours/raw", ratios["ours/raw rps"], off["rps"] / rls_off["raw"]["rps"]),
            ("flush clicks/s", flush["rate"], rls_off_flush["rate"]),
        ]:
            print(f"  {label:28s} {on_value:10.2f} {off_value:10.2f} {on_value / off_value:6.2f}x")
        print(
            f"  with RLS on: redirect {verdict('ours/raw rps', ratios['ours/raw rps'])} (ours/raw), "
            f"flush {verdict('flush clicks/s', flush['rate'])}"
        )
    print(f"(bench_redirect took {time.monotonic() - started:.0f}s)")
    errors = sum(row["errors"] for row in summary.values())
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
