"""Strict readers for settings that come from the environment.

A setting that is present but malformed stops the process at start with an ImproperlyConfigured that names the
variable, instead of silently falling back to a default (the style of healthchecks' ``envbool``).
"""

import os
import secrets
import time
from pathlib import Path
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
def generated_secret(path: Path) -> str:
    """The secret kept in ``path``, made on first use: 50 random URL-safe bytes' worth, in a file only this user
    may read (0600). For the embedded run only (DEBUG on), so that no secret is ever a constant in the
    repository: the demo's token signing key then derives from something nobody else has.

    Two processes starting at once (web and worker) both end with the one file's secret: the file is created
    exclusively, and the loser reads the winner's. A file others may read is refused, not silently used.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
    if path.stat().st_mode & 0o077:
        raise ImproperlyConfigured(f"{path} may be read by others: chmod 600 it, or delete it to make a new one")
    for _ in range(50):  # the creator may not have written it yet
        value = path.read_text().strip()
        if value:
            return value
        time.sleep(0.01)
    raise ImproperlyConfigured(f"{path} is empty: delete it to make a new one")
