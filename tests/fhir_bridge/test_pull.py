"""Notify and pull against a real local EHR (tests/fhir_bridge/ehr_server.py): the hub fetches a referral from the
EHR's FHIR server with a SMART backend token, maps it as intake maps a pushed one, retries a server that is down,
gives up after the configured hours, and refuses bad data with a reason the physician reads."""

import datetime as dt

import pytest
from django.utils import timezone

from audit.models import Access
from fhir_bridge.examples import example
from fhir_bridge.hub_client import hub_client_jwks
from fhir_bridge.models import StoredResource
from notifications.followups import followup_run
from notifications.models import FollowUp
from referrals.models import BusinessStatus, Referral, ReferralStatus
from tests.conftest import fhir_client_for, issue_paths, json_of
from tests.factories import EhrClientFactory
from tests.fhir_bridge.ehr_server import FakeEhr

pytestmark = pytest.mark.django_db

HUB_AT_EHR = "exercise-hub-at-good-health"


@pytest.fixture
def hub_key(settings, tmp_path):
    settings.HUB_CLIENT_KEY_FILE = tmp_path / "hub-client-key.pem"
    settings.HUB_OUTBOUND_ALLOW = ["http://127.0.0.1"]  # the EHR is on the loopback, over plain HTTP
    settings.HUB_PULL_GIVE_UP_HOURS = 24


@pytest.fixture
def ehr(hub_key):
    server = FakeEhr(jwks=hub_client_jwks(), hub_client_id=HUB_AT_EHR).start()
    yield server
    server.stop()


@pytest.fixture
def pull_client(clinic, ehr):
    return EhrClientFactory(clinic=clinic, fhir_base_url=ehr.base, token_url=ehr.token_url, hub_client_id=HUB_AT_EHR)


def _task(ehr: FakeEhr) -> dict:
    """The PA IG's Scenario 2 Task, sent to the hub to route, pointing at the ServiceRequest and Patient that stay
    on the EHR's server."""
    task = example("Scen2TaskFit4LifeV2")
    task.pop("id")
    task["status"] = "requested"
    task["owner"] = {"reference": "Organization/hub"}
    task["focus"] = {"reference": f"{ehr.base}/ServiceRequest/Scen2ServiceRequest"}
    task["for"] = {"reference": f"{ehr.base}/Patient/Scen2PatientJohansson", "display": "Nancy Johansson"}
    task["identifier"] = [{"system": "urn:ehr:task", "value": "pull-1"}]
    return task


def _notify(pull_client, ehr) -> Referral:
    response = fhir_client_for(pull_client).post("Task", _task(ehr))
    assert response.status_code == 201, response.content
    assert json_of(response)["businessStatus"]["coding"][0]["code"] == "waiting-for-data"
    return Referral.objects.get()


def _pull_row(referral: Referral) -> FollowUp:
    return FollowUp.objects.get(kind="pull-referral", referral_id=referral.pk, state="pending")


