"""Settings of the floor: the least Django that can parse a FHIR Bundle and store it (see bench/README.md).

No apps, no middleware, no DRF, no auth. The database comes from DATABASE_URL (the same one the hub uses) with
the hub's connection settings (CONN_MAX_AGE=60, CONN_HEALTH_CHECKS), so that both sides pay the same for it.
The URL is parsed here rather than with config.env, because importing the ``config`` package starts Celery.
"""

import os
import secrets
from urllib.parse import unquote, urlsplit

_url = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/hub_bench"))

SECRET_KEY = os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50)  # the floor signs nothing
DEBUG = False
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")]

INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.floor_urls"
WSGI_APPLICATION = "bench.floor_wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.path.lstrip("/"),
        "USER": unquote(_url.username or ""),
        "PASSWORD": unquote(_url.password or ""),
        "HOST": _url.hostname or "",
        "PORT": str(_url.port or ""),
        "CONN_MAX_AGE": int(os.environ.get("DATABASE_CONN_MAX_AGE") or 60),  # as config/settings.py
        "CONN_HEALTH_CHECKS": True,  # as config/settings.py
    }
}

USE_TZ = True
TIME_ZONE = "UTC"
USE_I18N = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
}
