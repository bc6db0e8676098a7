from django.apps import AppConfig


class PartnersConfig(AppConfig):
    name = "partners"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from referral_platform.hooks import hooks

        from . import hooks as partner_hooks

        hooks.register("account_owner", partner_hooks.account_owner)
        hooks.register("session_actor", partner_hooks.session_actor)