def test_the_referral_waits_for_its_data_then_is_fetched_mapped_and_stored(pull_client, ehr):
    referral = _notify(pull_client, ehr)
    assert referral.business_status == BusinessStatus.WAITING_FOR_DATA
    assert referral.patient_name == ""
    assert not FollowUp.objects.filter(kind="route-referral").exists()  # nothing to route yet
    row = _pull_row(referral)
    assert row.due_at <= timezone.now()

    assert followup_run(followup_id=row.pk) == "fetched 5 resources; routing"

    referral.refresh_from_db()
    assert referral.business_status == BusinessStatus.RECEIVED
    assert referral.status == ReferralStatus.REQUESTED
    # The same mapping as a pushed referral: the patient, the service, the reason Condition's code, the PAVS baseline.
    assert referral.patient_name == "Nancy Johansson"
    assert referral.service_code == "409063005"
    assert any(c.get("code") == "Z72.3" for c in referral.facts.condition_codes)
    assert sorted(m["code"] for m in referral.facts.pavs_baseline) == ["68516-4", "89555-7"]
    stored = {r.resource_type: r for r in StoredResource.objects.filter(referral=referral)}
    assert sorted(r.resource_type for r in StoredResource.objects.filter(referral=referral)) == [
        "Condition", "Observation", "Observation", "Patient", "ServiceRequest", "Task"]
    # The hub's copies point at each other; what was not fetched points back at the EHR.
    service_request = stored["ServiceRequest"].content
    assert service_request["subject"]["reference"] == stored["Patient"].reference
    assert service_request["requester"]["reference"] == f"{ehr.base}/PractitionerRole/Scen2RoleLopez"
    task = stored["Task"].content
    assert task["focus"]["reference"] == f"{ehr.base}/ServiceRequest/Scen2ServiceRequest"  # the Task as sent
    assert task["businessStatus"]["coding"][0]["code"] == "received"
    assert stored["Task"].version_id == 2
    # Routing follows, with its safety net.
    assert FollowUp.objects.filter(kind="route-referral", referral_id=referral.pk).exists()
    # The EHR verified the hub's signed assertion, and every read was made with the token it gave.
    assert ehr.assertion_errors == []
    assert [(m, p) for m, p, s in ehr.requests if s == 200][0] == ("POST", "/auth/token")
    # One audit row per read: who (the EHR's client), what (the URL), and the answer.
    rows = list(Access.objects.filter(channel=Access.Channel.PULL).order_by("id"))
    assert [(r.entity_type, r.status, r.method) for r in rows] == [
        ("ServiceRequest", 200, "GET"), ("Patient", 200, "GET"), ("Condition", 200, "GET"),
        ("Observation", 200, "GET"), ("Observation", 200, "GET")]
    assert {r.agent_client for r in rows} == {pull_client.client_id}
    assert rows[0].path == f"{ehr.base}/ServiceRequest/Scen2ServiceRequest"
    assert rows[0].entity_id == "Scen2ServiceRequest" and rows[0].clinic_id == referral.clinic_id


