"""The Stripe webhook door answered before Django's request handling (issue 15, docs/throughput.md).

A billing run delivers its ``invoice.paid`` webhooks in a burst; all the door does is verify the signature
with the tenant's signing secret, store the event raw once (``rewards.webhooks.webhook_receive``: two
statements) and acknowledge it — its handling is a drain's, later. Django's middleware stack (sessions,
CSRF, authentication, messages, allauth, tenant resolution) took about as long as that work, for a request
that uses none of it. ``StripeWebhookDispatch`` wraps the WSGI application (``referral_platform/wsgi.py``)
and answers ``POST /webhooks/stripe/<slug>/`` itself with the same outcome and headers as the view
(``rewards.views.stripe_webhook``, which stays the URL's view): 200 with the event id, 400 for a bad
signature or unknown workspace (nothing written), 413 for a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE``.

Everything it does not answer the same way goes to Django unchanged: other methods and paths, a request
that Django would redirect to HTTPS, a Host header Django would refuse. Each request runs in its own copy of
the context with row-level security resolving, as ``RowLevelSecurityMiddleware`` does.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections
from django.http.request import split_domain_port, validate_host

from referral_platform.tenancy import rls
from referral_platform.wsgi_paths import close_old_connections, is_secure

logger = logging.getLogger(__name__)

WEBHOOK_PATH = re.compile(r"^/webhooks/stripe/(?P<slug>[-a-zA-Z0-9_]+)/$")
_STATUS_LINES = {
    200: "200 OK",
    400: "400 Bad Request",
    413: "413 Request Entity Too Large",
    500: "500 Internal Server Error",
}


def _answered_here(environ: dict) -> bool:
    """True when Django would neither redirect the request to HTTPS nor refuse its host."""
    if settings.SECURE_SSL_REDIRECT and not is_secure(environ):
        return False
    domain, _port = split_domain_port(environ.get("HTTP_HOST") or environ.get("SERVER_NAME", ""))
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


def security_headers(secure: bool) -> list[tuple[str, str]]:
    """What SecurityMiddleware and XFrameOptionsMiddleware add to the view's JSON answer."""
    headers = [("X-Frame-Options", settings.X_FRAME_OPTIONS)]
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        headers.append(("Referrer-Policy", settings.SECURE_REFERRER_POLICY))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
    if secure and settings.SECURE_HSTS_SECONDS:
        value = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            value += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            value += "; preload"
        headers.append(("Strict-Transport-Security", value))
    return headers


class StripeWebhookDispatch:
    """WSGI wrapper: ``POST /webhooks/stripe/<slug>/`` is answered here, everything else goes to Django."""

    def __init__(self, application) -> None:
        self.application = application

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if not path.startswith("/webhooks/stripe/") or environ.get("REQUEST_METHOD") != "POST":
            return self.application(environ, start_response)
        match = WEBHOOK_PATH.match(path)
        if match is None or not _answered_here(environ):
            return self.application(environ, start_response)
        return contextvars.copy_context().run(self._answer, environ, start_response, match.group("slug"))

    def _answer(self, environ, start_response, slug: str):
        rls.start_resolving(environ.get("PATH_INFO", ""))
        close_old_connections()
        try:
            status, answer = _receive(environ, slug)
        except Exception:
            logger.exception("stripe webhook for %r failed", slug)
            status, answer = 500, _error(500, "server_error", "Try again later.")
        finally:
            close_old_connections()
        body = json.dumps(answer).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        start_response(_STATUS_LINES[status], headers + security_headers(is_secure(environ)))
        return [body]


def _error(status: int, code: str, message: str) -> dict:
    return {"error": {"status": status, "code": code, "message": message}}


def _receive(environ: dict, slug: str) -> tuple[int, dict]:
    from .views import webhook_answer

    declared = environ.get("CONTENT_LENGTH") or "0"
    if not declared.isdigit():
        return 400, _error(400, "bad_request", "Content-Length: not a number.")
    length, limit = int(declared), settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if limit is not None and length > limit:
        return 413, _error(413, "too_large", f"body: larger than {limit} bytes.")
    body = environ["wsgi.input"].read(length) if length else b""
    signature = environ.get("HTTP_STRIPE_SIGNATURE", "")
    # Django pings a persistent connection ("SELECT 1", CONN_HEALTH_CHECKS) before a request's first statement,
    # so that a connection the server dropped is replaced instead of failing the request: a second round trip
    # for a request whose work is ONE statement. The door skips the ping and replaces a dropped connection
    # itself: its work is safe to run again (the INSERT … ON CONFLICT DO NOTHING stores an event once; a
    # retry after a store whose answer was lost finds the stored event and answers the same).
    database = connections[DEFAULT_DB_ALIAS]
    if database.connection is not None and not database.in_atomic_block:
        database.health_check_done = True
    try:
        return webhook_answer(slug, body, signature)
    except (InterfaceError, OperationalError) as error:
        if database.in_atomic_block:
            raise
        logger.info("stripe webhook for %r: database connection replaced (%s)", slug, error)
        database.close()
        return webhook_answer(slug, body, signature)
