"""The public referral redirect ``/r/<code>``: the hot path (docs/hot-path.md).

A warm hit is one Redis round trip (a Lua script reads the cached link and appends the click to
the stream), string concatenation and a 302. No SQL, no session, no middleware: production
answers it in ``ReferralRedirectDispatch``, which wraps Django's WSGI handler, and any request
that still reaches Django (test client, other servers) is answered by the first middleware,
``ReferralRedirectMiddleware``, before the rest of the stack runs. All three entry points share
``answer()``, which works on the WSGI environ alone.

Only the program's stored landing URL is ever a destination, and only when its host is on the
tenant's allowed domains (checked when the entry is built and again from the cached data on
every redirect). Query parameters of the request (``?redirect=``, ``next``, ``url``…) are never
used as a destination; ``utm_*`` ones are recorded with the click.
"""

from __future__ import annotations

import logging
import re
from typing import NamedTuple

from django.conf import settings
from django.http import HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.http.request import split_domain_port, validate_host
from django.template.loader import render_to_string
from redis.exceptions import RedisError

from referral_platform import abuse
from referral_platform.tenancy import rls
from referral_platform.wsgi_paths import database_work, is_secure

from . import click_buffer, click_spool, entropy, hot_redis, link_cache
from .models import ReferralLink

logger = logging.getLogger(__name__)

CODE_PATH = re.compile(r"/r/([A-Za-z0-9_-]{4,32})/?\Z")
_VISITOR_ID = re.compile(r"[A-Za-z0-9_-]{16,64}\Z")


class Outcome(NamedTuple):
    status: int
    location: str = ""
    visitor_id: str = ""


def new_visitor_id() -> str:
    """128 random bits, URL-safe."""
    return entropy.token_urlsafe(16)


def visitor_from_cookie_header(cookie_header: str) -> str | None:
    name = settings.REFERRAL_VISITOR_COOKIE
    if name not in cookie_header:
        return None
    for part in cookie_header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            value = value.strip().strip('"')
            return value if _VISITOR_ID.match(value) else None
    return None


def client_ip(environ: dict) -> str:
    """Behind ``TRUSTED_PROXY_COUNT`` proxies, the address the outermost one saw (referral_platform/abuse.py)."""
    if settings.TRUSTED_PROXY_COUNT:
        return abuse.client_ip(environ)
    return environ.get("REMOTE_ADDR", "")


def _https_redirect(environ: dict) -> Outcome:
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return Outcome(400)
    query = environ.get("QUERY_STRING", "")
    path = environ.get("PATH_INFO", "")
    return Outcome(301, f"https://{host}{path}{'?' + query if query else ''}")


def answer(environ: dict, code: str) -> Outcome:
    """What ``/r/<code>`` answers: a 302 to the landing URL (click buffered), or a 404/405."""
    method = environ.get("REQUEST_METHOD", "GET")
    if method not in ("GET", "HEAD"):
        return Outcome(405)
    if settings.SECURE_SSL_REDIRECT and not is_secure(environ):
        return _https_redirect(environ)
    visitor_id = visitor_from_cookie_header(environ.get("HTTP_COOKIE", "")) or new_visitor_id()
    record = method == "GET"
    payload = click_buffer.click_payload(
        code=code,
        visitor_id=visitor_id,
        ip=client_ip(environ),
        user_agent=environ.get("HTTP_USER_AGENT", ""),
        referer=environ.get("HTTP_REFERER", ""),
        query=environ.get("QUERY_STRING", ""),
    )
    spooling = record and click_spool.enabled()
    if spooling:
        # The local fast path (referrals/click_spool.py): a link this process saw moments ago, the click
        # appended to the local spool before the answer; anything else takes the round trip below.
        entry = click_spool.local_entry(code)
        if entry is not None:
            target = link_cache.redirect_target(entry, visitor_id)
            if target is not None and click_spool.spool_click(link_cache.entry_ids(entry), payload):
                return Outcome(302, target, visitor_id)
    code_key = hot_redis.link_key(code)
    try:
        if record:
            entry, stream_id = click_buffer.record_click_if_linked(code_key=code_key, payload=payload)
        else:
            entry, stream_id = hot_redis.client().get(code_key), None
        if entry is None or entry == link_cache.CHANGED:
            with database_work():
                entry = link_cache.load_entry(code)
            if record and link_cache.is_link_entry(entry):
                stream_id = click_buffer.record_click(ids=link_cache.entry_ids(entry), payload=payload)
    except RedisError:
        logger.exception("Redis unavailable: answering /r/%s from Postgres", code)
        with database_work():
            return _answer_from_postgres(code, visitor_id, record=record, environ=environ)
    if not link_cache.is_link_entry(entry):
        return Outcome(404)
    target = link_cache.redirect_target(entry, visitor_id)
    if target is None:
        # The cached destination no longer passes the domain check: no redirect, no click.
        if stream_id is not None:
            click_buffer.forget_click(stream_id)
        return Outcome(404)
    if spooling:
        click_spool.remember(code, entry)
    return Outcome(302, target, visitor_id)


