"""A real Celery worker, on the configured broker (Redis in CI, the filesystem broker by default), runs the hub's
periodic purge of spent client-assertion ids."""

import datetime as dt
import time

import pytest
from celery.contrib.testing.worker import start_worker
from django.utils import timezone

from config.celery import app
from fhir_bridge.models import SpentAssertion
from fhir_bridge.tasks import purge_spent_jtis
from tests.factories import EhrClientFactory

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_a_real_worker_purges_expired_assertion_ids_only():
    client = EhrClientFactory()
    now = timezone.now()
    SpentAssertion.objects.create(client=client, jti="old", expires_at=now - dt.timedelta(minutes=10))
    SpentAssertion.objects.create(client=client, jti="live", expires_at=now + dt.timedelta(minutes=10))

    with start_worker(app, perform_ping_check=False, pool="solo", concurrency=1, loglevel="WARNING"):
        purge_spent_jtis.delay()
        deadline = time.monotonic() + 30
        while SpentAssertion.objects.filter(jti="old").exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    assert list(SpentAssertion.objects.values_list("jti", flat=True)) == ["live"]
