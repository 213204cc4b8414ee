"""A real Celery worker, on the configured broker (Redis in CI, the filesystem broker by default), runs the hub's
periodic purge of spent client-assertion ids."""

import datetime as dt
import time
import uuid

import pytest
from celery.contrib.testing.worker import start_worker
from django.db import OperationalError
from django.utils import timezone

from config.celery import app
from fhir_bridge.models import SpentAssertion
from fhir_bridge.tasks import purge_spent_jtis
from tests.factories import EhrClientFactory

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _private_filesystem_broker(tmp_path):
    """The filesystem broker's folders are shared by whatever runs in this checkout (make run, another test run):
    give this test folders of its own, so that no other worker takes its message."""
    if not app.conf.broker_url.startswith("filesystem://"):
        yield
        return
    saved = app.conf.broker_transport_options
    folders = {name: tmp_path / name for name in ("queue", "processed", "control")}
    for folder in folders.values():
        folder.mkdir()
    app.conf.broker_transport_options = {
        "data_folder_in": str(folders["queue"]),
        "data_folder_out": str(folders["queue"]),
        "processed_folder": str(folders["processed"]),
        "control_folder": str(folders["control"]),
    }
    _reset_connections()
    yield
    app.conf.broker_transport_options = saved
    _reset_connections()


def _reset_connections():
    # Connections already made carry the old folders; drop them so new ones read the options again.
    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None


def _still_there(jti: str) -> bool:
    try:
        return SpentAssertion.objects.filter(jti=jti).exists()
    except OperationalError:  # SQLite: the worker holds the write lock right now
        return True


def test_a_real_worker_purges_expired_assertion_ids_only():
    client = EhrClientFactory()
    now = timezone.now()
    SpentAssertion.objects.create(client=client, jti="old", expires_at=now - dt.timedelta(minutes=10))
    SpentAssertion.objects.create(client=client, jti="live", expires_at=now + dt.timedelta(minutes=10))

    # A queue of this test's own, so that no worker of another run on the same broker takes its message, and this
    # worker takes nothing that other tests left on the default queue.
    queue = f"test-{uuid.uuid4().hex}"
    with start_worker(app, perform_ping_check=False, pool="solo", concurrency=1, loglevel="WARNING", queues=[queue]):
        purge_spent_jtis.apply_async(queue=queue)
        deadline = time.monotonic() + 30
        while _still_there("old") and time.monotonic() < deadline:
            time.sleep(0.2)

    assert list(SpentAssertion.objects.values_list("jti", flat=True)) == ["live"]
