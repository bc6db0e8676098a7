from django.conf import settings
from django.core.checks import Error, register


@register()
def visibility_timeout_exceeds_countdowns(app_configs, **kwargs):
    """A late-acked task held longer than the Redis visibility timeout would be redelivered."""
    timeout = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600)
    longest = settings.CELERY_MAX_COUNTDOWN_SECONDS
    if timeout <= longest:
        return [
            Error(
                f"Redis visibility_timeout ({timeout}s) must exceed the longest task countdown/ETA ({longest}s).",
                hint="Raise CELERY_VISIBILITY_TIMEOUT or lower CELERY_MAX_COUNTDOWN_SECONDS.",
                id="referral_platform.E001",
            )
        ]
    return []
