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
    return subprocess.run([sys.executable, "-m", "pytest", *argv], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
