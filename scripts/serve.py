"""`make run`: migrate, load the demo, start web + Celery worker + beat, print where to go.

Runs inside scripts/devstack.py, which provides DATABASE_URL and REDIS_URL. Ctrl-C stops all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = os.environ.get("PORT", "8000")


def manage(*args: str, database_url: str | None = None) -> None:
    env = dict(os.environ, DATABASE_URL=database_url) if database_url else None
    subprocess.run([PY, "manage.py", *args], cwd=ROOT, check=True, env=env)


def _ready(base: str, *, seconds: float) -> bool:
    """Whether /health/ answers 200 within ``seconds``: the web server, the database, Redis and a Celery worker
    answering its ping, so that what the banner lists works when it is printed (a 503 while the worker starts)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/health/", timeout=2) as answer:  # noqa: S310 - loopback
                if answer.status == 200:
                    return True
        except OSError:  # not listening yet, or 503 (urllib's HTTPError is an OSError)
            pass
        time.sleep(0.3)
    return False


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "referral_platform.settings.dev")
    # Links in e-mails and share URLs point at this server unless SITE_URL says otherwise.
    os.environ.setdefault("SITE_URL", f"http://{HOST}:{PORT}")
    print("[run] applying migrations", flush=True)
    # Migrations run as the owner role; the app (below) as the restricted one (README "Database roles").
    manage("migrate", "--no-input", "-v", "0", database_url=os.environ.get("DATABASE_OWNER_URL"))
    # The project's Stripe-compatible server (referral_platform/stripe_fake/) stands in for Stripe so that
    # approving and paying rewards works in the demo — unless real Stripe is asked for (STRIPE_API_BASE set,
    # or USE_REAL_STRIPE=1 when the tenants' real keys are configured).
    fake_stripe: list[str] = []
    if not os.environ.get("STRIPE_API_BASE") and os.environ.get("USE_REAL_STRIPE") != "1":
        stripe_port = os.environ.get("STRIPE_FAKE_PORT", "12111")
        # The demo's Connect account (demo/rewards.py) exists there, so paying Ravi by transfer works.
        fake_stripe = [
            *(PY, "-m", "referral_platform.stripe_fake", "--port", stripe_port),
            *("--account", "acct_demo_connected"),
        ]
        os.environ["STRIPE_API_BASE"] = f"http://127.0.0.1:{stripe_port}"
        print(
            f"[run] fake Stripe on {os.environ['STRIPE_API_BASE']} (USE_REAL_STRIPE=1 to use Stripe itself)", flush=True
        )
    # E-mail goes to a local SMTP server (scripts/mail_sink.py) that keeps every message as a .eml file
    # under .run/mail/ — unless an e-mail backend or host is configured (EMAIL_BACKEND / EMAIL_HOST).
    mail_sink: list[str] = []
    mail_dir = ROOT / ".run" / "mail"
    if not os.environ.get("EMAIL_BACKEND") and not os.environ.get("EMAIL_HOST"):
        mail_port = os.environ.get("MAIL_SINK_PORT", "1025")
        mail_sink = [PY, str(ROOT / "scripts" / "mail_sink.py"), "--port", mail_port, "--dir", str(mail_dir)]
        os.environ.update(
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=mail_port,
            EMAIL_USE_TLS="0",
        )
        print(f"[run] e-mail: local SMTP on 127.0.0.1:{mail_port}, kept in {mail_dir}/ (*.eml)", flush=True)
    # Started before the demo is loaded, so that anything it mails is caught too.
    early = {"mail": subprocess.Popen(mail_sink, cwd=ROOT)} if mail_sink else {}
    demo_file = ROOT / ".run" / "demo.json"
    demo_file.parent.mkdir(exist_ok=True)
    print("[run] loading demo data", flush=True)
    try:
        manage("seed_demo", "--json", str(demo_file))
    except BaseException:
        for process in early.values():
            process.terminate()
        raise
    commands = {
        "web": [PY, "manage.py", "runserver", f"{HOST}:{PORT}", "--noreload"],
        "worker": [
            PY,
            "-m",
            "celery",
            "-A",
            "referral_platform",
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            "2",
            "--hostname",
            "worker@%h",
        ],
        "beat": [
            PY,
            "-m",
            "celery",
            "-A",
            "referral_platform",
            "beat",
            "--loglevel",
            "INFO",
            "--schedule",
            str(ROOT / ".run" / "celerybeat-schedule"),
        ],
    }
    if fake_stripe:
        commands["stripe"] = fake_stripe
    if mail_sink:
        commands["mail"] = mail_sink
    processes = {
        **early,
        **{name: subprocess.Popen(command, cwd=ROOT) for name, command in commands.items() if name not in early},
    }
    base = f"http://{HOST}:{PORT}"
    if not _ready(base, seconds=90):
        print(f"[run] not every part answers yet: {base}/health/ shows which", flush=True)
    demo = json.loads(demo_file.read_text())
    lines = [
        "",
        "=" * 72,
        " Referral Platform is running",
        f"   App        {base}/",
        f"   Log in     {base}/accounts/login/",
        f"   Admin      {base}/admin/",
        f"   API docs   {base}/api/docs/   (schema: {base}/api/schema/)",
        f"   Health     {base}/health/",
        *(
            [f"   E-mail     {mail_dir}/*.eml  (local SMTP sink; each mail is also printed as [mail])"]
            if mail_sink
            else []
        ),
        f"   Demo link  {base}{demo['sample_link']}",
        *(
            [f"   Dashboard  {base}{demo['participant_dashboard']}  (a demo participant's own page)"]
            if demo.get("participant_dashboard")
            else []
        ),
        " Demo logins (password for all: " + demo["logins"][0]["password"] + ")",
        *[f"   {login['email']:<26} {login['role']}" for login in demo["logins"]],
        f" Demo API key: {demo['api_key']}",
        f"   curl -H 'Authorization: Bearer {demo['api_key']}' {base}/api/v1/programs",
        " Ctrl-C stops the web server, worker, beat and the embedded services.",
        "=" * 72,
    ]
    print("\n".join(lines), flush=True)

    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping:
            for name, process in list(processes.items()):
                if process.poll() is None:
                    continue
                if name == "web":
                    print(f"[run] web exited with {process.returncode}; stopping", flush=True)
                    stopping = True
                    break
                # A worker or beat that dies (killed, out of memory) is started again, like a supervisor
                # would in production; the web server keeps answering meanwhile.
                print(f"[run] {name} exited with {process.returncode}; starting it again", flush=True)
                time.sleep(1)
                processes[name] = subprocess.Popen(commands[name], cwd=ROOT)
            time.sleep(0.5)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
