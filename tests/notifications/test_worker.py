"""A real Celery worker on the configured broker (Redis in CI, the filesystem broker by default) runs the sweep,
the fan-out and the deliveries, to a real HTTP receiver; messages lost in the broker are swept up."""

import time
import uuid

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings

from config.celery import app
from referrals.offers import offer_accept, referral_route
from notifications.models import Delivery, FollowUp, Subscription
from notifications.tasks import sweep
from fhir_bridge.models import StoredResource
from tests.fhir_bridge.test_worker import _private_filesystem_broker  # noqa: F401 - autouse: folders of its own
from tests.referrals.conftest import CARDIAC_PATIENT
from tests.referrals.test_concurrency import _qualification_data
from tests.network.factories import km_north, referral_make, role_make

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def own_queues():
    """Route the hub's tasks to queues of this test's own, so that no worker of another run on the same broker
    takes its messages, and its worker takes nothing that other tests left behind."""
    suffix = uuid.uuid4().hex[:8]
    queues = {name: f"test-{name}-{suffix}" for name in ("routing", "delivery", "sweeps")}
    saved = app.conf.task_routes
    app.conf.task_routes = {task: {"queue": queues[r["queue"]]} for task, r in settings.CELERY_TASK_ROUTES.items()}
    app.amqp.flush_routes()
    app.amqp.__dict__.pop("router", None)
    yield queues
    app.conf.task_routes = saved
    app.amqp.flush_routes()
    app.amqp.__dict__.pop("router", None)


def _changes() -> int:
    """How many changes the referrals have had: one notification each (a change is one referral Task version)."""
    return sum(StoredResource.objects.filter(referral__isnull=False, resource_type="Task")
               .values_list("version_id", flat=True))


def _events_since_start(bundle: dict) -> int:
    status = bundle["entry"][0]["resource"]["parameter"]
    return int(next(p["valueString"] for p in status if p["name"] == "events-since-subscription-start"))


def _wait_for(predicate, seconds=40):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_a_real_worker_delivers_every_event_once_even_when_messages_were_lost(clinic, own_queues, monkeypatch):
    from tests.notifications.conftest import Receiver

    receiver = Receiver()
    try:
        _qualification_data()  # an earlier transactional test may have flushed what migrations seeded
        role_make(at=km_north(1), max_active_cases=10)
        Subscription.objects.create(clinic=clinic, channel="rest-hook", endpoint=receiver.url, status="active")
        with monkeypatch.context() as lost:  # the broker loses every on-commit message of these changes
            lost.setattr("notifications.followups._enqueue", lambda task, *args: None)
            lost.setattr("notifications.receivers._fan_out_on_commit", lambda: None)
            for _ in range(3):
                referral = referral_make(clinic)
                offer_accept(offer=referral_route(referral=referral, patient=CARDIAC_PATIENT).offer)
        expected = _changes()
        assert expected >= 6 and receiver.received == []

        with start_worker(app, perform_ping_check=False, pool="solo", concurrency=1, loglevel="WARNING",
                          queues=list(own_queues.values())):
            sweep.apply_async(queue=own_queues["sweeps"])  # what beat sends every HUB_SWEEP_SECONDS
            _wait_for(lambda: len(receiver.received) >= expected)
            # Changes made now go the normal way: fan-out and attempts enqueued on commit, no sweep needed.
            referral = referral_make(clinic)
            referral_route(referral=referral, patient=CARDIAC_PATIENT)
            expected = _changes()
            _wait_for(lambda: len(receiver.received) >= expected)
            time.sleep(0.5)  # anything sent twice would arrive now

        numbers = sorted(_events_since_start(b) for b in receiver.bodies())
        assert numbers == list(range(1, expected + 1))  # each change once, no gap
        assert set(Delivery.objects.values_list("state", flat=True)) == {"delivered"}
        assert not FollowUp.objects.filter(kind="delivery-attempt", state="pending").exists()
    finally:
        receiver.close()
