"""Fixtures for rewards: a real Stripe-compatible HTTP server on loopback for the whole session."""

from __future__ import annotations

import pytest

from referral_platform.stripe_fake import StripeControl, start
from tests import factories as f
from tests.conftest import _isolated_cache, world  # noqa: F401 - the two-tenant world, clean cache


@pytest.fixture(scope="session")
def stripe_server():
    """The fake Stripe server (referral_platform/stripe_fake), started once, stopped after the run."""
    server = start()
    yield server
    server.stop()


@pytest.fixture
def stripe(stripe_server, settings) -> StripeControl:
    """A clean fake Stripe that the app's stripe client points at (settings.STRIPE_API_BASE)."""
    control = StripeControl(stripe_server.url)
    control.reset()
    settings.STRIPE_API_BASE = stripe_server.url
    return control


@pytest.fixture
def paying_program(world):  # noqa: F811
    """Tenant A's program (USD, no hold, auto-approve up to 500.00) with Stripe credentials."""
    f.StripeCredentialsFactory(tenant=world.a)
    return f.ProgramFactory(tenant=world.a, hold_days=0, auto_approve_limit_minor=50_000, currency="USD")


def connected_participant(program, stripe: StripeControl, *, customer: bool = False):
    """A participant with a real Connect account on the fake Stripe (and a customer if asked)."""
    import stripe as stripe_lib

    from rewards.models import StripeCredentials

    participant = f.ParticipantFactory(program=program)
    key = StripeCredentials.objects.get(tenant=program.tenant).secret_key
    client = stripe_lib.StripeClient(key, base_addresses={"api": stripe.base_url}, max_network_retries=0)
    account = client.v1.accounts.create({"type": "express", "email": participant.email})
    customer_id = client.v1.customers.create({"email": participant.email}).id if customer else ""
    f.ParticipantStripeProfileFactory(participant=participant, connected_account_id=account.id, customer_id=customer_id)
    return participant
