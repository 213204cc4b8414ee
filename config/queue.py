"""The one way work is handed to Celery: after the transaction that made it commits (zulip's
``queue_event_on_commit``). A task enqueued inside a transaction that rolls back never runs; one enqueued
outside any transaction is sent at once.

It lives in config/, beside the Celery app, so that the domain apps and the edges alike may enqueue without
importing one another (the import contracts in pyproject.toml)."""

import logging

from celery import Task
from django.db import InterfaceError, OperationalError, transaction

from config import database_errors

log = logging.getLogger(__name__)


def enqueue_on_commit(task, *args) -> None:
    """Send ``task.delay(*args)`` once the current transaction commits. Arguments must be JSON (ids, not rows).

    A broker that is down does not undo the commit: the failure is logged, and the periodic sweeps (due rows in
    the database are the schedule's truth) pick the work up again.
    """

    def send():
        try:
            task.delay(*args)
        except Exception:  # the broker's own errors vary by transport
            log.exception("could not enqueue %s%r; the sweep will pick it up", task.name, args)

    transaction.on_commit(send)


class TransientRetryTask(Task):
    """Autoretries a database error only when config/database_errors.py calls it transient: a permanent
    OperationalError (a statement too large, a missing table) fails at once, like any other bug."""

    def retry(self, *args, exc=None, **kwargs):
        if isinstance(exc, (OperationalError, InterfaceError)) and not database_errors.transient(exc):
            raise exc
        return super().retry(*args, exc=exc, **kwargs)


# What a task meets that a later try may not: a lock that did not come free (SQLite's "database is locked", a
# PostgreSQL lock timeout), a serialization failure or deadlock, a lost connection. Tasks retry these with backoff
# (``@shared_task(..., **TRANSIENT_RETRY)``); any other error is a bug, and fails at once (logged by Celery).
TRANSIENT_RETRY = {
    "base": TransientRetryTask,
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": 6,
}
