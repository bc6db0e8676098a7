"""A new marketer in headless Chromium: sign up, allow a landing domain, build a double-sided program from a
template without typing JSON, launch it, enrol a participant (the welcome e-mail's dashboard link works),
then the friend signs up on the hosted landing page and the referral shows in the admin and on the
participant's dashboard. Screenshots at desktop and phone widths go to test-artifacts/marketer/; the
browser console stays free of errors; axe-core (vendored, static/vendor/axe-core) finds no serious or
critical violation on the builder, the admin home, the dashboard and the landing page.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.core import mail
from django.db import connections

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", "test-artifacts")) / "marketer"
AXE = Path(settings.BASE_DIR) / "static" / "vendor" / "axe-core" / "axe.min.js"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


def in_worker(work):
    """ORM work on its own thread (closing its connection), away from Playwright's event loop."""
    outcome = {}

    def run():
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def serious_axe_violations(page) -> list[str]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes'][:3]]}"
        for v in result["violations"]
        if v["impact"] in {"serious", "critical"}
    ]


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def watch_console(page, errors: list[str]) -> None:
    page.on(
        "console", lambda message: errors.append(f"{page.url}: {message.text}") if message.type == "error" else None
    )
    page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))


@pytest.mark.heavy(29)
def test_a_new_marketer_launches_a_double_sided_program_and_sees_the_first_referral(browser, live_server):
    console_errors: list[str] = []
    desktop = browser.new_context(viewport=DESKTOP).new_page()
    watch_console(desktop, console_errors)
    base = live_server.url
    accessibility: dict[str, list[str]] = {}

    # 1. Sign up: a workspace with the marketer as owner.
    desktop.goto(f"{base}/accounts/signup/")
    desktop.fill("#id_email", "mara@brightdesk.example")
    desktop.fill("#id_workspace_name", "BrightDesk")
    desktop.fill("#id_password1", "a-long-unique-passphrase-42")
    desktop.fill("#id_password2", "a-long-unique-passphrase-42")
    desktop.click("button[type=submit]")
    desktop.wait_for_load_state()

    # 2. Settings: the landing page's domain is allowed (here the platform's own host, for the hosted page).
    from referral_platform.tenancy.models import Tenant

    tenant_pk = in_worker(lambda: Tenant.objects.get(name="BrightDesk").pk)
    desktop.goto(f"{base}/admin/")
    accessibility["admin home"] = serious_axe_violations(desktop)
    shoot(desktop, "admin-home-desktop")
    desktop.goto(f"{base}/admin/tenancy/tenant/{tenant_pk}/change/")
    desktop.fill("#id_allowed_landing_domains", "localhost")
    desktop.click("input[name=_save]")
    desktop.wait_for_load_state()

    # 3. The builder, from the give-a-free-month-get-50 template: no JSON anywhere.
    desktop.goto(f"{base}/admin/programs/program/builder/")
    desktop.click("a[data-template=give_get]")
    desktop.wait_for_load_state()
    assert desktop.locator("textarea[name=rules_json]").count() == 0
    desktop.fill("#id_name", "Give a month, get 50")
    desktop.fill("#id_landing_url", f"{base}/welcome")
    desktop.fill("#id_referrer-0-amount", "100.00 USD")
    desktop.wait_for_function(
        "document.getElementById('live-offer').textContent.includes('get 100.00 USD when they subscribe')"
    )
    assert desktop.locator("#live-offer").inner_text() == (
        "Give a friend a free month — get 100.00 USD when they subscribe."
    )
    accessibility["builder"] = serious_axe_violations(desktop)
    shoot(desktop, "builder-desktop")
    desktop.set_viewport_size(PHONE)
    shoot(desktop, "builder-phone")
    desktop.set_viewport_size(DESKTOP)
    desktop.click("#builder-save")
    desktop.wait_for_load_state()
    assert re.search(r"/admin/programs/program/\d+/change/$", desktop.url), desktop.url

    # 4. Launch.
    desktop.click("form[action$='/status/activate/'] button")
    desktop.wait_for_load_state()

    from programs.models import Participant, Program

    program = in_worker(lambda: Program.objects.get(name="Give a month, get 50"))
    assert program.status == "active"

    # 5. Enrol a participant in the admin: the welcome e-mail leads with the offer and links the dashboard.
    desktop.goto(f"{base}/admin/programs/participant/add/")
    # The program picker is an autocomplete (select2 over /admin/autocomplete/, scoped to the tenant).
    desktop.click("#id_program + .select2 .select2-selection")
    desktop.fill(".select2-search__field", "Give a month")
    desktop.click(".select2-results__option >> text=Give a month, get 50")
    assert desktop.locator("#id_program").input_value() == str(program.pk)
    desktop.fill("#id_external_id", "cust-1")
    desktop.fill("#id_name", "Dana Whitfield")
    desktop.fill("#id_email", "dana@northwind.example")
    desktop.click("input[name=_save]")
    desktop.wait_for_load_state()
    [welcome] = [m for m in mail.outbox if m.to == ["dana@northwind.example"]]
    assert "Give a friend a free month — get 100.00 USD when they subscribe." in welcome.body
    dashboard_path = urlsplit(re.search(r"https?://\S+/p/\S+/", welcome.body).group(0)).path

    dashboard = browser.new_context(viewport=DESKTOP).new_page()
    watch_console(dashboard, console_errors)
    dashboard.goto(f"{base}{dashboard_path}")
    assert "get 100.00 USD when they subscribe" in dashboard.locator("#offer").inner_text()
    accessibility["participant dashboard"] = serious_axe_violations(dashboard)
    shoot(dashboard, "dashboard-desktop")

    # 6. The friend opens the hosted landing page on a phone and signs up.
    code = in_worker(lambda: Participant.objects.get(external_id="cust-1").links.get(channel="direct").code)
    friend_context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    friend = friend_context.new_page()
    watch_console(friend, console_errors)
    friend.goto(f"{base}/join/{code}/")
    assert friend.locator("#offer").inner_text() == "You get a free month when you subscribe."
    accessibility["landing page"] = serious_axe_violations(friend)
    shoot(friend, "landing-phone")
    friend.fill("#id_name", "Jane Doe")
    friend.fill("#id_email", "jane@globalbank.example")
    friend.fill("#id_company", "Global Bank")
    friend.select_option("#id_company_size", "201-1000")
    friend.click("button[type=submit]")
    friend.locator("h1", has_text="Thanks, Jane Doe!").wait_for()  # the answer, not the form's heading
    assert "Thanks, Jane Doe!" in friend.locator("h1").inner_text()
    shoot(friend, "landing-thanks-phone")

    # 7. The referral is in the admin and on the participant's dashboard.
    desktop.goto(f"{base}/admin/referrals/referral/")
    assert "Global Bank" in desktop.content()
    shoot(desktop, "referrals-desktop")
    dashboard.reload()
    assert "Global Bank" in dashboard.content()
    dashboard.set_viewport_size(PHONE)
    shoot(dashboard, "dashboard-phone")

    assert {page: found for page, found in accessibility.items() if found} == {}
    assert console_errors == []
    friend_context.close()
