"""The garbage collector of Celery pool processes (referral_platform/gc_tuning.py; issue 15)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest
from celery import signals

from referral_platform.gc_tuning import gc_thresholds, worker_gc_tune

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def gc_restored():
    """Whatever a test does to the collector is undone after it."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("20000,50,100", (20000, 50, 100)), (" 700 , 10 ,10 ", (700, 10, 10)), ("off", None), ("OFF", None), ("", None)],
)
def test_thresholds_are_read_from_the_setting(value, expected):
    assert gc_thresholds(value) == expected


@pytest.mark.parametrize("value", ["lots", "1,2", "1,2,3,4", "-5,10,10", "0,10,10", "1.5,10,10", "20000,,100"])
def test_a_bad_setting_is_refused_with_its_name(value):
    with pytest.raises(ValueError, match="WORKER_GC_THRESHOLDS"):
        gc_thresholds(value)


def test_tuning_freezes_what_the_process_holds_and_sets_the_thresholds(gc_restored):
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    assert worker_gc_tune((12345, 11, 12)) is True
    assert gc.get_threshold() == (12345, 11, 12)
    assert gc.get_freeze_count() > 1000  # Django, the project and its libraries: never walked again
    # Cyclic garbage made afterwards is still collected.
    cycle = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1


def test_off_leaves_the_collector_alone(gc_restored):
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    assert worker_gc_tune(None) is False
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_every_pool_process_is_tuned_when_celery_starts_it(settings, gc_restored):
    """Celery sends worker_process_init in each prefork pool process as it starts: the handler the project's
    Celery app connects tunes it with the setting."""
    import referral_platform.celery  # noqa: F401 - connects the handler

    gc.unfreeze()
    settings.WORKER_GC_THRESHOLDS = (23456, 12, 13)
    signals.worker_process_init.send(sender=None)
    assert gc.get_threshold() == (23456, 12, 13)
    assert gc.get_freeze_count() > 0

    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    settings.WORKER_GC_THRESHOLDS = None
    signals.worker_process_init.send(sender=None)
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_a_bad_value_stops_the_start_with_the_setting_named():
    env = {
        **os.environ,
        "WORKER_GC_THRESHOLDS": "fast please",
        "DJANGO_SETTINGS_MODULE": "referral_platform.settings.test",
    }
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "WORKER_GC_THRESHOLDS: 'fast please' is not three whole numbers" in result.stderr
