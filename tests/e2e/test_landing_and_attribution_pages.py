"""The referred company's landing page on a phone, and a marketer reading why a partner got credit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from referral_platform.tenancy.models import Role
from referrals import services
from referrals.models import Attribution, Referral, ReferralStatus
from tests.factories import (
    PASSWORD,
    ClickFactory,
    MembershipFactory,
    ParticipantFactory,
    ProgramFactory,
    ReferralLinkFactory,
    TenantFactory,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def phone(browser):
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    yield context.new_page()
    context.close()


def test_a_referred_company_accepts_the_invitation_on_a_phone(phone, live_server):
    tenant = TenantFactory(name="Acme Analytics")
    dana = ParticipantFactory(program=ProgramFactory(tenant=tenant), name="Dana Whitfield", company="Northwind")
    link = ReferralLinkFactory(participant=dana)

    phone.goto(f"{live_server.url}/join/{link.code}/?vid=vis-phone-1")

    assert phone.locator("h1").inner_text() == "Dana Whitfield from Northwind invited you to Acme Analytics"
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scrolling
    phone.fill("#id_name", "Jane Doe")
    phone.fill("#id_email", "jane@gmail.com")
    phone.click("button[type=submit]")
    assert "Use your work e-mail address" in phone.content()
    assert not Referral.objects.exists()

    phone.fill("#id_email", "jane@globalbank.example")
    phone.fill("#id_company", "Global Bank")
    phone.select_option("#id_company_size", "201-1000")
    phone.click("button[type=submit]")

    assert "Thanks, Jane Doe!" in phone.locator("h1").inner_text()
    referral = Referral.objects.get()
    assert (referral.referrer, referral.visitor_id, referral.status) == (dana, "vis-phone-1", ReferralStatus.SIGNED_UP)


def test_a_marketer_reads_why_a_partner_got_credit(page, live_server):
    membership = MembershipFactory(tenant=TenantFactory(name="Acme"), role=Role.MARKETER)
    tenant = membership.tenant
    program = ProgramFactory(tenant=tenant, attribution_model="linear")
    priya = ParticipantFactory(program=program, name="Priya Sharma")
    marco = ParticipantFactory(program=program, name="Marco Rossi")
    now = timezone.now()
    ClickFactory(link=ReferralLinkFactory(participant=priya), visitor_id="v1", occurred_at=now - timedelta(days=3))
    ClickFactory(link=ReferralLinkFactory(participant=marco), visitor_id="v1", occurred_at=now - timedelta(days=1))
    services.signup_record(tenant=tenant, actor="test", email="ops@quanta.example", visitor_id="v1")
    received = services.conversion_event_receive(
        tenant=tenant,
        external_event_id="evt_browser",
        kind="payment",
        amount_minor=300_00,
        currency="USD",
        occurred_at=now,
        email="ops@quanta.example",
        raw={"external_event_id": "evt_browser"},
        queue_processing=False,
    )
    services.conversion_event_process(event_id=received.event.pk)
    row = Attribution.objects.get(participant=marco)

    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=login]", membership.user.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.goto(f"{live_server.url}/admin/referrals/attribution/{row.pk}/change/")

    text = page.locator(".attribution-explanation").inner_text()
    assert "payment event evt_browser of 300.00 USD" in text
    assert "Marco Rossi therefore receives 50.0000 % of the credit (150.00 USD)" in text
    assert "← this participant" in text
