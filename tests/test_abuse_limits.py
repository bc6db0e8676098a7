"""Abuse limits on the public surface (issue 14): rate limits in Redis answering 429 + Retry-After, a
honeypot, an apply form that is no spam relay, and the client address behind trusted proxies."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.urls import reverse

from partners.models import PartnerApplication
from partners.tests.builders import partner_program
from programs.models import Participant, ProgramAccess
from referral_platform import abuse
from referrals.models import Referral, ReferralLink
from referrals.tests.builders import program_for, referrer_with_link
from tests.factories import PASSWORD, ProgramFactory, UserFactory

pytestmark = pytest.mark.django_db

SPAM = "BUY-CHEAP-PILLS-AT-spam.example"


def _landing(world):
    program = program_for(world.a, name="Acme referral program")
    _, link = referrer_with_link(program)
    url = f"/join/{link.code}/"
    return url, program, lambda: Referral.objects.filter(program=program).count()


def _landing_form(i):
    return {
        "name": f"{SPAM} {i}",
        "email": f"lead{i}@company{i}.example",
        "company": f"{SPAM} Inc {i}",
        "company_size": "201-1000",
        "how_did_you_hear": SPAM,
        "visitor_id": "",
    }


def _apply(world):
    program = ProgramFactory(tenant=world.a, slug="customers", access=ProgramAccess.OPEN)
    url = reverse("program_apply_page", args=[world.a.slug, program.slug])
    return url, program, lambda: len(mail.outbox)  # nothing is stored before confirmation: count the mails


def _apply_form(i):
    return {
        "name": f"{SPAM} {i}",
        "email": f"victim{i}@inbox.example",
        "company": SPAM,
        "note": f"Visit {SPAM} now",
        "accept_terms": "on",
    }


def _partner(world):
    program = partner_program(world.a)
    url = reverse("partner_apply", args=[world.a.slug, program.slug])
    return url, program, lambda: PartnerApplication.objects.filter(program=program).count()


def _partner_form(i):
    return {
        "company": f"{SPAM} {i}",
        "website": f"https://co{i}.example",
        "partner_type": "services",
        "contact_name": f"{SPAM} {i}",
        "email": f"victim{i}@co{i}.example",
        "audience": SPAM,
        "expected_volume": SPAM,
        "terms_accepted": "on",
    }


FORMS = {
    "landing_lead": (_landing, _landing_form, 10),
    "program_apply": (_apply, _apply_form, 10),
    "partner_apply": (_partner, _partner_form, 5),
}


def _typed_addresses(form, count):
    return {form(i)[key] for i in range(count) for key in ("email",)}


def _mails_to_typed_addresses_carry(text: str, typed: set[str]) -> bool:
    """Whether any mail to an address the visitor typed carries ``text`` (the spam-relay finding). Mails to
    the tenant's own team or to the referrer whose link was used may name the lead: fixed recipients."""
    return any(set(message.to) & typed and (text in message.subject or text in message.body) for message in mail.outbox)


@pytest.mark.parametrize("scope", FORMS, ids=list(FORMS))
def test_200_rapid_posts_from_one_address_create_at_most_the_limit(
    world, client, django_capture_on_commit_callbacks, scope
):
    build, form, per_address = FORMS[scope]
    url, _, created = build(world)

    with django_capture_on_commit_callbacks(execute=True):
        answers = [client.post(url, form(i), REMOTE_ADDR="203.0.113.9") for i in range(200)]

    statuses = [answer.status_code for answer in answers]
    assert statuses[:per_address] == [200] * per_address
    assert set(statuses[per_address:]) == {429}
    assert all(1 <= int(answer["Retry-After"]) <= 3600 for answer in answers[per_address:])
    assert created() == per_address
    assert not _mails_to_typed_addresses_carry(SPAM, _typed_addresses(form, 200)), "a spam relay"
    assert len(mail.outbox) <= 2 * per_address, "refused posts sent mail"


@pytest.mark.parametrize("scope", FORMS, ids=list(FORMS))
def test_the_program_limit_holds_across_many_addresses(
    world, client, settings, django_capture_on_commit_callbacks, scope
):
    build, form, _ = FORMS[scope]
    settings.PUBLIC_FORM_RATE_LIMITS = {
        key: {"address": "10/3600", "program": "15/3600"} for key in ("default", "partner_apply")
    }
    url, _, created = build(world)

    with django_capture_on_commit_callbacks(execute=True):
        statuses = [client.post(url, form(i), REMOTE_ADDR=f"198.51.100.{i}").status_code for i in range(40)]

    assert statuses.count(200) == 15 and statuses.count(429) == 25
    assert created() == 15


def test_a_refused_lead_is_not_stored_and_other_programs_keep_their_allowance(world, client, settings):
    settings.PUBLIC_FORM_RATE_LIMITS = {"default": {"address": "2/3600", "program": "100/3600"}}
    url, program, created = _landing(world)
    other = program_for(world.a, name="Other program")
    _, other_link = referrer_with_link(other, name="Olga Other", company="Otherco")

    answers = [client.post(url, _landing_form(i)).status_code for i in range(3)]
    elsewhere = client.post(f"/join/{other_link.code}/", _landing_form(9))

    assert answers == [200, 200, 429] and created() == 2
    assert not Referral.objects.filter(program=program, referred_email="lead2@company2.example").exists()
    assert elsewhere.status_code == 200


