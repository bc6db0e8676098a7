"""Registrable domains, company names and free-mail providers (referral_platform.domains)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from referral_platform.domains import (
    domain_listed_in,
    free_email_domains,
    is_free_email_domain,
    normalise_company_name,
    registrable_domain,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("acme.co.uk", "acme.co.uk"),
        ("www.acme.co.uk", "acme.co.uk"),
        ("sales.acme.co.uk", "acme.co.uk"),
        ("https://Sales.ACME.co.uk/path?q=1#top", "acme.co.uk"),
        ("bob@sales.acme.co.uk", "acme.co.uk"),
        ("  Bob.Smith+tag@Sales.Acme.CO.UK  ", "acme.co.uk"),
        ("acme.com", "acme.com"),
        ("eu.west.acme.com.", "acme.com"),
        ("acme.com:8443", "acme.com"),
        ("https://user:secret@portal.acme.com:8443/login", "acme.com"),
        ("acme.com/pricing", "acme.com"),
        ("mailto:bob@acme.de", "acme.de"),
        ("shop.acme.com.au", "acme.com.au"),
        ("foo.acme.github.io", "acme.github.io"),
        ("app.bücher.de", "xn--bcher-kva.de"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
        ("192.0.2.10", "192.0.2.10"),
        ("bob@192.0.2.10", "192.0.2.10"),
        ("http://192.0.2.10:8000/x", "192.0.2.10"),
        ("[2001:DB8::1]", "2001:db8::1"),
        ("http://[2001:db8::1]:8080/", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("LOCALHOST", "localhost"),
        ("http://localhost:8000/", "localhost"),
        ("sales.acme.internal", "sales.acme.internal"),
        ("bob@sales.northwind.example", "sales.northwind.example"),
        ("co.uk", "co.uk"),
        ("", ""),
        ("   ", ""),
        ("bob@", ""),
        ("http://[::1/", ""),
    ],
    ids=[
        "already-registrable",
        "www",
        "sub-domain",
        "url-mixed-case",
        "email-on-sub-domain",
        "email-spaces-and-tag",
        "dot-com",
        "trailing-dot",
        "host-with-port",
        "url-with-userinfo-and-port",
        "host-with-path",
        "mailto",
        "two-label-suffix",
        "private-suffix-is-a-suffix",
        "unicode-to-punycode",
        "punycode-kept",
        "ipv4",
        "email-at-ipv4",
        "url-with-ipv4",
        "bracketed-ipv6",
        "url-with-ipv6",
        "bare-ipv6",
        "single-label-host",
        "url-of-single-label-host",
        "unlisted-tld-kept-whole",
        "reserved-example-tld-kept-whole",
        "a-public-suffix-itself",
        "empty",
        "blank",
        "email-without-domain",
        "broken-ipv6-url",
    ],
)
def test_registrable_domain(value, expected):
    assert registrable_domain(value) == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [("acme.com", "acme.co.uk"), ("acme.com", "acme-corp.com"), ("acme.com", "acme.com.evil.example")],
    ids=["other-suffix", "lookalike", "acme-as-a-sub-domain-elsewhere"],
)
def test_different_organisations_keep_different_registrable_domains(a, b):
    assert registrable_domain(a) != registrable_domain(b)


def test_registrable_domain_never_touches_the_network_or_writes_a_cache(tmp_path):
    # A fresh interpreter, so the suffix list is loaded here and not taken from this process's memory.
    script = textwrap.dedent(
        """
        import json, socket
        attempts = []
        def refuse(*args, **kwargs):
            attempts.append(repr(args[:2]))
            raise OSError("network access in a test")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from referral_platform.domains import registrable_domain
        print(json.dumps({"domain": registrable_domain("bob@sales.acme.co.uk"), "attempts": attempts}))
        """
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("TLDEXTRACT")}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))

    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True
    )

    assert json.loads(result.stdout) == {"domain": "acme.co.uk", "attempts": []}
    assert list(home.rglob("*")) == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Acme", "acme"),
        ("ACME", "acme"),
        ("Acme Inc.", "acme"),
        ("Acme, Inc", "acme"),
        ("Acme Incorporated", "acme"),
        ("Acme LLC", "acme"),
        ("Acme L.L.C.", "acme"),
        ("Acme Ltd", "acme"),
        ("Acme Limited", "acme"),
        ("Acme Pty Ltd", "acme"),
        ("Acme Co., Ltd.", "acme"),
        ("Acme & Co.", "acme"),
        ("Acme Corp.", "acme"),
        ("Acme Corporation", "acme"),
        ("Acme Company", "acme"),
        ("Acme PLC", "acme"),
        ("Globex GmbH", "globex"),
        ("Globex GmbH & Co. KG", "globex"),
        ("Globex AG", "globex"),
        ("Globex S.A.", "globex"),
        ("Globex SA", "globex"),
        ("Globex SAS", "globex"),
        ("Globex SARL", "globex"),
        ("Globex B.V.", "globex"),
        ("Globex NV", "globex"),
        ("Globex Oy", "globex"),
        ("Globex AB", "globex"),
        ("Globex AS", "globex"),
        ("Globex ApS", "globex"),
        ("Globex KK", "globex"),
        ("Globex S.r.l.", "globex"),
        ("Globex S.p.A.", "globex"),
        ("The Acme Company, Inc.", "acme"),
        ("  Société   Générale  S.A. ", "societegenerale"),
        ("A.C.M.E. GmbH", "acme"),
        ("Data Dog", "datadog"),
        ("Procter & Gamble Co.", "procterandgamble"),
        ("Acme Labs", "acmelabs"),
        ("Inc", "inc"),
        ("The", "the"),
        ("", ""),
        ("—!?", ""),
    ],
    ids=[
        "plain",
        "upper-case",
        "inc-dot",
        "comma-inc",
        "incorporated",
        "llc",
        "dotted-llc",
        "ltd",
        "limited",
        "pty-ltd",
        "co-ltd",
        "and-co",
        "corp",
        "corporation",
        "company",
        "plc",
        "gmbh",
        "gmbh-and-co-kg",
        "ag",
        "dotted-sa",
        "sa",
        "sas",
        "sarl",
        "dotted-bv",
        "nv",
        "oy",
        "ab",
        "as",
        "aps",
        "kk",
        "dotted-srl",
        "dotted-spa",
        "leading-the-and-two-forms",
        "accents-and-extra-spaces",
        "dotted-initials",
        "one-word-or-two",
        "and-inside-the-name-stays",
        "extra-word-stays",
        "only-a-legal-form",
        "only-the",
        "empty",
        "only-punctuation",
    ],
)
def test_normalise_company_name(name, expected):
    assert normalise_company_name(name) == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [("Acme", "Acme Bank"), ("Acme Labs", "Acme"), ("Northwind", "Northwind Traders")],
    ids=["bank", "labs", "traders"],
)
def test_different_companies_keep_different_names(a, b):
    assert normalise_company_name(a) != normalise_company_name(b)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("gmail.com", True),
        ("Jane@GMail.com", True),
        ("jane@googlemail.com", True),
        ("jane@outlook.com", True),
        ("jane@hotmail.com", True),
        ("jane@yahoo.com", True),
        ("jane@icloud.com", True),
        ("jane@proton.me", True),
        ("jane@gmx.de", True),
        ("jane@aol.com", True),
        ("jane@mail.yahoo.co.uk", True),
        ("jane@acme.com", False),
        ("jane@notgmail.com", False),
        ("jane@gmail.com.acme.example", False),
        ("", False),
    ],
    ids=[
        "bare-domain",
        "address-mixed-case",
        "googlemail",
        "outlook",
        "hotmail",
        "yahoo",
        "icloud",
        "proton",
        "gmx",
        "aol",
        "sub-domain-of-a-provider",
        "company",
        "lookalike",
        "provider-name-inside-a-company-domain",
        "empty",
    ],
)
def test_is_free_email_domain(value, expected):
    assert is_free_email_domain(value) is expected


def test_the_free_mail_list_is_read_once_from_one_file():
    domains = free_email_domains()

    assert domains is free_email_domains()
    assert {"gmail.com", "outlook.com", "yahoo.com", "icloud.com", "proton.me", "gmx.de"} <= domains
    assert all(domain == domain.strip().lower() and "." in domain for domain in domains)


def test_domain_lists_match_whole_labels_only():
    listed = frozenset({"mailinator.com"})

    assert domain_listed_in("eu.mailinator.com", listed) == "mailinator.com"
    assert domain_listed_in("MAILINATOR.COM.", listed) == "mailinator.com"
    assert domain_listed_in("xmailinator.com", listed) == ""
    assert domain_listed_in("mailinator.com.example", listed) == ""
    assert domain_listed_in("", listed) == ""
