"""Normalisation behind the fraud checks: e-mails, company names, domain lists."""

from __future__ import annotations

import pytest

from referrals.fraud import (
    disposable_domains,
    domain_listed_in,
    email_domain,
    email_match_regex,
    free_email_domains,
    normalize_company,
    normalize_email_for_matching,
)
from referrals.models import Referral
from tests import factories as f


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("John.Doe@Example.com", "john.doe@example.com"),
        ("  jane+newsletter@acme.example ", "jane@acme.example"),
        ("J.O.H.N.doe+x@gmail.com", "johndoe@gmail.com"),
        ("john.doe@googlemail.com", "johndoe@gmail.com"),
        ("first.last@outlook.com", "first.last@outlook.com"),
        ("+only-a-tag@example.com", ""),
        ("no-at-sign", ""),
        ("", ""),
    ],
    ids=["case", "plus-tag", "gmail-dots", "googlemail", "dots-kept-elsewhere", "empty-local", "no-at", "empty"],
)
def test_email_normalisation(raw, normalised):
    assert normalize_email_for_matching(raw) == normalised


@pytest.mark.django_db
def test_the_sql_pattern_finds_exactly_the_addresses_that_normalise_the_same():
    program = f.ProgramFactory()
    same = ["johndoe@gmail.com", "John.Doe@gmail.com", "j.o.h.n.d.o.e+promo@googlemail.com", "JOHNDOE+x@GMAIL.COM"]
    different = ["johndoe2@gmail.com", "john@gmail.com", "johndoe@gmail.co", "xjohndoe@gmail.com", "johndoe@mail.com"]
    for email in same + different:
        f.ReferralFactory(referrer=f.ParticipantFactory(program=program), referred_email=email)

    pattern = email_match_regex("johndoe@gmail.com")
    found = set(Referral.objects.filter(referred_email__iregex=pattern).values_list("referred_email", flat=True))

    assert found == set(same)
    assert all(normalize_email_for_matching(email) == "johndoe@gmail.com" for email in found)


@pytest.mark.django_db
def test_the_sql_pattern_escapes_regex_characters_of_other_domains():
    program = f.ProgramFactory()
    for email in ["a.b-c@my-co.example", "a.b-c+tag@my-co.example", "axb-c@my-co.example", "a.b-c@myxco.example"]:
        f.ReferralFactory(referrer=f.ParticipantFactory(program=program), referred_email=email)

    pattern = email_match_regex("a.b-c@my-co.example")

    assert set(Referral.objects.filter(referred_email__iregex=pattern).values_list("referred_email", flat=True)) == {
        "a.b-c@my-co.example",
        "a.b-c+tag@my-co.example",
    }


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("Acme, Inc.", "ACME inc", True),
        ("The Acme Company", "Acme", True),
        ("Acme Co., Ltd.", "acme", True),
        ("Société Générale S.A.", "societe generale", True),
        ("A.C.M.E. GmbH", "Acme", True),
        ("Acme Labs", "Acme", False),
        ("Acme", "Acme Bank", False),
        ("Inc", "Inc", True),
    ],
    ids=[
        "suffix-and-case",
        "leading-the",
        "two-legal-forms",
        "accents",
        "dotted-initials",
        "extra-word",
        "bank",
        "only-a-legal-form",
    ],
)
def test_company_names_compare_by_what_identifies_them(a, b, same):
    assert (normalize_company(a) == normalize_company(b)) is same
    assert normalize_company(a)


def test_domain_lists_match_sub_domains_at_label_boundaries():
    disposable = disposable_domains()
    assert len(disposable) > 300
    assert domain_listed_in("mailinator.com", disposable) == "mailinator.com"
    assert domain_listed_in("eu.mailinator.com", disposable) == "mailinator.com"
    assert domain_listed_in("xmailinator.example", disposable) == ""
    assert domain_listed_in("mailinator.com.example", disposable) == ""
    assert domain_listed_in("gmail.com", disposable) == ""
    assert domain_listed_in("gmail.com", free_email_domains()) == "gmail.com"
    assert email_domain("x@googlemail.com") == "gmail.com"
