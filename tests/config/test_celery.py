"""Celery settings that cannot lose work silently (issue 12, part 4)."""

import pytest
from django.conf import settings
from django.db import OperationalError

from config.celery import app
from referrals import tasks as routing_tasks

app.loader.import_default_modules()  # the apps' tasks modules, as a worker imports them at start
HUB_TASKS = [name for name in app.tasks if name.startswith(("fhir_bridge.", "network.", "referrals.",
                                                               "notifications."))]


def test_every_task_has_a_time_limit_below_the_brokers_visibility_timeout():
    assert HUB_TASKS
    for name in HUB_TASKS:
        task = app.tasks[name]
        limit = task.time_limit or settings.CELERY_TASK_TIME_LIMIT
        assert limit and limit < settings.HUB_BROKER_VISIBILITY_TIMEOUT, name
    if settings.CELERY_BROKER_URL.startswith("redis"):
        assert app.conf.broker_transport_options["visibility_timeout"] == settings.HUB_BROKER_VISIBILITY_TIMEOUT


def test_tasks_retry_a_lock_or_a_lost_connection_on_their_own():
    for name in ("referrals.route_referral", "fhir_bridge.purge_spent_jtis"):
        task = app.tasks[name]
        assert OperationalError in task.autoretry_for and task.max_retries, name


def test_a_transient_error_is_retried_until_it_passes(monkeypatch):
    calls = []

    def flaky(*, referral_id):
        calls.append(referral_id)
        if len(calls) < 3:
            raise OperationalError("database is locked")

    monkeypatch.setattr(routing_tasks, "referral_route_first", flaky)
    result = routing_tasks.route_referral.apply(args=[7])

    assert result.successful()
    assert calls == [7, 7, 7]


def test_a_bug_is_not_retried(monkeypatch):
    calls = []

    def broken(*, referral_id):
        calls.append(referral_id)
        raise KeyError("a bug")

    monkeypatch.setattr(routing_tasks, "referral_route_first", broken)
    result = routing_tasks.route_referral.apply(args=[7])

    assert result.failed() and calls == [7]


def test_a_permanent_database_error_is_not_retried(monkeypatch):
    import sqlite3

    calls = []

    def too_large(*, referral_id):
        calls.append(referral_id)
        try:
            raise sqlite3.OperationalError("Expression tree is too large (maximum depth 1000)")
        except sqlite3.OperationalError as exc:
            raise OperationalError(str(exc)) from exc

    monkeypatch.setattr(routing_tasks, "referral_route_first", too_large)
    result = routing_tasks.route_referral.apply(args=[7])

    assert result.failed() and calls == [7]
