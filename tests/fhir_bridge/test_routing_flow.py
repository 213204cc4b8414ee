"""A referral from intake to an offer and on: the route task, the child Tasks the physician can follow, a decline,
an expiry, the manual queue, and a coordinator's override."""

import datetime as dt
import json

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from fhir_bridge.examples import scenario2_bundle
from notifications.followups import followup_run, followups_claim
from referrals.models import Offer, Referral, RoutingDecision
from referrals.tasks import route_referral
from tests.conftest import json_of
from tests.network.factories import role_make

pytestmark = pytest.mark.django_db

SPRINGFIELD = (39.7990, -89.6440)  # near the centroid of ZIP 62701
CARDIAC_REASON = [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I25.10",
                               "display": "Atherosclerotic heart disease of native coronary artery"}]}]


def _km_north(km: float) -> tuple[float, float]:
    return SPRINGFIELD[0] + km / 111.32, SPRINGFIELD[1]


@pytest.fixture
def network(db):
    """A trainer next door who is not qualified for cardiac patients, and two clinical exercise physiologists
    further out."""
    return {
        "trainer": role_make(credentials=("acsm-cpt",), at=_km_north(0.5), state="IL", fhir_id="trainer-next-door"),
        "cep_near": role_make(credentials=("acsm-cep",), at=_km_north(3), state="IL", fhir_id="cep-near"),
        "cep_far": role_make(credentials=("acsm-cep",), at=_km_north(8), state="IL", fhir_id="cep-far"),
    }


@pytest.fixture
def coordinator(db):
    user = get_user_model().objects.create_user("coordinator", password="x", is_staff=True)
    client = Client()
    client.force_login(user)
    return client


def _send_cardiac_referral(fhir, django_capture_on_commit_callbacks) -> tuple[Referral, dict]:
    bundle = scenario2_bundle(identifier="flow-1", reason_codes=CARDIAC_REASON)
    sr = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
    sr["orderDetail"] = [{"coding": [{"system": "http://exercise-referral-hub.org/fhir/CodeSystem/exercise-clearance",
                                      "code": "moderate"}]}]
    with django_capture_on_commit_callbacks() as callbacks:
        response = fhir.post("", bundle)
    assert response.status_code == 200
    # The route task alone, enqueued only once it is committed: its change fans the creation out with it
    # (notifications.receivers._referral_created, main's 2a43976).
    assert len(callbacks) == 1
    referral = Referral.objects.get()
    assert route_referral.name == "referrals.route_referral"  # the name a worker knows it by
    route_referral(*json.loads(json.dumps([referral.pk])))  # what the worker would run, arguments as JSON
    task = next(e["resource"] for e in json_of(response)["entry"] if e["resource"]["resourceType"] == "Task")
    return referral, task


def _offers(fhir, task_id: str) -> list[dict]:
    response = fhir.get("Task", **{"part-of": f"Task/{task_id}"})
    assert response.status_code == 200
    # In the order they were made: the offer's number, not its id as a string ("offer-10" sorts before "offer-9").
    return sorted((e["resource"] for e in json_of(response)["entry"]), key=lambda t: int(t["identifier"][0]["value"]))


def test_a_cardiac_referral_is_offered_to_the_nearest_qualified_professional(fhir, network, django_capture_on_commit_callbacks):
    referral, task = _send_cardiac_referral(fhir, django_capture_on_commit_callbacks)

    [offer] = _offers(fhir, task["id"])
    assert offer["owner"]["reference"] == "PractitionerRole/cep-near"  # not the closer, unqualified trainer
    assert offer["status"] == "requested"
    assert offer["partOf"] == [{"reference": f"Task/{task['id']}"}]
    deadline = dt.datetime.fromisoformat(offer["restriction"]["period"]["end"].replace("Z", "+00:00"))
    assert dt.timedelta(hours=47) < deadline - timezone.now() <= dt.timedelta(hours=48)

    current = json_of(fhir.get(f"Task/{task['id']}"))
    assert current["businessStatus"]["coding"][0]["code"] == "offered"
    assert current["businessStatus"]["text"].startswith("Offered to")
    assert current["note"][-1]["text"] == current["businessStatus"]["text"]
    assert Referral.objects.get().business_status == "offered"


def test_route_task_run_twice_routes_once(fhir, network, django_capture_on_commit_callbacks):
    referral, task = _send_cardiac_referral(fhir, django_capture_on_commit_callbacks)
    route_referral(referral.pk)
    assert len(_offers(fhir, task["id"])) == 1
    assert RoutingDecision.objects.filter(referral=referral).count() == 1


def test_route_task_run_twice_leaves_a_referral_in_the_manual_queue_alone(
    fhir, django_capture_on_commit_callbacks
):
    referral, task = _send_cardiac_referral(fhir, django_capture_on_commit_callbacks)  # no network: nobody
    referral.refresh_from_db()
    assert referral.business_status == "awaiting-manual-routing"
    notes = len(json_of(fhir.get(f"Task/{task['id']}"))["note"])

    assert route_referral(referral.pk) is None  # a redelivery: refused under the lock, not routed as a retry
    assert RoutingDecision.objects.filter(referral=referral).count() == 1
    assert len(json_of(fhir.get(f"Task/{task['id']}"))["note"]) == notes


