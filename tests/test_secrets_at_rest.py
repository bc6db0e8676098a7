"""Tenants' secrets are Fernet ciphertext in the database, decrypt after a key rotation, and are never
shown back in full (issue 14)."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import call_command
from django.db import connection

from referral_platform import crypto
from referral_platform.tenancy.actors import Actor
from referral_platform.tenancy.models import Role
from rewards.models import StripeCredentials
from rewards.services import stripe_credentials_save

pytestmark = pytest.mark.django_db

SECRET_KEY_VALUE = "sk_test_51PLAINTEXTSECRETabcd"
WEBHOOK_SECRET_VALUE = "whsec_PLAINWEBHOOKSECRETwxyz"


def _raw(pk):
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret_key, webhook_secret FROM rewards_stripecredentials WHERE id = %s", [pk])
        return cursor.fetchone()


def _save(world):
    owner = Actor(kind="member", tenant=world.a, user=world.owner_a, role=Role.OWNER)
    return stripe_credentials_save(
        tenant=world.a, actor=owner, secret_key=SECRET_KEY_VALUE, webhook_secret=WEBHOOK_SECRET_VALUE
    )


def test_stripe_secrets_read_raw_from_the_database_are_ciphertext(world):
    credentials = _save(world)

    raw_key, raw_webhook = _raw(credentials.pk)

    assert SECRET_KEY_VALUE not in raw_key and "PLAINTEXT" not in raw_key and "abcd" not in raw_key
    assert WEBHOOK_SECRET_VALUE not in raw_webhook and "PLAINWEBHOOK" not in raw_webhook
    assert raw_key.startswith("gAAAAA") and raw_webhook.startswith("gAAAAA")  # Fernet tokens
    fresh = StripeCredentials.objects.get(pk=credentials.pk)
    assert (fresh.secret_key, fresh.webhook_secret) == (SECRET_KEY_VALUE, WEBHOOK_SECRET_VALUE)


def test_secrets_decrypt_after_a_key_rotation_and_the_command_moves_them_to_the_new_key(world, settings):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old_key]
    credentials = _save(world)
    under_old = _raw(credentials.pk)

    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]  # the new key encrypts, both decrypt
    before_command = StripeCredentials.objects.get(pk=credentials.pk)
    call_command("encryption_keys_rotate", stdout=open("/dev/null", "w"))  # noqa: SIM115
    under_new = _raw(credentials.pk)
    settings.FIELD_ENCRYPTION_KEYS = [new_key]  # the old key dropped
    after_drop = StripeCredentials.objects.get(pk=credentials.pk)

    assert before_command.secret_key == SECRET_KEY_VALUE
    assert under_new != under_old
    assert Fernet(new_key.encode()).decrypt(under_new[0].encode()).decode() == SECRET_KEY_VALUE
    with pytest.raises(InvalidToken):
        Fernet(old_key.encode()).decrypt(under_new[0].encode())
    assert (after_drop.secret_key, after_drop.webhook_secret) == (SECRET_KEY_VALUE, WEBHOOK_SECRET_VALUE)


def test_a_value_under_a_dropped_key_fails_loudly_not_silently(world, settings):
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    credentials = _save(world)
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    with pytest.raises(Exception, match="does not decrypt with any key"):
        StripeCredentials.objects.get(pk=credentials.pk)


def test_every_encrypted_column_is_found_by_the_rotation():
    columns = {f"{model._meta.label}.{field.name}" for model, field in crypto.encrypted_columns()}

    assert {"rewards.StripeCredentials.secret_key", "rewards.StripeCredentials.webhook_secret"} <= columns


def test_a_secret_is_shown_again_only_by_its_last_four_characters():
    assert crypto.last_four(SECRET_KEY_VALUE) == "…abcd"
    assert crypto.last_four("") == ""
