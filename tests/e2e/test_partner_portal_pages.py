"""The partner portal's pages pass axe-core in headless Chromium: no serious or critical violations on
the home, deals, statements and resources pages (with content on each), and no console errors."""

from __future__ import annotations

import pytest

from partners.models import PartnerRole, PartnerUser
from partners.services import deal_register, partner_create, partner_enrol
from referral_platform.tenancy.actors import system_actor
from tests.e2e.test_marketer_journey import serious_axe_violations
from tests.e2e.test_partner_portal_journey import Browser
from tests.factories import PASSWORD, ProgramFactory, ResourceFactory, TenantFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PAGES = {
    "home": "/portal/",
    "deals": "/portal/deals/",
    "statements": "/portal/statements/",
    "resources": "/portal/resources/",
}


def _partner_with_content() -> str:
    tenant = TenantFactory(name="Acme Analytics", slug="acme-axe")
    program = ProgramFactory(tenant=tenant, kind="partner", name="Acme Partner Network", slug="partners")
    actor = system_actor(tenant)
    partner = partner_create(tenant=tenant, actor=actor, name="Northwind Resellers", partner_type="reseller")
    email = "pat@northwind-partners.example"
    partner_enrol(partner=partner, program=program, actor=actor, email=email)
    user = UserFactory(username=email, email=email)
    PartnerUser.objects.create(tenant=tenant, partner=partner, user=user, role=PartnerRole.ADMIN)
    deal_register(
        tenant=tenant, partner=partner, program=program, company_name="Globex Corp",
        domain="globex.example", actor="axe test",
    )  # fmt: skip
    ResourceFactory(tenant=tenant, title="Sales deck 2027", url="https://files.example/deck.pdf")
    return email


def test_partner_portal_pages_have_no_serious_accessibility_violations(browser, live_server):
    email = _partner_with_content()
    partner = Browser(browser, live_server, "partner")
    partner.log_in(email, PASSWORD)

    found = {}
    for name, path in PAGES.items():
        partner.go(path)
        assert partner.page.locator("h1").count() >= 1, f"{path} has no heading"
        found[name] = serious_axe_violations(partner.page)
        partner.shot(f"axe-{name}")

    assert "Globex Corp" in _text_of(partner, "/portal/deals/")
    assert "Sales deck 2027" in _text_of(partner, "/portal/resources/")
    assert found == {name: [] for name in PAGES}
    assert partner.errors == []


def _text_of(partner: Browser, path: str) -> str:
    partner.go(path)
    return partner.page.locator("body").inner_text()
