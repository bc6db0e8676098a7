"""Which landing hosts a tenant allows (no open redirects)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from referral_platform.tenancy.models import Tenant

# An ASCII host name (IDNs in punycode). Browsers read "\\", "%2F", "%23"… inside a host
# differently from urlsplit(), so a host with anything else is never allowed.
_HOST_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\Z")

_SPACE_CONTROL_OR_BACKSLASH = re.compile(r"[\x00-\x20\x7f\\]")


def host_is_allowed(*, tenant: Tenant, url: str) -> bool:
    """True when ``url`` is an absolute http(s) URL on one of the tenant's allowed landing domains."""
    if _SPACE_CONTROL_OR_BACKSLASH.search(url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.username or parts.password:
        return False
    host = parts.hostname.lower().rstrip(".")
    if not _HOST_NAME.match(host):
        return False
    for domain in tenant.allowed_landing_domains:
        domain = domain.lower().strip()
        if domain.startswith("."):
            if host == domain[1:] or host.endswith(domain):
                return True
        elif host == domain:
            return True
    return False
