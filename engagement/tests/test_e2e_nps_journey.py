"""End to end in headless Chromium: an NPS 10 arrives through the API, the invitation e-mail reaches the SMTP
server, the customer opens their dashboard from it on a phone and copies their link, a friend in a fresh
browser follows it and signs up through the landing page, and the referral shows on the customer's dashboard
and reaches the tenant's webhook receiver. Screenshots under test-artifacts/engagement/; no console errors."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from engagement.models import TriggerPolicy
from engagement.services import webhook_endpoint_create
from referrals.models import Referral
from tests import factories as f
from tests.e2e.conftest import browser  # noqa: F401  (the module-scoped Chromium)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", "test-artifacts")) / "engagement"
TENANT_SITE = "https://acme-e2e.example"


def watch(page, errors: list[str]):
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))


def shot(page, name: str):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_nps_10_to_invitation_to_shared_link_to_referral_on_dashboard_and_webhook(
    browser,  # noqa: F811
    live_server,
    settings,
    smtp_inbox,
    receiver,
):
    settings.SITE_URL = live_server.url
    tenant = f.TenantFactory(name="Acme Analytics", slug="acme-e2e", allowed_landing_domains=["acme-e2e.example"])
    program = f.ProgramVersionFactory(
        program=f.ProgramFactory(tenant=tenant, name="Acme referrals", landing_url=f"{TENANT_SITE}/signup")
    ).program
    TriggerPolicy.objects.create(tenant=tenant, program=program, trigger="nps", delay_minutes=0)
    webhook_endpoint_create(tenant=tenant, url=receiver.url, event_types=["referral.created"])
    api_key = f.make_api_key(tenant).raw_key

    # 1. The survey tool reports a 10 through the API.
    answer = requests.post(
        f"{live_server.url}/api/v1/nps-responses",
        json={
            "response_id": "typeform-77",
            "customer_external_id": "cus_dana",
            "email": "dana@northwind.example",
            "name": "Dana Whitfield",
            "score": 10,
            "answered_at": "2026-11-27T09:00:00Z",
        },
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text

    # 2. Exactly one invitation reached the SMTP server; it carries the dashboard link.
    [invitation] = smtp_inbox.to("dana@northwind.example")
    dashboard = re.search(r"https?://\S+/p/\S+/", smtp_inbox.text(invitation)).group(0)

    # 3. Dana opens it on her phone and copies her link.
    phone_context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    phone_context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    phone = phone_context.new_page()
    errors: list[str] = []
    watch(phone, errors)
    phone.goto(dashboard)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375
    shot(phone, "01-dashboard-phone")
    phone.click("#copy-button")
    phone.wait_for_function("document.getElementById('copy-button').textContent === 'Copied!'")
    copied = phone.evaluate("navigator.clipboard.readText()")
    assert copied == phone.input_value("#share-link") and "/r/" in copied

    # 4. A friend follows it in a fresh browser; the tenant's landing page sends them to the platform's.
    friend_context = browser.new_context(viewport={"width": 1200, "height": 900})
    friend_errors: list[str] = []

    def through_the_tenant_site(route):
        # The real /r/ redirect answers; the tenant's own landing page (not served here) forwards the visitor
        # to the platform's landing page with the code and visitor id it was given.
        answer = route.fetch(max_redirects=0)
        location = answer.headers["location"]
        assert location.startswith(f"{TENANT_SITE}/signup?")
        query = parse_qs(urlsplit(location).query)
        route.fulfill(status=302, headers={"Location": f"/join/{query['ref'][0]}/?vid={query['vid'][0]}"})

    friend_context.route(lambda url: "/r/" in url, through_the_tenant_site)
    friend = friend_context.new_page()
    watch(friend, friend_errors)
    friend.goto(copied)
    assert "/join/" in friend.url
    shot(friend, "02-landing")
    friend.fill("#id_name", "Jane Doe")
    friend.fill("#id_email", "jane@globalbank.example")
    friend.fill("#id_company", "Global Bank")
    friend.select_option("#id_company_size", "201-1000")
    friend.click("button[type=submit]")
    friend.locator("h1", has_text="Thanks, Jane Doe!").wait_for()  # the answer, not the form's heading
    assert "Thanks, Jane Doe!" in friend.locator("h1").inner_text()
    shot(friend, "03-signed-up")

    # 5. The referral shows on Dana's dashboard and reached the tenant's webhook receiver.
    referral = Referral.objects.get(referred_email="jane@globalbank.example")
    phone.reload()
    assert "Global Bank" in phone.locator("#referrals").inner_text()
    shot(phone, "04-dashboard-with-referral")
    events = [json.loads(request["body"]) for request in receiver.requests]
    assert [event["data"]["referral"]["id"] for event in events if event["type"] == "referral.created"] == [referral.pk]
    assert errors == [] and friend_errors == []
    phone_context.close()
    friend_context.close()
