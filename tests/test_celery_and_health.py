"""Celery wiring (enqueue after commit, visibility timeout guard) and /health/ against a real worker."""

from __future__ import annotations

import pytest
from celery.contrib.testing.worker import start_worker
from django.core.checks import run_checks
from django.db import transaction
from django.test import override_settings

from referral_platform.celery import app, check_visibility_timeout, enqueue_on_commit


class RecordingTask:
    def __init__(self):
        self.calls = []

    def apply_async(self, args=(), kwargs=None, **options):
        self.calls.append((args, kwargs, options))


@pytest.mark.django_db(transaction=True)
def test_enqueue_on_commit_waits_for_commit_and_drops_on_rollback():
    committed, rolled_back = RecordingTask(), RecordingTask()

    with transaction.atomic():
        enqueue_on_commit(committed, 1, countdown=5)
        assert committed.calls == []
    with pytest.raises(RuntimeError), transaction.atomic():
        enqueue_on_commit(rolled_back, 2)
        raise RuntimeError("roll back")

    assert committed.calls == [((1,), {}, {"countdown": 5})]
    assert rolled_back.calls == []


def test_countdown_beyond_the_visibility_window_is_refused():
    with pytest.raises(ValueError, match="CELERY_MAX_COUNTDOWN_SECONDS"):
        enqueue_on_commit(RecordingTask(), countdown=10**9)


def test_visibility_timeout_must_exceed_every_countdown():
    with override_settings(CELERY_MAX_COUNTDOWN_SECONDS=10**9):
        with pytest.raises(RuntimeError, match="visibility_timeout"):
            check_visibility_timeout(app.conf)
        errors = [e.id for e in run_checks()]
    assert "referral_platform.E001" in errors
    check_visibility_timeout(app.conf)  # the configured values pass


def test_money_tasks_are_acked_late():
    from referral_platform.celery import money_task

    @money_task(name="tests.money_probe")
    def probe():
        return None

    assert probe.acks_late is True and probe.reject_on_worker_lost is True


@pytest.mark.django_db(transaction=True)
def test_health_reports_every_component_ok_with_a_running_worker(client):
    with start_worker(app, perform_ping_check=False, pool="solo", loglevel="WARNING"):
        response = client.get("/health/")

    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert {name: c["ok"] for name, c in body["components"].items()} == {
        "database": True,
        "redis": True,
        "celery": True,
    }
    assert body["components"]["celery"]["workers"]


@pytest.mark.django_db
def test_health_is_503_and_names_the_missing_worker(client):
    response = client.get("/health/")

    body = response.json()
    assert response.status_code == 503
    assert body["components"]["database"]["ok"] and body["components"]["redis"]["ok"]
    assert body["components"]["celery"] == {**body["components"]["celery"], "ok": False}
    assert "no Celery worker" in body["components"]["celery"]["error"]
