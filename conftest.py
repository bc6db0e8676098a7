"""Checks that hold for every test of the project (the apps' own fixtures live in their conftest files)."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import tempfile
from pathlib import Path

import pytest

from referral_platform.devserver import answer_without_delay
from tests import app_role
from tests.row_locks import row_lock_guard_install, row_lock_guard_uninstall

# The live server (browser, HTTP and schemathesis tests) answers without a 40 ms stall per response.
answer_without_delay()


def pytest_collection_modifyitems(config, items):
    """The tests marked ``heavy(seconds)`` (the suite's longest) start first, spread over the parallel processes:
    pytest-xdist (load scheduling) first hands each process a batch of consecutive tests (a quarter of its share),
    so each batch begins with a share of the heavy ones, dealt longest first to the process with the least so far.
    Left where they were collected, a heavy test could start last and run alone while the other processes wait;
    put all at the front, one process would get them all. The other tests keep their order."""
    heavy = [item for item in items if item.get_closest_marker("heavy") is not None]
    if not heavy:
        return
    rest = iter([item for item in items if item.get_closest_marker("heavy") is None])
    processes = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    shares: list[list] = [[] for _ in range(processes)]
    loads = [0.0] * processes
    for item in sorted(heavy, key=lambda item: -_seconds(item)):
        least = loads.index(min(loads))
        shares[least].append(item)
        loads[least] += _seconds(item)
    batch = max(2, len(items) // processes // 4)  # as xdist's LoadScheduling sizes each process's first batch
    ordered = []
    for share in shares:
        ordered += share
        ordered += itertools.islice(rest, max(0, batch - len(share)))
    items[:] = ordered + list(rest)


def _seconds(item) -> float:
    marker = item.get_closest_marker("heavy")
    return float(marker.args[0]) if marker.args else 20.0


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The test database is created and migrated by the owner; the tests then run as the app role. The role
    is the cluster's: parallel test processes (pytest-xdist) create and grant it one at a time."""
    with django_db_blocker.unblock(), _one_process_at_a_time("app-role"):
        app_role.install()
    yield
    with django_db_blocker.unblock():
        app_role.uninstall()


@pytest.fixture(autouse=True)
def _row_locks_lock_only_the_row():
    """Fail any query that locks joined rows (``select_for_update`` with joins and without ``of``)."""
    row_lock_guard_install()
    yield
    row_lock_guard_uninstall()


@pytest.fixture(autouse=True)
def _celery_join_state_per_test():
    """Celery's process-wide "a result's get() would block a worker" flag, cleared before each test: a test that
    starts a real worker in its process (``celery.contrib.testing.worker.start_worker``) has its pool set it, and
    a later test of the same process calling ``apply(...).get()`` was then refused as if it ran inside a task."""
    from celery._state import _set_task_join_will_block

    _set_task_join_will_block(False)
    yield


@pytest.fixture(autouse=True)
def _rls_state_per_test():
    """Row-level security's state (a context variable) is restored after each test, so a test that bound
    itself to a tenant never leaks that binding into the next one."""
    from referral_platform.tenancy import rls

    token = rls.snapshot()
    yield
    rls.restore(token)


@contextlib.contextmanager
def _one_process_at_a_time(name: str):
    """An exclusive lock on a file of the machine's temporary directory, shared by the test processes."""
    with (Path(tempfile.gettempdir()) / f"referral-platform-tests-{name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
