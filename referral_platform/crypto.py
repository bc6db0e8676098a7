"""Secrets encrypted at rest: ``EncryptedTextField`` and the keys behind it.

Values are encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from the ``cryptography`` library) under the
keys in ``settings.FIELD_ENCRYPTION_KEYS`` (environment ``FIELD_ENCRYPTION_KEYS``, comma-separated, newest
first). ``MultiFernet`` encrypts with the newest key and decrypts with any of them, so a key rotation is:
put the new key first, deploy, run ``manage.py encryption_keys_rotate`` (re-encrypts every encrypted column
under the newest key), then drop the old key. Generate a key with
``python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"``.

Model code sees plain text; the database sees only ciphertext. Ciphertext differs on every save, so an
encrypted column cannot be filtered or joined on (it holds secrets, not lookup keys).
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, models, transaction


@lru_cache(maxsize=8)
def _multifernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS is empty: set at least one Fernet key")
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError as exc:
        raise ImproperlyConfigured(f"FIELD_ENCRYPTION_KEYS holds an invalid Fernet key: {exc}") from None


def _keys() -> MultiFernet:
    return _multifernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


def encrypt(value: str) -> str:
    return _keys().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _keys().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            "An encrypted value does not decrypt with any key in FIELD_ENCRYPTION_KEYS (a key was dropped "
            "before `manage.py encryption_keys_rotate` ran?)"
        ) from None


def rotate(token: str) -> str:
    """The same plain text encrypted under the newest key."""
    return _keys().rotate(token.encode()).decode()


def last_four(value: str) -> str:
    """``…wxyz``: how a stored secret is shown again, never more."""
    return f"…{value[-4:]}" if value and len(value) > 8 else ("…" if value else "")


class EncryptedTextField(models.TextField):
    """A text column stored as Fernet ciphertext; ``""`` stays ``""`` (nothing to hide)."""

    description = "Text encrypted at rest"

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        return decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt(str(value))


def encrypted_columns() -> list[tuple[type[models.Model], EncryptedTextField]]:
    return [
        (model, field)
        for model in apps.get_models()
        for field in model._meta.concrete_fields
        if isinstance(field, EncryptedTextField)
    ]


@transaction.atomic
def encrypted_columns_rotate() -> dict[str, int]:
    """Re-encrypt every value of every ``EncryptedTextField`` under the newest key; rows rewritten per column.

    Works on raw rows (no model managers): it is a platform job across all tenants by nature.
    """
    counts: dict[str, int] = {}
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for model, field in encrypted_columns():
            table, column, pk = model._meta.db_table, field.column, model._meta.pk.column
            cursor.execute(
                f"SELECT {quote(pk)}, {quote(column)} FROM {quote(table)} "  # noqa: S608 - names from models
                f"WHERE {quote(column)} IS NOT NULL AND {quote(column)} <> '' FOR UPDATE"
            )
            rows = [(rotate(value), key) for key, value in cursor.fetchall()]
            cursor.executemany(
                f"UPDATE {quote(table)} SET {quote(column)} = %s WHERE {quote(pk)} = %s",  # noqa: S608
                rows,
            )
            counts[f"{model._meta.label}.{field.name}"] = len(rows)
    return counts
