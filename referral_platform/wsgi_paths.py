"""What the paths answered before Django's request handling share (the referral redirect, referrals/redirect.py;
the Stripe webhook door, rewards/door.py): whether a request came over HTTPS, and Django's per-request
database connection housekeeping."""

from __future__ import annotations

import contextlib

from django.conf import settings
from django.db import connections


def is_secure(environ: dict) -> bool:
    """As ``HttpRequest.is_secure``: the trusted proxy's header when configured, else the WSGI scheme."""
    header = settings.SECURE_PROXY_SSL_HEADER
    if header:
        name, expected = header
        value = environ.get(name)
        if value is not None:
            return value.split(",", 1)[0].strip() == expected
    return environ.get("wsgi.url_scheme") == "https"


def close_old_connections() -> None:
    """What Django does at each request's start and end (close_old_connections): drop a broken or
    expired database connection. Free when none is open; skipped inside an atomic block (only a test
    wraps a request in one)."""
    for database in connections.all(initialized_only=True):
        if not database.in_atomic_block:
            database.close_if_unusable_or_obsolete()


@contextlib.contextmanager
def database_work():
    """``close_old_connections`` before and after the part of a request that uses the database: a path that
    answers most requests without it (the redirect's warm hit) does no connection housekeeping at all."""
    close_old_connections()
    try:
        yield
    finally:
        close_old_connections()
