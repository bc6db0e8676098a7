"""A partner's whole journey in headless Chromium: apply, be approved by a marketer, accept the invitation,
log in, register a deal and see it approved; a second partner's registration of the same company is a
conflict the marketer resolves; the tenant's CRM marks the deal won through the API; the first partner
downloads the statement showing the commission. Screenshots are saved as artifacts; console errors fail."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from django.core import mail

from partners.models import DealConflict, DealRegistration, Partner, PartnerApplication
from partners.services import application_approve, application_submit, deal_register
from programs.models import ProgramAccess, ProgramKind
from programs.services import program_rules_change
from referral_platform.tenancy.actors import system_actor
from referral_platform.tenancy.models import Role
from rewards.models import Reward
from tests.factories import PASSWORD, MembershipFactory, ProgramFactory, TenantFactory, make_api_key

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", "test-artifacts")) / "partner-portal"


class Browser:
    """One person's browser: a context with its own cookies, console errors collected, screenshots named."""

    def __init__(self, browser, live_server, who: str):
        self.context = browser.new_context(viewport={"width": 1200, "height": 900})
        self.page = self.context.new_page()
        self.base = live_server.url
        self.who = who
        self.errors: list[str] = []
        self.page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def go(self, path: str):
        response = self.page.goto(f"{self.base}{path}")
        assert response.status < 400, f"{self.who}: {path} answered {response.status}"

    def shot(self, name: str):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def log_in(self, email: str, password: str):
        self.go("/accounts/login/")
        self.page.fill("input[name=login]", email)
        self.page.fill("input[name=password]", password)
        self.page.click("button[type=submit]")
        self.page.wait_for_load_state()


def _invitation_path(email: str) -> str:
    message = next(m for m in reversed(mail.outbox) if email in m.to and "/portal/invitations/" in m.body)
    return re.search(r"https?://[^/]+(/portal/invitations/[^/\s]+/)", message.body).group(1)


