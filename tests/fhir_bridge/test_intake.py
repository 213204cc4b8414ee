"""Referral intake: the three ways in, validation, idempotency and clinic isolation."""

import copy

import orjson
import pytest

from fhir_bridge.examples import example, scenario2_bundle
from fhir_bridge.models import InboundMessage, ResourceVersion, StoredResource
from referrals.models import Referral, ReferralEvent
from tests.conftest import issue_paths, json_of
from tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db


def _task_entry(bundle):
    return next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Task")


def _location(entry) -> str:
    return entry["response"]["location"]


def test_a_transaction_bundle_opens_one_referral_and_stores_every_entry(fhir, clinic):
    bundle = scenario2_bundle(identifier="ref-1")
    response = fhir.post("", bundle)

    assert response.status_code == 200
    body = json_of(response)
    assert body["type"] == "transaction-response"
    assert [e["response"]["status"] for e in body["entry"]] == ["201 Created"] * 6
    referral = Referral.objects.get()
    assert referral.clinic == clinic
    assert referral.status == "requested"
    assert referral.patient_name == "Nancy Johansson"
    assert referral.patient_postal_code == "62701"
    # The clinical facts, mapped once into the domain: conditions as sent, the PAVS baseline with its units and
    # dates, what ACSM screening reads from it, and the patient placed by the ZIP centroid.
    facts = referral.facts
    assert {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "Z72.3", "display": "Lack of physical exercise"} in facts.condition_codes
    assert facts.pavs_baseline == [
        {"code": "89555-7", "value": 5, "unit": "d/wk", "date": "2023-03-15"},
        {"code": "68516-4", "value": 32, "unit": "min/d", "date": "2023-03-15"},
    ]
    assert facts.currently_active is True  # 5 d/wk × 32 min/d = 160 min/wk
    assert (facts.location_source, facts.state) == ("postal-code", "IL")
    assert facts.latitude == pytest.approx(39.8, abs=0.1) and facts.longitude == pytest.approx(-89.6, abs=0.2)
    assert StoredResource.objects.filter(referral=referral).count() == 6
    assert ResourceVersion.objects.filter(resource__referral=referral).count() == 0  # no superseded versions yet
    assert ReferralEvent.objects.get(referral=referral).kind == "created"
    assert orjson.loads(InboundMessage.objects.get().body) == bundle  # what came in, verbatim


def test_a_transaction_bundle_is_stored_in_a_fixed_number_of_statements(fhir, django_assert_num_queries):
    # The intake hot path, whatever the number of entries: the client's token (1), the request's transaction and
    # _referral_open's savepoint, kept so that a resend can be answered (2 + 2 releases), the Referral, its
    # ClinicalFacts, its event and its routing follow-up (4), then one INSERT each for the resources, their search
    # tokens, their business identifiers and the inbound message (4), and the audit row (1).
    with django_assert_num_queries(14):
        response = fhir.post("", scenario2_bundle(identifier="ref-1"))
    assert response.status_code == 200


def test_references_between_entries_are_resolved_to_the_new_ids(fhir):
    body = json_of(fhir.post("", scenario2_bundle(identifier="ref-2")))
    by_type = {e["resource"]["resourceType"]: e["resource"] for e in body["entry"]}
    task, sr, patient = by_type["Task"], by_type["ServiceRequest"], by_type["Patient"]
    assert task["focus"]["reference"] == f"ServiceRequest/{sr['id']}"
    assert task["for"]["reference"] == f"Patient/{patient['id']}"
    assert sr["subject"]["reference"] == f"Patient/{patient['id']}"
    assert sr["reasonReference"][0]["reference"] == f"Condition/{by_type['Condition']['id']}"
    assert task["businessStatus"]["coding"][0]["code"] == "received"
    assert task["meta"]["versionId"] == "1"


def test_a_bundle_without_a_task_gets_one_from_the_hub(fhir):
    bundle = scenario2_bundle(identifier="ref-3")
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Task"]
    response = fhir.post("", bundle)
    assert response.status_code == 200
    task = StoredResource.objects.get(resource_type="Task").content
    assert task["owner"]["reference"] == "Organization/hub"
    assert task["status"] == "requested" and task["intent"] == "order"


@pytest.mark.parametrize("subject", [{"reference": None}, {"display": "Nancy Johansson"}, {}])
def test_a_service_request_whose_subject_names_no_reference_is_refused_with_its_path(fhir, subject):
    """Found by the full-size property run: `"reference": null` passes the structural check and was a 500."""
    bundle = scenario2_bundle(identifier="no-subject")
    sr_index, sr = next((i, e["resource"]) for i, e in enumerate(bundle["entry"])
                        if e["resource"]["resourceType"] == "ServiceRequest")
    sr["subject"] = subject
    stored = StoredResource.objects.count()
    response = fhir.post("", bundle)

    assert 400 <= response.status_code < 500
    assert any(path.startswith(f"Bundle.entry[{sr_index}].resource") for path in issue_paths(response))
    assert not Referral.objects.exists() and StoredResource.objects.count() == stored


