"""Abuse limits for the public surface: the client address, Redis rate limits, a honeypot field.

- ``client_ip``: the client's address behind ``settings.TRUSTED_PROXY_COUNT`` reverse proxies (each
  appends the address it saw to ``X-Forwarded-For``; the client is the N-th entry from the right). The
  same count feeds allauth's log-in throttling (``ALLAUTH_TRUSTED_PROXY_COUNT``) and the /r/ redirect.
- ``rate_limit_hit``: fixed-window counters in Redis (one INCR + EXPIRE script, atomic), so a limit
  holds across gunicorn workers and hosts. Returns the seconds to wait (``Retry-After``) or 0.
- ``HoneypotField``: an input that people never see and bots fill in; a filled one fails validation.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import redis
from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.utils.html import format_html


def _clean_ip(value: str) -> str | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def client_ip(meta) -> str:
    """The client's address from a WSGI environ or ``request.META``.

    With ``TRUSTED_PROXY_COUNT = N > 0`` the address is the N-th ``X-Forwarded-For`` entry from the right
    (what the outermost trusted proxy saw); entries further left were written by the client and are never
    trusted. Without enough entries (a request that bypassed the proxies) ``REMOTE_ADDR`` is used.
    """
    count = settings.TRUSTED_PROXY_COUNT
    if count > 0:
        forwarded = meta.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            hops = forwarded.split(",")
            if len(hops) >= count:
                found = _clean_ip(hops[-count])
                if found:
                    return found
    return meta.get("REMOTE_ADDR", "") or "unknown"


# --- rate limits ------------------------------------------------------------------------------------

_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
"""

_clients: dict[str, redis.Redis] = {}


def _redis() -> redis.Redis:
    url = settings.REDIS_URL
    found = _clients.get(url)
    if found is None:
        found = _clients[url] = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return found


@dataclass(frozen=True)
class Limit:
    """At most ``limit`` hits per ``window`` seconds for one ``key`` (e.g. ``("apply", program, ip)``)."""

    key: str
    limit: int
    window: int


def parse_rate(rate: str) -> tuple[int, int]:
    """``"10/3600"`` (hits per seconds) → ``(10, 3600)``."""
    hits, _, seconds = rate.partition("/")
    return int(hits), int(seconds or 3600)


def rate_limit_hit(*limits: Limit) -> int:
    """Count one hit against each limit in order and answer the seconds to wait (0: allowed).

    A hit refused by an earlier limit is not counted against the later ones, so one address hammering a
    form uses up its own allowance, not the whole program's.
    """
    client = _redis()
    script = client.register_script(_HIT)
    prefix = f"{settings.CACHES['default'].get('KEY_PREFIX', '')}:ratelimit:"
    for limit in limits:
        count, ttl = script(keys=[prefix + limit.key], args=[limit.window])
        if int(count) > limit.limit:
            return max(1, int(ttl))
    return 0


def public_form_limits(*, scope: str, program_id: int, ip: str) -> tuple[Limit, Limit]:
    """The per-address and per-program limits of one public form (settings ``PUBLIC_FORM_RATE_LIMITS``)."""
    rates = settings.PUBLIC_FORM_RATE_LIMITS.get(scope) or settings.PUBLIC_FORM_RATE_LIMITS["default"]
    per_address, per_address_window = parse_rate(rates["address"])
    per_program, per_program_window = parse_rate(rates["program"])
    return (
        Limit(f"{scope}:{program_id}:ip:{ip}", per_address, per_address_window),
        Limit(f"{scope}:{program_id}:all", per_program, per_program_window),
    )


def public_form_throttle(request, *, scope: str, program_id: int) -> int:
    """Seconds this POST must wait (0: go on), counting it against the address's and the program's limits."""
    return rate_limit_hit(*public_form_limits(scope=scope, program_id=program_id, ip=client_ip(request.META)))


THROTTLED_MESSAGE = "Too many submissions from your network just now. Please try again later."


def throttled_form(form: forms.Form) -> forms.Form:
    """``form`` validated and carrying the "too many submissions" message, to re-render with a 429."""
    form.is_valid()
    form.add_error(None, ValidationError(THROTTLED_MESSAGE, code="throttled"))
    return form


def too_many_requests(response: HttpResponse, retry_after: int) -> HttpResponse:
    response.status_code = 429
    response["Retry-After"] = str(retry_after)
    return response


# --- honeypot ---------------------------------------------------------------------------------------

HONEYPOT_FIELD = "fax_number"


class HoneypotWidget(forms.TextInput):
    """A text input placed off-screen, out of the tab order, hidden from assistive technology; it renders
    among a form's hidden fields (``is_hidden``), so templates that list visible fields skip its label."""

    is_hidden = True

    def render(self, name, value, attrs=None, renderer=None):
        return format_html(
            '<div aria-hidden="true" style="position:absolute;left:-10000px;top:auto;width:1px;height:1px;'
            'overflow:hidden"><label>Leave this empty <input type="text" name="{}" value="" tabindex="-1" '
            'autocomplete="off"></label></div>',
            name,
        )


class HoneypotField(forms.CharField):
    def __init__(self, **kwargs):
        super().__init__(required=False, label="", widget=HoneypotWidget, **kwargs)

    def clean(self, value):
        if value:
            raise ValidationError("This submission looks automated and was not accepted.", code="honeypot")
        return ""


class HoneypotFormMixin(forms.Form):
    """Adds the honeypot field to a public form; a filled one is a non-field error and nothing is stored."""

    fax_number = HoneypotField()

    def clean(self):
        cleaned = super().clean()
        if HONEYPOT_FIELD in self.errors:
            message = self.errors.pop(HONEYPOT_FIELD)
            self.add_error(None, message)
        cleaned.pop(HONEYPOT_FIELD, None)  # callers pass cleaned_data on to services
        return cleaned
