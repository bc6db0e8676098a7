"""End-to-end benchmark of the money pipeline (issue 15): Stripe webhooks in, balanced ledger out.

N signed Stripe ``invoice.paid`` webhooks of referred customers (and ``charge.refunded`` for some of
them) are POSTed to the project served by gunicorn; real Celery worker processes handle them (webhook
→ conversion event → matching, stage, attribution → reward settlement → ledger and messages) until every
invoice has its attribution, its evaluation and its rewards' balanced ledger transactions. The mix:

  single   last touch, referral code in the invoice metadata; 50.00 per conversion + 20.00 of credit
           for the referred company (double-sided)
  multi    linear attribution over two referrers' clicks (visitor id in the metadata); 100.01 split by
           exact share + 15 % of every payment for 12 months; 10.00 credit for the referred company
  tiered   10 % of the payment, 15 % from the referrer's 5th rewarded referral of the year
  capped   30.00 per conversion, at most 3 rewarded referrals per referrer per month

A sixth of the invoices are a customer's second one (a recurring share, a second occasion to settle), every
tenth invoice is refunded by half (``charge.refunded``: rewards reversed in proportion).

Checked: every payment attributed and evaluated, the ledger balanced, refunds applied, and what is owed
(live rewards net of reductions, per program and side) identical in every run.

Printed first: the door alone (the same webhooks POSTed while no worker runs: verify, store raw,
acknowledge). Then per run (1, 2 and 4 worker processes, each in a workspace of its own): webhooks
accepted per second at the door while the workers run, conversions completed per second end to end
(first POST → last ledger/evaluation write), SQL statements per conversion in the workers, p50/p99
from the webhook's POST to its first ledger entry; then the scaling against 1 worker and the baseline
measured in the same run: the same number of balanced ledger transactions inserted directly (raw
INSERTs, one commit each).

Runs in a scratch database (created with migrations, dropped at the end) against REDIS_URL with a
Celery queue of its own. Knobs: BENCH_PIPELINE_N (invoices per run, 200), BENCH_PIPELINE_WORKERS
("1,2,4"), BENCH_PIPELINE_WEB_WORKERS (gunicorn sync workers, 4), BENCH_PIPELINE_CLIENTS (concurrent
POSTs, 16), BENCH_PIPELINE_TIMEOUT (seconds per run, 900), BENCH_TIME_SQL=1 (print the SQL statement
shapes the workers spent most time in), BENCH_PIPELINE_DOOR_SECONDS (the door measured by wrk with
pre-signed webhooks, bench/webhooks.lua, 5; 0 skips it), BENCH_PIPELINE_HISTORY (the workspace's history
before the billing run: so many referrals of other people, half as many unattributed payments, charges and
identity links, statistics gathered; 0, a new workspace), BENCH_PIPELINE_HISTORY_RUN (one more run with 2
workers in a workspace with that history, printed beside the new workspace's; 20000, 0 skips it).

    BENCH_PIPELINE_N=200 python bench/bench_pipeline.py
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import queue
import re
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench.servers import gunicorn_worker_class, worker_words  # noqa: E402

N = int(os.environ.get("BENCH_PIPELINE_N", "200"))
WORKER_COUNTS = [int(x) for x in os.environ.get("BENCH_PIPELINE_WORKERS", "1,2,4").split(",") if x.strip()]
WEB_WORKERS = int(os.environ.get("BENCH_PIPELINE_WEB_WORKERS", "4"))
# Threads per web worker (gthread worker class when above 1): concurrent requests let PostgreSQL group commits.
WEB_THREADS = int(os.environ.get("BENCH_PIPELINE_WEB_THREADS", "1"))
CLIENTS = int(os.environ.get("BENCH_PIPELINE_CLIENTS", "16"))
DOOR_WRK_SECONDS = int(os.environ.get("BENCH_PIPELINE_DOOR_SECONDS", "5"))  # 0: no wrk measurement of the door
DOOR_WRK_EVENTS = 40_000  # distinct pre-signed webhooks: more than the door accepts in DOOR_WRK_SECONDS
TIMEOUT = int(os.environ.get("BENCH_PIPELINE_TIMEOUT", "900"))
# The conversions API runs: CONVERSION_TASK_BATCH of the workers in each (1 = one event per task, the baseline).
API_TASK_BATCHES = [int(x) for x in os.environ.get("BENCH_PIPELINE_API_BATCHES", "1,25").split(",") if x.strip()]
API_WORKERS = 2
# The workspace's history before the billing run (0: a new workspace): so many referrals of other people over the
# last 60 days, half as many unattributed payments (customers nobody referred), charges and identity links, then
# statistics gathered as autovacuum would — the steady state of a workspace that has been running for a while.
HISTORY = int(os.environ.get("BENCH_PIPELINE_HISTORY", "0"))
# After the runs above, one more with 2 worker processes in a workspace with this history (0: none): the same
# billing run must not be slower in a workspace that has been running for a while (issue 15: reads by key).
HISTORY_RUN = int(os.environ.get("BENCH_PIPELINE_HISTORY_RUN", "20000"))
REFERRERS = 8  # per program
PROGRAMS = ("single", "multi", "tiered", "capped")

TARGETS = {
    "webhooks/s": (1_000, ">="),
    "conversions/s @2": (300, ">="),
    "queries/conversion": (5, "<="),
}


def log(message: str) -> None:
    print(f"[bench_pipeline] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def configure_environment() -> None:
    for name in ("DATABASE_URL", "REDIS_URL"):
        if not os.environ.get(name):
            raise SystemExit(f"{name} is not set: run through `make bench` (scripts/devstack.py provides it)")
    if os.environ.get("DATABASE_OWNER_URL"):
        # `make bench` runs the application as a restricted role; the scratch database is created and
        # migrated by the owner, and the server and workers use that role on it (it holds no other data).
        os.environ["DATABASE_URL"] = os.environ["DATABASE_OWNER_URL"]
    pid = os.getpid()
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "bench.pipeline_settings",
            "SECRET_KEY": secrets.token_urlsafe(64),
            "CACHE_KEY_PREFIX": f"rp-bench-pipeline-{pid}",
            "SECURE_SSL_REDIRECT": "false",
            "LOG_LEVEL": "WARNING",
            "EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend",
            "BENCH_CELERY_QUEUE": f"bench-pipeline-{pid}",
            "BENCH_QUERY_COUNTER": f"bench-pipeline-{pid}:queries",
        }
    )
    sys.path.insert(0, str(ROOT))


def scratch_database_url(name: str) -> str:
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


# --- the workspace of one run ----------------------------------------------------------------------
def rules_for(slug: str) -> dict:
    base = {"schema_version": 1, "currency": "USD"}
    if slug == "single":
        return {
            **base,
            "referrer": [{"kind": "flat_per_conversion", "amount_minor": 5_000}],
            "referred": [{"kind": "account_credit", "amount_minor": 2_000}],
        }
    if slug == "multi":
        return {
            **base,
            "referrer": [
                {"kind": "flat_per_conversion", "amount_minor": 10_001},
                {"kind": "recurring_percent", "percent_bp": 1_500, "months": 12},
            ],
            "referred": [{"kind": "account_credit", "amount_minor": 1_000}],
        }
    if slug == "tiered":
        return {
            **base,
            "referrer": [
                {
                    "kind": "tiered",
                    "tiers": [{"min_referrals": 1, "percent_bp": 1_000}, {"min_referrals": 5, "percent_bp": 1_500}],
                }
            ],
            "referred": [],
        }
    return {
        **base,
        "referrer": [{"kind": "flat_per_conversion", "amount_minor": 3_000}],
        "referred": [],
        "caps": {"referrer_rewarded_referrals": {"max": 3, "period": "month"}},
    }


def build_workspace(label: str, history: int = HISTORY) -> dict:
    """A tenant with a Stripe signing secret, the four programs, their referrers and links, and the
    clicks of the multi-touch customers (two referrers each). Built in this process (tasks run eagerly
    here: nothing reaches the workers' queue)."""
    from programs.models import Participant, Program, ProgramStatus
    from programs.services import program_rules_change
    from referral_platform.tenancy.actors import system_actor
    from referral_platform.tenancy.models import Tenant
    from referrals.models import Click, FraudPolicy, ReferralLink
    from referrals.services import new_referral_code
    from rewards.models import StripeCredentials

    suffix = secrets.token_hex(3)
    tenant = Tenant.objects.create(
        slug=f"pipe-{label}-{suffix}", name=f"Pipeline {label}", allowed_landing_domains=["bench.example"]
    )
    secret = f"whsec_{secrets.token_hex(16)}"
    StripeCredentials.objects.create(tenant=tenant, secret_key="sk_test_bench", webhook_secret=secret)  # noqa: S106
    actor = system_actor(tenant)
    links: dict[str, list] = {}
    for slug in PROGRAMS:
        program = Program.objects.create(
            tenant=tenant,
            name=f"Bench {slug}",
            slug=slug,
            landing_url="https://bench.example/",
            hold_days=30,
            currency="USD",
            status=ProgramStatus.ACTIVE,
            attribution_model="linear" if slug == "multi" else "last_touch",
            cookie_window_days=90,
        )
        program_rules_change(program=program, actor=actor, rules=rules_for(slug))
        # A billing run converts many of a referrer's referrals at once: not the burst the velocity
        # check is for (it would hold them for review, and nothing would be rewarded).
        FraudPolicy.objects.create(tenant=tenant, program=program, velocity_max_per_hour=10_000)
        people = Participant.objects.bulk_create(
            Participant(
                tenant=tenant,
                program=program,
                external_id=f"{slug}-{i}",
                name=f"{slug.title()} Referrer {i}",
                email=f"{slug}{i}@partners-{suffix}.example",
            )
            for i in range(REFERRERS)
        )
        links[slug] = ReferralLink.objects.bulk_create(
            ReferralLink(tenant=tenant, program=program, participant=person, code=new_referral_code())
            for person in people
        )
    now = datetime.now(UTC)
    customers = []
    clicks = []
    for i in range(customers_count()):
        slug = PROGRAMS[i % len(PROGRAMS)]
        program_links = links[slug]
        first = program_links[(i // len(PROGRAMS)) % REFERRERS]
        customer = {"id": f"cus_{suffix}_{i}", "program": slug, "email": f"buyer@customer{i}-{suffix}.example"}
        if slug == "multi":
            second = program_links[(i // len(PROGRAMS) + 1) % REFERRERS]
            visitor = f"v-{suffix}-{i}"
            for hours, link in ((48, first), (24, second)):
                clicks.append(
                    Click(
                        tenant=tenant,
                        link=link,
                        program_id=link.program_id,
                        participant_id=link.participant_id,
                        stream_id=f"bench-{suffix}-{i}-{hours}",
                        visitor_id=visitor,
                        occurred_at=now - timedelta(hours=hours),
                    )
                )
            customer["metadata"] = {"visitor_id": visitor}
        else:
            customer["metadata"] = {"referral_code": first.code}
        customers.append(customer)
    Click.objects.bulk_create(clicks)
    if history:
        seed_history(tenant, links, suffix, history)
    return {"tenant": tenant, "secret": secret, "customers": customers}


def seed_history(tenant, links: dict[str, list], suffix: str, history: int) -> None:
    """``history`` referrals of other people in the four programs (their referrers', created over the last 60 days,
    none rewarded: no counter of the rules moves), half as many unattributed payments with their charges and
    identity links, then ANALYZE (as autovacuum would, the tables' owner)."""
    from django.db import connection

    from referrals.models import ConversionEvent, IdentityLink, Referral
    from rewards.models import StripeCharge

    now = datetime.now(UTC)
    batch = 10_000
    for low in range(0, history, batch):
        numbers = range(low, min(low + batch, history))
        rows = []
        for n in numbers:
            link = links[PROGRAMS[n % len(PROGRAMS)]][n % REFERRERS]
            rows.append(
                Referral(
                    tenant=tenant,
                    program_id=link.program_id,
                    referrer_id=link.participant_id,
                    link=link,
                    visitor_id=f"old-v-{suffix}-{n}",
                    referred_email=f"old{n}@earlier{n}-{suffix}.example",
                    referred_company=f"Earlier {n} Ltd",
                    referred_external_id=f"old_cus_{n}",
                    created_at=now - timedelta(minutes=90 + n % 86_000),
                )
            )
        Referral.objects.bulk_create(rows)
        half = numbers[::2]
        ConversionEvent.objects.bulk_create(
            ConversionEvent(
                tenant=tenant,
                external_event_id=f"evt_old_{suffix}_{n}",
                kind="payment",
                status="unattributed",
                amount_minor=4_900,
                currency="USD",
                email=f"payer{n}@unreferred{n}-{suffix}.example",
                customer_external_id=f"cus_unreferred_{n}",
                occurred_at=now - timedelta(days=30),
                source="stripe",
            )
            for n in half
        )
        StripeCharge.objects.bulk_create(
            StripeCharge(
                tenant=tenant,
                stripe_charge_id=f"ch_old_{suffix}_{n}",
                stripe_invoice_id=f"in_old_{suffix}_{n}",
                stripe_payment_intent_id=f"pi_old_{suffix}_{n}",
                amount_minor=4_900,
                currency="USD",
            )
            for n in half
        )
        IdentityLink.objects.bulk_create(
            IdentityLink(
                tenant=tenant,
                a_kind="customer",
                a_value=f"cus_unreferred_{n}",
                b_kind="email",
                b_value=f"payer{n}@unreferred{n}-{suffix}.example",
                source="bench",
            )
            for n in half
        )
        progress("seeding the workspace's history", numbers[-1] + 1, history)
    tables = "referrals_referral, referrals_conversionevent, rewards_stripecharge, referrals_identitylink"
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {tables}")


def customers_count() -> int:
    # A fifth of the customers pay twice: N invoices in all.
    return N - N // 6


def webhooks_for(workspace: dict) -> list[dict]:
    """The run's webhooks in delivery order: each customer's first invoice, a fifth of them a second
    one, and every tenth invoice refunded by half a few deliveries later."""
    now = int(time.time())
    invoices = []
    for index, customer in enumerate(workspace["customers"]):
        periods = 2 if index % 5 == 4 else 1
        for period in range(periods):
            invoices.append((customer, period))
    invoices = invoices[:N]
    out = []
    refunds = []
    for number, (customer, period) in enumerate(invoices):
        amount = 4_900 + (number % 7) * 1_000
        paid_at = now - 3_600 * 24 * (1 - period) - 600 + number % 300
        invoice = _invoice(customer, period, amount, paid_at)
        out.append(_event(f"evt_{customer['id']}_paid_{period}", "invoice.paid", invoice, paid_at))
        if number % 10 == 3:
            charge = {
                "id": f"ch_{customer['id']}_{period}",
                "object": "charge",
                "customer": customer["id"],
                "invoice": invoice["id"],
                "payment_intent": invoice["payment_intent"],
                "amount": amount,
                "amount_captured": amount,
                "amount_refunded": amount // 2,
                "currency": "usd",
                "refunded": False,
            }
            refunds.append(
                (number + 7, _event(f"evt_{customer['id']}_refund_{period}", "charge.refunded", charge, now))
            )
        while refunds and refunds[0][0] <= number:
            out.append(refunds.pop(0)[1])
    out.extend(event for _at, event in refunds)
    return out


def renewals_for(workspace: dict, period: int = 2) -> list[dict]:
    """The next month's billing run: one ``invoice.paid`` per customer, every referral already converted and
    established (the warm path of issue 15: nothing is created, the referral is found)."""
    now = int(time.time())
    out = []
    for number, customer in enumerate(workspace["customers"]):
        amount = 4_900 + (number % 7) * 1_000
        paid_at = now - 300 + number % 300
        out.append(
            _event(
                f"evt_{customer['id']}_paid_{period}",
                "invoice.paid",
                _invoice(customer, period, amount, paid_at),
                paid_at,
            )
        )
    return out


def _invoice(customer: dict, period: int, amount: int, paid_at: int) -> dict:
    return {
        "id": f"in_{customer['id']}_{period}",
        "object": "invoice",
        "customer": customer["id"],
        "customer_email": customer["email"],
        "subscription": f"sub_{customer['id']}",
        "status": "paid",
        "paid": True,
        "amount_due": amount,
        "amount_paid": amount,
        "currency": "usd",
        "charge": f"ch_{customer['id']}_{period}",
        "payment_intent": f"pi_{customer['id']}_{period}",
        "status_transitions": {"paid_at": paid_at},
        "metadata": customer["metadata"],
        "lines": {"object": "list", "data": [{"object": "line_item", "amount": amount, "quantity": 1}]},
    }


def _event(event_id: str, kind: str, obj: dict, created: int) -> dict:
    return {
        "id": event_id,
        "object": "event",
        "type": kind,
        "created": created,
        "livemode": False,
        "api_version": "2024-06-20",
        "data": {"object": obj},
    }


def signed(event: dict, secret: str) -> tuple[bytes, str]:
    body = json.dumps(event).encode()
    stamp = int(time.time())
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return body, f"t={stamp},v1={digest}"


# --- processes ---------------------------------------------------------------------------------------
def start_gunicorn(env: dict, port: int) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "referral_platform.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(WEB_WORKERS),
        *gunicorn_worker_class(WEB_THREADS),
        "--backlog",
        "2048",
        "--log-level",
        "warning",
        "--access-logfile",
        "/dev/null",
    ]
    log(f"starting gunicorn: {WEB_WORKERS} {worker_words(WEB_THREADS)} on 127.0.0.1:{port}")
    server = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/r/benchprobe", timeout=2)
            return server
        except urllib.error.HTTPError:
            return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if server.poll() is not None:
                raise SystemExit("gunicorn exited during start-up") from None
            time.sleep(0.3)
    stop(server)
    raise SystemExit("gunicorn did not answer within 60s")


def start_workers(env: dict, concurrency: int) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bench.pipeline_celery",
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        str(concurrency),
        "-Q",
        env["BENCH_CELERY_QUEUE"],
        "-n",
        f"bench-pipeline-{os.getpid()}-{concurrency}@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel",
        "ERROR",
    ]
    log(f"starting a Celery worker with {concurrency} process(es)")
    return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL)


def wait_for_workers(worker: subprocess.Popen, concurrency: int) -> None:
    from referral_platform.celery import app

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit("the Celery worker exited during start-up")
        replies = app.control.ping(timeout=1.0)
        if any(name.startswith(f"bench-pipeline-{os.getpid()}-{concurrency}@") for reply in replies for name in reply):
            return
    raise SystemExit("the Celery worker did not answer within 90s")


def stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


# --- CPU spent per conversion ----------------------------------------------------------------------------
def tree_cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds (user + system) a process and its descendants have used so far, including children they
    have already reaped (a Celery pool process or a PostgreSQL backend that exited). None when the process
    cannot be read (a database on another host)."""
    import psutil

    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        times = root.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in root.children(recursive=True):
            try:
                times = child.cpu_times()
            except psutil.NoSuchProcess:  # exited meanwhile: its parent will count it once reaped
                continue
            total += times.user + times.system + times.children_user + times.children_system
        return total
    except (psutil.Error, OSError):
        return None


def database_server_pid() -> int | None:
    """The PostgreSQL postmaster this run's database runs under (the parent of this connection's backend), if
    it runs on this machine."""
    import psutil
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    try:
        return psutil.Process(backend).ppid()
    except (psutil.Error, OSError):
        return None


class CpuMeter:
    """CPU seconds used by the Celery worker, the database server (every backend) and gunicorn (the door)
    between ``start`` and ``stop``: what a conversion costs in CPU, however busy or noisy the machine is
    (conversions per second on a shared machine vary from run to run; CPU per conversion much less)."""

    PARTS = ("worker", "database", "web")

    def __init__(self, pids: dict[str, int | None]):
        self.pids = pids
        self.first: dict[str, float | None] = {}
        self.used: dict[str, float | None] = {}

    def start(self) -> None:
        self.first = {part: tree_cpu_seconds(self.pids[part]) for part in self.PARTS if part in self.pids}

    def stop(self) -> dict[str, float | None]:
        for part in self.PARTS:
            if part not in self.pids:
                continue
            before, after = self.first.get(part), tree_cpu_seconds(self.pids.get(part))
            self.used[part] = None if before is None or after is None else max(after - before, 0.0)
        return dict(self.used)  # a copy: the meter is started and stopped again for the next phase


# --- one run -----------------------------------------------------------------------------------------
def post_all(port: int, tenant_slug: str, requests: list[tuple[str, bytes, str]]) -> tuple[dict, float, float]:
    """POST every webhook from CLIENTS threads; returns {event id: send time (epoch)}, the seconds from
    the first POST to the last answer, and the epoch of the first POST."""
    return post_many(
        port,
        f"/webhooks/stripe/{tenant_slug}/",
        [(event_id, body, {"Stripe-Signature": signature}) for event_id, body, signature in requests],
        label="webhooks posted",
    )


def post_many(
    port: int, path: str, requests: list[tuple[str, bytes, dict]], *, label: str, accepted=(200,)
) -> tuple[dict, float, float]:
    """POST each (id, JSON body, headers) to ``path`` from CLIENTS threads (see ``post_all``)."""
    import http.client

    work: queue.Queue = queue.Queue()
    for item in requests:
        work.put(item)
    sent: dict[str, float] = {}
    errors: list[str] = []
    done = [0]
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            try:
                event_id, body, headers = work.get_nowait()
            except queue.Empty:
                break
            at = time.time()
            for attempt in range(3):
                try:
                    conn.request(
                        "POST",
                        path,
                        body=body,
                        headers={"Content-Type": "application/json", **headers},
                    )
                    response = conn.getresponse()
                    response.read()
                    break
                except (ConnectionError, http.client.HTTPException, OSError):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    if attempt == 2:
                        raise
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            with lock:
                sent[event_id] = at
                done[0] += 1
                if response.status not in accepted:
                    errors.append(f"{event_id}: {response.status}")
        conn.close()
        with lock:
            finished.append(time.perf_counter())

    finished: list[float] = []
    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    first = time.time()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        time.sleep(0.25)
        progress(label, done[0], len(requests))
    for thread in threads:
        thread.join()
    seconds = max(finished) - started  # the last answer, not the progress loop's next tick
    progress(label, len(requests), len(requests), f"in {seconds:.1f}s")
    if errors:
        raise SystemExit(f"{len(errors)} POSTs were refused, e.g. {errors[:3]}")
    return sent, seconds, first


_last_progress = [0.0, ""]


def progress(label: str, done: int, total: int, extra: str = "") -> None:
    """A progress line every 2 seconds (and the last one), readable in a terminal and in a log."""
    now = time.monotonic()
    if done < total and now - _last_progress[0] < 2 and _last_progress[1] == label:
        return
    _last_progress[:] = [now, label]
    width = 30
    filled = int(width * done / total) if total else width
    print(f"  {label:<16} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {extra}", flush=True)


def pipeline_state(tenant, queue_name: str, redis_client) -> dict:
    from referrals.models import ConversionEvent, ConversionEventStatus
    from rewards.models import RewardEvaluation, StripeWebhookEvent, WebhookEventStatus

    webhooks = StripeWebhookEvent.objects.filter(tenant=tenant)
    events = ConversionEvent.objects.filter(tenant=tenant)
    payments = events.filter(kind="payment")
    return {
        "stored": webhooks.count(),
        "webhooks_open": webhooks.filter(status=WebhookEventStatus.RECEIVED).count(),
        "events_open": events.filter(status=ConversionEventStatus.RECEIVED).count(),
        "evaluated": RewardEvaluation.objects.filter(tenant=tenant, conversion_event__kind="payment").count(),
        "payments_settleable": payments.filter(status=ConversionEventStatus.PROCESSED).count(),
        "payments": payments.count(),
        "queued": redis_client.llen(queue_name) + unacked(redis_client, queue_name),
    }


def unacked(redis_client, queue_name: str) -> int:
    """Messages of this queue taken by a worker and not yet acknowledged (kombu's ``unacked`` hash is shared
    by every queue of the Redis database: a killed worker's leftovers of another queue do not count)."""
    count = 0
    for raw in redis_client.hvals("unacked"):
        try:
            _message, _exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        count += routing_key == queue_name
    return count


def door_only(*, port: int, env: dict, redis_client) -> float:
    """The intake alone: the same webhooks POSTed while no worker runs (verified, stored raw, acknowledged,
    their tasks left in the queue, which is then dropped: nobody processes them). Webhooks per second."""
    workspace = build_workspace("door")
    events = webhooks_for(workspace)
    requests = [(event["id"], *signed(event, workspace["secret"])) for event in events]
    warm = min(len(requests) // 4, 4 * CLIENTS)
    log(f"door only: {warm} webhooks to warm the web workers up, then {len(requests) - warm} timed, no worker running")
    post_all(port, workspace["tenant"].slug, requests[:warm])
    _sent, seconds, _first = post_all(port, workspace["tenant"].slug, requests[warm:])
    requests = requests[warm:]
    redis_client.delete(env["BENCH_CELERY_QUEUE"])
    return len(requests) / seconds


def door_wrk(*, port: int, env: dict, redis_client, server_pid: int | None = None) -> dict | None:
    """The intake measured by wrk (bench/webhooks.lua): DOOR_WRK_SECONDS of POSTs of distinct pre-signed
    invoice.paid webhooks over 16 connections, no worker running — the server's own ceiling, without the
    Python client of the runs sharing the two cores' time. None when wrk is unavailable."""
    from bench.bench_redirect import ensure_wrk
    from rewards.models import StripeWebhookEvent

    try:
        wrk = ensure_wrk()
    except (SystemExit, OSError, subprocess.CalledProcessError) as error:
        log(f"door with wrk: skipped ({error})")
        return None
    workspace = build_workspace("wrk")
    tenant, now = workspace["tenant"], int(time.time())
    lines = []
    for i in range(DOOR_WRK_EVENTS):
        invoice = {
            "id": f"in_wrk_{i}",
            "object": "invoice",
            "customer": f"cus_wrk_{i}",
            "customer_email": f"buyer{i}@wrk.example",
            "amount_paid": 4_900,
            "currency": "usd",
            "charge": f"ch_wrk_{i}",
            "status_transitions": {"paid_at": now},
            "metadata": {},
        }
        body, signature = signed(_event(f"evt_wrk_{i}", "invoice.paid", invoice, now), workspace["secret"])
        lines.append(f"{signature}\t{body.decode()}")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(lines) + "\n")
    log(f"door with wrk: {DOOR_WRK_SECONDS}s of distinct pre-signed webhooks, 16 connections, no worker running")
    meter = CpuMeter({"database": database_server_pid(), "web": server_pid})
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    meter.start()
    try:
        result = subprocess.run(
            [
                wrk,
                "-t2",
                "-c16",
                f"-d{DOOR_WRK_SECONDS}s",
                "--timeout",
                "5s",
                "-s",
                str(ROOT / "bench" / "webhooks.lua"),
                f"http://127.0.0.1:{port}",
            ],
            env=dict(env, BENCH_WEBHOOKS=handle.name, BENCH_PATH=f"/webhooks/stripe/{tenant.slug}/", BENCH_THREADS="2"),
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        os.unlink(handle.name)
        redis_client.delete(env["BENCH_CELERY_QUEUE"])
    used = meter.stop()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used["wrk"] = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    match = re.search(r"^RESULT (\{.*\})$", result.stdout, re.MULTILINE)
    if not match:
        log(f"door with wrk: no result ({result.stdout[-300:]} {result.stderr[-300:]})")
        return None
    figures = json.loads(match.group(1))
    figures["rate"] = figures["requests"] / (figures["duration_us"] / 1e6)
    figures["stored"] = StripeWebhookEvent.objects.filter(tenant=tenant).count()
    # CPU per request answered (ms): gunicorn, the database server, and wrk itself (the load generator)
    figures["cpu_ms"] = {
        part: None if value is None else value * 1000 / max(figures["requests"], 1) for part, value in used.items()
    }
    return figures


def wait_until_settled(state, total: int, what: str) -> None:
    """Poll ``state()`` — (finished, how many settled, detail) — every half second, with a progress line,
    until it says finished three times in a row (a task may queue more in between), or TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    quiet = 0
    while True:
        finished, done, detail = state()
        progress("settled", done, total, detail)
        quiet = quiet + 1 if finished else 0
        if quiet >= 3:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not finish within {TIMEOUT}s: {detail}")
        time.sleep(0.5)


def run_once(
    *, concurrency: int, port: int, env: dict, redis_client, server_pid: int | None = None, history: int = HISTORY
) -> dict:

    from referrals.models import Attribution, ConversionEvent
    from rewards.ledger import unbalanced_transactions
    from rewards.models import (
        LedgerTransaction,
        ParticipantMessage,
        Reward,
        RewardEvaluation,
    )

    log(f"--- {concurrency} worker process(es): building the workspace ({N} invoices, history {history:,})")
    workspace = build_workspace(f"{concurrency}w{'h' if history else ''}", history)
    tenant = workspace["tenant"]
    events = webhooks_for(workspace)
    requests = [(event["id"], *signed(event, workspace["secret"])) for event in events]
    invoices = [event for event in events if event["type"] == "invoice.paid"]
    refunded = {event["data"]["object"]["invoice"] for event in events if event["type"] == "charge.refunded"}
    counter = env["BENCH_QUERY_COUNTER"]
    redis_client.delete(counter, f"{counter}:by-task", f"{counter}:runs", f"{counter}:sql")
    worker = start_workers(env, concurrency)
    meter = CpuMeter({"worker": worker.pid, "database": database_server_pid(), "web": server_pid})
    try:
        wait_for_workers(worker, concurrency)
        log(f"posting {len(requests)} webhooks ({len(invoices)} invoice.paid, {len(refunded)} charge.refunded)")
        meter.start()
        sent, door_seconds, first_post = post_all(port, tenant.slug, requests)

        def settled() -> tuple[bool, int, str]:
            state = pipeline_state(tenant, env["BENCH_CELERY_QUEUE"], redis_client)
            finished = (
                state["stored"] == len(requests)
                and state["webhooks_open"] == 0
                and state["events_open"] == 0
                and state["evaluated"] >= state["payments_settleable"]
                and state["queued"] == 0
            )
            return finished, state["evaluated"], f"(events open {state['events_open']}, queued {state['queued']})"

        wait_until_settled(settled, len(invoices), "the pipeline")
        cpu = meter.stop()
        queries = int(redis_client.get(counter) or 0)
        # Read before the renewals are posted: when the last piece of work was written (the end of the run),
        # webhook → first ledger entry, and what the run wrote.
        written = (
            Reward.objects.filter(tenant=tenant).count(),
            LedgerTransaction.objects.filter(tenant=tenant).count(),
        )
        end, latencies = end_and_latencies(tenant, [event["id"] for event in invoices], sent, every_webhook=True)
        renewal = renewal_run(
            workspace=workspace, port=port, env=env, redis_client=redis_client, meter=meter, before=len(requests)
        )
    finally:
        stop(worker)
    by_task = {k.decode(): int(v) for k, v in renewal.pop("by_task").items()}
    runs = {k.decode(): int(v) for k, v in renewal.pop("runs").items()}
    sql = {k.decode(): float(v) for k, v in renewal.pop("sql").items()}
    for shape in sorted(sql, key=sql.get, reverse=True)[:15]:
        log(f"  {sql[shape]:7.2f}s  {shape}")
    for name in sorted(by_task, key=by_task.get, reverse=True):
        log(
            f"  {name:40s} {runs.get(name, 0):6d} runs {by_task[name]:8d} queries "
            f"({by_task[name] / max(runs.get(name, 1), 1):.1f}/run, {by_task[name] / max(len(events), 1):.1f}/webhook)"
        )

    # Everything is there: each invoice attributed and evaluated, rewards in a balanced ledger,
    # refunds applied.
    first_month = [event["id"] for event in invoices]
    payments = ConversionEvent.objects.filter(tenant=tenant, kind="payment", external_event_id__in=first_month)
    failed = list(payments.exclude(status="processed").values_list("external_event_id", "status", "error")[:5])
    unattributed = payments.exclude(pk__in=Attribution.objects.filter(tenant=tenant).values("conversion_event"))
    evaluations = RewardEvaluation.objects.filter(
        tenant=tenant, conversion_event__kind="payment", conversion_event__external_event_id__in=first_month
    )
    bad_evaluations = list(evaluations.exclude(status="done").values_list("status", "notes")[:3])
    unbalanced = unbalanced_transactions(tenant)
    rewards = Reward.objects.filter(tenant=tenant)
    not_reduced = [
        invoice_id
        for invoice_id in refunded
        if rewards.filter(conversion_event__raw__data__object__id=invoice_id, reversed_minor=0, amount_minor__gt=0)
        .exclude(status="reversed")
        .exists()
    ]
    problems = []
    if failed:
        problems.append(f"payments not processed: {failed}")
    if unattributed.exists():
        problems.append(f"{unattributed.count()} payments without attribution")
    if evaluations.count() != len(invoices) or bad_evaluations:
        problems.append(f"{evaluations.count()}/{len(invoices)} evaluations, not done: {bad_evaluations}")
    if unbalanced:
        problems.append(f"unbalanced ledger transactions: {unbalanced[:3]}")
    if not_reduced:
        problems.append(f"refunds not applied to {len(not_reduced)} invoices' rewards")
    reward_count, transactions = written
    # What is owed in the end, per program and side: the same in every run, whatever the number of workers
    # and the order they worked in (corrections may leave reversed rows behind; only what is owed counts).
    owed: dict[str, int] = {}
    for slug, side, amount, reversed_minor, clawed_back in rewards.filter(
        status__in=["pending", "approved", "paid"]
    ).values_list("program__slug", "beneficiary_side", "amount_minor", "reversed_minor", "clawed_back_minor"):
        owed[f"{slug}/{side}"] = owed.get(f"{slug}/{side}", 0) + amount - reversed_minor - clawed_back
    result = {
        "workers": concurrency,
        "webhooks": len(requests),
        "conversions": len(invoices),
        "door_rate": len(requests) / door_seconds,
        "seconds": end - first_post,
        "rate": len(invoices) / (end - first_post),
        "queries": queries / len(invoices),
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else float("nan"),
        "rewards": reward_count,
        "transactions": transactions,
        "messages": ParticipantMessage.objects.filter(tenant=tenant).count(),
        # CPU milliseconds per conversion (None: that process could not be read)
        "cpu_ms": {part: None if used is None else used * 1000 / len(invoices) for part, used in cpu.items()},
        "owed": owed,
        "problems": problems + renewal.pop("problems"),
        "renewal": renewal,
    }
    log(
        f"{concurrency} worker(s): {result['door_rate']:.0f} webhooks/s at the door, {result['rate']:.1f} "
        f"conversions/s end to end, {result['queries']:.1f} queries/conversion, p50 {result['p50']:.0f} ms, "
        f"p99 {result['p99']:.0f} ms; {result['rewards']} rewards, {transactions} ledger transactions, "
        f"{result['messages']} messages" + (f"  PROBLEMS: {problems}" if problems else "")
    )
    log(
        f"{concurrency} worker(s), renewals: {renewal['rate']:.1f} conversions/s end to end, "
        f"{renewal['queries']:.1f} queries/conversion, p50 {renewal['p50']:.0f} ms, p99 {renewal['p99']:.0f} ms"
    )
    return result


def end_and_latencies(tenant, ids: list[str], sent: dict, *, every_webhook: bool) -> tuple[float, list[float]]:
    """When the last piece of work of the invoices ``ids`` was written (their webhooks' handling — every webhook
    of the workspace with ``every_webhook``, refunds too —, evaluations and ledger transactions), and each
    invoice's time in ms from its POST (``sent``) to its first ledger transaction, sorted."""
    from django.db.models import Max, Min

    from rewards.models import LedgerTransaction, RewardEvaluation, StripeWebhookEvent

    webhooks = StripeWebhookEvent.objects.filter(tenant=tenant)
    if not every_webhook:
        webhooks = webhooks.filter(stripe_event_id__in=ids)
    ledger = LedgerTransaction.objects.filter(tenant=tenant, reward__conversion_event__external_event_id__in=ids)
    ends = [
        webhooks.aggregate(at=Max("processed_at"))["at"],
        RewardEvaluation.objects.filter(tenant=tenant, conversion_event__external_event_id__in=ids).aggregate(
            at=Max("evaluated_at")
        )["at"],
        ledger.aggregate(at=Max("posted_at"))["at"],
    ]
    first_entry = dict(
        ledger.values_list("reward__conversion_event__external_event_id")
        .annotate(at=Min("posted_at"))
        .values_list("reward__conversion_event__external_event_id", "at")
    )
    latencies = sorted((first_entry[i].timestamp() - sent[i]) * 1000 for i in ids if i in first_entry)
    return max(at for at in ends if at is not None).timestamp(), latencies


def renewal_run(*, workspace: dict, port: int, env: dict, redis_client, meter: CpuMeter, before: int) -> dict:
    """The next month's billing run of the same customers, posted once the first has settled (the same workers):
    conversions per second, statements and CPU per conversion, p50/p99 webhook → first ledger entry. The
    statement counters of the first run are handed back (``by_task``, ``runs``, ``sql``) before they are reset."""

    from referrals.models import Attribution, ConversionEvent
    from rewards.models import RewardEvaluation

    tenant = workspace["tenant"]
    counter = env["BENCH_QUERY_COUNTER"]
    first = {
        "by_task": redis_client.hgetall(f"{counter}:by-task"),
        "runs": redis_client.hgetall(f"{counter}:runs"),
        "sql": redis_client.hgetall(f"{counter}:sql"),
    }
    redis_client.delete(counter, f"{counter}:by-task", f"{counter}:runs", f"{counter}:sql")
    events = renewals_for(workspace)
    requests = [(event["id"], *signed(event, workspace["secret"])) for event in events]
    log(f"renewals: posting the next month's {len(requests)} invoice.paid of the same customers")
    meter.start()
    sent, _door_seconds, first_post = post_all(port, tenant.slug, requests)
    ids = [event["id"] for event in events]

    def settled() -> tuple[bool, int, str]:
        state = pipeline_state(tenant, env["BENCH_CELERY_QUEUE"], redis_client)
        evaluated = RewardEvaluation.objects.filter(tenant=tenant, conversion_event__external_event_id__in=ids).count()
        finished = (
            state["stored"] == before + len(requests)
            and state["webhooks_open"] == 0
            and state["events_open"] == 0
            and state["evaluated"] >= state["payments_settleable"]
            and state["queued"] == 0
        )
        return finished, evaluated, f"(events open {state['events_open']}, queued {state['queued']})"

    wait_until_settled(settled, len(requests), "the renewals")
    cpu = meter.stop()
    queries = int(redis_client.get(counter) or 0)
    runs = redis_client.hgetall(f"{counter}:runs")
    for name, count in sorted(redis_client.hgetall(f"{counter}:by-task").items(), key=lambda kv: -int(kv[1])):
        log(f"  renewals: {name.decode():40s} {int(runs.get(name, 0)):6d} runs {int(count):8d} queries")
    end, latencies = end_and_latencies(tenant, ids, sent, every_webhook=False)
    payments = ConversionEvent.objects.filter(tenant=tenant, external_event_id__in=ids)
    problems = []
    if payments.exclude(status="processed").exists() or payments.count() != len(ids):
        problems.append(
            f"renewals not processed: {list(payments.exclude(status='processed').values_list('status')[:3])}"
        )
    if payments.exclude(pk__in=Attribution.objects.filter(tenant=tenant).values("conversion_event")).exists():
        problems.append("renewals without attribution")
    evaluated = RewardEvaluation.objects.filter(tenant=tenant, conversion_event__external_event_id__in=ids)
    if evaluated.count() != len(ids) or evaluated.exclude(status="done").exists():
        problems.append(f"{evaluated.count()}/{len(ids)} renewal evaluations (or not done)")
    return {
        **first,
        "conversions": len(ids),
        "rate": len(ids) / (end - first_post),
        "queries": queries / len(ids),
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else float("nan"),
        "cpu_ms": {part: None if used is None else used * 1000 / len(ids) for part, used in cpu.items()},
        "problems": problems,
    }


def api_payloads(workspace: dict) -> list[dict]:
    """The run's payments as the conversions API receives them (POST /api/v1/conversions): each invoice.paid
    of ``webhooks_for`` with its customer, amount and referral code or visitor id (no refunds)."""
    payloads = []
    for event in webhooks_for(workspace):
        if event["type"] != "invoice.paid":
            continue
        invoice = event["data"]["object"]
        payload = {
            "external_event_id": event["id"],
            "kind": "payment",
            "amount_minor": invoice["amount_paid"],
            "currency": "USD",
            "occurred_at": datetime.fromtimestamp(invoice["status_transitions"]["paid_at"], tz=UTC).isoformat(),
            "customer_external_id": invoice["customer"],
            "email": invoice["customer_email"],
        }
        payload.update({key: value for key, value in invoice["metadata"].items() if value})
        payloads.append(payload)
    return payloads


def run_api(*, batch: int, port: int, env: dict, redis_client) -> dict:
    """The conversions API fed the same payments, 2 worker processes, their tasks processing events one
    at a time (``batch`` 1, as before issue 15's fifth round) or in batches (CONVERSION_TASK_BATCH)."""
    from django.db.models import Max

    from referral_platform.tenancy.actors import system_actor
    from referral_platform.tenancy.services import api_key_create
    from referrals.models import Attribution, ConversionEvent
    from rewards.ledger import unbalanced_transactions
    from rewards.models import LedgerTransaction, Reward, RewardEvaluation

    log(f"--- conversions API, task batch {batch}: building the workspace")
    workspace = build_workspace(f"api{batch}")
    tenant = workspace["tenant"]
    raw_key = api_key_create(tenant=tenant, name="bench", actor=system_actor(tenant)).raw_key
    headers = {"Authorization": f"Bearer {raw_key}"}
    payloads = api_payloads(workspace)
    requests = [(payload["external_event_id"], json.dumps(payload).encode(), headers) for payload in payloads]
    counter = env["BENCH_QUERY_COUNTER"]
    redis_client.delete(counter, f"{counter}:by-task", f"{counter}:runs", f"{counter}:sql")
    worker = start_workers(dict(env, CONVERSION_TASK_BATCH=str(batch)), API_WORKERS)
    events = ConversionEvent.objects.filter(tenant=tenant)
    try:
        wait_for_workers(worker, API_WORKERS)
        _sent, door_seconds, first_post = post_many(
            port, "/api/v1/conversions", requests, label="conversions posted", accepted=(201,)
        )

        def settled() -> tuple[bool, int, str]:
            open_events = events.filter(status="received").count()
            evaluated = RewardEvaluation.objects.filter(tenant=tenant).count()
            queued = redis_client.llen(env["BENCH_CELERY_QUEUE"]) + unacked(redis_client, env["BENCH_CELERY_QUEUE"])
            finished = open_events == 0 and evaluated >= events.filter(status="processed").count() and queued == 0
            return finished, evaluated, f"(events open {open_events}, queued {queued})"

        wait_until_settled(settled, len(payloads), "the conversions API run")
    finally:
        stop(worker)
    ends = [
        events.aggregate(at=Max("processed_at"))["at"],
        RewardEvaluation.objects.filter(tenant=tenant).aggregate(at=Max("evaluated_at"))["at"],
        LedgerTransaction.objects.filter(tenant=tenant).aggregate(at=Max("posted_at"))["at"],
    ]
    seconds = max(at for at in ends if at is not None).timestamp() - first_post
    runs = {k.decode(): int(v) for k, v in redis_client.hgetall(f"{counter}:runs").items()}
    problems = []
    not_processed = list(events.exclude(status="processed").values_list("external_event_id", "status", "error")[:3])
    if not_processed:
        problems.append(f"conversions not processed: {not_processed}")
    if events.exclude(pk__in=Attribution.objects.filter(tenant=tenant).values("conversion_event")).exists():
        problems.append("conversions without attribution")
    if RewardEvaluation.objects.filter(tenant=tenant).exclude(status="done").exists():
        problems.append("evaluations not done")
    if unbalanced_transactions(tenant):
        problems.append("unbalanced ledger transactions")
    owed: dict[str, int] = {}
    for slug, side, amount in Reward.objects.filter(
        tenant=tenant, status__in=["pending", "approved", "paid"]
    ).values_list("program__slug", "beneficiary_side", "amount_minor"):
        owed[f"{slug}/{side}"] = owed.get(f"{slug}/{side}", 0) + amount
    result = {
        "batch": batch,
        "conversions": len(payloads),
        "door_rate": len(payloads) / door_seconds,
        "rate": len(payloads) / seconds,
        "queries": int(redis_client.get(counter) or 0) / len(payloads),
        "tasks": sum(runs.values()),
        "owed": owed,
        "problems": problems,
    }
    log(
        f"conversions API, batch {batch}: {result['door_rate']:.0f} POSTs/s, {result['rate']:.1f} conversions/s end "
        f"to end, {result['queries']:.1f} queries/conversion, {result['tasks']} tasks run"
        + (f"  PROBLEMS: {problems}" if problems else "")
    )
    return result


def baseline(transactions: int) -> float:
    """Seconds to insert ``transactions`` balanced two-line ledger transactions directly (raw INSERTs,
    one commit each, the ledger's triggers active)."""
    from django.db import connection, transaction

    from programs.models import Participant, Program
    from referral_platform.tenancy.models import Tenant
    from rewards.ledger import expense_account, participant_account
    from rewards.models import AccountKind

    tenant = Tenant.objects.create(slug=f"pipe-baseline-{secrets.token_hex(3)}", name="Baseline")
    program = Program.objects.create(
        tenant=tenant, name="Baseline", slug="baseline", landing_url="https://bench.example/", currency="USD"
    )
    person = Participant.objects.create(tenant=tenant, program=program, external_id="p", name="P", email="p@b.example")
    expense = expense_account(program, "USD")
    pending = participant_account(person, AccountKind.PENDING, "USD")
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for index in range(transactions):
            with transaction.atomic():
                cursor.execute(
                    "INSERT INTO rewards_ledgertransaction (tenant_id, idempotency_key, kind, memo, "
                    "lines_fingerprint, posted_at) VALUES (%s, %s, 'adjustment', '', '', now()) RETURNING id",
                    [tenant.pk, f"baseline-{index}"],
                )
                tx_id = cursor.fetchone()[0]
                cursor.execute(
                    "INSERT INTO rewards_ledgerentry (tenant_id, transaction_id, account_id, amount_minor, posted_at) "
                    "VALUES (%s, %s, %s, 100, now()), (%s, %s, %s, -100, now())",
                    [tenant.pk, tx_id, expense.pk, tenant.pk, tx_id, pending.pk],
                )
            if (index + 1) % 200 == 0 or index + 1 == transactions:
                progress("baseline INSERTs", index + 1, transactions)
    return time.perf_counter() - started


def print_cpu(results: list[dict]) -> None:
    """CPU per conversion by process, and the conversions per second that CPU allows on this machine's cores
    if nothing else ran (the ceiling no amount of workers passes)."""
    cores = os.cpu_count() or 1
    print(f"  CPU per conversion (ms; first POST to settled, all processes of each part, {cores} CPUs):")
    print(f"  {'workers':>7} {'worker':>8} {'database':>9} {'web':>6} {'total':>7} {'ceiling conv/s':>15}")
    for r in results:
        cpu = r["cpu_ms"]
        known = [value for value in cpu.values() if value is not None]
        total = sum(known)
        shown = [f"{cpu[part]:.1f}" if cpu[part] is not None else "n/a" for part in CpuMeter.PARTS]
        ceiling = f"{cores * 1000 / total:.0f}" if total and len(known) == len(cpu) else "n/a"
        print(f"  {r['workers']:>7} {shown[0]:>8} {shown[1]:>9} {shown[2]:>6} {total:>7.1f} {ceiling:>15}")


def verdict(name: str, value: float) -> str:
    target, op = TARGETS[name]
    met = value >= target if op == ">=" else value <= target
    return f"target {op} {target:g}: {'met' if met else 'MISSED'}"


def main() -> int:
    """Runs in a child process: its environment (bench settings, a generated SECRET_KEY, its own
    queue) must not leak into the other benchmarks of run_all."""
    if "--in-process" in sys.argv:
        return run()
    return subprocess.call([sys.executable, str(Path(__file__).resolve()), "--in-process"], cwd=ROOT)


def run() -> int:
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    # SIGTERM (e.g. `timeout`) unwinds like ^C, so gunicorn, the workers and the scratch database go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    configure_environment()
    import django

    django.setup()
    import redis
    from django.db import connection

    from referral_platform.celery import app

    app.conf.task_always_eager = True  # the fixtures' own tasks run here, never on the bench queue
    name = f"bench_pipeline_{os.getpid()}"
    connection.settings_dict.setdefault("TEST", {})["NAME"] = name
    log(f"creating a scratch database ({name})")
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    env = dict(os.environ, DATABASE_URL=scratch_database_url(name))
    redis_client = redis.Redis.from_url(os.environ["REDIS_URL"])
    server = None
    results = []
    try:
        port = free_port()
        server = start_gunicorn(env, port)
        door_alone = door_only(port=port, env=env, redis_client=redis_client)
        door_bench = (
            door_wrk(port=port, env=env, redis_client=redis_client, server_pid=server.pid) if DOOR_WRK_SECONDS else None
        )
        for concurrency in WORKER_COUNTS:
            results.append(
                run_once(concurrency=concurrency, port=port, env=env, redis_client=redis_client, server_pid=server.pid)
            )
        aged = None
        if HISTORY_RUN and not HISTORY:
            aged = run_once(
                concurrency=2, port=port, env=env, redis_client=redis_client, server_pid=server.pid, history=HISTORY_RUN
            )
        api_results = [
            run_api(batch=batch, port=port, env=env, redis_client=redis_client) for batch in API_TASK_BATCHES
        ]
        stop(server)
        server = None
        transactions = max(result["transactions"] for result in results)
        log(f"baseline: {transactions} balanced ledger transactions inserted directly")
        baseline_seconds = baseline(transactions)
    finally:
        stop(server)
        counter = env["BENCH_QUERY_COUNTER"]
        redis_client.delete(
            env["BENCH_CELERY_QUEUE"], counter, f"{counter}:by-task", f"{counter}:runs", f"{counter}:sql"
        )
        connection.creation.destroy_test_db(old_name, verbosity=0)

    one = next((r for r in results if r["workers"] == 1), results[0])
    print()
    print(
        f"Money pipeline: {N} invoice.paid webhooks per run (+ refunds), "
        f"{f'in a workspace with a history of {HISTORY:,} referrals, ' if HISTORY else ''}"
        f"gunicorn {WEB_WORKERS} {worker_words(WEB_THREADS)}, {CLIENTS} concurrent POSTs, {os.cpu_count()} CPUs"
    )
    print(
        f"  {'workers':>7} {'webhooks/s':>11} {'conv/s':>8} {'scaling':>8} {'queries/conv':>13} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'rewards':>8} {'ledger tx':>10}"
    )
    for r in results:
        print(
            f"  {r['workers']:>7} {r['door_rate']:>11.0f} {r['rate']:>8.1f} {r['rate'] / one['rate']:>7.2f}x "
            f"{r['queries']:>13.1f} {r['p50']:>8.0f} {r['p99']:>8.0f} {r['rewards']:>8} {r['transactions']:>10}"
        )
    base_rate = transactions / baseline_seconds
    print(
        f"  baseline: {transactions} ledger transactions inserted directly in {baseline_seconds:.2f}s = "
        f"{base_rate:.0f} tx/s"
    )
    for r in results:
        per_tx = r["transactions"] / r["seconds"]
        print(
            f"  {r['workers']} worker(s): {per_tx:.0f} ledger tx/s end to end = {per_tx / base_rate:.2f}x the baseline"
        )
    print_cpu(results)
    print(
        f"  The next month's billing run of the same {results[0]['renewal']['conversions']} customers (the warm path: "
        "each referral found, converted and established):"
    )
    print(
        f"  {'workers':>7} {'conv/s':>8} {'queries/conv':>13} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/conv':>12}"
        f"  (worker / database / web)"
    )
    for r in results:
        renewal = r["renewal"]
        cpu = renewal["cpu_ms"]
        known = [value for value in cpu.values() if value is not None]
        parts = " / ".join(f"{cpu[part]:.1f}" if cpu.get(part) is not None else "n/a" for part in CpuMeter.PARTS)
        print(
            f"  {r['workers']:>7} {renewal['rate']:>8.1f} {renewal['queries']:>13.1f} {renewal['p50']:>8.0f} "
            f"{renewal['p99']:>8.0f} {sum(known):>12.1f}  ({parts})"
        )
    two = next((r for r in results if r["workers"] == 2), None)
    if aged is not None and two is not None:
        print(
            f"  The same billing run in a workspace with a history of {HISTORY_RUN:,} referrals (half as many "
            "unattributed payments, charges and identity links; statistics gathered), 2 workers:"
        )
        print(f"  {'workspace':>9} {'conv/s':>8} {'CPU ms/conv':>12} {'queries/conv':>13} {'renewals conv/s':>16}")
        for label, r in (("new", two), ("history", aged)):
            cpu = sum(value for value in r["cpu_ms"].values() if value is not None)
            print(f"  {label:>9} {r['rate']:>8.1f} {cpu:>12.1f} {r['queries']:>13.1f} {r['renewal']['rate']:>16.1f}")
        print(
            f"  history/new conv/s: {aged['rate'] / two['rate']:.2f}x (first month), "
            f"{aged['renewal']['rate'] / two['renewal']['rate']:.2f}x (renewals)"
        )
    print(f"  door alone (no worker running): {door_alone:.0f} webhooks/s")
    door = max([door_alone, *(r["door_rate"] for r in results)])
    if door_bench:
        errors = sum(door_bench[k] for k in ("status_errors", "connect_errors", "read_errors", "timeouts"))
        print(
            f"  door with wrk (pre-signed, 16 connections, {DOOR_WRK_SECONDS}s): {door_bench['rate']:.0f} webhooks/s, "
            f"p50 {door_bench['p50_us'] / 1000:.1f} ms, p99 {door_bench['p99_us'] / 1000:.1f} ms, "
            f"{door_bench['stored']} stored, {errors} errors"
        )
        cpu = door_bench["cpu_ms"]
        shown = ", ".join(f"{part} {'n/a' if ms is None else f'{ms:.2f} ms'}" for part, ms in cpu.items())
        if all(value is not None for value in cpu.values()):
            total = sum(cpu.values())
            cores = os.cpu_count() or 1
            shown += f" = {total:.2f} ms; ceiling {cores * 1000 / total:.0f} webhooks/s on {cores} CPUs"
        print(f"    CPU per webhook answered: {shown}")
        door = max(door, door_bench["rate"])
    print(f"  {'webhooks/s':20s} {door:8.0f}   {verdict('webhooks/s', door)}")
    two = next((r for r in results if r["workers"] == 2), None)
    if two:
        print(
            f"  {'conversions/s @2':20s} {two['rate']:8.1f}   {verdict('conversions/s @2', two['rate'])} (first month)"
        )
        renewal_rate = two["renewal"]["rate"]
        print(
            f"  {'conversions/s @2':20s} {renewal_rate:8.1f}   {verdict('conversions/s @2', renewal_rate)} (renewals)"
        )
    fewest = min(r["queries"] for r in results)
    print(f"  {'queries/conversion':20s} {fewest:8.1f}   {verdict('queries/conversion', fewest)} (first month)")
    warm = min(r["renewal"]["queries"] for r in results)
    print(f"  {'queries/conversion':20s} {warm:8.1f}   {verdict('queries/conversion', warm)} (renewals: the warm path)")
    if api_results:
        first = api_results[0]
        print(
            f"Conversions API: the same {first['conversions']} payments POSTed to /api/v1/conversions, "
            f"{API_WORKERS} worker processes, tasks processing one event or a batch (CONVERSION_TASK_BATCH)"
        )
        print(
            f"  {'task batch':>10} {'POSTs/s':>8} {'conv/s':>8} {'vs batch ' + str(first['batch']):>12} "
            f"{'queries/conv':>13} {'tasks run':>10}"
        )
        for r in api_results:
            print(
                f"  {r['batch']:>10} {r['door_rate']:>8.0f} {r['rate']:>8.1f} {r['rate'] / first['rate']:>11.2f}x "
                f"{r['queries']:>13.1f} {r['tasks']:>10}"
            )
    print(f"Machine load (1-min average): {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at the end")
    print(f"(bench_pipeline took {time.monotonic() - started:.0f}s)")
    problems = [p for r in results for p in r["problems"]]
    for r in results[1:]:
        if r["owed"] != results[0]["owed"]:
            problems.append(
                f"what is owed differs between {results[0]['workers']} and {r['workers']} worker(s): "
                f"{results[0]['owed']} != {r['owed']}"
            )
    print(f"  owed in every run (minor units, live rewards net of reductions): {results[0]['owed']}")
    problems += [p for r in api_results for p in r["problems"]]
    for r in api_results[1:]:
        if r["owed"] != api_results[0]["owed"]:
            problems.append(f"conversions API: what is owed differs with task batch {r['batch']}")
    for problem in problems:
        print(f"  PROBLEM: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
