"""pytest: real PostgreSQL and Redis (never SQLite), fast hashing, e-mails kept in memory."""

import os

os.environ.setdefault("SECRET_KEY", "test-key-not-secret-0123456789-abcdefghijklmnopqrstuvwxyz")
os.environ.setdefault("CACHE_KEY_PREFIX", f"rp-test-{os.getpid()}")

from .base import *  # noqa: F403
from .base import DATABASES

SECRET_KEY = os.environ["SECRET_KEY"]
FIELD_ENCRYPTION_KEYS = FIELD_ENCRYPTION_KEYS or [derived_field_encryption_key(SECRET_KEY)]  # noqa: F405
DEBUG = False
ALLOWED_HOSTS = ["*"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
DATABASES["default"]["CONN_MAX_AGE"] = 0
DATABASES["default"]["TEST"] = {"NAME": os.environ.get("TEST_DATABASE_NAME", "test_referral_platform")}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Tasks queued with enqueue_on_commit run in-process when the transaction commits (tests capture
# on_commit callbacks); nothing reaches the shared Redis broker.
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
