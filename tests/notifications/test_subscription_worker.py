"""A Subscription made over FHIR, served by a real Celery worker on the configured broker: the handshake arrives
first, then one notification per change, in event-number order, each once."""

import json
import time

import pytest
from celery.contrib.testing.worker import start_worker

from config.celery import app
from notifications.models import Subscription
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
