from django.apps import AppConfig


class ReferralsConfig(AppConfig):
    name = "referrals"

    def ready(self) -> None:
        from .hooks import register
        from .link_cache import connect_invalidation

        connect_invalidation()
        register()