@pytest.mark.parametrize("scope", FORMS, ids=list(FORMS))
def test_a_filled_honeypot_stores_nothing(world, client, scope):
    build, form, _ = FORMS[scope]
    url, _, created = build(world)
    page = client.get(url).content.decode()
    before = created()

    answer = client.post(url, {**form(1), abuse.HONEYPOT_FIELD: "http://spam.example"})

    assert f'name="{abuse.HONEYPOT_FIELD}"' in page and 'tabindex="-1"' in page
    assert answer.status_code in (200, 400) and "looks automated" in answer.content.decode()
    assert created() == before
    assert not mail.outbox


# --- the apply form: a confirmation e-mail first, the participant only after it -----------------------


def _confirm_path(message) -> str:
    return re.search(r"https?://[^/\s]+(/\S+/apply/confirm/\S+/)", message.body).group(1)


def test_the_apply_form_sends_only_a_confirmation_and_enrols_after_it(
    world, client, django_capture_on_commit_callbacks
):
    url, program, _ = _apply(world)

    with django_capture_on_commit_callbacks(execute=True):
        client.post(url, _apply_form(1))
    confirmation = mail.outbox[0]
    path = _confirm_path(confirmation)
    opened = client.get(path)  # a mail scanner opening the link confirms nothing

    assert len(mail.outbox) == 1 and confirmation.to == ["victim1@inbox.example"]
    assert SPAM not in confirmation.body and SPAM not in confirmation.subject
    assert opened.status_code == 200 and not Participant.objects.exists()
    assert not ReferralLink.objects.filter(program=program).exists()

    with django_capture_on_commit_callbacks(execute=True):
        confirmed = client.post(path)
    again = client.post(path)

    participant = Participant.objects.get()
    assert confirmed.status_code == 200 and participant.status == "active"
    assert participant.email == "victim1@inbox.example" and participant.links.exists()
    assert len(mail.outbox) == 2  # the welcome, sent once the address owner confirmed
    assert again.status_code == 404 and Participant.objects.count() == 1


def test_a_confirmation_link_only_works_on_its_own_program(world, client, django_capture_on_commit_callbacks):
    url, _, _ = _apply(world)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(url, _apply_form(1))
    path = _confirm_path(mail.outbox[0])
    token = path.rstrip("/").rsplit("/", 1)[-1]
    other_tenant = ProgramFactory(tenant=world.b, slug="customers", access=ProgramAccess.OPEN)
    forged = reverse("program_apply_confirm", args=[world.b.slug, other_tenant.slug, token])

    assert client.get(forged).status_code == 404
    assert client.post(forged).status_code == 404
    assert client.get(reverse("program_apply_confirm", args=[world.a.slug, "customers", "nope"])).status_code == 404
    assert not Participant.objects.exists()


def test_a_partner_program_apply_page_leads_to_the_partner_application(world, client):
    program = partner_program(world.a)

    answer = client.get(reverse("program_apply_page", args=[world.a.slug, program.slug]))

    assert answer.status_code == 302
    assert answer["Location"] == reverse("partner_apply", args=[world.a.slug, program.slug])


# --- the client address behind trusted proxies ---------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "forwarded", "expected"),
    [
        (0, "6.6.6.6", "10.0.0.2"),
        (1, "6.6.6.6, 203.0.113.7", "203.0.113.7"),
        (2, "6.6.6.6, 203.0.113.7, 10.0.0.1", "203.0.113.7"),
        (2, "203.0.113.7", "10.0.0.2"),
        (1, "not-an-ip", "10.0.0.2"),
    ],
    ids=["no-proxy-trusts-no-header", "one-proxy", "two-proxies", "too-few-hops", "garbage"],
)
def test_client_ip_is_the_address_the_outermost_trusted_proxy_saw(settings, count, forwarded, expected):
    settings.TRUSTED_PROXY_COUNT = count

    assert abuse.client_ip({"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": forwarded}) == expected


def _login(client, email, password, client_address):
    return client.post(
        "/accounts/login/",
        {"login": email, "password": password},
        REMOTE_ADDR="10.0.0.2",  # the inner proxy
        HTTP_X_FORWARDED_FOR=f"{client_address}, 10.0.0.1",  # client (seen by the outer proxy), outer proxy
    )


@pytest.mark.parametrize(("trusted", "other_locked_out"), [(2, False), (0, True)], ids=["two-proxies", "untrusted"])
def test_behind_two_trusted_proxies_one_clients_failed_logins_do_not_lock_out_another(
    client, settings, trusted, other_locked_out
):
    settings.TRUSTED_PROXY_COUNT = settings.ALLAUTH_TRUSTED_PROXY_COUNT = trusted
    settings.ACCOUNT_RATE_LIMITS = {**settings.ACCOUNT_RATE_LIMITS, "login_failed": "10/m/ip,5/5m/key"}
    attacker_target = UserFactory(username="victim@startup.example", email="victim@startup.example")
    other = UserFactory(username="other@startup.example", email="other@startup.example")

    attempts = [_login(client, attacker_target.email, "wrong", "198.51.100.66").status_code for _ in range(12)]
    client.cookies.clear()
    others = _login(client, other.email, PASSWORD, "203.0.113.7")

    assert 429 in attempts
    if other_locked_out:  # without the proxy count every client shares the proxy's address
        assert others.status_code == 429
    else:
        assert others.status_code == 302 and client.session["_auth_user_id"] == str(other.pk)
