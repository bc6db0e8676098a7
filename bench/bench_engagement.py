"""Invitation throughput (NPS responses → invitation e-mails handed to SMTP per second) and outbound webhook
delivery throughput, each beside a baseline measured in the same run.

- invitations: N promoter responses recorded through ``moment_record`` (stored raw, processed by policy,
  enrolled, invitation logged and sent: Celery eager, as in tests) to a real SMTP server (aiosmtpd on
  loopback). Baseline: N bare ``send_mail`` calls to the same server (the SMTP floor).
- webhooks: M events through ``webhook_emit`` (message + delivery rows, signed POST, attempt logged) to a
  local HTTP receiver. Baseline: M bare ``requests.post`` of a same-sized body to the same receiver.

Runs in a throw-away database (created with migrations, dropped at the end).

    BENCH_INVITATIONS=100 BENCH_WEBHOOKS=200 python bench/bench_engagement.py
"""

from __future__ import annotations

import http.server
import os
import socket
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "referral_platform.settings.test"

INVITATIONS = int(os.environ.get("BENCH_INVITATIONS", "100"))
WEBHOOKS = int(os.environ.get("BENCH_WEBHOOKS", "200"))


class _Inbox:
    def __init__(self):
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _receiver():
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/hooks"


def main() -> None:
    import django

    django.setup()
    from aiosmtpd.controller import Controller
    from django.conf import settings
    from django.db import connection

    connection.settings_dict["TEST"]["NAME"] = f"bench_engagement_{os.getpid()}"
    print(f"[bench_engagement] creating a scratch database ({connection.settings_dict['TEST']['NAME']})", flush=True)
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    inbox, port = _Inbox(), _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    names = ("EMAIL_BACKEND", "EMAIL_HOST", "EMAIL_PORT", "EMAIL_USE_TLS")
    saved = {name: getattr(settings, name) for name in names}  # make bench runs the next benchmarks in-process
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_USE_TLS = "127.0.0.1", port, False
    receiver, url = _receiver()
    try:
        invitations(inbox)
        webhooks(url)
    finally:
        for name, value in saved.items():
            setattr(settings, name, value)
        receiver.shutdown()
        controller.stop()
        connection.creation.destroy_test_db(old_name, verbosity=0)


def _line(label: str, count: int, seconds: float) -> float:
    rate = count / seconds if seconds else float("inf")
    print(f"  {label:<44} {count:>5} in {seconds:6.2f} s = {rate:8.1f}/s", flush=True)
    return rate


def invitations(inbox) -> None:
    from django.core.mail import send_mail
    from django.utils import timezone

    from engagement.models import Ask, AskStatus, TriggerPolicy
    from engagement.services import moment_record
    from programs.models import Program, ProgramVersion
    from programs.rules import example_rules
    from referral_platform.tenancy.models import Tenant

    tenant = Tenant.objects.create(slug="bench-eng", name="Bench", allowed_landing_domains=["bench.example"])
    program = Program.objects.create(
        tenant=tenant, name="Bench", slug="bench", status="active", landing_url="https://bench.example/signup"
    )
    ProgramVersion.objects.create(tenant=tenant, program=program, number=1, rules=example_rules("USD"))
    TriggerPolicy.objects.create(tenant=tenant, program=program, trigger="nps", delay_minutes=0, daily_cap=0)

    print(f"[bench_engagement] invitations: {INVITATIONS} promoter responses → SMTP", flush=True)
    started = time.perf_counter()
    for index in range(INVITATIONS):
        send_mail("Baseline", "A plain message of about the same size.\n" * 8, None, [f"b{index}@bench.example"])
    baseline = _line("baseline: bare send_mail to SMTP", INVITATIONS, time.perf_counter() - started)

    before = inbox.count
    now = timezone.now()
    started = time.perf_counter()
    for index in range(INVITATIONS):
        moment_record(
            tenant=tenant, raw={"i": index}, trigger="nps", external_id=f"r{index}", customer_external_id=f"c{index}",
            email=f"p{index}@bench.example", score=10, occurred_at=now, name=f"Promoter {index}",
        )  # fmt: skip
    seconds = time.perf_counter() - started
    handed = inbox.count - before
    sent = Ask.objects.filter(status=AskStatus.SENT).count()
    assert handed == sent == INVITATIONS, (handed, sent)
    rate = _line("engagement: response → enrol → invitation e-mail", handed, seconds)
    print(f"  ratio to baseline: {rate / baseline:.2f}", flush=True)


def webhooks(url: str) -> None:
    import requests

    from engagement.models import DeliveryStatus, WebhookDelivery
    from engagement.services import webhook_emit, webhook_endpoint_create
    from referral_platform.tenancy.models import Tenant

    tenant = Tenant.objects.get(slug="bench-eng")
    webhook_endpoint_create(tenant=tenant, url=url)
    body = b'{"type":"referral.created","data":{"referral":{"id":1,"referred_email":"x@y.example"}}}' * 3
    print(f"[bench_engagement] webhooks: {WEBHOOKS} events → local receiver", flush=True)
    session = requests.Session()
    started = time.perf_counter()
    for _ in range(WEBHOOKS):
        session.post(url, data=body, headers={"content-type": "application/json"}, timeout=10)
    baseline = _line("baseline: bare requests.post", WEBHOOKS, time.perf_counter() - started)

    started = time.perf_counter()
    for index in range(WEBHOOKS):
        webhook_emit(
            tenant_id=tenant.pk,
            event_type="referral.created",
            dedupe_key=f"bench:{index}",
            data={"referral": {"id": index, "referred_email": f"x{index}@y.example"}, "lead_score_boost": 20},
        )
    seconds = time.perf_counter() - started
    delivered = WebhookDelivery.objects.filter(status=DeliveryStatus.DELIVERED).count()
    assert delivered == WEBHOOKS, delivered
    rate = _line("engagement: emit → sign → deliver → log", delivered, seconds)
    print(f"  ratio to baseline: {rate / baseline:.2f}", flush=True)


if __name__ == "__main__":
    main()
