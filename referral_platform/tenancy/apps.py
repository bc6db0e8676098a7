from django.apps import AppConfig


class TenancyConfig(AppConfig):
    name = "referral_platform.tenancy"
    label = "tenancy"
    verbose_name = "Workspaces and access"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from referral_platform.db_roles import grant_after_migrate
        from referral_platform.reconcile import register_sweep

        from . import checks, schema  # noqa: F401  (registers system checks and the OpenAPI auth scheme)
        from .api import idempotency_keys_expire, strict_char_fields

        # The application role's grants follow every migrate (referral_platform/db_roles.py).
        post_migrate.connect(grant_after_migrate, sender=self, dispatch_uid="db_roles_grant_after_migrate")
        strict_char_fields()

        register_sweep("tenancy.idempotency_keys", idempotency_keys_expire)
