"""The official stripe library, configured per tenant: its own secret key, our API base, no hidden retries.

``settings.STRIPE_API_BASE`` points the library at a Stripe-compatible server (tests, benchmarks,
local development); unset, the library talks to Stripe. Retries are ours (the payout run, with backoff
and the same idempotency key), so the library's own network retries are off.
"""

from __future__ import annotations

from dataclasses import dataclass

import stripe
from django.conf import settings
from django.core.exceptions import ValidationError

from referral_platform.tenancy.models import Tenant

from .models import StripeCredentials


def credentials_for(tenant: Tenant) -> StripeCredentials:
    credentials = StripeCredentials.objects.for_tenant(tenant).first()
    if credentials is None or not credentials.secret_key:
        raise ValidationError({"stripe": "The workspace has no Stripe secret key configured."})
    return credentials


def client_for(tenant: Tenant) -> stripe.StripeClient:
    credentials = credentials_for(tenant)
    options = {}
    if settings.STRIPE_API_BASE:
        options["base_addresses"] = {"api": settings.STRIPE_API_BASE, "connect": settings.STRIPE_API_BASE}
    return stripe.StripeClient(
        credentials.secret_key,
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=getattr(settings, "STRIPE_TIMEOUT_SECONDS", 30)),
        **options,
    )


@dataclass(frozen=True)
class StripeKeysCheck:
    ok: bool
    message: str  # in words, for the marketer


def stripe_keys_verify(*, tenant: Tenant) -> StripeKeysCheck:
    """Try the workspace's saved secret key with one harmless read (the balance) through the official
    library against the configured API base, and say in words whether it works. Writes nothing."""
    try:
        client = client_for(tenant)
    except ValidationError:
        return StripeKeysCheck(False, "No secret key is saved yet (Settings → Stripe). It is needed only for payouts.")
    try:
        balance = client.v1.balance.retrieve()
    except stripe.AuthenticationError as error:
        return StripeKeysCheck(False, f"Stripe refused the secret key: {error.user_message or error}")
    except stripe.PermissionError as error:
        return StripeKeysCheck(False, f"The key works but may not read the balance: {error.user_message or error}")
    except stripe.APIConnectionError:
        return StripeKeysCheck(False, "Could not reach Stripe; try again in a minute.")
    except stripe.StripeError as error:
        return StripeKeysCheck(False, f"Stripe answered with an error: {error.user_message or error}")
    mode = "live" if balance.livemode else "test"
    return StripeKeysCheck(True, f"The secret key works: Stripe answered in {mode} mode.")