def _answer_from_postgres(code: str, visitor_id: str, *, record: bool, environ: dict) -> Outcome:
    """Degraded mode while Redis is down: resolve from Postgres and write the click directly."""
    with rls.resolve("link by code (Redis down)"):
        link = ReferralLink.objects.select_related("program", "participant", "tenant").filter(code=code).first()
        entry = link_cache.entry_for_link(link)
    if not link_cache.is_link_entry(entry):
        return Outcome(404)
    target = link_cache.redirect_target(entry, visitor_id)
    if target is None:
        return Outcome(404)
    if record:
        with rls.tenant(link.tenant_id):
            click_buffer.click_record_direct(
                link=link,
                visitor_id=visitor_id,
                ip=client_ip(environ),
                user_agent=environ.get("HTTP_USER_AGENT", ""),
                referer=environ.get("HTTP_REFERER", ""),
                query=environ.get("QUERY_STRING", ""),
            )
    return Outcome(302, target, visitor_id)


# --- rendering -------------------------------------------------------------------------------

_not_found_page: bytes | None = None


def not_found_page() -> bytes:
    """The friendly 404 page; static, so rendered once per process (no request, no session)."""
    global _not_found_page
    if _not_found_page is None:
        _not_found_page = render_to_string("referrals/link_not_found.html").encode()
    return _not_found_page


def visitor_cookie(visitor_id: str) -> str:
    cookie = (
        f"{settings.REFERRAL_VISITOR_COOKIE}={visitor_id}; Max-Age={settings.REFERRAL_VISITOR_COOKIE_MAX_AGE}; "
        "Path=/; HttpOnly; SameSite=Lax"
    )
    return f"{cookie}; Secure" if settings.REFERRAL_VISITOR_COOKIE_SECURE else cookie


_STATUS_LINES = {
    301: "301 Moved Permanently",
    302: "302 Found",
    400: "400 Bad Request",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    500: "500 Internal Server Error",
}


def wsgi_reply(outcome: Outcome, start_response, method: str) -> list[bytes]:
    headers = [("Cache-Control", "no-store")]
    body = b""
    if outcome.status == 302:
        headers.append(("Location", outcome.location))
        headers.append(("Set-Cookie", visitor_cookie(outcome.visitor_id)))
    elif outcome.status == 301:
        headers.append(("Location", outcome.location))
    elif outcome.status == 405:
        headers.append(("Allow", "GET, HEAD"))
    elif outcome.status == 404:
        body = not_found_page()
        headers.append(("Content-Type", "text/html; charset=utf-8"))
        headers.append(("X-Content-Type-Options", "nosniff"))
    headers.append(("Content-Length", str(len(body))))
    start_response(_STATUS_LINES[outcome.status], headers)
    return [b""] if method == "HEAD" else [body]


def django_response(outcome: Outcome) -> HttpResponse:
    if outcome.status == 302:
        response = HttpResponseRedirect(outcome.location)
        response.set_cookie(
            settings.REFERRAL_VISITOR_COOKIE,
            outcome.visitor_id,
            max_age=settings.REFERRAL_VISITOR_COOKIE_MAX_AGE,
            httponly=True,
            samesite="Lax",
            secure=settings.REFERRAL_VISITOR_COOKIE_SECURE,
        )
    elif outcome.status == 301:
        response = HttpResponse(status=301)
        response["Location"] = outcome.location
    elif outcome.status == 405:
        response = HttpResponseNotAllowed(["GET", "HEAD"])
    elif outcome.status == 404:
        response = HttpResponse(not_found_page(), status=404, content_type="text/html; charset=utf-8")
        response["X-Content-Type-Options"] = "nosniff"
    else:
        response = HttpResponse(status=outcome.status)
    response["Cache-Control"] = "no-store"
    return response


# --- entry points ----------------------------------------------------------------------------


class ReferralRedirectDispatch:
    """WSGI wrapper: ``/r/<code>`` is answered here, everything else goes to Django unchanged."""

    def __init__(self, application) -> None:
        self.application = application
        self.serving = False

    def __call__(self, environ, start_response):
        if not self.serving:
            # This process's first request (any path): start its click spool, whose shipper adopts what a
            # killed predecessor left (referrals/click_spool.py) even before the next redirect.
            self.serving = True
            click_spool.start()
        path = environ.get("PATH_INFO", "")
        if not path.startswith("/r/"):
            return self.application(environ, start_response)
        match = CODE_PATH.match(path)
        if match is None:
            return self.application(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            outcome = answer(environ, match.group(1))  # the database only on a cold link (database_work)
        except Exception:
            logger.exception("referral redirect failed for %s", path)
            outcome = Outcome(500)
        return wsgi_reply(outcome, start_response, method)


class ReferralRedirectMiddleware:
    """First in MIDDLEWARE: answers ``/r/<code>`` itself, so the rest of the stack never runs."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        path = request.path_info
        if path.startswith("/r/"):
            match = CODE_PATH.match(path)
            if match is not None:
                return django_response(answer(request.META, match.group(1)))
        return self.get_response(request)


def referral_redirect(request, code: str) -> HttpResponse:
    """The URL pattern's view (named ``referral_redirect`` for reverse()); normally the middleware
    or the WSGI wrapper answers first."""
    if not CODE_PATH.match(f"/r/{code}"):
        return django_response(Outcome(404))
    return django_response(answer(request.META, code))
