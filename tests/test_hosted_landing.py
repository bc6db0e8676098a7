"""The hosted landing page as a landing URL: /r/<code> → /join/?ref=<code>&vid=<id> → that code's own page."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests import factories as f

pytestmark = pytest.mark.django_db


def test_the_hosted_landing_url_sends_the_visitor_to_the_codes_page_keeping_the_visitor_id(world, client):
    link = f.ReferralLinkFactory(participant=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)))

    response = client.get("/join/", {"ref": link.code, "vid": "vis-1234567890abcdef"})
    page = client.get(response["Location"])

    assert response.status_code == 302
    assert response["Location"] == reverse("referral_landing", args=[link.code]) + "?vid=vis-1234567890abcdef"
    assert page.status_code == 200 and 'value="vis-1234567890abcdef"' in page.content.decode()


@pytest.mark.parametrize("query", [{}, {"ref": "no/such<code>"}], ids=["no-code", "bad-code"])
def test_without_a_usable_code_the_hosted_page_is_the_friendly_404(client, query):
    response = client.get("/join/", query)
    assert response.status_code == 404


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_code_with_a_nul_character_is_the_friendly_404_not_a_500(client, method):
    """QA: GET /join/xx%00/ answered 500 (ValueError from psycopg on a NUL in the code)."""
    response = getattr(client, method)("/join/xx%00/")
    assert response.status_code == 404


@pytest.mark.heavy(23)
def test_demo_programs_land_on_the_hosted_page(db, settings, tmp_path):
    from django.core.management import call_command

    from programs.models import Program
    from referral_platform.tenancy.models import Tenant

    settings.MEDIA_ROOT = str(tmp_path)
    call_command("seed_demo")

    landing_urls = set(Program.objects.values_list("landing_url", flat=True))
    assert landing_urls == {f"{settings.SITE_URL}/join/"}
    assert all("127.0.0.1" in t.allowed_landing_domains for t in Tenant.objects.exclude(slug__startswith="tenant-"))
