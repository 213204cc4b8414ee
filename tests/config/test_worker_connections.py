"""A worker keeps its database connection from task to task, as the web process keeps one from request to
request (config/celery.py): under DATABASE_CONN_MAX_AGE, and closed once it broke or grew too old."""

import queue
import time
import uuid

import pytest
from celery.contrib.testing.worker import start_worker
from django.db import connection

from config.celery import _close_old_connections, app
from tests.fhir_bridge.test_worker import _private_filesystem_broker  # noqa: F401 - autouse: folders of its own

QUEUE = f"test-connections-{uuid.uuid4().hex[:8]}"
_seen: queue.Queue = queue.Queue()


@app.task(name="tests.config.connection_in_use", ignore_result=True)
def connection_in_use() -> None:
    """Report which database connection (the driver's object) this task ran on."""
    connection.ensure_connection()
    _seen.put(id(connection.connection))


class _Task:
    def __init__(self, *, eager: bool):
        self.request = type("Request", (), {"is_eager": eager})()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_its_tasks_on_one_connection(settings):
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 60  # as the hub's default on PostgreSQL
    with start_worker(app, perform_ping_check=False, pool="solo", concurrency=1, loglevel="WARNING",
                      queues=[QUEUE]):
        for _ in range(3):
            connection_in_use.apply_async(queue=QUEUE)
        seen = [_seen.get(timeout=30) for _ in range(3)]
    assert len(set(seen)) == 1, "each task opened a connection of its own"


@pytest.mark.django_db(transaction=True)
def test_a_connection_past_its_age_is_closed_around_a_task_and_a_young_one_kept():
    connection.ensure_connection()
    young = connection.connection
    connection.close_at = time.monotonic() + 60
    _close_old_connections(task=_Task(eager=False))
    assert connection.connection is young

    connection.close_at = time.monotonic() - 1
    _close_old_connections(task=_Task(eager=False))
    assert connection.connection is None


@pytest.mark.django_db(transaction=True)
def test_an_eager_task_leaves_its_callers_connection_alone():
    connection.ensure_connection()
    caller = connection.connection
    connection.close_at = time.monotonic() - 1  # old, but the caller is still using it
    _close_old_connections(task=_Task(eager=True))
    assert connection.connection is caller
