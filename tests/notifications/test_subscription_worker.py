"""A Subscription made over FHIR, served by a real Celery worker on the configured broker: the handshake arrives
first, then one notification per change, in event-number order, each once."""

import contextlib
import json
import time

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings

from config.celery import app
from notifications.models import Delivery, Subscription
from notifications.tasks import fan_out
from referrals.offers import offer_accept, referral_route
from tests.conftest import fhir_client_for
from tests.factories import EhrClientFactory
from tests.fhir_bridge.test_worker import _private_filesystem_broker  # noqa: F401 - autouse: folders of its own
from tests.network.factories import km_north, referral_make, role_make
from tests.notifications.test_subscriptions import backport_form, status_of, subscribe
from tests.notifications.test_worker import own_queues  # noqa: F401 - a fixture: queues of this test's own
from tests.referrals.conftest import CARDIAC_PATIENT
from tests.referrals.test_concurrency import _qualification_data

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@contextlib.contextmanager
def monkeypatch_fan_out():
    """Changes made inside are not fanned out on their commit; calling what it yields fans them all out at once
    (as the sweep does after a broker outage)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("notifications.receivers._fan_out_on_commit", lambda: None)
        yield fan_out.delay


def test_a_real_worker_sends_the_handshake_then_each_change_once_in_order(clinic, own_queues, http_receiver):  # noqa: F811
    _qualification_data()  # an earlier transactional test may have flushed what migrations seeded
    role_make(at=km_north(1))
    fhir = fhir_client_for(EhrClientFactory(clinic=clinic))
    with start_worker(app, perform_ping_check=False, pool="solo", concurrency=1, loglevel="WARNING",
                      queues=list(own_queues.values())):
        created = subscribe(fhir, backport_form(f"{http_receiver.url}/hook", content="full-resource", criteria=()))
        http_receiver.wait_for(1, timeout=30)
        referral = referral_make(clinic)
        offer_accept(offer=referral_route(referral=referral, patient=CARDIAC_PATIENT).offer)
        http_receiver.wait_for(4, timeout=30)
        time.sleep(1)  # anything sent twice would arrive now

    bundles = [json.loads(r.body) for r in http_receiver.requests]
    kinds = [status_of(b)["type"] for b in bundles]
    assert kinds == ["handshake", "event-notification", "event-notification", "event-notification"]
    assert [status_of(b)["events-since-subscription-start"] for b in bundles[1:]] == ["1", "2", "3"]
    assert [b["entry"][1]["resource"]["status"] for b in bundles[1:]] == ["requested", "requested", "accepted"]
    assert Subscription.objects.get(fhir_id=created["id"]).status == "active"


@pytest.mark.postgres
@pytest.mark.skipif(
    not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
    reason="needs PostgreSQL's concurrent writers (set DATABASE_URL)",
)
def test_concurrent_workers_still_deliver_one_subscriptions_notifications_in_order(  # noqa: F811
    clinic, own_queues, http_receiver, settings
):
    """Four worker threads take the deliveries' messages in parallel: fan-outs at once (6 events each) number
    the subscription's changes and hand each batch over in a message of its own, so a later number that comes
    up first waits for the earlier ones, and the receiver sees 1, 2, 3, ... in that order, each once."""
    settings.HUB_FOLLOWUP_CHUNK = 3
    settings.HUB_FOLLOWUP_BATCH = 6  # events per fan-out: several for the 24 changes' events
    _qualification_data()
    role_make(at=km_north(1), max_active_cases=20)
    fhir = fhir_client_for(EhrClientFactory(clinic=clinic))
    with start_worker(app, perform_ping_check=False, pool="threads", concurrency=4, loglevel="WARNING",
                      queues=list(own_queues.values())):
        subscribe(fhir, backport_form(f"{http_receiver.url}/hook", criteria=()))
        http_receiver.wait_for(1, timeout=30)  # the handshake
        with monkeypatch_fan_out() as fan_out_later:
            for _ in range(8):
                referral = referral_make(clinic)
                offer_accept(offer=referral_route(referral=referral, patient=CARDIAC_PATIENT).offer)
        for _ in range(10):  # more than enough for every event; one that finds none does nothing
            fan_out_later()  # the fan-outs number the 24 changes in turn, and hand them over in parallel
        http_receiver.wait_for(25, timeout=60)
        time.sleep(1)  # anything sent twice would arrive now

    bundles = [json.loads(r.body) for r in http_receiver.requests]
    numbers = [int(status_of(b)["events-since-subscription-start"]) for b in bundles[1:]]
    assert numbers == list(range(1, 25))  # 8 referrals: created, routed, accepted; in order, each once
    assert set(Delivery.objects.values_list("state", flat=True)) == {"delivered"}
