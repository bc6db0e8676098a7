"""One referral from the first click to the reward, through every real piece in between:
/r/<code> → Redis click stream → flush into Postgres → sign-up API (visitor id only) → payment API →
attribution → reward evaluation → ledger; and the other tenant sees none of it."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from referrals.click_buffer import clicks_flush
from referrals.models import Attribution, Click
from rewards.ledger import participant_balances
from rewards.models import Reward
from rewards.tests.pipeline import Pipeline, program_with_rules, referrer, rules_doc


@pytest.mark.django_db(transaction=True)
def test_a_click_becomes_a_credited_referral_and_a_reward(world, client, django_capture_on_commit_callbacks):
    # Given Dana's link in a program paying 50.00 USD per new customer
    program = program_with_rules(world.a, rules_doc(referrer=[{"kind": "flat_per_conversion", "amount_minor": 5_000}]))
    dana, link = referrer(program, "Dana Whitfield")

    # When a prospect clicks her link, and the click buffer is flushed
    response = client.get(f"/r/{link.code}", HTTP_USER_AGENT="Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0")
    landing = urlsplit(response["Location"])
    visitor = parse_qs(landing.query)["vid"][0]
    flushed = clicks_flush(claim_idle_ms=0)

    # Then the visitor lands on the tenant's site with the code, and the click is in Postgres
    assert response.status_code == 302 and landing.hostname == f"{world.a.slug}.example"
    assert parse_qs(landing.query)["ref"] == [link.code]
    assert flushed.written >= 1
    click = Click.objects.get(link=link)
    assert (click.tenant_id, click.visitor_id, click.is_bot) == (world.a.pk, visitor, False)

    # When the prospect signs up (the product only knows the visitor id) and pays
    pipe = Pipeline(world, django_capture_on_commit_callbacks)
    referral = pipe.sign_up(
        email="cto@orbit.example", customer="cus_orbit", visitor=visitor, company="Orbit Labs", at=timezone.now()
    )
    event = pipe.pay("pay_orbit_1", customer="cus_orbit", amount=49_900, at=timezone.now())

    # Then Dana is credited with the whole conversion and earns a pending 50.00 USD reward in the ledger
    assert referral.referrer_id == dana.pk
    [attribution] = Attribution.objects.filter(conversion_event=event)
    assert attribution.participant_id == dana.pk and str(attribution.share) in {"1", "1.000000"}
    [reward] = Reward.objects.filter(participant=dana)
    assert (reward.amount_minor, reward.status) == (5_000, "pending")
    assert participant_balances(world.a, participant=dana, currency="USD")["pending"] == 5_000

    # And tenant B's API key sees none of it
    other = world.api(world.key_b)
    assert other.get(f"/api/v1/rewards/{reward.pk}").status_code == 404
    assert other.get(f"/api/v1/referrals/{referral.pk}").status_code == 404
    assert other.get(f"/api/v1/attributions/{attribution.pk}").status_code == 404
