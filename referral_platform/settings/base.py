"""Settings shared by every environment; everything deployment-specific comes from the environment."""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

from referral_platform.gc_tuning import DEFAULT as GC_DEFAULT
from referral_platform.gc_tuning import gc_thresholds

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_int(name: str, default: int, *, minimum: int = 1) -> int:
    """A whole number of at least ``minimum`` from the environment; anything else stops the start naming the
    variable and the value."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")
    return value


SECRET_KEY = os.environ.get("SECRET_KEY", "")
DEBUG = False
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
SITE_URL = os.environ.get("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "allauth",
    "allauth.account",
    "referral_platform.tenancy",
    "programs",
    "referrals",
    "rewards",
    "partners",
    "analytics",  # issue 10: rollups, home, analytics pages (top layer, reads every app)
    "engagement",
    "demo",
]

MIDDLEWARE = [
    # Row-level security (issue 14): each request in its own context, tenant bound once resolved.
    "referral_platform.tenancy.middleware.RowLevelSecurityMiddleware",
    # First: answers /r/<code> itself so the public redirect skips the rest of the stack
    # (production normally answers it one level higher, in referral_platform/wsgi.py).
    "referrals.redirect.ReferralRedirectMiddleware",
    "referral_platform.tenancy.api_input.ApiBodyLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "referral_platform.tenancy.middleware.TenantMiddleware",
]

ROOT_URLCONF = "referral_platform.urls"
WSGI_APPLICATION = "referral_platform.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "referral_platform.tenancy.context_processors.tenancy",
            ],
            # Core template tags (the core package is not an installed app): {% load money %}.
            "libraries": {"money": "referral_platform.templatetags.money"},
        },
    }
]

# One stack everywhere: PostgreSQL. scripts/devstack.py sets DATABASE_URL to an embedded
# server when none is configured, so an unset variable here is a configuration error.
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if not DATABASE_URL:
    raise RuntimeError(
        "DATABASE_URL is not set. Use `make run` / `make test` (they start an embedded PostgreSQL), "
        "or export DATABASE_URL=postgres://user@host:5432/dbname."
    )
# ENGINE: Django's PostgreSQL backend plus row-level security's per-transaction tenant setting
# (referral_platform/db/base.py); server-side cursors off, as a WITH HOLD cursor would outlive that setting.
DATABASE_ENGINE = "referral_platform.db"
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL,
        engine=DATABASE_ENGINE,
        conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
# A read replica for analytics and reporting reads (referral_platform/db_router.py, docs/scaling.md).
if os.environ.get("DATABASE_REPLICA_URL"):
    DATABASES["replica"] = dj_database_url.parse(
        os.environ["DATABASE_REPLICA_URL"],
        engine=DATABASE_ENGINE,
        conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "60")),
    )
    DATABASES["replica"]["DISABLE_SERVER_SIDE_CURSORS"] = True
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
DATABASE_ROUTERS = ["referral_platform.db_router.ReplicaRouter"]
# The pipeline's heaviest statements as server-side prepared statements (referral_platform/db/prepared.py): off
# ("0") behind a pooler that hands a session's statements to other server connections (PgBouncer in
# transaction pooling mode).
DB_PREPARED_STATEMENTS = os.environ.get("DB_PREPARED_STATEMENTS", "1") != "0"
# Tables never analysed get statistics once they reach so many pages, and again each time they double
# (referral_platform/db/young_tables.py: Celery workers ask before a task, at most every 2 s); 0: autovacuum only.
DB_ANALYZE_YOUNG_PAGES = env_int("DB_ANALYZE_YOUNG_PAGES", 10, minimum=0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Least privilege (referral_platform/db_roles.py): DATABASE_URL is the application's role; migrations run
# with DATABASE_URL set to the owner role's URL, and every migrate grants DATABASE_APP_ROLE (when set and
# existing) row access only — the ledger INSERT + SELECT. README "Database roles".
DATABASE_APP_ROLE = os.environ.get("DATABASE_APP_ROLE", "")

REDIS_URL = os.environ.get("REDIS_URL", "")
if not REDIS_URL:
    raise RuntimeError(
        "REDIS_URL is not set. Use `make run` / `make test` (they start an embedded Redis), "
        "or export REDIS_URL=redis://host:6379/0."
    )
CACHES = {
    "default": {
        "BACKEND": "referral_platform.cache.RedisCache",  # Django's, one client per pool
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "rp"),
        "TIMEOUT": 300,
    }
}
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").exists() else []
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"

# --- django-allauth: e-mail + password, no usernames -------------------------------------------
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = "username"
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_VERIFICATION = os.environ.get("ACCOUNT_EMAIL_VERIFICATION", "optional")
ACCOUNT_FORMS = {"signup": "referral_platform.tenancy.forms.WorkspaceSignupForm"}
ACCOUNT_ADAPTER = "referral_platform.tenancy.adapter.AccountAdapter"
ACCOUNT_LOGOUT_ON_GET = False
# A duplicate e-mail at sign-up is answered with a clear error, not a silent "check your mail".
ACCOUNT_PREVENT_ENUMERATION = False
# Failed log-ins are throttled per IP and per account (allauth counts them in the cache).
ACCOUNT_RATE_LIMITS = {
    "login_failed": os.environ.get("LOGIN_FAILED_RATE_LIMIT", "10/m/ip,5/5m/key"),
    "signup": "20/m/ip",
}

# --- client address and abuse limits (referral_platform/abuse.py) -------------------------------
# How many reverse proxies in front of the app append to X-Forwarded-For (0: trust no header, use
# REMOTE_ADDR). The client is the N-th entry from the right. One number for allauth's log-in throttling,
# the /r/ redirect and the public forms' rate limits. CLIENT_IP_SOURCE=x-forwarded-for (older name) = 1.
TRUSTED_PROXY_COUNT = int(
    os.environ.get("TRUSTED_PROXY_COUNT", "1" if os.environ.get("CLIENT_IP_SOURCE") == "x-forwarded-for" else "0")
)
ALLAUTH_TRUSTED_PROXY_COUNT = TRUSTED_PROXY_COUNT
# Public forms: "hits/seconds" per client address (per program) and per program (all addresses), counted
# in Redis; beyond either the form answers 429 with Retry-After and stores nothing.
PUBLIC_FORM_RATE_LIMITS = {
    "default": {
        "address": os.environ.get("PUBLIC_FORM_RATE_PER_ADDRESS", "10/3600"),
        "program": os.environ.get("PUBLIC_FORM_RATE_PER_PROGRAM", "100/3600"),
    },
    "partner_apply": {
        "address": f"{os.environ.get('PARTNER_APPLICATION_RATE_LIMIT', '5')}/3600",
        "program": os.environ.get("PUBLIC_FORM_RATE_PER_PROGRAM", "100/3600"),
    },
}
# An applicant's confirmation link of the public apply form stays valid this long.
APPLICATION_CONFIRM_SECONDS = int(os.environ.get("APPLICATION_CONFIRM_SECONDS", str(48 * 3600)))

# --- e-mail -----------------------------------------------------------------------------------
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS")
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Referral Platform <no-reply@localhost>")

# --- secrets at rest (referral_platform/crypto.py) ---------------------------------------------
# Fernet keys, comma-separated, newest first: the newest encrypts, every one decrypts. Rotate by putting a
# new key first, then `manage.py encryption_keys_rotate`, then dropping the old key. Production requires
# it; development and tests derive one from SECRET_KEY when it is unset.
FIELD_ENCRYPTION_KEYS = env_list("FIELD_ENCRYPTION_KEYS")


def derived_field_encryption_key(secret: str) -> str:
    import base64
    import hashlib

    return base64.urlsafe_b64encode(hashlib.sha256(f"field-encryption:{secret}".encode()).digest()).decode()


# --- Stripe -----------------------------------------------------------------------------------
# Stripe credentials are per workspace (rewards.StripeCredentials, entered in the admin), never settings.
# Points the official stripe library at a Stripe-compatible server (tests, local development).
STRIPE_API_BASE = os.environ.get("STRIPE_API_BASE", "")

# --- Django REST framework --------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "referral_platform.tenancy.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["referral_platform.tenancy.authentication.IsTenantActor"],
    "DEFAULT_SCHEMA_CLASS": "referral_platform.tenancy.schema.AutoSchema",
    "EXCEPTION_HANDLER": "referral_platform.tenancy.api.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "referral_platform.tenancy.api_input.LimitOffsetPagination",
    # The API takes JSON bodies only (415 otherwise), as documented.
    "DEFAULT_PARSER_CLASSES": ["referral_platform.tenancy.api_input.JSONParser"],
    "PAGE_SIZE": 50,
    # OPTIONS is not part of the API (405): DRF's metadata would describe views by their serializers.
    "DEFAULT_METADATA_CLASS": None,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Referral Platform API",
    "DESCRIPTION": "Per-tenant API. Authenticate with `Authorization: Bearer <api key>`.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Every operation documents its error answers in the one Error shape (referral_platform/tenancy/schema.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "referral_platform.tenancy.schema.error_responses",
    ],
    # One schema name per choice set that several models or serializers share.
    "ENUM_NAME_OVERRIDES": {
        "AttributionModelEnum": "programs.models.AttributionModel",
        "ProgramKindEnum": "programs.models.ProgramKind",
        "CompanySizeEnum": "referrals.models.CompanySize",
        "ConversionKindEnum": "referrals.models.ConversionKind",
        "TouchpointKindEnum": "referrals.models.TouchpointKind",
    },
}

# --- Celery -----------------------------------------------------------------------------------
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# The longest countdown/ETA any task is queued with. A late-acked task that waits longer than
# the Redis visibility timeout would be delivered twice, so start-up checks the invariant.
# A conversions-API event's task processes up to this many of its workspace's waiting events in one batch
# (referrals.tasks.process_conversion_event, docs/throughput.md); 1: each event alone, as before.
CONVERSION_TASK_BATCH = int(os.environ.get("CONVERSION_TASK_BATCH", "25"))
# A Stripe drain handles up to STRIPE_DRAIN_CHUNK of its workspace's stored webhooks per transaction, and set-based
# settlement takes up to SETTLEMENT_CHUNK referrals per transaction (docs/throughput.md, nineteenth session): a
# chunk's fixed statements and reads are shared by more events the larger it is; a larger chunk holds its locks
# (its referrers' rows) longer. 200 since issue 15's nineteenth session (50 before).
STRIPE_DRAIN_CHUNK = env_int("STRIPE_DRAIN_CHUNK", 200)
SETTLEMENT_CHUNK = env_int("SETTLEMENT_CHUNK", 200)
CELERY_MAX_COUNTDOWN_SECONDS = int(os.environ.get("CELERY_MAX_COUNTDOWN_SECONDS", str(6 * 3600)))
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", str(12 * 3600))),
}
CELERY_BEAT_SCHEDULE: dict = {}
# The reconciler (referral_platform/reconcile.py): every RECONCILE_INTERVAL_SECONDS, work left in a
# non-final state for longer than RECONCILE_STALE_SECONDS is queued again; after RECONCILE_MAX_ATTEMPTS
# re-queues it is marked failed with the reason.
RECONCILE_INTERVAL_SECONDS = int(os.environ.get("RECONCILE_INTERVAL_SECONDS", "60"))
RECONCILE_STALE_SECONDS = int(os.environ.get("RECONCILE_STALE_SECONDS", "300"))
RECONCILE_MAX_ATTEMPTS = int(os.environ.get("RECONCILE_MAX_ATTEMPTS", "5"))
CELERY_BEAT_SCHEDULE["reconcile"] = {"task": "referral_platform.reconcile", "schedule": RECONCILE_INTERVAL_SECONDS}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "stripe": {"level": "WARNING"},  # the library logs every request at INFO
    },
}
FORMS_URLFIELD_ASSUME_HTTPS = True

# --- rewards and payouts ----------------------------------------------------------------------
# Timeout of one Stripe call; a payout holds its row lock while the call runs.
STRIPE_TIMEOUT_SECONDS = int(os.environ.get("STRIPE_TIMEOUT_SECONDS", "30"))
# A failed payout is retried after PAYOUT_RETRY_BASE_SECONDS * 2**(attempts-1), capped, up to
# PAYOUT_MAX_ATTEMPTS attempts; then it is abandoned and waits for a marketer in the admin.
PAYOUT_RETRY_BASE_SECONDS = int(os.environ.get("PAYOUT_RETRY_BASE_SECONDS", "60"))
PAYOUT_RETRY_MAX_SECONDS = int(os.environ.get("PAYOUT_RETRY_MAX_SECONDS", str(3 * 3600)))
PAYOUT_MAX_ATTEMPTS = int(os.environ.get("PAYOUT_MAX_ATTEMPTS", "8"))
# Stripe keeps an idempotency key at least 24 hours. A payout attempt whose answer never arrived and that
# is older than this is looked up at Stripe (by transfer_group / metadata) before the next attempt,
# because a replay of its key is no longer guaranteed; an hour early, to be safe.
STRIPE_IDEMPOTENCY_WINDOW_SECONDS = int(os.environ.get("STRIPE_IDEMPOTENCY_WINDOW_SECONDS", str(23 * 3600)))
# Participant messages promise a reward "within N business days": the rest of its hold plus this many
# (the payout run, then the transfer reaching the participant's bank).
REWARD_PAYOUT_BUSINESS_DAYS = int(os.environ.get("REWARD_PAYOUT_BUSINESS_DAYS", "2"))
CELERY_BEAT_SCHEDULE.update(
    {
        "rewards-release-holds": {"task": "rewards.release_holds", "schedule": 15 * 60},
        "rewards-payouts-run": {"task": "rewards.payouts_run", "schedule": 30 * 60},
    }
)

# --- programs: participant CSV imports --------------------------------------------------------
PARTICIPANT_IMPORT_BATCH_SIZE = int(os.environ.get("PARTICIPANT_IMPORT_BATCH_SIZE", "200"))
PARTICIPANT_IMPORT_MAX_BYTES = int(os.environ.get("PARTICIPANT_IMPORT_MAX_BYTES", str(5 * 1024 * 1024)))

# --- Public referral redirect /r/<code> and the click buffer (docs/hot-path.md) ---------------
# Every Redis key the hot path writes starts with this prefix (tests use a per-run prefix).
REFERRAL_REDIS_PREFIX = CACHES["default"]["KEY_PREFIX"]
REFERRAL_REDIS_URL = os.environ.get("REFERRAL_REDIS_URL", REDIS_URL)
# Cached links expire on their own too, bounding staleness after writes that bypass invalidation.
REFERRAL_LINK_CACHE_SECONDS = int(os.environ.get("REFERRAL_LINK_CACHE_SECONDS", "300"))
REFERRAL_LINK_MISS_CACHE_SECONDS = int(os.environ.get("REFERRAL_LINK_MISS_CACHE_SECONDS", "30"))
# The local fast path (referrals/click_spool.py): a web process answers a link it saw moments ago from
# memory and spools the click to a file here (a local directory, kept across restarts: a killed worker's
# file is shipped by the next process), shipped to the click stream every SHIP seconds. "" turns it off.
REFERRAL_CLICK_SPOOL_DIR = os.environ.get("REFERRAL_CLICK_SPOOL_DIR", str(BASE_DIR / ".run" / "click-spool"))
REFERRAL_CLICK_SPOOL_SHIP_SECONDS = float(os.environ.get("REFERRAL_CLICK_SPOOL_SHIP_SECONDS", "0.1"))
# How often remembered links are confirmed against Redis: a link changed by another process stops being
# answered from memory within this (and an entry not confirmed for twice this long is never used).
REFERRAL_LINK_LOCAL_SECONDS = float(os.environ.get("REFERRAL_LINK_LOCAL_SECONDS", "1.0"))
REFERRAL_VISITOR_COOKIE = "rp_vid"
REFERRAL_VISITOR_COOKIE_MAX_AGE = 365 * 24 * 3600
REFERRAL_VISITOR_COOKIE_SECURE = env_bool("REFERRAL_VISITOR_COOKIE_SECURE", False)
# Query parameters added to the landing URL: the referral code and the visitor id.
REFERRAL_CODE_PARAM = "ref"
REFERRAL_VISITOR_PARAM = "vid"
CLICK_FLUSH_BATCH_SIZE = int(os.environ.get("CLICK_FLUSH_BATCH_SIZE", "5000"))
# Batches inserted at once (one database connection each) while the next one is read and encoded.
CLICK_FLUSH_WRITERS = int(os.environ.get("CLICK_FLUSH_WRITERS", "3"))
# Entries a flush read but never acknowledged (it died) are taken over after this idle time.
CLICK_FLUSH_CLAIM_IDLE_MS = int(os.environ.get("CLICK_FLUSH_CLAIM_IDLE_MS", "60000"))
CLICK_FLUSH_TIME_BUDGET_SECONDS = float(os.environ.get("CLICK_FLUSH_TIME_BUDGET_SECONDS", "20"))
CELERY_BEAT_SCHEDULE["referrals-flush-clicks"] = {"task": "referrals.flush_clicks", "schedule": 5.0}

# --- partners: deal expiry, expiry warnings (7 days ahead), tier recomputation ------------------
CELERY_BEAT_SCHEDULE.update(
    {
        "partners-deals-expire": {"task": "partners.deals_expire", "schedule": 15 * 60},
        "partners-deals-warn-expiring": {"task": "partners.deals_warn_expiring", "schedule": 60 * 60},
        "partners-tiers-recompute": {"task": "partners.tiers_recompute", "schedule": 24 * 3600},
    }
)
# Public partner applications: rate limits in PUBLIC_FORM_RATE_LIMITS["partner_apply"].
# Partner resource files go to the default storage: local files unless an S3-compatible bucket is set.
if os.environ.get("AWS_STORAGE_BUCKET_NAME"):
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": os.environ["AWS_STORAGE_BUCKET_NAME"],
            "endpoint_url": os.environ.get("AWS_S3_ENDPOINT_URL") or None,
            "querystring_auth": True,
            "default_acl": None,
            "file_overwrite": False,
        },
    }
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", str(BASE_DIR / "media")))
MEDIA_URL = "/media/"

# --- analytics (issue 10): a nightly safety net under the hook-driven rollup refreshes -------------
CELERY_BEAT_SCHEDULE["analytics-refresh-recent"] = {"task": "analytics.refresh_recent", "schedule": 6 * 60 * 60}
# The rollup refreshes the money pipeline asks for are gathered per tenant and run at most once per this many
# seconds (analytics/debounce.py); 0: each request refreshes at once, waiting for the tenant's rollup lock.
ANALYTICS_REFRESH_DEBOUNCE_SECONDS = float(os.environ.get("ANALYTICS_REFRESH_DEBOUNCE_SECONDS", "2"))
# The garbage collector of each Celery pool process: start-up objects frozen, these thresholds
# (referral_platform/gc_tuning.py; "off": Python's defaults). Checked here: a bad value stops the start.
WORKER_GC_THRESHOLDS = gc_thresholds(os.environ.get("WORKER_GC_THRESHOLDS", GC_DEFAULT))
# --- engagement (docs/engagement.md) ------------------------------------------------------------
# A webhook endpoint failing this long is disabled when another delivery to it gives up.
WEBHOOK_DISABLE_AFTER_HOURS = int(os.environ.get("WEBHOOK_DISABLE_AFTER_HOURS", "72"))
# Lifetime of a signed dashboard URL handed to the tenant's product for embedding.
EMBED_TOKEN_SECONDS = int(os.environ.get("EMBED_TOKEN_SECONDS", "600"))
CELERY_BEAT_SCHEDULE.update(
    {
        "engagement-asks-send-due": {"task": "engagement.asks_send_due", "schedule": 60.0},
        "engagement-webhooks-retry-due": {"task": "engagement.webhooks_retry_due", "schedule": 60.0},
    }
)
