"""Domains and company names reduced to the organisation behind them.

Core helpers (they import nothing from the apps), shared by the fraud checks and partner deal
registration:

- ``registrable_domain``: the domain an organisation registers, its eTLD+1 by the Public Suffix
  List: ``www.acme.co.uk``, ``https://Sales.ACME.co.uk/x`` and ``bob@sales.acme.co.uk`` are all
  ``acme.co.uk``.
- ``normalise_company_name``: "The Acme Company, Inc.", "ACME inc" and "Acme" are all ``acme``.
- ``free_email_domains`` / ``is_free_email_domain``: consumer mail providers (gmail.com,
  outlook.com, …), whose users share a domain without sharing a company.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

import tldextract

DATA_DIR = Path(__file__).resolve().parent / "data"
FREE_EMAIL_DOMAINS_FILE = DATA_DIR / "free_email_domains.txt"

# Only the Public Suffix List snapshot bundled with the installed tldextract: nothing is fetched (no
# network at request time or in tests, no stalls when publicsuffix.org is slow) and no cache
# directory is written, so every process of a release gives the same answer. The list changes
# slowly; upgrading tldextract refreshes it. Private-section suffixes (github.io, herokuapp.com, …)
# count as suffixes, because each customer under them is a different organisation.
_PUBLIC_SUFFIXES = tldextract.TLDExtract(
    suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True, include_psl_private_domains=True
)

# Legal forms dropped from the end of a company name ("Acme, Inc." and "ACME Inc" are one company),
# compared after dots are removed, so "S.p.A." is "spa" and "L.L.C." is "llc".
LEGAL_FORMS = frozenset(
    {
        "ab", "ag", "aps", "as", "asa", "bhd", "bv", "co", "company", "corp", "corporation", "gmbh",
        "group", "inc", "incorporated", "kft", "kg", "kk", "limited", "llc", "llp", "lp", "ltd", "ltda",
        "nv", "oy", "oyj", "plc", "pte", "pty", "pvt", "sa", "sarl", "sas", "sdn", "se", "sl", "spa",
        "sro", "srl", "ug",
    }
)  # fmt: skip


# --- domains ---------------------------------------------------------------------------------------
def host_of(host_or_email_or_url: str) -> str:
    """The host named by an e-mail address, a URL or a bare host (``host:port`` too): lower-case,
    without a trailing dot or IPv6 brackets; ``""`` when there is none."""
    text = (host_or_email_or_url or "").strip()
    if "://" in text:
        try:
            host = urlsplit(text).hostname or ""
        except ValueError:  # e.g. an unclosed IPv6 bracket
            return ""
    else:
        text = text.rpartition("@")[2]
        text = re.split(r"[/?#]", text, maxsplit=1)[0]
        if text.startswith("["):
            host = text[1:].partition("]")[0]
        elif text.count(":") == 1:
            host = text.partition(":")[0]
        else:
            host = text
    return host.strip().rstrip(".").lower()


def _ip_address(host: str) -> str:
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return ""


def _ascii_host(host: str) -> str:
    """The IDNA (punycode) form, so "bücher.de" and "xn--bcher-kva.de" are one domain."""
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:  # an empty or over-long label: not a valid name, compared as written
        return host


def registrable_domain(host_or_email_or_url: str) -> str:
    """The registrable domain (eTLD+1) of a host, e-mail address or URL, lower-case.

    ``sales.acme.co.uk`` → ``acme.co.uk``. Returned whole (lower-case) when there is nothing to
    reduce: an IP address, a single-label host (``localhost``), a host that is itself a public
    suffix (``co.uk``), and a host under no listed suffix (``sales.acme.internal``, the reserved
    ``.example`` and ``.test``) — no registry says where such a name's owner begins, so sub-domains
    are not merged there. ``""`` for empty input. Never uses the network.
    """
    host = host_of(host_or_email_or_url)
    if not host:
        return ""
    ip = _ip_address(host)
    if ip:
        return ip
    return _registrable_host(host)


@lru_cache(maxsize=65_536)
def _registrable_host(host: str) -> str:
    # A pure function of the host and the bundled suffix list (loaded once): remembered, as a billing run
    # asks for the same few customer and partner domains thousands of times (issue 15).
    host = _ascii_host(host)
    return _PUBLIC_SUFFIXES(host).top_domain_under_public_suffix or host


@lru_cache(maxsize=8)
def read_domain_list(path: Path) -> frozenset[str]:
    """The domains of a list file: one a line, lower-case; blank lines and ``#`` comments ignored."""
    with path.open(encoding="utf-8") as handle:
        return frozenset(
            line.strip().lower().rstrip(".") for line in handle if line.strip() and not line.startswith("#")
        )


def domain_listed_in(domain: str, domains: frozenset[str]) -> str:
    """The entry of ``domains`` that ``domain`` is, or is a sub-domain of; ``""`` if none.

    Matches whole labels: ``eu.mailinator.com`` is under ``mailinator.com``, ``xmailinator.com`` is not.
    """
    labels = (domain or "").lower().rstrip(".").split(".")
    for start in range(len(labels) - 1):
        candidate = ".".join(labels[start:])
        if candidate in domains:
            return candidate
    return ""


def free_email_domains() -> frozenset[str]:
    """Consumer mail providers (``data/free_email_domains.txt``)."""
    return read_domain_list(FREE_EMAIL_DOMAINS_FILE)


def is_free_email_domain(host_or_email: str) -> bool:
    """True for an address or host at a consumer mail provider, or a sub-domain of one."""
    return bool(domain_listed_in(host_of(host_or_email), free_email_domains()))


# --- company names ---------------------------------------------------------------------------------
def normalise_company_name(name: str) -> str:
    """A company name reduced to what identifies it, for comparing two names.

    Accents, case, punctuation (dots too, so "A.C.M.E." is "acme") and whitespace are removed, as
    are a leading "the" and trailing legal forms ("The Acme Company, Inc." → "acme", "Globex GmbH"
    → "globex", "Acme Pty Ltd" → "acme"). Whitespace is dropped rather than kept single, so a name
    written as one word or two ("Data Dog", "Datadog") still compares equal. A name that is only a
    legal form is kept ("Inc" → "inc"); ``""`` for a name with no letters or digits.
    """
    text = unicodedata.normalize("NFKD", name or "")
    text = "".join(char for char in text if not unicodedata.combining(char)).casefold()
    text = text.replace("&", " and ").replace(".", "")
    tokens = re.findall(r"[^\W_]+", text)
    if len(tokens) > 1 and tokens[0] == "the":
        tokens = tokens[1:]
    while len(tokens) > 1 and tokens[-1] in LEGAL_FORMS:
        tokens.pop()
        # "Acme & Co." / "Acme GmbH & Co. KG": the "and" belonged to the legal form.
        if len(tokens) > 1 and tokens[-1] == "and":
            tokens.pop()
    return "".join(tokens)
