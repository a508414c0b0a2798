"""
Settings for Epsilon Billing.

Everything that differs between a laptop demo and production comes from the
environment (or a `.env` file beside manage.py). The defaults run the offline
demo: SQLite in ./var and the local Stripe emulator on 127.0.0.1:12111.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# --- Django -------------------------------------------------------------------

DEBUG = env.bool("DJANGO_DEBUG", default=True)
# The default key is only acceptable for the local demo (DEBUG on); production must set one.
DEMO_SECRET_KEY = "django-insecure-epsilon-demo-only-do-not-use-in-production"
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default=DEMO_SECRET_KEY)
if not DEBUG and SECRET_KEY == DEMO_SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off: the demo key is public. Generate one with "
        "python -c 'import secrets; print(secrets.token_urlsafe(50))'."
    )
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# HTTPS in production (DEBUG off), each overridable. Probes and scrapes answer over
# plain HTTP whatever the host (ops.middleware.ProbeMiddleware).
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=True)
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (gunicorn's
# forwarded_allow_ips must trust it too).
if env.bool("DJANGO_BEHIND_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "djstripe",
    "django_q",
    "embedded_meter",
    "billing",
    "ops",
]

MIDDLEWARE = [
    "ops.middleware.ProbeMiddleware",  # /healthz, /readyz, /metrics: before host checks and HTTPS
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files under gunicorn, after collectstatic
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "epsilon.urls"
WSGI_APPLICATION = "epsilon.wsgi.application"
ASGI_APPLICATION = "epsilon.asgi.application"

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
            ],
        },
    },
]

# SQLite is the embedded default; set DATABASE_URL=postgres://... for PostgreSQL.
DATABASES = {
    "default": env.db_url(
        "DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'epsilon.sqlite3'}"
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(exist_ok=True)  # the default database's folder, so a fresh clone just works
    # Take the write lock when a transaction begins and wait for a concurrent writer,
    # instead of failing with "database is locked" when two runs report at once.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
# Billing runs in UTC; the admin shows times in UTC too, so what operators read
# matches Stripe's period boundaries.
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.path("DJANGO_STATIC_ROOT", default=VAR_DIR / "static"))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise serves it after collectstatic (empty before)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Compressed copies made by collectstatic, served by WhiteNoise with far-future headers.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Log lines to stderr; LOG_FORMAT=json makes each one a JSON object (python-json-logger)
# carrying the fields a report's line has (customer, meter, period, value, status,
# identifier), for a log pipeline to index.
LOG_FORMAT = env.str("LOG_FORMAT", default="text")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json" if LOG_FORMAT == "json" else "text"}},
    "loggers": {
        "billing": {"handlers": ["console"], "level": env.str("BILLING_LOG_LEVEL", "WARNING")},
        "ops": {"handlers": ["console"], "level": env.str("BILLING_LOG_LEVEL", "WARNING")},
    },
}
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT is {LOG_FORMAT!r}: use 'text' (the default) or 'json'.")

# Who is told when billing goes wrong (ops.alerts): Django's ADMINS by mail
# ("Ops <ops@example.com>,Billing <billing@example.com>"), and/or a webhook (Slack-style
# JSON {"text": ...} POSTed to ALERT_WEBHOOK_URL). Each problem is told once.
ADMINS = [
    (name.strip(), address.strip(" >"))
    for name, _, address in (entry.partition("<") for entry in env.list("DJANGO_ADMINS", default=[]))
]
SERVER_EMAIL = env.str("DJANGO_SERVER_EMAIL", default="epsilon-billing@localhost")
EMAIL_BACKEND = env.str("DJANGO_EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env.str("DJANGO_EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("DJANGO_EMAIL_PORT", default=25)
ALERT_WEBHOOK_URL = env.str("EPSILON_ALERT_WEBHOOK_URL", default="")

# --- Stripe -------------------------------------------------------------------

# With no key set, the app talks to the local Stripe emulator with this demo key.
# Setting STRIPE_SECRET_KEY (sk_test_... or sk_live_...) switches to real Stripe.
STRIPE_EMULATOR_URL = env.str("STRIPE_EMULATOR_URL", default="http://127.0.0.1:12111")
STRIPE_EMULATOR_KEY = "sk_test_EpsilonLocalEmulator0000000000"
STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY", default=STRIPE_EMULATOR_KEY)
_STRIPE_DEFAULT_API_BASE = (
    STRIPE_EMULATOR_URL
    if STRIPE_SECRET_KEY == STRIPE_EMULATOR_KEY
    else "https://api.stripe.com"
)
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default=_STRIPE_DEFAULT_API_BASE).rstrip("/")
# Test or live mode follows from the key itself, never from a separate flag.
# Stripe's v2 meter event stream lives on its own host; the emulator serves both.
STRIPE_METER_EVENTS_API_BASE = env.str(
    "STRIPE_METER_EVENTS_API_BASE",
    default=STRIPE_API_BASE if STRIPE_API_BASE != "https://api.stripe.com" else "https://meter-events.stripe.com",
).rstrip("/")
STRIPE_LIVE_MODE = STRIPE_SECRET_KEY.startswith(("sk_live_", "rk_live_"))
if STRIPE_LIVE_MODE:
    STRIPE_LIVE_SECRET_KEY = STRIPE_SECRET_KEY
else:
    STRIPE_TEST_SECRET_KEY = STRIPE_SECRET_KEY
# The API version the app and the emulator speak: stripe-python 15.6's own.
STRIPE_API_VERSION = env.str("STRIPE_API_VERSION", default="2026-08-26.dahlia")
# stripe-python retries connection errors, 409s, 429s and 5xx with backoff,
# reusing the same Idempotency-Key on each retry.
STRIPE_MAX_NETWORK_RETRIES = env.int("STRIPE_MAX_NETWORK_RETRIES", default=2)
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
# The signing secret of the event destination (thin events) at /stripe/events/; without
# it, that endpoint refuses every delivery.
STRIPE_EVENT_DESTINATION_SECRET = env.str("STRIPE_EVENT_DESTINATION_SECRET", default="")
if STRIPE_API_BASE != "https://api.stripe.com":
    # dj-stripe points the stripe module at this host.
    STRIPE_API_HOST = STRIPE_API_BASE

DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"
DJSTRIPE_WEBHOOK_VALIDATION = "verify_signature"

# --- Epsilon ------------------------------------------------------------------

EPSILON = {
    # The Stripe billing meter that execution duration is reported to.
    "METER_EVENT_NAME": env.str("EPSILON_METER_EVENT_NAME", default="epsilon_execution_duration"),
    "METER_DISPLAY_NAME": "Epsilon execution duration",
    # The usage source's meter (OpenMeter slug) for that Stripe meter.
    "SOURCE_METER_SLUG": env.str("EPSILON_SOURCE_METER_SLUG", default="m1"),
    # Usage is aggregated and reported in windows of this size (MINUTE, HOUR, DAY).
    "DEFAULT_WINDOW_SIZE": env.str("EPSILON_WINDOW_SIZE", default="HOUR"),
    "PRODUCT_NAME": "Epsilon",
    "PRICE_LOOKUP_KEY": env.str("EPSILON_PRICE_LOOKUP_KEY", default="epsilon_execution_monthly"),
    # $0.10 per unit, in cents as Stripe's unit_amount_decimal (a string, never a float).
    "PRICE_UNIT_AMOUNT_DECIMAL": "10",
    "PRICE_CURRENCY": "usd",
    "DEMO_CUSTOMER_EMAIL": "demo-customer@epsilon.example",
    # The usage subject of a Stripe customer: the value of this metadata key, or,
    # when empty (the default, as in OpenMeter's Stripe example), the customer id.
    "SUBJECT_METADATA_KEY": env.str("EPSILON_SUBJECT_METADATA_KEY", default=""),
    # A pending report not touched for this long belongs to a run that died (or
    # hung) between writing the ledger and hearing back from Stripe; the next run
    # resends it with the same identifier, which Stripe deduplicates.
    "PENDING_LEASE_SECONDS": env.int("EPSILON_PENDING_LEASE_SECONDS", default=300),
    # Meter events per second sent to Stripe (0: Stripe's limit for the key's mode,
    # 1,000/s live and the sandbox's 25 requests/s in test mode), over this many threads.
    "STRIPE_METER_EVENTS_PER_SECOND": env.float("EPSILON_STRIPE_METER_EVENTS_PER_SECOND", default=0),
    "STRIPE_SEND_CONCURRENCY": env.int("EPSILON_STRIPE_SEND_CONCURRENCY", default=16),
    # "v1" (one call per event), "v2" (Stripe's meter event stream, 100 events a call,
    # 10,000 events/s live) or "auto": v2 for runs of at least STRIPE_STREAM_THRESHOLD events.
    "STRIPE_METER_EVENT_API": env.str("EPSILON_STRIPE_METER_EVENT_API", default="auto"),
    "STRIPE_STREAM_THRESHOLD": env.int("EPSILON_STRIPE_STREAM_THRESHOLD", default=500),
    "STRIPE_STREAM_EVENTS_PER_SECOND": env.float("EPSILON_STRIPE_STREAM_EVENTS_PER_SECOND", default=0),
    # Attempts per meter event on 429s, 5xx and network errors, with exponential
    # backoff and jitter starting at this many seconds.
    "STRIPE_MAX_ATTEMPTS": env.int("EPSILON_STRIPE_MAX_ATTEMPTS", default=5),
    "STRIPE_BACKOFF_SECONDS": env.float("EPSILON_STRIPE_BACKOFF_SECONDS", default=0.5),
    # Late usage of a period whose invoice Stripe has finalized (the invoice never
    # changes): "carry" (the default) bills it with the customer's next period, linked
    # to the period it belongs to; "record" keeps a flagged row and bills it nowhere.
    "LATE_USAGE": env.str("EPSILON_LATE_USAGE", default="carry"),
    # How often the django-q2 schedule reports usage (run it with `manage.py qcluster`).
    "REPORT_INTERVAL_MINUTES": env.int("EPSILON_REPORT_INTERVAL_MINUTES", default=60),
}

# --- Usage source ---------------------------------------------------------------

# "embedded": this app's own meter (the default on one machine);
# "openmeter": an OpenMeter deployment at OPENMETER_URL, for scale.
USAGE_SOURCE = env.str("USAGE_SOURCE", default="embedded")
OPENMETER_URL = env.str("OPENMETER_URL", default="")
OPENMETER_TOKEN = env.str("OPENMETER_TOKEN", default="")
OPENMETER_TIMEOUT_SECONDS = env.float("OPENMETER_TIMEOUT_SECONDS", default=10.0)
OPENMETER_MAX_RETRIES = env.int("OPENMETER_MAX_RETRIES", default=3)
# The embedded meter's ingest endpoint (POST /api/v1/events) takes this Bearer token.
EMBEDDED_METER_INGEST_TOKEN = env.str("EMBEDDED_METER_INGEST_TOKEN", default="epsilon-demo-ingest-token")

# --- Scheduled reporting (django-q2) -----------------------------------------

Q_CLUSTER = {
    # The queue's name: deployments (or test runs) sharing one Redis each need their own.
    "name": env.str("Q_CLUSTER_NAME", default="epsilon"),
    "workers": env.int("Q_WORKERS", default=2),
    # A report run gives up well before the broker hands its task to another worker.
    "timeout": 600,
    "retry": 900,
    "max_attempts": 3,
    "catch_up": False,  # after downtime, one run reports everything owed
}
# The database is the broker by default; set Q_REDIS_URL (e.g. redis://127.0.0.1:6379/0)
# to use Redis.
Q_REDIS_URL = env.str("Q_REDIS_URL", default="")
if Q_REDIS_URL:
    Q_CLUSTER["redis"] = Q_REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
Q_CLUSTER["sync"] = env.bool("Q_SYNC", default=False)  # run tasks inline (tests)

# --- Operations ------------------------------------------------------------------

# /metrics (Prometheus) answers a scrape bearing `Authorization: Bearer <token>` when a
# token is set, or one whose REMOTE_ADDR is in these networks (comma-separated CIDRs);
# anything else gets a 403.
METRICS_TOKEN = env.str("EPSILON_METRICS_TOKEN", default="")
METRICS_ALLOWED_NETWORKS = env.list("EPSILON_METRICS_ALLOWED_NETWORKS", default=["127.0.0.1/32", "::1/128"])
