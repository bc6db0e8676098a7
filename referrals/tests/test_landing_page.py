"""The referred company's landing page /join/<code>/ and its lead form."""

from __future__ import annotations

import pytest

from programs.models import ProgramStatus
from referral_platform.tenancy.models import AuditEvent
from referrals.models import IdentityLink, Referral, ReferralStatus, Touchpoint

from .builders import program_for, referrer_with_link

pytestmark = pytest.mark.django_db

GOOD = {
    "name": "Jane Doe",
    "email": "Jane@GlobalBank.example",
    "company": "Global Bank",
    "company_size": "201-1000",
    "how_did_you_hear": "Dana from Northwind",
    "visitor_id": "vis-phone",
}


def _counts():
    return (
        Referral.objects.count(),
        Touchpoint.objects.count(),
        IdentityLink.objects.count(),
        AuditEvent.objects.count(),
    )


@pytest.fixture
def invitation(world):
    program = program_for(world.a, name="Acme referral program")
    dana, link = referrer_with_link(program, name="Dana Whitfield", company="Northwind")
    return dana, link


def test_landing_page_greets_with_the_referrers_name_on_a_phone_sized_page(client, invitation):
    _, link = invitation

    response = client.get(f"/join/{link.code}/?vid=vis-phone")

    page = response.content.decode()
    assert response.status_code == 200
    assert "Dana Whitfield from Northwind invited you to Tenant A" in page
    assert 'name="viewport" content="width=device-width, initial-scale=1"' in page
    for field in ("name", "email", "company", "company_size", "how_did_you_hear"):
        assert f'name="{field}"' in page
    assert 'value="vis-phone"' in page  # the visitor id from the redirect travels with the form
    assert 'value="Dana Whitfield from Northwind"' in page  # "how did you hear" is pre-filled


@pytest.mark.parametrize("case", ["unknown", "paused", "inactive-link"])
def test_unknown_or_dead_codes_get_the_friendly_404_page(client, invitation, case):
    _, link = invitation
    code = link.code
    if case == "unknown":
        code = "no-such-code"
    elif case == "paused":
        link.program.status = ProgramStatus.PAUSED
        link.program.save()
    else:
        link.is_active = False
        link.save()

    response = client.get(f"/join/{code}/")
    posted = client.post(f"/join/{code}/", GOOD)

    assert response.status_code == 404 and posted.status_code == 404
    assert "This invitation link is not valid" in response.content.decode()
    assert "Dana" not in response.content.decode()
    assert not Referral.objects.exists()


def test_submitting_the_form_creates_a_signed_up_referral_for_the_links_tenant(client, invitation, world):
    dana, link = invitation

    response = client.post(f"/join/{link.code}/", GOOD)

    assert response.status_code == 200
    assert "Thanks, Jane Doe" in response.content.decode()
    referral = Referral.objects.get()
    assert referral.tenant == world.a and referral.referrer == dana and referral.link == link
    assert referral.status == ReferralStatus.SIGNED_UP and referral.source == "landing_form"
    assert (referral.referred_email, referral.referred_company_size, referral.visitor_id) == (
        "jane@globalbank.example",
        "201-1000",
        "vis-phone",
    )
    assert referral.rule_version.number == 1
    lead_form = Touchpoint.objects.get(kind="lead_form")
    assert lead_form.participant == dana and lead_form.visitor_id == "vis-phone"
    assert IdentityLink.objects.filter(tenant=world.a, a_value="jane@globalbank.example", b_value="vis-phone").exists()


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"email": "not-an-email"}, "email", "Enter a valid email address."),
        ({"email": "jane@gmail.com"}, "email", "Use your work e-mail address"),
        ({"email": "Jane@Proton.me"}, "email", "Use your work e-mail address"),
        ({"email": "jane@gmx.de"}, "email", "Use your work e-mail address"),
        ({"name": ""}, "name", "This field is required."),
        ({"company": ""}, "company", "This field is required."),
        ({"company_size": "enormous"}, "company_size", "Select a valid choice."),
    ],
    ids=[
        "bad-email",
        "personal-email",
        "personal-email-proton",
        "personal-email-gmx",
        "no-name",
        "no-company",
        "bad-size",
    ],
)
def test_bad_form_input_shows_the_field_error_and_writes_nothing(client, invitation, change, field, message):
    _, link = invitation
    before = _counts()

    response = client.post(f"/join/{link.code}/", {**GOOD, **change})

    page = response.content.decode()
    assert response.status_code == 400
    # the error list carries the id Django's aria-describedby points at (issue 11: ids that exist)
    assert f'id="id_{field}_error"' in page and f'aria-describedby="id_{field}_error"' in page and message in page
    assert _counts() == before


def test_a_second_referrers_form_for_an_already_referred_person_adds_a_touchpoint_not_a_referral(client, world):
    program = program_for(world.a)
    dana, dana_link = referrer_with_link(program)
    ravi, ravi_link = referrer_with_link(program, name="Ravi Menon", company="Contoso")

    client.post(f"/join/{dana_link.code}/", GOOD)
    client.post(f"/join/{ravi_link.code}/", {**GOOD, "visitor_id": "vis-laptop"})

    referral = Referral.objects.get()
    assert referral.referrer == dana
    assert set(Touchpoint.objects.filter(kind="lead_form").values_list("participant", flat=True)) == {dana.pk, ravi.pk}
