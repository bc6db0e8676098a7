"""The analytics home and every analytics page of the demo workspace in a real headless Chromium, at
desktop and phone widths: charts drawn, no console error, nothing wider than the screen; screenshots
are saved under test-artifacts/analytics/."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from django.core.management import call_command

from analytics.figures import PAGES

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", "test-artifacts")) / "analytics"
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
PATHS = {
    "home": "/",
    "admin-index": "/admin/",
    **{slug: f"/analytics/{slug}/" for slug in PAGES if slug != "overview"},
    "compare": "/analytics/compare/",
    "calculator": "/analytics/calculator/",
    "other-customers": "/analytics/other-customers/",
}


@pytest.fixture
def demo(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    call_command("seed_demo", clicks=120, history_days=200, stdout=io.StringIO())


@pytest.mark.parametrize("width", list(WIDTHS))
def test_the_demo_workspaces_analytics_pages_render_without_console_errors(browser, live_server, demo, width):
    viewport_width, viewport_height = WIDTHS[width]
    context = browser.new_context(viewport={"width": viewport_width, "height": viewport_height})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(f"{page.url}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=login]", "marketer@acme.example")
    page.fill("input[name=password]", "demo-pass-2026")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        for name, path in PATHS.items():
            response = page.goto(f"{live_server.url}{path}")
            assert response.status == 200, f"{path} answered {response.status}"
            page.wait_for_load_state("networkidle")
            canvases = page.locator("canvas[data-chart]")
            for index in range(canvases.count()):
                # Chart.js sized every canvas it drew to its box.
                assert canvases.nth(index).evaluate("c => c.width > 0 && !!Chart.getChart(c)"), f"{path}: chart {index}"
            if name == "home":
                assert page.locator(".kpi").count() == 8
                assert page.locator("h1").inner_text() == "Acme Analytics"
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{path} is {overflow}px wider than a {width} screen"
            page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
        if width == "desktop":
            _upload_other_customers(page, live_server.url)
            # The rejected file answers 400 on purpose (the page lists its errors); Chromium logs that
            # response as a console error: exactly that one is expected.
            refused = f"{live_server.url}/analytics/other-customers/: Failed to load resource: the server responded "
            expected = [error for error in errors if error.startswith(refused) and "status of 400" in error]
            assert len(expected) == 1, errors
            errors.remove(expected[0])
    finally:
        context.close()
    assert errors == []


def _upload_other_customers(page, base_url: str) -> None:
    """The other-channel customers upload in the browser: a bad row is listed with its line and nothing is
    imported; the corrected file is imported and its rows listed."""
    header = "external_id,channel,lead_at,converted_at,deal_minor\n"
    page.goto(f"{base_url}/analytics/other-customers/")
    page.set_input_files(
        "input[type=file]",
        {"name": "leads.csv", "mimeType": "text/csv", "buffer": (header + "e2e-1,events,not-a-date,,\n").encode()},
    )
    page.click("form[enctype] button[type=submit]")
    page.wait_for_load_state()
    assert page.locator("tr.import-error").count() == 1
    assert "lead_at" in page.locator("tr.import-error").inner_text()
    page.screenshot(path=str(ARTIFACTS / "other-customers-errors-desktop.png"), full_page=True)
    page.set_input_files(
        "input[type=file]",
        {"name": "leads.csv", "mimeType": "text/csv", "buffer": (header + "e2e-1,events,2026-01-02,,\n").encode()},
    )
    page.click("form[enctype] button[type=submit]")
    page.wait_for_load_state()
    assert "1 customer imported from leads.csv" in page.content()
    assert "e2e-1" in page.locator("table").last.inner_text()
