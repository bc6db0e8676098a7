"""API: Stripe Connect onboarding link for a participant (the account is created once, in the tenant's Stripe)."""

from __future__ import annotations

from django.urls import reverse

from rewards.models import ParticipantStripeProfile
from tests import factories as f

LINKS = {"refresh_url": "https://tenant-a.example/refresh", "return_url": "https://tenant-a.example/done"}


def _url(participant):
    return reverse("api:participant-stripe-onboarding", kwargs={"pk": participant.pk})


def test_an_onboarding_link_creates_the_connect_account_once(world, stripe):
    f.StripeCredentialsFactory(tenant=world.a)
    participant = f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))
    api = world.api(world.key_a)

    first = api.post(_url(participant), LINKS, format="json")
    second = api.post(_url(participant), LINKS, format="json")
    status = api.get(_url(participant))

    [account] = stripe.objects("account")
    assert first.status_code == second.status_code == 201
    assert first.json()["url"].startswith("https://") and account["email"] == participant.email
    assert ParticipantStripeProfile.objects.get(participant=participant).connected_account_id == account["id"]
    assert status.json()["has_connected_account"] is True and account["id"] not in status.content.decode()
    assert len(stripe.requests("/v1/account_links")) == 2


def test_bad_input_names_the_field_and_calls_nobody(world, stripe):
    f.StripeCredentialsFactory(tenant=world.a)
    participant = f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))

    response = world.api(world.key_a).post(_url(participant), {"refresh_url": "not a url"}, format="json")

    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"refresh_url", "return_url"}
    assert stripe.requests() == [] and not ParticipantStripeProfile.objects.exists()


def test_without_stripe_credentials_the_answer_names_stripe(world, stripe):
    participant = f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))

    response = world.api(world.key_a).post(_url(participant), LINKS, format="json")

    assert response.status_code == 400 and "stripe" in response.json()["error"]["fields"]
    assert stripe.requests() == []


def test_tenant_b_cannot_onboard_tenant_a_participants(world, stripe):
    f.StripeCredentialsFactory(tenant=world.a)
    f.StripeCredentialsFactory(tenant=world.b)
    participant = f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))

    response = world.api(world.key_b).post(_url(participant), LINKS, format="json")

    assert response.status_code == 404
    assert stripe.requests() == [] and not ParticipantStripeProfile.objects.exists()
