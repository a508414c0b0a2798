"""
Settings for Epsilon Billing.

Everything that differs between a laptop demo and production comes from the
environment (or a `.env` file beside manage.py). The defaults run the offline
demo: SQLite in ./var and the local Stripe emulator on 127.0.0.1:12111.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from billing import conf as epsilon_options

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
# Behind a TLS-terminating proxy, gunicorn takes the scheme from X-Forwarded-Proto only
# when the request comes from FORWARDED_ALLOW_IPS (deploy/gunicorn.conf.py), so a
# client cannot claim HTTPS; Django's SECURE_PROXY_SSL_HEADER, which trusts the header
# from anyone, is deliberately not set.

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
                "billing.context_processors.stripe_mode",  # the emulator banner
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
    # Compressed copies made by collectstatic, served by WhiteNoise (short cache lifetimes:
    # the names carry no content hash).
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
EMAIL_HOST_USER = env.str("DJANGO_EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("DJANGO_EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("DJANGO_EMAIL_USE_TLS", default=False)
EMAIL_USE_SSL = env.bool("DJANGO_EMAIL_USE_SSL", default=False)
EMAIL_TIMEOUT = 20
ALERT_WEBHOOK_URL = env.str("EPSILON_ALERT_WEBHOOK_URL", default="")

# --- Stripe -------------------------------------------------------------------

# With no key set, the app talks to the local Stripe emulator with this demo key.
# Setting STRIPE_SECRET_KEY (sk_test_... or sk_live_...) switches to real Stripe.
STRIPE_EMULATOR_URL = env.str("STRIPE_EMULATOR_URL", default="http://127.0.0.1:12111")
STRIPE_EMULATOR_KEY = "sk_test_EpsilonLocalEmulator0000000000"
STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY", default=STRIPE_EMULATOR_KEY)
if not DEBUG and STRIPE_SECRET_KEY == STRIPE_EMULATOR_KEY:
    raise ImproperlyConfigured(
        "STRIPE_SECRET_KEY must be set when DJANGO_DEBUG is off: without it the app reports usage to the local "
        "Stripe emulator, not to Stripe (a restricted key rk_live_... is enough: docs/deploy.md)."
    )
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

# Every Epsilon option, with its environment variable, default and meaning, is in
# billing/conf.py (OPTIONS); `manage.py check` refuses a wrong or unknown one.
EPSILON = epsilon_options.from_environment(env)

# --- Usage source ---------------------------------------------------------------

# "embedded": this app's own meter (the default on one machine);
# "openmeter": an OpenMeter deployment at OPENMETER_URL, for scale.
USAGE_SOURCE = env.str("USAGE_SOURCE", default="embedded")
OPENMETER_URL = env.str("OPENMETER_URL", default="")
OPENMETER_TOKEN = env.str("OPENMETER_TOKEN", default="")
OPENMETER_TIMEOUT_SECONDS = env.float("OPENMETER_TIMEOUT_SECONDS", default=10.0)
OPENMETER_MAX_RETRIES = env.int("OPENMETER_MAX_RETRIES", default=3)
# The embedded meter's ingest endpoint (POST /api/v1/events) takes this Bearer token.
# The demo token is public: without DEBUG there is none unless one is set, and then
# ingest refuses every request (401) rather than let anyone bill a customer.
EMBEDDED_METER_INGEST_TOKEN = env.str("EMBEDDED_METER_INGEST_TOKEN", default="epsilon-demo-ingest-token" if DEBUG else "")
if not DEBUG and EMBEDDED_METER_INGEST_TOKEN == "epsilon-demo-ingest-token":
    raise ImproperlyConfigured("EMBEDDED_METER_INGEST_TOKEN is the public demo token: set a long random one when DJANGO_DEBUG is off.")

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
