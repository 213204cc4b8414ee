"""Settings are read strictly: a bad value stops the process with a message naming it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _settings(env: dict[str, str], expr: str = "") -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "DEBUG", "SECRET_KEY")}
    code = f"import django, os; os.environ['DJANGO_SETTINGS_MODULE']='config.settings'; django.setup(); from django.conf import settings; print({expr or '0'})"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean"),
        ({"DEBUG": "false"}, "SECRET_KEY must be set"),
        ({"DEBUG": "false", "SECRET_KEY": "short"}, "at least 32 characters"),
        ({"DEBUG": "true", "DATABASE_URL": "mysql://x@y/z"}, "DATABASE_URL must be a postgres://"),
        ({"DEBUG": "true", "CELERY_BROKER_URL": "kafka://x"}, "CELERY_BROKER_URL must be a redis://"),
        ({"DEBUG": "true", "ALLOWED_HOSTS": " , "}, "ALLOWED_HOSTS is set but names nothing"),
        ({"DEBUG": "true", "HUB_OUTBOUND_ALLOW": "10.0.0.0/33"}, "HUB_OUTBOUND_ALLOW: '10.0.0.0/33' is not a valid"),
        ({"DEBUG": "true", "HUB_OUTBOUND_ALLOW": "receiver:99999"}, "HUB_OUTBOUND_ALLOW: 'receiver:99999' has no"),
    ],
)
def test_a_bad_value_is_a_clear_error_at_start(env, message):
    result = _settings(env)
    assert result.returncode != 0
    assert message in result.stderr


def test_with_debug_off_the_security_settings_are_on():
    result = _settings(
        {"DEBUG": "false", "SECRET_KEY": "x" * 50, "ALLOWED_HOSTS": "hub.example.org"},
        "settings.SECURE_SSL_REDIRECT, settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE, "
        "settings.SECURE_HSTS_SECONDS, settings.ALLOWED_HOSTS",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True True True 31536000 ['hub.example.org']"


def test_production_urls_are_read_from_the_environment():
    result = _settings(
        {"DEBUG": "true", "DATABASE_URL": "postgres://hub:pw@db.internal:5432/hub", "CELERY_BROKER_URL": "amqp://guest:guest@mq:5672//"},
        "settings.DATABASES['default']['ENGINE'], settings.DATABASES['default']['HOST'], settings.CELERY_BROKER_URL",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.postgresql", "db.internal", "amqp://guest:guest@mq:5672//"]


def test_the_outbound_allow_list_allows_the_loopback_only_in_the_embedded_run():
    debug = _settings({"DEBUG": "true"}, "settings.HUB_OUTBOUND_ALLOW")
    production = _settings({"DEBUG": "false", "SECRET_KEY": "x" * 50}, "settings.HUB_OUTBOUND_ALLOW")
    chosen = _settings(
        {"DEBUG": "false", "SECRET_KEY": "x" * 50, "HUB_OUTBOUND_ALLOW": "10.1.0.0/16, hooks.internal:8443"},
        "settings.HUB_OUTBOUND_ALLOW",
    )
    assert debug.stdout.strip() == "['http://127.0.0.1', 'http://[::1]']", debug.stderr
    assert production.stdout.strip() == "[]", production.stderr
    assert chosen.stdout.strip() == "['10.1.0.0/16', 'hooks.internal:8443']", chosen.stderr


def test_the_embedded_run_makes_its_own_secret_key_once_and_keeps_it_private(tmp_path):
    read = "settings.SECRET_KEY"
    first = _settings({"DEBUG": "true", "HUB_VAR_DIR": str(tmp_path)}, read)
    again = _settings({"DEBUG": "true", "HUB_VAR_DIR": str(tmp_path)}, read)
    elsewhere = _settings({"DEBUG": "true", "HUB_VAR_DIR": str(tmp_path / "other")}, read)

    assert first.returncode == 0, first.stderr
    key = first.stdout.strip()
    assert len(key) >= 50
    assert again.stdout.strip() == key  # kept: tokens survive a restart
    assert elsewhere.stdout.strip() != key  # made, not a constant
    assert key not in (ROOT / "config" / "settings.py").read_text()
    assert (tmp_path / "secret-key").stat().st_mode & 0o777 == 0o600


def test_a_secret_key_file_others_can_read_is_refused(tmp_path):
    (tmp_path / "secret-key").write_text("x" * 60)
    (tmp_path / "secret-key").chmod(0o644)

    result = _settings({"DEBUG": "true", "HUB_VAR_DIR": str(tmp_path)})

    assert result.returncode != 0
    assert "may be read by others" in result.stderr


def test_debug_off_refuses_to_start_even_with_a_secret_key_file(tmp_path):
    (tmp_path / "secret-key").write_text("x" * 60)
    (tmp_path / "secret-key").chmod(0o600)

    result = _settings({"DEBUG": "false", "HUB_VAR_DIR": str(tmp_path)})

    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_each_embedded_test_run_has_its_own_sqlite_file(tmp_path):
    # Two test runs in one checkout used to share .var/test/test.sqlite3: one run's create or teardown deleted
    # the other's database under it.
    read = "settings.DATABASES['default']['TEST']['NAME'], os.getpid()"
    runs = [_settings({"DEBUG": "true", "HUB_VAR_DIR": str(tmp_path)}, read) for _ in range(2)]

    names = []
    for run in runs:
        assert run.returncode == 0, run.stderr
        name, pid = run.stdout.rsplit(maxsplit=1)
        assert name == str(tmp_path / f"test-{pid}.sqlite3")
        names.append(name)
    assert names[0] != names[1]
