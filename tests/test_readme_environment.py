"""Issue 13, item 4: the README's environment table lists only variables the code reads (it documented
STRIPE_SECRET_KEY / STRIPE_WEBHOOK_SECRET, which nothing read: Stripe credentials are per workspace)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("referral_platform", "programs", "referrals", "rewards", "partners", "demo", "scripts")
# How the code reads the environment: os.environ[...] / .get(...), env_bool / env_list / env_int helpers.
READ = re.compile(r"""(?:os\.environ(?:\.get|\.setdefault)?|getenv|env_[a-z]+)\(?\[?\s*["']([A-Z][A-Z0-9_]+)["']""")


def _documented() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("| variable | default | meaning |", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", "\n".join(line.split("|")[1] for line in table.splitlines()[2:])))


def _read_by_code() -> set[str]:
    names: set[str] = set()
    for folder in SOURCE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            if "tests" not in path.parts:
                names |= set(READ.findall(path.read_text()))
    return names


def test_every_documented_variable_is_read_by_the_code():
    documented = _documented()
    read = _read_by_code() | {"DJANGO_SETTINGS_MODULE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}  # libraries

    assert "DATABASE_URL" in documented and "STRIPE_SECRET_KEY" not in documented
    assert documented - read == set(), f"documented but never read: {sorted(documented - read)}"
