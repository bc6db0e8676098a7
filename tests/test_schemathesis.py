"""Issue 13, item 3: zero 5xx and no schema violation, in CI. schemathesis runs every check against the live
test server with a bounded number of examples per operation, from the OpenAPI schema the server serves.

The workspace has a program with rules, an active participant with links, a referral, a conversion, a
reward and a partner's deal, so that operations on existing ids are exercised too (schemathesis fills path
ids from the documented ranges; most are 404s, which the schema documents)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rewards.tests.pipeline import program_with_rules, referrer, rules_doc
from tests import factories as f

ROOT = Path(__file__).resolve().parent.parent
CONFIG = Path(__file__).resolve().parent / "schemathesis" / "schemathesis.toml"
EXAMPLES_PER_OPERATION = 3


@pytest.fixture
def stripe_server():
    from referral_platform.stripe_fake import start

    server = start()
    yield server
    server.stop()


def _workspace(world):
    program = program_with_rules(world.a, rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}]))
    participant, link = referrer(program, "Dana Whitfield")
    f.ReferralFactory(program=program, referrer=participant, link=link)
    f.ConversionEventFactory(tenant=world.a)
    f.DealRegistrationFactory(partner=f.PartnerFactory(tenant=world.a))
    f.StripeCredentialsFactory(tenant=world.a)


@pytest.mark.heavy(90)
@pytest.mark.django_db(transaction=True)
def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    live_server, world, tmp_path, settings, stripe_server
):
    _workspace(world)
    settings.STRIPE_API_BASE = stripe_server.url  # the project's Stripe-compatible server
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG),
        "run",
        f"{live_server.url}/api/schema/",
        "--header",
        f"Authorization: Bearer {world.key_a}",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--phases",
        "examples,coverage,fuzzing",
        "--seed",
        "1313",
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--no-color",
    ]

    result = subprocess.run(
        command, cwd=tmp_path, env={**os.environ, "NO_COLOR": "1"}, capture_output=True, text=True, timeout=600
    )

    report = result.stdout[-20_000:] + result.stderr[-5_000:]
    assert "Tested: " in report, report
    assert result.returncode == 0, report
    assert "failures" not in report.split("SUMMARY")[-1].lower() or " 0 failures" in report, report
