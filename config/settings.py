"""Settings for the exercise-referral hub, read from the environment.

The defaults are the embedded run: SQLite and a broker that needs no server (kombu's filesystem transport), both
under ``.var/``. Production sets DATABASE_URL (PostgreSQL) and CELERY_BROKER_URL (Redis or RabbitMQ). A value that
is set but malformed stops the process at start (see config/env.py).
"""

import os
import sys
import zoneinfo
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from config.env import (
    env_bool,
    env_broker,
    env_database,
    env_int,
    env_list,
    env_outbound_allow,
    env_str,
    generated_secret,
)

BASE_DIR = Path(__file__).resolve().parent.parent
# `make run` writes a .env (DEBUG=true) so that every manage.py command in this checkout runs like the embedded
# hub. Variables set in the real environment win over it; production has no such file.
environ.Env.read_env(BASE_DIR / ".env")
VAR_DIR = Path(env_str("HUB_VAR_DIR", str(BASE_DIR / ".var")))

DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env_str("SECRET_KEY")
if SECRET_KEY is None:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    # The embedded run makes its own on first start and keeps it (0600) under .var/: never a constant in the
    # repository, or anyone could sign access tokens for a `make run` hub's clients.
    SECRET_KEY = generated_secret(VAR_DIR / "secret-key")
elif len(SECRET_KEY) < 32 and not DEBUG:
    raise ImproperlyConfigured("SECRET_KEY must be at least 32 characters long")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",  # the coordinators' API tokens for scripts (manage.py drf_create_token)
    "axes",
    "network",
    "referrals",
    "fhir_bridge",
    "notifications",
    "audit",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_htmx",
    "portal",
    "console",
]

