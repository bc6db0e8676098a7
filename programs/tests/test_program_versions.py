"""The program's current rule version: created once from the program's settings, then reused."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from programs.models import ProgramVersion
from programs.services import judging_rules, program_current_version
from tests.factories import ProgramFactory, ProgramVersionFactory


@pytest.mark.django_db
def test_first_call_creates_version_one_from_the_programs_settings():
    program = ProgramFactory(attribution_model="linear", cookie_window_days=45, currency="EUR")

    version = program_current_version(program=program)

    assert version.number == 1
    assert version.tenant_id == program.tenant_id
    assert version.rules["attribution_model"] == "linear"
    assert version.rules["cookie_window_days"] == 45
    assert version.rules["currency"] == "EUR"
    assert program_current_version(program=program) == version
    assert ProgramVersion.objects.filter(program=program).count() == 1


@pytest.mark.django_db
def test_the_highest_number_is_the_current_version():
    program = ProgramFactory()
    ProgramVersionFactory(program=program, number=1)
    latest = ProgramVersionFactory(program=program, number=2, rules={"attribution_model": "first_touch"})

    assert program_current_version(program=program) == latest
    assert judging_rules(program=program, version=latest)["attribution_model"] == "first_touch"
    # Keys the version does not hold fall back to the program's settings.
    assert judging_rules(program=program, version=latest)["cookie_window_days"] == program.cookie_window_days


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_calls_create_one_version():
    program = ProgramFactory()
    barrier = threading.Barrier(6)
    results, errors = [], []

    def call():
        try:
            barrier.wait()
            results.append(program_current_version(program=program).pk)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    assert ProgramVersion.objects.filter(program=program).count() == 1
    assert len(set(results)) == 1
