"""Re-encrypt every encrypted column under the newest key of FIELD_ENCRYPTION_KEYS (after a key rotation)."""

from django.core.management.base import BaseCommand

from referral_platform.crypto import encrypted_columns_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every EncryptedTextField value under the newest FIELD_ENCRYPTION_KEYS key. Run after putting "
        "a new key first; drop the old key only afterwards."
    )

    def handle(self, *args, **options):
        for column, count in encrypted_columns_rotate().items():
            self.stdout.write(f"{column}: {count} value(s) re-encrypted")