MIDDLEWARE = [
    # First: a Host or query string Django refuses to read is a 400 in the edge's own shape (config/bad_request.py).
    "config.bad_request.BadRequestMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",  # request.user.is_verified(): the portal's second factor
    "django_htmx.middleware.HtmxMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.csp.ContentSecurityPolicyMiddleware",
    # One audit row per request to the coordinators' API and per admin page of referral data (audit/).
    "audit.middleware.AuditMiddleware",
    # Last, as django-axes asks: it answers a locked-out sign-in (429) after the login view has run.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
APPEND_SLASH = False  # FHIR URLs have no trailing slash; a redirect would drop a POST body

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

# --- Database --------------------------------------------------------------------------------------------------
DATABASES = {"default": env_database("DATABASE_URL", f"sqlite:///{VAR_DIR / 'hub.sqlite3'}")}
VAR_DIR.mkdir(parents=True, exist_ok=True)
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The web process, the worker and beat share one file: wait for the lock instead of failing, and take the
    # write lock at BEGIN so that two writers never deadlock on an upgrade from a read lock.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    # Tests get a file too, not SQLite's shared in-memory database: its table locks fail at once instead of
    # waiting, which a test with a real worker thread would hit. One file per test run (the process id), so two
    # runs in one checkout do not create, flush and delete each other's database; each run deletes its own.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # Parameters travel apart from the SQL, so psycopg prepares a statement on its fifth run in a connection and
    # PostgreSQL plans it once instead of every time (the routing plan's statement costs more to plan than to
    # run).
    # DATABASE_PREPARE_THRESHOLD=0 turns it off (behind a pgbouncer in transaction mode older than 1.21).
    DATABASES["default"]["OPTIONS"] = {
        "server_side_binding": True,
        "prepare_threshold": env_int("DATABASE_PREPARE_THRESHOLD", 5) or None,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Security ----------------------------------------------------------------------------------------------------
# With DEBUG off these are on; behind a TLS-terminating proxy set SECURE_PROXY_SSL_HEADER_NAME (e.g.
# HTTP_X_FORWARDED_PROTO). HUB_SSL_REDIRECT=false is for a plain-HTTP benchmark on loopback, nothing else.
SECURE_SSL_REDIRECT = (not DEBUG) and env_bool("HUB_SSL_REDIRECT", True)
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = 0 if DEBUG else env_int("SECURE_HSTS_SECONDS", 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
_proxy_header = env_str("SECURE_PROXY_SSL_HEADER_NAME")
SECURE_PROXY_SSL_HEADER = (_proxy_header, "https") if _proxy_header else None
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

# Argon2id first: new and changed passwords are hashed with it; PBKDF2 hashes still verify and are upgraded at the
# next sign-in.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]

# Sign-in lockout (django-axes) on every login that goes through Django's authenticate(): the admin's and any web
# login. After HUB_LOGIN_FAILURE_LIMIT failures for one username from one address, that pair is refused (429) for
# HUB_LOGIN_COOLOFF_MINUTES, even with the right password; a success resets the count. Keyed on the pair, not the
# address alone, so that one clinic behind a NAT does not lock its colleagues out.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("HUB_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = env_int("HUB_LOGIN_COOLOFF_MINUTES", 15, minimum=1) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_ENABLED = env_bool("HUB_LOGIN_LOCKOUT", True)

# The token endpoint's limit (fhir_bridge/token_limits.py), counted in the cache below.
HUB_TOKEN_LIMIT_PER_CLIENT = env_int("HUB_TOKEN_LIMIT_PER_CLIENT", 30, minimum=1)
HUB_TOKEN_LIMIT_PER_IP = env_int("HUB_TOKEN_LIMIT_PER_IP", 120, minimum=1)
HUB_TOKEN_LIMIT_WINDOW_SECONDS = env_int("HUB_TOKEN_LIMIT_WINDOW_SECONDS", 60, minimum=1)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
# The time zone of a network site that names none: a case's weeks are counted in its site's zone.
HUB_DEFAULT_TIME_ZONE = env_str("HUB_DEFAULT_TIME_ZONE", "America/Chicago")
try:
    zoneinfo.ZoneInfo(HUB_DEFAULT_TIME_ZONE)
except (zoneinfo.ZoneInfoNotFoundError, ValueError):
    raise ImproperlyConfigured(f"HUB_DEFAULT_TIME_ZONE={HUB_DEFAULT_TIME_ZONE!r} is not an IANA time zone name") from None
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# --- The portal: sign-in, password reset by e-mail, the optional TOTP second factor -------------------------------
LOGIN_URL = "portal:login"
LOGIN_REDIRECT_URL = "portal:offers"
LOGOUT_REDIRECT_URL = "portal:login"
PASSWORD_RESET_TIMEOUT = env_int("PASSWORD_RESET_TIMEOUT", 3600, minimum=300)  # a reset link lives an hour
OTP_TOTP_ISSUER = "Exercise-referral hub"
# The reset mail goes through the e-mail settings below (EMAIL_*, the follow-up engine's too).

# --- DRF: an adapter for the FHIR handlers, nothing more ------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "fhir_bridge.drf.fhir_exception_handler",
    # For the JSON APIs: DRF's, but deep nesting is a 400, not a RecursionError (config/parsers.py).
    "DEFAULT_PARSER_CLASSES": [
        "config.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
}

# --- SMART Backend Services ----------------------------------------------------------------------------------------
HUB_ACCESS_TOKEN_SECONDS = env_int("HUB_ACCESS_TOKEN_SECONDS", 300, minimum=30)
# How long a web process trusts what it last read of an EHR client (active? which scopes?): deactivating a client
# takes effect within this many seconds. 0 reads it on every request.
HUB_CLIENT_RECHECK_SECONDS = env_int("HUB_CLIENT_RECHECK_SECONDS", 5)
# Absolute base URL the hub is reached at (behind a proxy). Without it, URLs are built from the request.
HUB_PUBLIC_BASE_URL = env_str("HUB_PUBLIC_BASE_URL")
HUB_OFFER_DEADLINE_HOURS = env_int("HUB_OFFER_DEADLINE_HOURS", 48, minimum=1)
# The share of the routing score given to the outcome scorecards (referrals/scorecards.py), in percent; 0 (the
# default) leaves them out of routing. Every routing explanation that uses them states the weights.
HUB_ROUTING_OUTCOME_WEIGHT_PERCENT = env_int("HUB_ROUTING_OUTCOME_WEIGHT_PERCENT", 0)
if HUB_ROUTING_OUTCOME_WEIGHT_PERCENT > 50:
    raise ImproperlyConfigured("HUB_ROUTING_OUTCOME_WEIGHT_PERCENT must be between 0 and 50")
# How long a referral may wait for manual routing before the physician is told (notifications' follow-up kind
# manual-routing-physician; the coordinators are told at once).
HUB_MANUAL_ROUTING_PHYSICIAN_HOURS = env_int("HUB_MANUAL_ROUTING_PHYSICIAN_HOURS", 24, minimum=1)
# Reports to the physician (referrals/reports.py; notifications' follow-up kinds report-due and report-unsigned):
# a progress report every HUB_REPORT_EVERY_WEEKS from the first session (network.Organization.report_every_weeks
# where an organization differs), the discharge report at the referral's requested end or HUB_REPORT_PROGRAM_WEEKS
# after the first session; a draft nobody signs goes out as preliminary HUB_REPORT_UNSIGNED_WAIT_HOURS after it
# was drafted (the therapist is nudged when it is drafted, the coordinators told when it goes out unsigned).
HUB_REPORT_EVERY_WEEKS = env_int("HUB_REPORT_EVERY_WEEKS", 4, minimum=1)
HUB_REPORT_PROGRAM_WEEKS = env_int("HUB_REPORT_PROGRAM_WEEKS", 12, minimum=1)
HUB_REPORT_UNSIGNED_WAIT_HOURS = env_int("HUB_REPORT_UNSIGNED_WAIT_HOURS", 72, minimum=1)
# Receivers of outbound HTTP (Subscription rest-hooks) that may be on addresses the hub otherwise refuses (loopback,
# private, its own): host[:port], IP[:port] or CIDR entries, "http://" in front to allow plain HTTP to them (see
# notifications/http.py). The embedded run (DEBUG) allows the loopback, for a local receiver.
HUB_OUTBOUND_ALLOW = env_outbound_allow(
    "HUB_OUTBOUND_ALLOW", ["http://127.0.0.1", "http://[::1]"] if DEBUG else []
)
HUB_SEARCH_DEFAULT_COUNT = 20
# What one FHIR request may carry (fhir_bridge/limits.py; the README and the CapabilityStatement list them).
HUB_SEARCH_MAX_COUNT = env_int("HUB_SEARCH_MAX_COUNT", 200, minimum=1)
HUB_SEARCH_MAX_OFFSET = env_int("HUB_SEARCH_MAX_OFFSET", 10_000)
# Search values in one request, every repeat and comma-separated value counted: SQLite refuses near 1,000.
HUB_SEARCH_MAX_VALUES = env_int("HUB_SEARCH_MAX_VALUES", 100, minimum=1)
HUB_MAX_BODY_BYTES = env_int("HUB_MAX_BODY_BYTES", 5 * 1024 * 1024, minimum=1024)
HUB_MAX_JSON_DEPTH = env_int("HUB_MAX_JSON_DEPTH", 32, minimum=8)
HUB_MAX_BUNDLE_ENTRIES = env_int("HUB_MAX_BUNDLE_ENTRIES", 200, minimum=1)
HUB_MAX_STRING_CHARS = env_int("HUB_MAX_STRING_CHARS", 1024 * 1024, minimum=1024)
# Django's own cap on a body read into memory must not be the smaller one: it would answer 400 before the hub's 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = HUB_MAX_BODY_BYTES + 1

# --- Celery --------------------------------------------------------------------------------------------------------
CELERY_BROKER_URL = env_broker("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _folder in ("queue", "processed", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),  # kombu's default is ./control, in the working tree
        "store_processed": False,
    }
# Counters that every web process must share (the token endpoint's limit) live in Redis when the broker is Redis;
# the embedded run is one web process, and keeps them in its memory.
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CELERY_BROKER_URL,
                          "KEY_PREFIX": "hub"}}
# With a cache every process shares, a change's commit sends the outbox's fan-out message only when none is queued
# and not started yet (notifications.receivers): one message per change cost the workers more than the fan-out.
HUB_FAN_OUT_COALESCE = CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
# Redis hands a message that was taken but not acknowledged to another worker after visibility_timeout; with
# acks_late, a task still running then would run twice at once, and one that outlived it could be lost to a
# restart. So it stays well above the longest task's time limit (300 s, the beat's sweeps;
# tests/config/test_celery.py checks every task against it).
HUB_BROKER_VISIBILITY_TIMEOUT = env_int("HUB_BROKER_VISIBILITY_TIMEOUT", 3600, minimum=600)
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": HUB_BROKER_VISIBILITY_TIMEOUT}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True  # a task lost with its worker is redelivered; every task is safe to run twice
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 120
CELERY_TASK_SOFT_TIME_LIMIT = 100
CELERY_TASK_IGNORE_RESULT = True
# Celery's Django fixup closes every database connection before and after each task unless this is set, and then
# every this many tasks: the hub sets it out of reach and has Django's close_old_connections keep connections
# instead, by DATABASE_CONN_MAX_AGE and its health check, as for a request (config/celery.py).
CELERY_DB_REUSE_MAX = sys.maxsize
CELERY_TIMEZONE = "UTC"
# Three queues, so that a flood of deliveries cannot starve routing: `make run`'s worker consumes all three; at
# scale, run workers apart (`celery -A config worker -Q routing`, `-Q delivery`, `-Q sweeps`).
CELERY_TASK_DEFAULT_QUEUE = "sweeps"
CELERY_TASK_ROUTES = {
    "fhir_bridge.route_referral": {"queue": "routing"},
    "notifications.followup_routing": {"queue": "routing"},
    "notifications.followup_delivery": {"queue": "delivery"},
    "notifications.fan_out": {"queue": "delivery"},
    "notifications.followup": {"queue": "sweeps"},
    "notifications.sweep": {"queue": "sweeps"},
    "fhir_bridge.purge_spent_jtis": {"queue": "sweeps"},
    "referrals.scorecards_refresh": {"queue": "sweeps"},
    "referrals.milestones_refresh": {"queue": "sweeps"},
    "console.rollup_refresh": {"queue": "sweeps"},
}
# The follow-up schedule (notifications/followups.py). Offer deadlines are follow-ups too: there is no other
# sweep over Offer.deadline.
# Notify and pull: the hub's own key as a SMART backend client of EHRs (fhir_bridge/hub_client.py), made there
# (mode 0600) when the file does not exist.
HUB_CLIENT_KEY_FILE = Path(env_str("HUB_CLIENT_KEY_FILE", str(VAR_DIR / "hub-client-key.pem")))
# A fetch that fails for a reason that may pass (the EHR down, a 5xx, a timeout) is tried again with backoff
# (HUB_RETRY_BASE_SECONDS up to HUB_RETRY_MAX_SECONDS) for this long after the Task came; then the referral is
# rejected with the reason. Each request's timeout, in seconds: the same (connect, whole answer) as deliveries.
HUB_PULL_GIVE_UP_HOURS = env_int("HUB_PULL_GIVE_UP_HOURS", 24, minimum=1)
HUB_PULL_TIMEOUT_SECONDS = env_int("HUB_PULL_TIMEOUT_SECONDS", 10, minimum=1)
# The searches of the fetch (the patient's PA Conditions and Observations): this many entries a page (_count), and
# at most this many pages each, so that a patient with years of records costs a bounded fetch.
HUB_PULL_SEARCH_COUNT = env_int("HUB_PULL_SEARCH_COUNT", 50, minimum=1)
HUB_PULL_SEARCH_MAX_PAGES = env_int("HUB_PULL_SEARCH_MAX_PAGES", 4, minimum=1)
HUB_SWEEP_SECONDS = env_int("HUB_SWEEP_SECONDS", 60, minimum=1)
HUB_ROLLUP_SECONDS = env_int("HUB_ROLLUP_SECONDS", 120, minimum=10)  # the console's rollups; at most 300 s stale
HUB_FOLLOWUP_BATCH = env_int("HUB_FOLLOWUP_BATCH", 500, minimum=1)
HUB_SWEEP_MAX_BATCHES = 20  # per sweep run; what is left waits for the next one
# Follow-ups per Celery message when the sweep hands them over (each still runs in its own transaction).
HUB_FOLLOWUP_CHUNK = env_int("HUB_FOLLOWUP_CHUNK", 20, minimum=1)
# How long a claimed follow-up is left to its worker before the sweep claims it again (the worker died).
HUB_FOLLOWUP_LEASE_SECONDS = env_int("HUB_FOLLOWUP_LEASE_SECONDS", 300, minimum=10)
HUB_FOLLOWUP_MAX_ATTEMPTS = env_int("HUB_FOLLOWUP_MAX_ATTEMPTS", 8, minimum=1)
# Deliveries (notifications and e-mails): retried with exponential backoff and jitter from the base up to the
# cap, dead-lettered after the maximum number of attempts (the admin and `manage.py replay_deliveries` replay).
HUB_DELIVERY_MAX_ATTEMPTS = env_int("HUB_DELIVERY_MAX_ATTEMPTS", 10, minimum=1)
HUB_RETRY_BASE_SECONDS = env_int("HUB_RETRY_BASE_SECONDS", 30, minimum=1)
HUB_RETRY_MAX_SECONDS = env_int("HUB_RETRY_MAX_SECONDS", 6 * 3600, minimum=1)
HUB_DELIVERY_TIMEOUT_SECONDS = env_int("HUB_DELIVERY_TIMEOUT_SECONDS", 10, minimum=1)
# Threads per worker process that send a chunk's deliveries, one subscription each (notifications/outbox.py).
HUB_DELIVERY_SENDERS = env_int("HUB_DELIVERY_SENDERS", 8, minimum=1)
# The fan-out sends the notifications it has just numbered itself, for up to this many seconds a batch (a request
# under way finishes, within its timeout); the rest go to the delivery queue (notifications.tasks.fan_out).
HUB_FAN_OUT_SEND_SECONDS = env_int("HUB_FAN_OUT_SEND_SECONDS", 2, minimum=0)
CELERY_BEAT_SCHEDULE = {
    "purge-spent-assertion-ids": {"task": "fhir_bridge.purge_spent_jtis", "schedule": 3600.0},
    # Claims due follow-ups (offer deadlines, nudges, alerts, delivery attempts) and fans out missed events.
    "sweep-follow-ups": {"task": "notifications.sweep", "schedule": float(HUB_SWEEP_SECONDS)},
    # The outcome scorecards (referrals/scorecards.py) the console shows and routing may weigh.
    "refresh-scorecards": {"task": "referrals.scorecards_refresh", "schedule": 240.0},
    # The console's funnel rollup (referrals/funnel.py): its overview is at most this stale, and says so.
    # (console.rollup_refresh runs referrals.funnel.milestones_refresh, then computes the default overviews.)
    "refresh-milestones": {"task": "console.rollup_refresh", "schedule": float(HUB_ROLLUP_SECONDS)},
}

# --- E-mail --------------------------------------------------------------------------------------------------------
# The embedded run prints e-mails on the worker's console; production sends them through SMTP.
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend" if DEBUG else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "hub@localhost")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
