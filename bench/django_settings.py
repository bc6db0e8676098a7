"""Settings for `make bench`: production settings on loopback, plus the peer (pinax-referrals).

Never used outside bench/. Differences from production: plain HTTP on 127.0.0.1 (no SSL redirect),
persistent database connections, pinax-referrals installed under its own app label (its default
label, "referrals", is ours) and mounted at /pinax/, and a bare 302 view at /bench/bare/ (the floor).
SECRET_KEY comes from the environment: bench_redirect.py generates a fresh one per run.
"""

import os
import warnings

os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
if not os.environ.get("FIELD_ENCRYPTION_KEYS"):  # a throw-away key per run, like SECRET_KEY
    import base64
    import hashlib

    _digest = hashlib.sha256(os.environ.get("SECRET_KEY", "bench").encode()).digest()
    os.environ["FIELD_ENCRYPTION_KEYS"] = base64.urlsafe_b64encode(_digest).decode()

from referral_platform.settings.prod import *  # noqa: F403
from referral_platform.settings.prod import DATABASES, INSTALLED_APPS

DEBUG = False
SECURE_SSL_REDIRECT = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
DATABASES["default"]["CONN_MAX_AGE"] = None
ROOT_URLCONF = "bench.urls"
INSTALLED_APPS = [*INSTALLED_APPS, "django.contrib.sites", "bench.pinax_app.PinaxReferralsConfig"]
SITE_ID = 1
# Its migrations name the app "referrals" (ours); its tables come from `migrate --run-syncdb`.
MIGRATION_MODULES = {"pinax_referrals": None}
PINAX_REFERRALS_ALLOWED_REDIRECT_HOSTS = ["bench.example"]
# Static files are not collected for the benchmark; whitenoise would warn once per worker.
warnings.filterwarnings("ignore", "No directory at", UserWarning)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
# bench_pipeline.py gives its workers a queue of their own on the shared broker.
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("BENCH_CELERY_QUEUE", "celery")
