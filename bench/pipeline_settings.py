"""Settings of bench_pipeline.py: the bench settings (production on loopback) without the redirect
benchmark's peer (pinax-referrals: its tables come from syncdb, which a scratch database created with
migrations cannot run first) and with the project's own URLs."""

from bench.django_settings import *  # noqa: F403
from bench.django_settings import INSTALLED_APPS

INSTALLED_APPS = [app for app in INSTALLED_APPS if app not in ("bench.pinax_app.PinaxReferralsConfig",)]
MIGRATION_MODULES = {}
ROOT_URLCONF = "referral_platform.urls"
