"""`make test`: check for missing migrations, then run the whole pytest suite (real Postgres + Redis)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="referral_platform.settings.test")
    print("[test] manage.py makemigrations --check", flush=True)
    check = subprocess.run([sys.executable, "manage.py", "makemigrations", "--check", "--dry-run"], cwd=ROOT, env=env)
    if check.returncode != 0:
        print("[test] a model change has no migration: run `manage.py makemigrations`", flush=True)
        return check.returncode
    return subprocess.run([sys.executable, "-m", "pytest", *_parallel(argv), *argv], cwd=ROOT, env=env).returncode


def _parallel(argv: list[str]) -> list[str]:
    """The suite runs in TEST_WORKERS processes (pytest-xdist; default: one more than the cores, at most 4, one on a
    single core), each with its own test database and Redis database (referral_platform/settings/test.py).
    TEST_WORKERS=1, or an explicit -n / -p no:xdist in the arguments, runs it as given.

    One more process than cores: many tests wait rather than compute (servers and workers they start, browsers,
    schemathesis's requests, real-thread races), and a third process fills the cores meanwhile (a schemathesis run
    alone keeps 60 % of one core busy). On the 2-core CI machine: 707 s with 3 processes, then 814 s with 2, then
    894 s and 911 s with 3 as the machine slowed down — docs/throughput.md, seventeenth session."""
    if any(arg == "-n" or arg.startswith(("-n", "--numprocesses")) or arg == "no:xdist" for arg in argv):
        return []
    cores = os.cpu_count() or 1
    workers = int(os.environ.get("TEST_WORKERS") or (min(4, cores + 1) if cores > 1 else 1))
    if workers <= 1:
        return []
    print(f"[test] {workers} test processes (TEST_WORKERS=1 for one)", flush=True)
    return ["-n", str(workers)]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
