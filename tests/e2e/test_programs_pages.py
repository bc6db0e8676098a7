"""Programs pages in a real headless Chromium: the import progress bar polls and fills; terms fit a phone."""

from __future__ import annotations

import threading

import pytest
from django.conf import settings as django_settings
from django.db import connections
from django.urls import reverse

from programs import services
from programs.models import ProgramVersion
from programs.rules import example_rules
from referral_platform.tenancy.actors import system_actor
from tests import factories as f

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser(monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls of the test stay synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def in_worker(work):
    """Run ORM work on its own thread, as a worker would, closing its connection afterwards.

    (ORM calls made in the test body while Playwright's loop runs would open a connection in another
    context that the test database teardown cannot close.)
    """
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


@pytest.fixture
def marketer_session(world, client) -> str:
    client.force_login(world.marketer_a)
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


@pytest.fixture
def queued_import(world):
    program = f.ProgramFactory(tenant=world.a)
    rows = "".join(f"x{n},Person {n},p{n}@acme.example\n" for n in range(6)) + "bad,,nobody@acme.example\n"
    return services.participant_import_create(
        tenant=world.a,
        program=program,
        actor=system_actor(world.a),
        filename="people.csv",
        content="external_id,name,email\n" + rows,
        enqueue=False,
    )


def test_import_progress_page_polls_and_draws_the_bar(world, queued_import, marketer_session, live_server, browser):
    job = queued_import
    context = browser.new_context()
    context.add_cookies(
        [{"name": django_settings.SESSION_COOKIE_NAME, "value": marketer_session, "url": live_server.url}]
    )
    page = context.new_page()

    page.goto(live_server.url + reverse("admin:programs_participantimport_change", args=[job.pk]))
    assert page.locator("#import-state").inner_text() == "queued"
    assert page.locator("#import-bar").get_attribute("aria-valuenow") == "0"

    in_worker(
        lambda: services.participant_import_run(participant_import=job, actor=system_actor(world.a), batch_size=2)
    )

    page.wait_for_function("document.getElementById('import-state').textContent === 'done'", timeout=15_000)
    assert page.locator("#import-bar").get_attribute("aria-valuenow") == "100"
    assert page.locator("#import-bar > div").evaluate("el => el.style.width") == "100%"
    assert page.locator("#import-created").inner_text() == "6"
    assert page.locator("#import-errors tbody tr").first.inner_text().split("\t")[:2] == ["8", "name"]


@pytest.fixture
def published_program(world):
    program = f.ProgramFactory(tenant=world.a, slug="customers")
    ProgramVersion.objects.create(tenant=world.a, program=program, number=1, rules=example_rules("USD"))
    return program


def test_public_terms_page_fits_a_phone_screen(published_program, live_server, browser):
    program = published_program
    context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True)
    page = context.new_page()

    page.goto(f"{live_server.url}/t/tenant-a/customers/terms/")

    assert page.locator("h1").inner_text() == program.name
    assert (
        page.locator("#terms-limits li").first.inner_text()
        == "At most 12 referrals per referrer are rewarded each year."
    )
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert page.locator("a.button").is_visible()
