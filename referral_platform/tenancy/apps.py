from django.apps import AppConfig


class TenancyConfig(AppConfig):
    name = "referral_platform.tenancy"
    label = "tenancy"
    verbose_name = "Workspaces and access"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from referral_platform.db_roles import grant_after_migrate
        from referral_platform.reconcile import register_sweep

        from . import checks, rls, schema  # noqa: F401  (registers system checks and the OpenAPI auth scheme)
        from .api import idempotency_keys_expire, strict_char_fields

        # The application role's grants follow every migrate (referral_platform/db_roles.py).
        post_migrate.connect(grant_after_migrate, sender=self, dispatch_uid="db_roles_grant_after_migrate")
        # Row-level security on every tenant-owned table, new ones included (rls.py).
        post_migrate.connect(rls.install_after_migrate, sender=self, dispatch_uid="rls_install_after_migrate")
        _commands_take_the_audited_path()
        strict_char_fields()

        register_sweep("tenancy.idempotency_keys", idempotency_keys_expire)


def _commands_take_the_audited_path() -> None:
    """Management commands (migrate, seed_demo, rebuild_rollups, …) are operators' work across tenants: each
    runs on row-level security's audited bypass, logged with the command's name, unless its caller already
    chose a state (a test, or a command that binds one tenant)."""
    from django.core.management.base import BaseCommand

    from . import rls

    if getattr(BaseCommand.execute, "rls_wrapped", False):
        return
    original = BaseCommand.execute

    def execute(self, *args, **options):
        if rls.current() is not rls.UNBOUND:
            return original(self, *args, **options)
        with rls.bypass(f"manage.py {self.__module__.rsplit('.', 1)[-1]}"):
            return original(self, *args, **options)

    execute.rls_wrapped = True
    BaseCommand.execute = execute
