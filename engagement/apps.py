from django.apps import AppConfig


class EngagementConfig(AppConfig):
    name = "engagement"
    verbose_name = "Engagement (asks, communications, webhooks)"

    def ready(self) -> None:
        from .hooks import register

        register()
