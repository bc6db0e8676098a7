"""pytest: real PostgreSQL and Redis (never SQLite), fast hashing, e-mails kept in memory."""

import os

os.environ.setdefault("SECRET_KEY", "test-key-not-secret-0123456789-abcdefghijklmnopqrstuvwxyz")
os.environ.setdefault("CACHE_KEY_PREFIX", f"rp-test-{os.getpid()}")


def _redis_url_with_db(url: str, db: int) -> str:
    """``url`` pointing at Redis database ``db`` (redis://host:port/N or unix://path?db=N)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = dict(parse_qsl(parts.query))
        query["db"] = str(db)
        return urlunsplit(parts._replace(query=urlencode(query)))
    return urlunsplit(parts._replace(path=f"/{db}"))


# `make test` runs the suite in parallel processes (pytest-xdist): pytest-django gives each its own test
# database; here each gets its own Redis database (click buffer, link cache, broker, limits), set in the
# environment so that the workers and servers a test starts use it too.
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _XDIST_WORKER.startswith("gw"):
    for _name in ("REDIS_URL", "REFERRAL_REDIS_URL"):
        if os.environ.get(_name):
            os.environ[_name] = _redis_url_with_db(os.environ[_name], 1 + int(_XDIST_WORKER[2:]))

# The environment is set above before the base settings read it.
import dj_database_url  # noqa: E402

from .base import *  # noqa: E402, F403
from .base import DATABASE_URL, DATABASES  # noqa: E402

SECRET_KEY = os.environ["SECRET_KEY"]
FIELD_ENCRYPTION_KEYS = FIELD_ENCRYPTION_KEYS or [derived_field_encryption_key(SECRET_KEY)]  # noqa: F405
DEBUG = False
ALLOWED_HOSTS = ["*"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# The test database is created and migrated by the owner role (DATABASE_OWNER_URL, else DATABASE_URL);
# then every connection of the tests runs as the application role (conftest.py, tests/app_role.py).
DATABASES["default"] = dj_database_url.parse(
    os.environ.get("DATABASE_OWNER_URL") or DATABASE_URL,
    engine=DATABASE_ENGINE,  # noqa: F405
)
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
DATABASE_APP_ROLE = os.environ.get("DATABASE_APP_ROLE") or "referral_test_app"
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

# A test that runs real Celery workers as separate processes (tests/test_worker_crash.py) starts them with
# CELERY_TEST_QUEUE set: tasks then go through the Redis broker, on that queue only.
if os.environ.get("CELERY_TEST_QUEUE"):
    CELERY_TASK_ALWAYS_EAGER = False
    CELERY_TASK_DEFAULT_QUEUE = os.environ["CELERY_TEST_QUEUE"]

# Every redirect takes the Redis round trip unless a test turns the local fast path on
# (referrals/tests/test_click_spool.py, with its own directory).
REFERRAL_CLICK_SPOOL_DIR = ""
