"""Onboarding: the workspace's checklist shows progress and says where to fix each step; the snippet is served."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.urls import reverse

from tests import factories as f

pytestmark = pytest.mark.django_db


def steps(page: str) -> dict[str, str]:
    return dict(re.findall(r'data-step="(\w+)" data-done="([01])"', page))


def test_a_new_workspace_sees_what_is_left_and_where_to_do_it(world, client):
    world.a.allowed_landing_domains = []
    world.a.save(update_fields=["allowed_landing_domains"])
    client.force_login(world.owner_a)

    page = client.get(reverse("onboarding")).content.decode()

    assert steps(page) == {"domains": "0", "stripe": "0", "webhook": "0", "program": "0", "snippet": "0", "invite": "0"}
    assert "0 of 6 steps done." in page
    assert "Settings → Domains: add the domain of your sign-up page" in page
    assert reverse("admin:tenancy_tenant_change", args=[world.a.pk]) in page


def test_progress_follows_what_the_workspace_did(world, client):
    program = f.ProgramFactory(tenant=world.a)
    participant = f.ParticipantFactory(program=program, source="admin")
    f.ReferralFactory(referrer=participant)
    client.force_login(world.marketer_a)

    page = client.get(reverse("onboarding")).content.decode()

    assert steps(page) == {"domains": "1", "stripe": "0", "webhook": "0", "program": "1", "snippet": "1", "invite": "1"}
    assert "4 of 6 steps done." in page
    assert f"(id {program.pk})" in page and "/static/tracking/rp.js" in page and 'data-cookie-days="' in page


def test_the_checklist_is_the_sessions_own(world, client):
    f.ProgramFactory(tenant=world.a, name="Secret program of A")
    client.force_login(world.marketer_b)

    page = client.get(reverse("onboarding")).content.decode()

    assert "Secret program of A" not in page and "Tenant B" in page
    assert 'data-step="program" data-done="0"' in page


def test_the_tracking_snippet_is_served_and_keeps_ref_and_vid_first_party():
    path = finders.find("tracking/rp.js")
    source = Path(path).read_text(encoding="utf-8")
    assert "data-cookie-days" in source and "rp_vid" in source and "rp_ref" in source
    assert "fetch(" not in source and "XMLHttpRequest" not in source  # it sends nothing anywhere


@pytest.fixture(scope="module")
def stripe_server():
    """The project's Stripe-compatible server (referral_platform/stripe_fake) on loopback."""
    from referral_platform.stripe_fake import start

    server = start()
    yield server
    server.stop()


def _verify(client) -> str:
    response = client.post(reverse("onboarding"), {"verify_stripe": "1"})
    assert response.status_code == 200
    return re.search(r'<p id="stripe-check"[^>]*>(.*?)</p>', response.content.decode(), re.S).group(1)


def test_the_stripe_step_tests_the_secret_key_against_stripe(world, client, settings, stripe_server):
    from referral_platform.stripe_fake import StripeControl

    settings.STRIPE_API_BASE = stripe_server.url
    control = StripeControl(stripe_server.url)
    control.reset()
    f.StripeCredentialsFactory(tenant=world.a, secret_key="sk_test_onboarding")
    client.force_login(world.owner_a)

    shown = _verify(client)

    assert shown.startswith("✓") and "The secret key works: Stripe answered in test mode." in shown
    assert [(r["method"], r["path"]) for r in control.requests()] == [("GET", "/v1/balance")]


def test_the_stripe_step_says_in_words_why_the_key_fails(world, client, settings, stripe_server):
    settings.STRIPE_API_BASE = stripe_server.url
    credentials = f.StripeCredentialsFactory(tenant=world.a, secret_key="rk_wrong")
    client.force_login(world.owner_a)

    refused = _verify(client)
    credentials.delete()
    missing = _verify(client)
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # nothing listens
    f.StripeCredentialsFactory(tenant=world.a, secret_key="sk_test_x")
    unreachable = _verify(client)

    assert refused.startswith("✗") and "Stripe refused the secret key: Invalid API Key provided." in refused
    assert "No secret key is saved yet (Settings → Stripe)." in missing
    assert "Could not reach Stripe; try again in a minute." in unreachable
