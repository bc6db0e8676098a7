"""pinax-referrals under the app label "pinax_referrals" (its own label, "referrals", is taken)."""

from django.apps import AppConfig


class PinaxReferralsConfig(AppConfig):
    name = "pinax.referrals"
    label = "pinax_referrals"
    verbose_name = "Pinax Referrals (benchmark peer)"
    default_auto_field = "django.db.models.AutoField"