def test_a_resent_bundle_answers_200_with_the_first_referral_and_stores_nothing(fhir):
    first = json_of(fhir.post("", scenario2_bundle(identifier="same")))
    again = fhir.post("", scenario2_bundle(identifier="same"))

    assert again.status_code == 200
    entries = json_of(again)["entry"]
    assert all(e["response"]["status"] == "200 OK" for e in entries)
    assert _location(_task_entry(json_of(again))) == _location(_task_entry(first))
    assert Referral.objects.count() == 1
    assert StoredResource.objects.filter(resource_type="Task").count() == 1


def test_the_same_identifier_from_another_clinic_is_another_referral(fhir, other_fhir):
    assert fhir.post("", scenario2_bundle(identifier="shared")).status_code == 200
    assert other_fhir.post("", scenario2_bundle(identifier="shared")).status_code == 200
    assert Referral.objects.count() == 2


def test_a_bundle_entry_with_if_none_exist_reuses_the_patient(fhir):
    fhir.post("", scenario2_bundle(identifier="p-1"))
    bundle = scenario2_bundle(identifier="p-2")
    patient_entry = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    patient_entry["request"]["ifNoneExist"] = "identifier=http://goodCardio.example.org/identifiers/mrn|123456"
    response = fhir.post("", bundle)

    assert response.status_code == 200
    assert StoredResource.objects.filter(resource_type="Patient").count() == 1
    statuses = {e["resource"]["resourceType"]: e["response"]["status"] for e in json_of(response)["entry"]}
    assert statuses["Patient"] == "200 OK" and statuses["Task"] == "201 Created"
    assert Referral.objects.count() == 2


def test_a_broken_entry_rolls_back_the_whole_bundle(fhir):
    bundle = scenario2_bundle(identifier="bad")
    observation = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation")["resource"]
    observation["valueQuantity"]["code"] = "min/wk"
    response = fhir.post("", bundle)

    assert response.status_code == 422
    assert "Bundle.entry[2].resource.valueQuantity.code" in issue_paths(response)
    assert StoredResource.objects.filter(resource_type__in=["Task", "Patient"]).count() == 0
    assert Referral.objects.count() == 0


def test_every_issue_of_every_entry_is_reported_at_once(fhir):
    bundle = scenario2_bundle(identifier="many")
    task = _task_entry(bundle)["resource"]
    task["status"] = "received"
    task["intent"] = "plan"
    sr = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")["resource"]
    del sr["authoredOn"]
    response = fhir.post("", bundle)

    assert response.status_code == 422
    paths = issue_paths(response)
    assert "Bundle.entry[5].resource.status" in paths
    assert "Bundle.entry[5].resource.intent" in paths
    assert "Bundle.entry[4].resource.authoredOn" in paths


def test_an_unparseable_resource_is_400_with_the_element_path(fhir):
    bundle = scenario2_bundle(identifier="x")
    _task_entry(bundle)["resource"]["authoredOn"] = "yesterday"
    response = fhir.post("", bundle)
    assert response.status_code == 400
    assert "Bundle.entry[5].resource.authoredOn" in issue_paths(response)
    assert json_of(response)["resourceType"] == "OperationOutcome"


def test_malformed_json_is_400_and_a_wrong_media_type_is_415(fhir):
    assert fhir.post("", b"{not json").status_code == 400
    response = fhir.post("", b"<Bundle/>", content_type="application/xml")
    assert response.status_code == 415
    assert json_of(response)["resourceType"] == "OperationOutcome"


def test_an_unresolvable_urn_reference_is_422(fhir):
    bundle = scenario2_bundle(identifier="dangling")
    _task_entry(bundle)["resource"]["focus"] = {"reference": "urn:uuid:00000000-0000-0000-0000-000000000000"}
    response = fhir.post("", bundle)
    assert response.status_code == 422
    assert Referral.objects.count() == 0


def test_a_batch_bundle_is_refused(fhir):
    bundle = scenario2_bundle()
    bundle["type"] = "batch"
    response = fhir.post("", bundle)
    assert response.status_code == 422
    assert issue_paths(response) == ["Bundle.type"]


def test_a_task_owned_by_a_stranger_is_refused_and_explained(fhir):
    response = fhir.post("", scenario2_bundle(owner="Organization/Scen2OrgFit4Life"))
    assert response.status_code == 422
    assert issue_paths(response) == ["Task.owner"]
    assert "network" in json_of(response)["issue"][0]["diagnostics"]
    assert Referral.objects.count() == 0


def test_a_task_owned_by_a_network_member_is_a_directed_referral(fhir):
    OrganizationFactory(fhir_id="fit-4-life", name="Fit 4 Life")
    response = fhir.post("", scenario2_bundle(identifier="d-1", owner="Organization/fit-4-life"))
    assert response.status_code == 200
    referral = Referral.objects.get()
    assert referral.is_directed
    assert referral.owner_display == "Fit 4 Life"
    assert referral.business_status == "directed"


