"""Local development: `make run`. Debug on, e-mails printed to the console."""

import os

os.environ.setdefault("SECRET_KEY", "dev-insecure-key-change-me-0123456789-abcdefghijklmnopqrstuvwxyz")

from .base import *  # noqa: F403
from .base import env_list

SECRET_KEY = os.environ["SECRET_KEY"]
FIELD_ENCRYPTION_KEYS = FIELD_ENCRYPTION_KEYS or [derived_field_encryption_key(SECRET_KEY)]  # noqa: F405
DEBUG = True
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
