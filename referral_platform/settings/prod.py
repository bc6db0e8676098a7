"""Production: every secret from the environment, HTTPS only."""

import os

from .base import *  # noqa: F403
from .base import env_bool

if not SECRET_KEY or len(SECRET_KEY) < 50:  # noqa: F405
    raise RuntimeError("SECRET_KEY must be set to a random string of at least 50 characters in production")

if not FIELD_ENCRYPTION_KEYS:  # noqa: F405
    raise RuntimeError("FIELD_ENCRYPTION_KEYS must hold at least one Fernet key in production (README)")

DEBUG = False
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", str(60 * 60 * 24 * 365)))
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
ACCOUNT_EMAIL_VERIFICATION = os.environ.get("ACCOUNT_EMAIL_VERIFICATION", "mandatory")
# /health/ is probed by the load balancer over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^health/$"]
REFERRAL_VISITOR_COOKIE_SECURE = env_bool("REFERRAL_VISITOR_COOKIE_SECURE", True)