def test_a_decline_then_an_expiry_lead_to_the_manual_queue_and_an_override(
    fhir, network, coordinator, django_capture_on_commit_callbacks
):
    referral, task = _send_cardiac_referral(fhir, django_capture_on_commit_callbacks)
    first = Offer.objects.get()

    declined = coordinator.post(f"/api/admin/offers/{first.pk}/answer", {"answer": "decline", "reason": "Full until March"},
                                content_type="application/json")
    assert declined.status_code == 200, declined.content
    offers = _offers(fhir, task["id"])
    assert [(o["owner"]["reference"], o["status"]) for o in offers] == [
        ("PractitionerRole/cep-near", "rejected"), ("PractitionerRole/cep-far", "requested")]
    assert offers[0]["statusReason"]["text"] == "Full until March"

    later = timezone.now() + dt.timedelta(hours=49)  # the offer-deadline follow-up falls due
    outcomes = [followup_run(followup_id=f, now=later) for f in followups_claim(now=later)]
    assert sum(o.startswith("expired") for o in outcomes) == 1, outcomes
    offers = _offers(fhir, task["id"])
    assert offers[1]["status"] == "cancelled" and "No answer" in offers[1]["statusReason"]["text"]
    referral.refresh_from_db()
    assert referral.business_status == "awaiting-manual-routing"
    queue = json_of(coordinator.get("/api/admin/routing/queue"))
    assert [r["id"] for r in queue["referrals"]] == [referral.pk]

    explained = json_of(coordinator.get(f"/api/admin/referrals/{referral.pk}/routing"))
    trainer = next(c for c in explained["decisions"][0]["candidates"] if c["role"] == "trainer-next-door")
    assert "not-qualified" in [e["constraint"] for e in trainer["excluded"]]

    refused = coordinator.post(f"/api/admin/referrals/{referral.pk}/route", {"role": "trainer-next-door"},
                               content_type="application/json")
    assert refused.status_code == 422
    assert (json_of(refused)["code"], json_of(refused)["field"]) == ("constraint", "override_reason")
    assert "not-qualified" in [c["constraint"] for c in json_of(refused)["constraints"]]
    overridden = coordinator.post(
        f"/api/admin/referrals/{referral.pk}/route",
        {"role": "trainer-next-door", "override_reason": "Cardiologist cleared her for supervised light exercise"},
        content_type="application/json",
    )
    assert overridden.status_code == 201, overridden.content
    assert _offers(fhir, task["id"])[-1]["owner"]["reference"] == "PractitionerRole/trainer-next-door"


def test_the_coordinator_api_is_staff_only(network):
    assert Client().get("/api/admin/routing/queue").status_code == 401  # no credentials
    client = Client()
    client.force_login(get_user_model().objects.create_user("clinician", password="x", is_staff=False))
    assert client.get("/api/admin/routing/queue").status_code == 403


def test_cancelling_a_referral_withdraws_its_open_offer(fhir, network, django_capture_on_commit_callbacks):
    referral, task = _send_cardiac_referral(fhir, django_capture_on_commit_callbacks)
    current = json_of(fhir.get(f"Task/{task['id']}"))
    current.update(status="cancelled", statusReason={"text": "Patient moved to another state"})
    assert fhir.put(f"Task/{task['id']}", current).status_code == 200

    [offer] = _offers(fhir, task["id"])
    assert offer["status"] == "cancelled"
    assert "Patient moved to another state" in offer["statusReason"]["text"]
    assert Offer.objects.get().status == "cancelled"


def test_the_gist_stays_through_a_clinic_note_and_gives_way_to_who_accepted(
    fhir, network, coordinator, django_capture_on_commit_callbacks
):
    referral, task = _send_cardiac_referral(fhir, django_capture_on_commit_callbacks)
    current = json_of(fhir.get(f"Task/{task['id']}"))
    gist = current["businessStatus"]["text"]
    assert gist.startswith("Offered to") and "km from the patient" in gist

    current["note"] = current.get("note", []) + [{
        "authorReference": {"reference": task["requester"]["reference"]},
        "time": "2026-11-27T09:00:00Z",
        "text": "Patient prefers mornings",
    }]
    assert fhir.put(f"Task/{task['id']}", current).status_code == 200
    noted = json_of(fhir.get(f"Task/{task['id']}"))
    assert "Patient prefers mornings" in [n["text"] for n in noted["note"]]
    assert noted["businessStatus"]["text"] == gist  # a note does not move the business status

    accepted = coordinator.post(f"/api/admin/offers/{Offer.objects.get().pk}/answer", {"answer": "accept"},
                                content_type="application/json")
    assert accepted.status_code == 200, accepted.content
    after = json_of(fhir.get(f"Task/{task['id']}"))
    assert after["status"] == "accepted"
    assert after["businessStatus"]["coding"][0]["code"] == "accepted"
    # Who took the patient on, in place of the routing gist (which stays in the notes).
    assert after["businessStatus"]["text"] == f"Accepted by {network['cep_near']}"
    assert gist in [n["text"] for n in after["note"]]


def test_search_follows_the_business_status_as_it_moves(fhir, network, django_capture_on_commit_callbacks):
    referral, task = _send_cardiac_referral(fhir, django_capture_on_commit_callbacks)

    def found(**params) -> list[str]:
        response = fhir.get("Task", **params)
        assert response.status_code == 200
        return [e["resource"]["id"] for e in json_of(response).get("entry", [])]

    assert found(**{"business-status": "offered", "_id": task["id"]}) == [task["id"]]
    assert found(**{"business-status": "received", "_id": task["id"]}) == []
    assert found(status="requested", _id=task["id"]) == [task["id"]]  # unchanged: its token stays

    current = json_of(fhir.get(f"Task/{task['id']}"))
    current.update(status="cancelled", statusReason={"text": "Patient moved away"})
    assert fhir.put(f"Task/{task['id']}", current).status_code == 200
    assert found(status="cancelled", _id=task["id"]) == [task["id"]]
    assert found(status="requested", _id=task["id"]) == []
    assert found(**{"business-status": "offered", "_id": task["id"]}) == []
