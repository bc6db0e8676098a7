"""Tenants' Stripe secret key and webhook signing secret: plain text → Fernet ciphertext (issue 14)."""

from django.db import migrations

import referral_platform.crypto


def _convert(schema_editor, convert):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT id, secret_key, webhook_secret FROM rewards_stripecredentials")
        for pk, secret_key, webhook_secret in cursor.fetchall():
            cursor.execute(
                "UPDATE rewards_stripecredentials SET secret_key = %s, webhook_secret = %s WHERE id = %s",
                [convert(secret_key) if secret_key else "", convert(webhook_secret) if webhook_secret else "", pk],
            )


def encrypt_existing(apps, schema_editor):
    """Encrypt the rows stored in plain text before this migration (raw SQL: the model state's field would
    try to decrypt them)."""
    _convert(schema_editor, referral_platform.crypto.encrypt)


def decrypt_existing(apps, schema_editor):
    _convert(schema_editor, referral_platform.crypto.decrypt)


class Migration(migrations.Migration):
    dependencies = [
        ("rewards", "0006_participant_message_welcome"),
    ]

    operations = [
        migrations.AlterField(
            model_name="stripecredentials",
            name="secret_key",
            field=referral_platform.crypto.EncryptedTextField(),
        ),
        migrations.AlterField(
            model_name="stripecredentials",
            name="webhook_secret",
            field=referral_platform.crypto.EncryptedTextField(),
        ),
        migrations.RunPython(encrypt_existing, decrypt_existing),
    ]
