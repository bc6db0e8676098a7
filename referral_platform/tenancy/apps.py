from django.apps import AppConfig


class TenancyConfig(AppConfig):
    name = "referral_platform.tenancy"
    label = "tenancy"
    verbose_name = "Workspaces and access"

    def ready(self) -> None:
        from referral_platform.reconcile import register_sweep

        from . import checks, schema  # noqa: F401  (registers system checks and the OpenAPI auth scheme)
        from .api import idempotency_keys_expire, strict_char_fields

        strict_char_fields()

        register_sweep("tenancy.idempotency_keys", idempotency_keys_expire)