def test_a_partner_applies_registers_a_deal_wins_it_and_downloads_the_statement(browser, live_server, celery_eager):
    tenant = TenantFactory(name="Acme Analytics", slug="acme-analytics")
    marketer = MembershipFactory(tenant=tenant, role=Role.MARKETER).user
    program = ProgramFactory(
        tenant=tenant, name="Acme Partner Network", slug="partners", kind=ProgramKind.RESELLER,
        access=ProgramAccess.GATED, hold_days=0,
    )  # fmt: skip
    program_rules_change(
        program=program,
        actor=system_actor(tenant),
        rules={
            "schema_version": 1,
            "currency": "USD",
            "referrer": [{"kind": "percent_of_revenue", "percent_bp": 1000}],
            "referred": [],
        },
    )
    api_key = make_api_key(tenant).raw_key
    partner = Browser(browser, live_server, "partner")
    team = Browser(browser, live_server, "marketer")

    # 1. The partner applies on the public, tenant-branded page.
    partner.go(f"/partners/{tenant.slug}/{program.slug}/apply/")
    assert "Become a partner of Acme Analytics" in partner.page.inner_text("h1")
    page = partner.page
    page.fill("input[name=company]", "Quanta Partners")
    page.fill("input[name=website]", "https://quanta-partners.example.com")
    page.select_option("select[name=partner_type]", "reseller")
    page.fill("input[name=country]", "DE")
    page.fill("input[name=contact_name]", "Priya Sharma")
    page.fill("input[name=email]", "priya@quanta-partners.example.com")
    page.fill("textarea[name=audience]", "Mid-market logistics companies in DACH")
    page.fill("input[name=expected_volume]", "4 deals a quarter")
    page.check("input[name=terms_accepted]")
    partner.shot("01-application-form")
    page.click("button[type=submit]")
    page.wait_for_selector("#application-received")
    partner.shot("02-application-received")
    application = PartnerApplication.objects.get()

    # 2. The marketer approves it in the admin, keeping the reseller default commission.
    team.log_in(marketer.email, PASSWORD)
    team.go(f"/admin/partners/partnerapplication/{application.pk}/change/")
    team.page.click("a.decision-approve")
    team.page.fill("textarea[name=reason]", "Strong DACH reseller")
    team.shot("03-marketer-approves")
    team.page.click("#decision-form input[type=submit]")
    team.page.wait_for_selector(".messagelist .success")
    assert Partner.objects.get().commission_bp == 3000

    # 3. The partner accepts the invitation from the e-mail, then logs in.
    partner.go(_invitation_path("priya@quanta-partners.example.com"))
    page.fill("input[name=name]", "Priya Sharma")
    page.fill("input[name=password]", "quanta-portal-passphrase-7")
    partner.shot("04-invitation")
    page.click("button[type=submit]")
    page.wait_for_selector("#fig-registered")
    partner.context.clear_cookies()
    partner.log_in("priya@quanta-partners.example.com", "quanta-portal-passphrase-7")
    page.wait_for_selector("#fig-registered")
    assert page.url.endswith("/portal/")

    # 4. She registers a deal and sees it approved.
    partner.go("/portal/deals/")
    page.fill("input[name=company_name]", "Globex GmbH")
    page.fill("input[name=domain]", "www.globex-logistics.de")
    page.fill("input[name=deal_value]", "40000")
    page.fill("input[name=budget]", "40k approved")
    page.fill("input[name=need]", "Route planning")
    page.click("#register button[type=submit]")
    page.wait_for_selector("#deal-status")
    assert page.inner_text("#deal-status") == "Approved (protected)"
    partner.shot("05-deal-approved")
    deal = DealRegistration.objects.get()

    # 5. A second partner registers the same company: a conflict for the marketer, who resolves it.
    second_application = application_submit(
        program=program, company="Orbit Resellers", website="https://orbit.example.com", partner_type="reseller",
        contact_name="Omar", email="omar@orbit.example.com", audience="Logistics", expected_volume="2",
        terms_accepted=True,
    )  # fmt: skip
    orbit = application_approve(application=second_application, actor=system_actor(tenant))
    challenger = deal_register(
        tenant=tenant, partner=orbit, program=program, company_name="Globex", domain="globex-logistics.de", actor="omar"
    )
    assert challenger.status == "conflict"
    team.go("/admin/partners/dealconflict/?status__exact=open")
    assert "Globex" in team.page.inner_text("#result_list")
    team.page.click("#result_list tbody th a >> nth=0")
    team.page.wait_for_url("**/dealconflict/*/change/**")
    team.page.wait_for_load_state()  # (read before it had loaded, the page showed only its object tools)
    assert "Quanta Partners" in team.page.inner_text("#content-main")
    team.page.click("a.decision-resolve")
    team.page.check("input[name=decision][value=holder_keeps]")
    team.page.fill("textarea[name=reason]", "Quanta registered first with a qualified deal")
    team.shot("06-marketer-resolves-conflict")
    team.page.click("#decision-form input[type=submit]")
    team.page.wait_for_selector(".messagelist .success")
    assert DealConflict.objects.get().decision == "holder_keeps"

    # 6. The tenant's CRM marks the deal won through the API (twice: the commission posts once).
    api = browser.new_context(base_url=live_server.url, extra_http_headers={"Authorization": f"Bearer {api_key}"})
    for _ in range(2):
        answer = api.request.patch(f"/api/v1/deals/{deal.pk}", data={"stage": "won", "amount_minor": 4_000_000})
        assert answer.status == 200 and answer.json()["status"] == "won"
    api.close()
    assert Reward.objects.count() == 1 and Reward.objects.get().amount_minor == 1_200_000

    # 7. The first partner downloads the statement showing the commission.
    partner.go("/portal/")
    assert partner.page.inner_text("#fig-won") == "1"
    partner.page.wait_for_function("window.Chart && Object.keys(Chart.instances).length === 2")
    partner.shot("07-portal-home")
    partner.go("/portal/statements/")
    with page.expect_download() as download:
        page.click("a[id^=statement-csv-]")
    csv_text = Path(download.value.path()).read_text()
    assert "1200000" in csv_text
    page.click("a[id^=statement-print-]")
    page.wait_for_selector("#statement")
    statement = page.inner_text("#statement")
    assert "Commission: Globex GmbH" in statement and "12,000.00 USD" in statement
    partner.shot("08-statement")
    page.emulate_media(media="print")
    page.pdf(path=str(ARTIFACTS / "08-statement.pdf")) if hasattr(page, "pdf") else None

    assert not partner.errors, partner.errors
    assert not team.errors, team.errors
    partner.context.close()
    team.context.close()


def test_the_portal_fits_a_phone(browser, live_server):
    from django.contrib.auth import get_user_model

    from partners.models import PartnerRole, PartnerUser
    from partners.services import partner_create, partner_enrol

    tenant = TenantFactory(name="Acme Analytics", slug="acme-phone")
    program = ProgramFactory(tenant=tenant, name="Acme Partner Network", slug="partners", kind=ProgramKind.PARTNER)
    partner = partner_create(
        tenant=tenant, actor=system_actor(tenant), name="Quanta Partners", partner_type="affiliate"
    )
    partner_enrol(partner=partner, program=program, actor=system_actor(tenant), email="priya@quanta.example")
    user = get_user_model().objects.create_user("priya@quanta.example", "priya@quanta.example", PASSWORD)
    PartnerUser.objects.create(tenant=tenant, partner=partner, user=user, role=PartnerRole.ADMIN)
    deal_register(tenant=tenant, partner=partner, program=program, company_name="Globex", domain="globex.de", actor="t")
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    phone = context.new_page()
    errors = []
    phone.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    phone.goto(f"{live_server.url}/accounts/login/")
    phone.fill("input[name=login]", user.email)
    phone.fill("input[name=password]", PASSWORD)
    phone.click("button[type=submit]")
    phone.wait_for_selector("#fig-registered")

    pages = (("/portal/", "phone-home"), ("/portal/deals/", "phone-deals"), ("/portal/statements/", "phone-statements"))
    for path, name in pages:
        phone.goto(f"{live_server.url}{path}")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 375, path
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        phone.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        if path == "/portal/deals/":
            assert "Globex" in phone.inner_text("#deal-list")
    assert not errors, errors
    context.close()