def test_the_clinic_is_told_at_once_that_the_referral_waits_for_data(pull_client, ehr,
                                                                      django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        _notify(pull_client, ehr)

    # Its creation fans out to the clinic's subscriptions now, not at the pull's outcome (maybe hours away).
    assert any(getattr(callback, "hub_fan_out", False) for callback in callbacks)


def test_a_second_run_of_the_same_row_fetches_nothing_again(pull_client, ehr):
    referral = _notify(pull_client, ehr)
    row = _pull_row(referral)
    followup_run(followup_id=row.pk)
    asked = len(ehr.requests)

    assert followup_run(followup_id=row.pk) == "not pending"
    assert len(ehr.requests) == asked
    assert StoredResource.objects.filter(referral=referral, resource_type="ServiceRequest").count() == 1


def test_an_ehr_that_is_down_is_tried_again_with_backoff_and_fetched_when_it_is_back(pull_client, ehr):
    referral = _notify(pull_client, ehr)
    ehr.stop()
    first = _pull_row(referral)
    now = timezone.now()

    outcome = followup_run(followup_id=first.pk, now=now)

    assert outcome.startswith("retry: its token endpoint answered connect")
    referral.refresh_from_db()
    assert referral.business_status == BusinessStatus.WAITING_FOR_DATA
    second = _pull_row(referral)
    assert second.key == f"pull-referral:{referral.pk}:2"
    assert now < second.due_at <= now + dt.timedelta(seconds=30)  # HUB_RETRY_BASE_SECONDS, less jitter
    assert not Access.objects.filter(channel=Access.Channel.PULL).exists()  # no PHI was read

    ehr.start()  # back, on the same port
    assert followup_run(followup_id=second.pk, now=second.due_at) == "fetched 5 resources; routing"
    referral.refresh_from_db()
    assert referral.business_status == BusinessStatus.RECEIVED


def test_after_24_hours_of_failures_the_referral_is_rejected_with_the_reason(pull_client, ehr):
    referral = _notify(pull_client, ehr)
    ehr.stop()
    give_up_at = referral.created_at + dt.timedelta(hours=24)

    attempts = 0
    while (row := FollowUp.objects.filter(kind="pull-referral", state="pending").first()) is not None:
        assert row.due_at <= give_up_at  # the last try is at the limit, never after it
        followup_run(followup_id=row.pk, now=max(row.due_at, timezone.now()))
        attempts += 1
        assert attempts < 40

    referral.refresh_from_db()
    assert referral.status == ReferralStatus.REJECTED
    assert "for 24 h" in referral.status_reason and "connect" in referral.status_reason
    assert attempts >= 10  # backoff, not a tight loop: 30 s doubling up to 6 h
    task = StoredResource.objects.get(referral=referral, resource_type="Task").content
    assert task["status"] == "rejected"
    assert task["statusReason"]["text"] == referral.status_reason
    assert StoredResource.objects.filter(referral=referral).count() == 1  # the Task alone


def test_bad_data_from_the_ehr_is_rejected_with_each_problem_and_nothing_fetched_is_kept(pull_client, ehr):
    ehr.resources["ServiceRequest/Scen2ServiceRequest"]["status"] = "bogus"
    ehr.resources["Patient/Scen2PatientJohansson"]["gender"] = "robot"
    referral = _notify(pull_client, ehr)

    outcome = followup_run(followup_id=_pull_row(referral).pk)

    assert outcome.startswith("rejected: ")
    referral.refresh_from_db()
    assert referral.status == ReferralStatus.REJECTED
    assert referral.status_reason.startswith("The referral's data on the clinic's FHIR server breaks the PA profiles")
    # In an OperationOutcome's words: each element at fault, and what is wrong with it.
    assert "ServiceRequest/Scen2ServiceRequest.status" in referral.status_reason
    assert "Patient/Scen2PatientJohansson.gender" in referral.status_reason
    assert referral.patient_name == "" and referral.facts.pavs_baseline == []
    assert [r.resource_type for r in StoredResource.objects.filter(referral=referral)] == ["Task"]
    assert Access.objects.filter(channel=Access.Channel.PULL, status=200).count() == 5  # it was read, all the same
    assert not FollowUp.objects.filter(kind__in=["route-referral", "pull-referral"], state="pending").exists()


def test_a_rejection_reason_ends_with_one_period(pull_client, ehr):
    # pa-sr-1's diagnostics is a sentence of its own; the reason said "...or a reasonReference.." (issue 12).
    service_request = ehr.resources["ServiceRequest/Scen2ServiceRequest"]
    service_request.pop("reasonCode", None)
    service_request.pop("reasonReference", None)
    referral = _notify(pull_client, ehr)

    followup_run(followup_id=_pull_row(referral).pk)

    referral.refresh_from_db()
    assert referral.status == ReferralStatus.REJECTED
    assert "pa-sr-1" in referral.status_reason
    assert ".." not in referral.status_reason and ".;" not in referral.status_reason
    assert referral.status_reason.endswith("reasonReference.")


def test_a_service_request_the_ehr_does_not_have_is_rejected_at_once(pull_client, ehr):
    del ehr.resources["ServiceRequest/Scen2ServiceRequest"]
    referral = _notify(pull_client, ehr)

    followup_run(followup_id=_pull_row(referral).pk)

    referral.refresh_from_db()
    assert referral.status == ReferralStatus.REJECTED
    assert "answered HTTP 404" in referral.status_reason
    assert Access.objects.get(channel=Access.Channel.PULL).status == 404


def test_an_ehr_that_refuses_the_hubs_assertion_rejects_the_referral(pull_client, ehr):
    ehr.hub_client_id = "someone-else"  # the EHR knows the hub by another id: the assertion's iss is wrong
    referral = _notify(pull_client, ehr)

    followup_run(followup_id=_pull_row(referral).pk)

    referral.refresh_from_db()
    assert referral.status == ReferralStatus.REJECTED
    assert "token endpoint answered HTTP 401" in referral.status_reason
    assert ehr.assertion_errors


def test_a_task_pointing_outside_the_registered_server_is_refused(pull_client, ehr):
    task = _task(ehr)
    task["focus"]["reference"] = "http://127.0.0.1:1/fhir/ServiceRequest/elsewhere"

    response = fhir_client_for(pull_client).post("Task", task)

    assert response.status_code == 422
    assert issue_paths(response) == ["Task.focus"]
    assert not Referral.objects.exists()
    assert not FollowUp.objects.exists()


def test_a_client_not_registered_for_pull_is_told_to_send_the_service_request(clinic, ehr):
    client = EhrClientFactory(clinic=clinic)  # no FHIR base: it only pushes

    response = fhir_client_for(client).post("Task", _task(ehr))

    assert response.status_code == 422
    assert "no FHIR server registered" in json_of(response)["issue"][0]["diagnostics"]
    assert not Referral.objects.exists()


def test_the_waiting_step_is_published_with_the_business_status_codes(fhir):
    description = json_of(fhir.get("metadata"))["description"]

    assert "waiting-for-data (Waiting for the referral's data from the clinic's FHIR server)" in description
    assert "notify and pull" in description
