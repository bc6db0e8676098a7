"""The workspace's own Stripe credentials, saved through one service (the admin's form and save use it)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from referral_platform.tenancy.actors import Actor
from referral_platform.tenancy.models import AuditEvent, Role
from rewards.models import StripeCredentials
from rewards.services import stripe_credentials_save, stripe_credentials_values
from tests import factories as f

pytestmark = pytest.mark.django_db


def owner(world):
    return Actor(kind="member", tenant=world.a, user=world.owner_a, role=Role.OWNER)


def test_the_first_save_needs_both_values_and_stores_one_row_audited_without_them(world):
    credentials = stripe_credentials_save(
        tenant=world.a, actor=owner(world), secret_key="sk_test_AAAA1111", webhook_secret="whsec_BBBB2222"
    )

    assert (credentials.tenant, credentials.secret_key, credentials.webhook_secret) == (
        world.a,
        "sk_test_AAAA1111",
        "whsec_BBBB2222",
    )
    [audit] = AuditEvent.objects.filter(action="stripe.credentials_saved")
    assert audit.actor == owner(world).label and "AAAA1111" not in str(audit.data) + audit.reason


@pytest.mark.parametrize(
    ("values", "errors"),
    [
        ({"secret_key": "", "webhook_secret": ""}, {"secret_key": ["Required."], "webhook_secret": ["Required."]}),
        (
            {"secret_key": "pk_test_public", "webhook_secret": "whsec_1"},
            {"secret_key": ["A Stripe secret key starts with sk_ (or rk_ for a restricted key)."]},
        ),
    ],
    ids=["missing", "publishable-key"],
)
def test_bad_credentials_name_the_field_and_write_nothing(world, values, errors):
    with pytest.raises(ValidationError) as caught:
        stripe_credentials_save(tenant=world.a, actor=owner(world), **values)

    assert caught.value.message_dict == errors
    assert not StripeCredentials.objects.exists() and not AuditEvent.objects.filter(action__startswith="stripe.")


def test_a_blank_value_keeps_the_stored_one_and_the_row_stays_one_per_workspace(world):
    stored = f.StripeCredentialsFactory(tenant=world.a, secret_key="sk_live_KEEPME", webhook_secret="whsec_old")
    f.StripeCredentialsFactory(tenant=world.b, secret_key="sk_test_OTHER", webhook_secret="whsec_other")

    saved = stripe_credentials_save(tenant=world.a, actor=owner(world), secret_key="", webhook_secret="whsec_new")

    assert saved.pk == stored.pk and StripeCredentials.objects.filter(tenant=world.a).count() == 1
    assert (saved.secret_key, saved.webhook_secret) == ("sk_live_KEEPME", "whsec_new")
    assert StripeCredentials.objects.get(tenant=world.b).webhook_secret == "whsec_other"
    assert stripe_credentials_values(tenant=world.a, secret_key="rk_live_RESTRICTED") == {
        "secret_key": "rk_live_RESTRICTED",
        "webhook_secret": "whsec_new",
    }
