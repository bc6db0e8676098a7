"""Small defects of issue 11 (item 7) that only a browser shows, measured in headless Chromium: the terms
checkboxes of the public application pages are at least 20 px square, the landing background is one
gradient that does not repeat in bands down a short page, and the favicon loads with no console error.
(The server-side half of these defects is tests/test_small_defects.py.)"""

from __future__ import annotations

import struct
import zlib

import pytest

from programs.models import ProgramAccess, ProgramKind, ProgramStatus
from tests.factories import (
    ParticipantFactory,
    ProgramFactory,
    ProgramVersionFactory,
    ReferralLinkFactory,
    TenantFactory,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PAGE_BG = (0xF6, 0xF7, 0xFB)  # --bg of static/css/app.css
GRADIENT_TOP = (0xEE, 0xF2, 0xFF)  # where body.landing's gradient starts


def _console_errors(page) -> list[str]:
    errors: list[str] = []
    page.on(
        "console", lambda message: errors.append(f"{page.url}: {message.text}") if message.type == "error" else None
    )
    page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
    page.on("requestfailed", lambda request: errors.append(f"failed request {request.url}"))
    # Any sub-resource (stylesheet, icon) answered with an error, named by its own URL.
    page.on(
        "response",
        lambda response: (
            errors.append(f"{response.status} {response.url}")
            if response.status >= 400 and response.request.resource_type != "document"
            else None
        ),
    )
    return errors


def _pixel(page, x: int, y: int) -> tuple[int, int, int]:
    """The rendered colour at viewport (x, y): a 1x1 PNG screenshot, decoded (one scanline: filter byte + RGB[A])."""
    png = page.screenshot(clip={"x": x, "y": y, "width": 1, "height": 1})
    idat, offset = b"", 8
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        if kind == b"IDAT":
            idat += png[offset + 8 : offset + 8 + length]
        offset += 12 + length
    row = zlib.decompress(idat)
    return tuple(row[1:4])


def _near(colour, expected, tolerance=3) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, expected, strict=True))


def test_terms_checkboxes_are_at_least_20px(page, live_server):
    tenant = TenantFactory(name="Acme Analytics", slug="acme-pages")
    ProgramFactory(tenant=tenant, slug="friends", status=ProgramStatus.ACTIVE, access=ProgramAccess.OPEN)
    ProgramFactory(
        tenant=tenant,
        slug="partners",
        kind=ProgramKind.PARTNER,
        status=ProgramStatus.ACTIVE,
        access=ProgramAccess.GATED,
    )
    errors = _console_errors(page)

    sizes = {}
    pages = {"/t/acme-pages/friends/apply/": "accept_terms", "/partners/acme-pages/partners/apply/": "terms_accepted"}
    for path, checkbox in pages.items():
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 200, path
        box = page.locator(f"input[type=checkbox][name={checkbox}]").bounding_box()
        sizes[path] = (box["width"], box["height"])

    assert all(width >= 20 and height >= 20 for width, height in sizes.values()), sizes
    assert errors == []


def test_landing_background_does_not_repeat_on_a_short_page_and_the_favicon_loads(page, live_server):
    program = ProgramFactory(tenant=TenantFactory(name="Acme Analytics"), status=ProgramStatus.ACTIVE)
    ProgramVersionFactory(program=program)
    link = ReferralLinkFactory(participant=ParticipantFactory(program=program))
    errors = _console_errors(page)
    page.set_viewport_size({"width": 1200, "height": 1400})  # taller than the pages: they are "short"

    for path in [f"/join/{link.code}/", f"/join/{'x' * 12}/"]:  # the landing and the link-not-found page
        assert page.goto(f"{live_server.url}{path}").status in (200, 404)
        style = page.evaluate(
            """() => { const s = getComputedStyle(document.body);
                return {repeat: s.backgroundRepeat, minHeight: s.minHeight, body: document.body.offsetHeight,
                        content: document.querySelector('.landing-foot').getBoundingClientRect().bottom,
                        viewport: innerHeight}; }"""
        )
        assert style["repeat"] == "no-repeat", (path, style)
        assert style["content"] < style["viewport"] <= style["body"], (path, style)  # short page, body fills it
        # Measured: the gradient at the top, the plain page colour below it, down to the bottom edge
        # (a repeating gradient would start again at the body's end or every 320 px).
        assert _near(_pixel(page, 5, 1), GRADIENT_TOP), path
        bottom = [_pixel(page, 5, y) for y in (400, 700, 1000, 1395)]
        assert all(_near(colour, PAGE_BG) for colour in bottom), (path, bottom)

    icon = page.evaluate("document.querySelector('link[rel=icon]').href")
    served = page.request.get(icon)
    ico = page.request.get(f"{live_server.url}/favicon.ico")
    assert served.status == 200 and "svg" in served.headers["content-type"]
    assert ico.status == 200 and ico.url == icon
    # The link-not-found page is itself a 404 document, which Chromium logs once; nothing else may fail.
    not_found = (
        f"{live_server.url}/join/{'x' * 12}/: Failed to load resource: the server responded with a status of 404"
    )
    assert [error for error in errors if not error.startswith(not_found)] == []
    assert len(errors) <= 1