def test_a_new_referral_must_start_requested(fhir):
    bundle = scenario2_bundle(identifier="acc")
    _task_entry(bundle)["resource"]["status"] = "accepted"
    response = fhir.post("", bundle)
    assert response.status_code == 422
    assert issue_paths(response) == ["Task.status"]


def _stored_patient_and_request(fhir) -> tuple[str, dict]:
    patient = example("Scen2PatientJohansson")
    patient.pop("id")
    created = fhir.post("Patient", patient)
    assert created.status_code == 201
    patient_id = json_of(created)["id"]
    sr = example("Scen2ServiceRequest")
    sr.pop("id")
    sr["subject"] = {"reference": f"Patient/{patient_id}"}
    return patient_id, sr


def test_a_service_request_alone_opens_a_referral_with_a_hub_task(fhir):
    patient_id, sr = _stored_patient_and_request(fhir)
    response = fhir.post("ServiceRequest", sr)

    assert response.status_code == 201
    created = json_of(response)
    assert response["Location"].endswith(f"/fhir/ServiceRequest/{created['id']}/_history/1")
    assert response["ETag"] == 'W/"1"'
    task = StoredResource.objects.get(resource_type="Task").content
    assert task["focus"]["reference"] == f"ServiceRequest/{created['id']}"
    assert task["for"]["reference"] == f"Patient/{patient_id}"
    assert Referral.objects.get().requester_display == "Dr. Lopez"


def test_a_service_request_with_a_contained_patient_is_taken(fhir):
    sr = example("Scen2ServiceRequest")
    patient = example("Scen2PatientJohansson")
    patient["id"] = "p1"
    sr["contained"] = [patient]
    sr["subject"] = {"reference": "#p1"}
    response = fhir.post("ServiceRequest", sr)

    assert response.status_code == 201, response.content
    created = json_of(response)
    assert "contained" not in created  # lifted out, so the stored request meets PA's reference-rest subject
    patient = StoredResource.objects.get(resource_type="Patient")
    assert created["subject"]["reference"] == f"Patient/{patient.fhir_id}"
    assert Referral.objects.get().patient_name == "Nancy Johansson"


def test_a_task_alone_with_a_contained_service_request_opens_a_referral(fhir):
    patient_id, sr = _stored_patient_and_request(fhir)
    sr["id"] = "sr1"
    task = example("Scen2TaskFit4LifeV2")
    task.update(status="requested", contained=[sr], focus={"reference": "#sr1"},
                owner={"reference": "Organization/hub"}, **{"for": {"reference": f"Patient/{patient_id}"}})
    response = fhir.post("Task", task)

    assert response.status_code == 201, response.content
    created = json_of(response)
    assert "contained" not in created
    assert created["focus"]["reference"].startswith("ServiceRequest/")
    assert StoredResource.objects.filter(resource_type="ServiceRequest").count() == 1
    assert Referral.objects.count() == 1


def test_a_task_whose_service_request_is_nowhere_is_422(fhir):
    patient_id, _ = _stored_patient_and_request(fhir)
    task = example("Scen2TaskFit4LifeV2")
    task.update(status="requested", owner={"reference": "Organization/hub"},
                **{"for": {"reference": f"Patient/{patient_id}"}})
    response = fhir.post("Task", task)
    assert response.status_code == 422
    assert issue_paths(response) == ["Task.focus"]


def test_conditional_create_returns_the_existing_task(fhir):
    patient_id, sr = _stored_patient_and_request(fhir)
    sr["id"] = "sr1"
    task = example("Scen2TaskFit4LifeV2")
    task.update(status="requested", contained=[sr], focus={"reference": "#sr1"},
                owner={"reference": "Organization/hub"}, identifier=[{"system": "urn:ehr", "value": "t-9"}],
                **{"for": {"reference": f"Patient/{patient_id}"}})
    headers = {"If-None-Exist": "identifier=urn:ehr|t-9"}
    first = fhir.post("Task", copy.deepcopy(task), headers=headers)
    second = fhir.post("Task", copy.deepcopy(task), headers=headers)

    assert (first.status_code, second.status_code) == (201, 200)
    assert json_of(second)["id"] == json_of(first)["id"]
    assert second["Location"] == first["Location"]
    assert Referral.objects.count() == 1


def test_conditional_create_matching_several_is_412(fhir):
    for _ in range(2):
        patient = example("Scen2PatientJohansson")
        assert fhir.post("Patient", patient).status_code == 201
    response = fhir.post(
        "Patient", example("Scen2PatientJohansson"),
        headers={"If-None-Exist": "identifier=http://goodCardio.example.org/identifiers/mrn|123456"},
    )
    assert response.status_code == 412
    assert StoredResource.objects.filter(resource_type="Patient").count() == 2


def test_a_malformed_bundle_envelope_is_400_with_its_path(fhir):
    bundle = scenario2_bundle(identifier="env")
    bundle["entry"][0]["fullUrl"] = 42
    response = fhir.post("", bundle)
    assert response.status_code == 400
    assert "Bundle.entry[0].fullUrl" in issue_paths(response)
    assert Referral.objects.count() == 0
