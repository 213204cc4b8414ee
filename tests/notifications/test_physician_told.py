"""Who is told what (issue 8 §4), for the physician: each step of a referral is the Task's new version and
exactly one notification per subscription, received by a real HTTP receiver: routed, re-routed after a decline
or an expiry, waiting for manual routing (and, past the policy's limit, told so), accepted (by whom, with
contact: in businessStatus.text, and the accepted offer's child Task names the PractitionerRole), cancelled."""

import datetime as dt
import json

import pytest
from django.utils import timezone

from fhir_bridge.models import StoredResource
from notifications.outbox import events_fan_out
from network.models import Organization
from referrals.models import Offer
from referrals.offers import offer_accept, offer_decline, referral_route
from tests.conftest import json_of
from tests.network.factories import km_north, referral_make, role_make
from tests.notifications.conftest import drain
from tests.notifications.test_subscriptions import backport_form, status_of, subscribe
from tests.referrals.conftest import CARDIAC_PATIENT

pytestmark = pytest.mark.django_db


class Physician:
    """The EHR's two subscriptions (every change, full resource; and id-only), and what reached each."""

    def __init__(self, fhir, receiver):
        self.receiver = receiver
        self.full = subscribe(fhir, backport_form(f"{receiver.url}/full", content="full-resource", criteria=()))
        self.ids = subscribe(fhir, backport_form(f"{receiver.url}/ids", content="id-only", criteria=()))
        self.now = timezone.now()
        drain(self.now)  # the handshakes
        self.seen = len(receiver.requests)

    def told(self, at: dt.datetime | None = None) -> list[dict]:
        """What arrived since the last look, after the outbox ran at ``at``: one Task per notification to the
        full-resource subscription; and the id-only subscription must have had exactly as many."""
        at = at or timezone.now()
        drain(at)  # follow-ups due by then (an offer's deadline, the manual-routing limit) make their changes
        events_fan_out()
        drain(max(at, timezone.now()))
        new = self.receiver.requests[self.seen:]
        self.seen += len(new)
        by_path = {"/full": [], "/ids": []}
        for request in new:
            by_path[request.path].append(json.loads(request.body))
        assert len(by_path["/full"]) == len(by_path["/ids"]), by_path
        for bundle in by_path["/full"] + by_path["/ids"]:
            assert status_of(bundle)["type"] == "event-notification"
        return [b["entry"][1]["resource"] for b in by_path["/full"]]


def _business(task: dict) -> str:
    return task["businessStatus"]["coding"][0]["code"]


def test_routed_rerouted_after_a_decline_and_an_expiry_then_accepted(fhir, clinic, http_receiver, dispatched):
    first, second, third = (role_make(at=km_north(km), email=f"role{km}@gym.test") for km in (1, 2, 3))
    for role in (first, second, third):
        Organization.objects.filter(pk=role.organization_id).update(phone=f"217-555-010{role.pk % 10}")
    physician = Physician(fhir, http_receiver)
    referral = referral_make(clinic)
    assert [t["status"] for t in physician.told()] == ["requested"]  # the referral as created

    routed = referral_route(referral=referral, patient=CARDIAC_PATIENT)
    [task] = physician.told()
    assert (task["status"], _business(task)) == ("requested", "offered")
    assert task["meta"]["versionId"] == "2"

    offer_decline(offer=routed.offer, reason="No evening slots")
    [task] = physician.told()
    assert _business(task) == "offered" and task["meta"]["versionId"] == "3"
    second_offer = Offer.objects.filter(referral=referral, status="requested").get()
    assert second_offer.role_id != routed.offer.role_id

    [task] = physician.told(at=second_offer.deadline + dt.timedelta(seconds=1))  # its deadline passes
    assert _business(task) == "offered" and task["meta"]["versionId"] == "4"
    third_offer = Offer.objects.filter(referral=referral, status="requested").get()
    assert {routed.offer.role_id, second_offer.role_id, third_offer.role_id} == {first.pk, second.pk, third.pk}

    offer_accept(offer=third_offer)
    [task] = physician.told()
    assert (task["status"], _business(task)) == ("accepted", "accepted")
    role = third_offer.role
    phone = Organization.objects.get(pk=role.organization_id).phone
    assert task["businessStatus"]["text"] == f"Accepted by {role} ({role.email}, {phone})"
    # The offer the physician can follow: the child Task owned by the PractitionerRole that took it.
    offer_task = StoredResource.objects.get(resource_type="Task", fhir_id=f"offer-{third_offer.pk}").content
    assert offer_task["status"] == "accepted" and offer_task["owner"]["reference"] == f"PractitionerRole/{role.fhir_id}"
    assert offer_task["partOf"] == [{"reference": f"Task/{task['id']}"}]


def test_nobody_left_waits_for_manual_routing_and_past_the_limit_the_physician_is_told(
    fhir, clinic, http_receiver, dispatched, settings
):
    settings.HUB_MANUAL_ROUTING_PHYSICIAN_HOURS = 24
    role_make(at=km_north(1))
    physician = Physician(fhir, http_receiver)
    referral = referral_make(clinic)
    physician.told()
    offer = referral_route(referral=referral, patient=CARDIAC_PATIENT).offer
    physician.told()

    offer_decline(offer=offer, reason="Full")
    [task] = physician.told()
    assert (task["status"], _business(task)) == ("requested", "awaiting-manual-routing")

    start = timezone.now()
    assert physician.told(at=start + dt.timedelta(hours=23)) == []  # within the limit: the coordinators only
    [task] = physician.told(at=start + dt.timedelta(hours=24, minutes=1))
    assert _business(task) == "awaiting-manual-routing"
    assert "after 24 h" in task["businessStatus"]["text"]
    assert any("after 24 h" in n["text"] for n in task["note"])
    assert physician.told(at=start + dt.timedelta(days=5)) == []  # once


def test_a_cancellation_is_one_notification(fhir, clinic, http_receiver, dispatched):
    role_make(at=km_north(1))
    physician = Physician(fhir, http_receiver)
    referral = referral_make(clinic)
    referral_route(referral=referral, patient=CARDIAC_PATIENT)
    physician.told()
    task_id = StoredResource.objects.get(referral=referral, resource_type="Task").fhir_id

    current = json_of(fhir.get(f"Task/{task_id}"))
    current.update(status="cancelled", statusReason={"text": "Patient moved away"})
    assert fhir.put(f"Task/{task_id}", current).status_code == 200

    [task] = physician.told()
    assert task["status"] == "cancelled" and task["statusReason"]["text"] == "Patient moved away"
