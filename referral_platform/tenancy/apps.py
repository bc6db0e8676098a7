from django.apps import AppConfig


class TenancyConfig(AppConfig):
    name = "referral_platform.tenancy"
    label = "tenancy"
    verbose_name = "Workspaces and access"

    def ready(self) -> None:
        from . import checks, schema  # noqa: F401  (registers system checks and the OpenAPI auth scheme)
