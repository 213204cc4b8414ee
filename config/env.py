"""Strict readers for settings that come from the environment.

A setting that is present but malformed stops the process at start with an ImproperlyConfigured that names the
variable, instead of silently falling back to a default (the style of healthchecks' ``envbool``).
"""

import os
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    value = env_str(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean: use one of {sorted(_TRUE | _FALSE)}")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    value = env_str(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a whole number") from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name}={value!r} must be at least {minimum}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = env_str(name)
    if value is None:
        return default
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise ImproperlyConfigured(f"{name} is set but names nothing")
    return items


def env_database(name: str, default: str) -> dict:
    url = env_str(name, default)
    scheme = urlsplit(url).scheme
    if scheme not in {"postgres", "postgresql", "pgsql", "sqlite"}:
        raise ImproperlyConfigured(f"{name} must be a postgres:// or sqlite:// URL, not {scheme or url!r}")
    try:
        config = environ.Env.db_url_config(url)
    except Exception as exc:  # environ raises several types for a malformed URL
        raise ImproperlyConfigured(f"{name} is not a valid database URL: {exc}") from None
    if config["ENGINE"].endswith("postgresql") and not config.get("NAME"):
        raise ImproperlyConfigured(f"{name} names no database")
    return config


def env_broker(name: str, default: str) -> str:
    url = env_str(name, default)
    scheme = urlsplit(url).scheme
    if scheme not in {"redis", "rediss", "amqp", "amqps", "pyamqp", "filesystem", "memory"}:
        raise ImproperlyConfigured(
            f"{name} must be a redis://, amqp:// (RabbitMQ) or filesystem:// URL, not {scheme or url!r}"
        )
    return url


def env_outbound_allow(name: str, default: list[str]) -> list[str]:
    """A list of outbound-HTTP allow entries, each checked by the one parser of their syntax."""
    from notifications.http import AllowList  # pure: no Django needed to import it

    items = env_list(name, default)
    try:
        AllowList.parse(items)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None
    return items
