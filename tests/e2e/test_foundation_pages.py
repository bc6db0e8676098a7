"""A newcomer's path in a real browser: sign up, land in the workspace, open the admin and API docs."""

from __future__ import annotations

import pytest

from programs.models import Program
from referral_platform.tenancy.models import Membership, Role, Tenant
from tests.factories import PASSWORD, MembershipFactory, ProgramFactory, TenantFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_signup_creates_a_workspace_and_opens_the_admin(page, live_server):
    page.goto(f"{live_server.url}/accounts/signup/")
    page.fill("input[name=email]", "ceo@newco.example")
    page.fill("input[name=workspace_name]", "NewCo")
    page.fill("input[name=password1]", "a-long-unique-passphrase-42")
    page.fill("input[name=password2]", "a-long-unique-passphrase-42")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")

    assert page.locator("h1").inner_text() == "NewCo"
    membership = Membership.objects.get(user__email="ceo@newco.example")
    assert membership.role == Role.OWNER and membership.tenant.name == "NewCo"

    page.click("text=Admin")
    assert "Programs, referrals and rewards" in page.content()


def test_signup_with_a_weak_password_shows_the_error_in_the_page(page, live_server):
    page.goto(f"{live_server.url}/accounts/signup/")
    page.fill("input[name=email]", "weak@newco.example")
    page.fill("input[name=workspace_name]", "Weak Co")
    page.fill("input[name=password1]", "password123")
    page.fill("input[name=password2]", "password123")
    page.click("button[type=submit]")

    assert "too common" in page.content()
    assert not Tenant.objects.filter(name="Weak Co").exists()


def test_marketer_sees_only_their_tenant_programs_in_the_admin(page, live_server):
    mine = MembershipFactory(tenant=TenantFactory(name="Mine"), role=Role.MARKETER)
    ProgramFactory(tenant=mine.tenant, name="My visible program")
    ProgramFactory(tenant=TenantFactory(name="Other"), name="Other tenant secret program")

    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=login]", mine.user.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.goto(f"{live_server.url}/admin/programs/program/")

    text = page.locator("#result_list").inner_text()
    assert "My visible program" in text
    assert "Other tenant secret program" not in text
    assert Program.objects.count() == 2


def test_swagger_ui_renders_offline(page, live_server):
    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector(".swagger-ui .info", timeout=15000)

    assert "Referral Platform API" in page.locator(".swagger-ui .info").inner_text()
