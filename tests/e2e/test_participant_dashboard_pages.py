"""A participant opens their dashboard link on a phone: shares in three steps, sees referrals, rewards and
messages."""

from __future__ import annotations

import pytest
from django.utils import timezone

from programs.dashboard_links import dashboard_path
from programs.services import participant_enroll, program_rules_change
from referral_platform.tenancy.actors import system_actor
from referrals import services
from tests.factories import ProgramFactory, TenantFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def phone(browser):
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    yield context, context.new_page()
    context.close()


def test_a_participant_shares_and_follows_their_rewards_on_a_phone(phone, live_server, celery_eager):
    context, page = phone
    tenant = TenantFactory(name="Acme Analytics")
    program = ProgramFactory(tenant=tenant, name="Acme customer referrals", hold_days=0)
    actor = system_actor(tenant)
    program_rules_change(
        program=program,
        actor=actor,
        rules={
            "schema_version": 1,
            "currency": "USD",
            "referrer": [{"kind": "flat_per_conversion", "amount_minor": 5_000}],
            "referred": [],
        },
    )
    dana = participant_enroll(
        tenant=tenant,
        program=program,
        external_id="cus_1",
        name="Dana Whitfield",
        email="dana@north.example",
        actor=actor,
    )
    code = dana.links.get(channel="direct").code
    services.signup_record(
        tenant=tenant, actor="test", email="cto@orbit.example", referral_code=code, company="Orbit Labs"
    )
    received = services.conversion_event_receive(
        tenant=tenant,
        external_event_id="pay_1",
        kind="payment",
        amount_minor=49_900,
        currency="USD",
        occurred_at=timezone.now(),
        email="cto@orbit.example",
        raw={"external_event_id": "pay_1"},
    )
    assert received.created

    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page.goto(f"{live_server.url}{dashboard_path(dana)}")

    assert page.locator("h1").inner_text() == "Hi Dana Whitfield"
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scrolling
    assert page.locator("#share .steps > li").count() == 3
    page.click("#copy-button")
    page.wait_for_function("document.getElementById('copy-button').textContent === 'Copied!'")
    assert page.evaluate("navigator.clipboard.readText()") == page.input_value("#share-link")
    assert page.input_value("#share-link").endswith(f"/r/{code}")
    assert page.get_attribute("#share-email", "href").startswith("mailto:?subject=")
    assert page.evaluate("document.querySelector('.qr img').naturalWidth") > 0
    assert "Orbit Labs" in page.locator("#referrals").inner_text()
    assert "50.00 USD" in page.locator("#rewards").inner_text()
    assert "Orbit Labs became a customer" in page.locator("#messages").inner_text()
