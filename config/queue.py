"""The one way work is handed to Celery: after the transaction that made it commits (zulip's
``queue_event_on_commit``). A task enqueued inside a transaction that rolls back never runs; one enqueued
outside any transaction is sent at once.

It lives in config/, beside the Celery app, so that the domain apps and the edges alike may enqueue without
importing one another (the import contracts in pyproject.toml)."""

import logging

from django.db import InterfaceError, OperationalError, transaction

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


# What a task meets that a later try may not: a lock that did not come free (SQLite's "database is locked", a
# PostgreSQL lock timeout), a serialization failure or deadlock, a lost connection. Tasks retry these with backoff
# (``@shared_task(..., **TRANSIENT_RETRY)``); any other error is a bug, and fails at once (logged by Celery).
TRANSIENT_RETRY = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": 6,
}
