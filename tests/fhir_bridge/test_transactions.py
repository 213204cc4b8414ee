"""Transactions as R4's http page says: one response entry per request entry, in order (X-01), and conditional
references resolved against what is stored (X-02)."""

import copy
import json
import pathlib

import pytest

from fhir_bridge.examples import scenario2_bundle
from fhir_bridge.models import StoredResource
from referrals.models import Referral
from tests.conftest import issue_paths, json_of

pytestmark = pytest.mark.django_db


def _interop(name: str) -> dict:
    for parent in pathlib.Path(__file__).resolve().parents:
        candidate = parent.parent / "shared" / "interop-cases" / name
        if candidate.exists():
            return json.loads(candidate.read_text())
    pytest.skip("../shared/interop-cases is not beside this checkout")


def test_x01_a_bundle_without_a_task_gets_one_response_entry_per_request_entry(fhir):
    # request_entries 2 -> response_entries 2, in order (Patient, ServiceRequest); the hub's own Task is
    # reported, not added.
    response = fhir.post("", _interop("X-01.json"))
    assert response.status_code == 200, response.content
    body = json_of(response)
    assert body["type"] == "transaction-response"
    assert [e["resource"]["resourceType"] for e in body["entry"]] == ["Patient", "ServiceRequest"]
    assert [e["response"]["status"] for e in body["entry"]] == ["201 Created", "201 Created"]
    task = StoredResource.objects.get(resource_type="Task")
    outcome = body["entry"][1]["response"]["outcome"]
    assert outcome["issue"][0]["severity"] == "information"
    assert f"Task/{task.fhir_id}" in outcome["issue"][0]["diagnostics"]
    assert json_of(fhir.get(f"Task/{task.fhir_id}"))["focus"]["reference"] == body["entry"][1]["response"]["location"].split("/_history")[0]


def test_response_entries_follow_the_request_order_whatever_it_is(fhir):
    bundle = scenario2_bundle(identifier="order")
    bundle["entry"].reverse()
    sent = [e["resource"]["resourceType"] for e in bundle["entry"]]
    body = json_of(fhir.post("", bundle))
    assert [e["resource"]["resourceType"] for e in body["entry"]] == sent


def _x02_patient(fhir) -> str:
    response = fhir.post("Patient", _interop("X-02-patient.json"), headers={"If-None-Exist": "identifier=urn:test:mrn|X02-0001"})
    assert response.status_code == 201, response.content
    return json_of(response)["id"]


def test_x02_a_conditional_reference_with_one_match_is_rewritten_to_it(fhir):
    patient_id = _x02_patient(fhir)
    assert json_of(fhir.get("Patient", identifier="urn:test:mrn|X02-0001"))["total"] == 1
    response = fhir.post("", _interop("X-02.json"))
    assert response.status_code == 200, response.content
    body = json_of(response)
    assert len(body["entry"]) == 2
    service_request, task = (e["resource"] for e in body["entry"])
    assert service_request["subject"]["reference"] == f"Patient/{patient_id}"
    assert task["for"]["reference"] == f"Patient/{patient_id}"
    assert StoredResource.objects.filter(resource_type="Patient").count() == 1
    assert Referral.objects.count() == 1


def test_a_conditional_reference_with_no_match_fails_the_transaction_naming_each_entry(fhir):
    response = fhir.post("", _interop("X-02.json"))
    assert response.status_code == 422
    assert set(issue_paths(response)) == {"Bundle.entry[0].resource", "Bundle.entry[1].resource"}
    assert "matches no Patient" in json_of(response)["issue"][0]["diagnostics"]
    assert not StoredResource.objects.filter(resource_type__in=["Task", "ServiceRequest"]).exists()


def test_a_conditional_reference_with_several_matches_fails_the_transaction(fhir):
    patient = _interop("X-02-patient.json")
    assert fhir.post("Patient", patient).status_code == 201
    assert fhir.post("Patient", copy.deepcopy(patient)).status_code == 201
    response = fhir.post("", _interop("X-02.json"))
    assert response.status_code == 412
    assert all(i["code"] == "multiple-matches" for i in json_of(response)["issue"])
    assert Referral.objects.count() == 0


def test_a_conditional_reference_inside_an_extension_is_rewritten(fhir):
    patient_id = _x02_patient(fhir)
    bundle = _interop("X-02.json")
    bundle["entry"][0]["resource"]["extension"] = [{
        "url": "http://example.org/fhir/StructureDefinition/seen-by",
        "valueReference": {"reference": "Patient?identifier=urn:test:mrn|X02-0001"},
    }]
    response = fhir.post("", bundle)
    assert response.status_code == 200, response.content
    service_request = json_of(response)["entry"][0]["resource"]
    assert service_request["extension"][0]["valueReference"]["reference"] == f"Patient/{patient_id}"


def test_a_conditional_reference_on_an_unknown_parameter_fails_naming_the_entry(fhir):
    _x02_patient(fhir)
    bundle = _interop("X-02.json")
    bundle["entry"][1]["resource"]["for"]["reference"] = "Patient?shoe-size=42"
    response = fhir.post("", bundle)
    assert response.status_code == 422
    assert issue_paths(response) == ["Bundle.entry[1].resource"]


def test_a_task_for_a_service_request_that_is_already_a_referral_is_a_duplicate(fhir):
    body = json_of(fhir.post("", scenario2_bundle(identifier="dup-sr")))
    first = {e["resource"]["resourceType"]: e["resource"] for e in body["entry"]}
    again = copy.deepcopy(first["Task"])
    for name in ("id", "meta", "identifier", "businessStatus", "note"):
        again.pop(name, None)
    again["status"] = "requested"
    response = fhir.post("Task", again)
    assert response.status_code == 200, response.content
    assert json_of(response)["id"] == first["Task"]["id"]
    assert Referral.objects.count() == 1
    assert StoredResource.objects.filter(resource_type="Task").count() == 1


def test_profile_issues_and_business_rule_issues_come_in_one_outcome(fhir):
    bundle = scenario2_bundle(identifier="all-issues")
    task = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Task")
    task["status"] = "cancelled"  # pa-taskrm-1: a cancelled Task needs a statusReason (a profile issue)
    task["focus"] = {"reference": "ServiceRequest/elsewhere"}  # not the Bundle's ServiceRequest (a business rule)
    response = fhir.post("", bundle)
    assert response.status_code == 422
    paths = issue_paths(response)
    task_path = f"Bundle.entry[{bundle['entry'].index(next(e for e in bundle['entry'] if e['resource'] is task))}].resource"
    assert f"{task_path}.statusReason" in paths
    assert f"{task_path}.focus" in paths
    assert Referral.objects.count() == 0


def test_a_read_entry_runs_after_the_writes_and_answers_in_its_place(fhir):
    bundle = scenario2_bundle(identifier="tx-get")
    bundle["entry"].insert(0, {"request": {"method": "GET", "url": "Task?identifier=urn:ehr:task%7Ctx-get"}})
    response = fhir.post("", bundle)
    assert response.status_code == 200, response.content
    body = json_of(response)
    assert len(body["entry"]) == len(bundle["entry"])
    found = body["entry"][0]
    assert found["response"]["status"] == "200 OK" and found["resource"]["type"] == "searchset"
    task = next(e for e in body["entry"][1:] if e["resource"]["resourceType"] == "Task")
    assert [e["resource"]["id"] for e in found["resource"]["entry"]] == [task["resource"]["id"]]


def test_a_read_entry_that_fails_undoes_the_writes_and_names_the_entry(fhir):
    bundle = scenario2_bundle(identifier="tx-get-fail")
    bundle["entry"].append({"request": {"method": "GET", "url": "Task/no-such-task"}})
    response = fhir.post("", bundle)
    assert response.status_code == 404
    assert issue_paths(response) == [f"Bundle.entry[{len(bundle['entry']) - 1}].request"]
    assert Referral.objects.count() == 0
    assert not StoredResource.objects.filter(resource_type="Task").exists()


def test_an_issue_of_a_write_names_its_place_in_the_bundle_sent(fhir):
    bundle = scenario2_bundle(identifier="tx-get-path")
    bundle["entry"].insert(0, {"request": {"method": "GET", "url": "Patient"}})
    bundle["entry"][1]["resource"]["contained"] = [{"resourceType": "Organization", "id": "lost"}]
    response = fhir.post("", bundle)
    assert response.status_code == 422
    assert issue_paths(response) == ["Bundle.entry[1].resource.contained[0]"]


def _cancel_entry(task: dict, if_match: str) -> dict:
    cancelled = dict(task, status="cancelled", statusReason={"text": "Patient moved away"})
    return {"resource": cancelled, "request": {"method": "PUT", "url": f"Task/{task['id']}", "ifMatch": if_match}}


def test_an_update_entry_with_if_match_runs_before_the_reads(fhir):
    body = json_of(fhir.post("", scenario2_bundle(identifier="tx-put")))
    task = next(e["resource"] for e in body["entry"] if e["resource"]["resourceType"] == "Task")
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": f"Task/{task['id']}"}},  # sent first, processed after the PUT
        _cancel_entry(task, 'W/"1"'),
    ]}
    response = fhir.post("", bundle)
    assert response.status_code == 200, response.content
    read, update = json_of(response)["entry"]
    assert update["response"]["status"] == "200 OK" and update["response"]["etag"] == 'W/"2"'
    assert read["resource"]["status"] == "cancelled" and read["resource"]["meta"]["versionId"] == "2"
    assert Referral.objects.get().status == "cancelled"


def test_a_stale_if_match_fails_the_whole_transaction(fhir):
    body = json_of(fhir.post("", scenario2_bundle(identifier="tx-put-stale")))
    task = next(e["resource"] for e in body["entry"] if e["resource"]["resourceType"] == "Task")
    new_referral = scenario2_bundle(identifier="tx-put-stale-2")
    new_referral["entry"].append(_cancel_entry(task, 'W/"7"'))
    response = fhir.post("", new_referral)
    assert response.status_code == 412
    assert issue_paths(response) == [f"Bundle.entry[{len(new_referral['entry']) - 1}].request"]
    assert Referral.objects.count() == 1 and Referral.objects.get().status == "requested"


def test_full_urls_are_rewritten_inside_extensions_and_contained_resources(fhir):
    bundle = scenario2_bundle(identifier="tx-rewrite")
    patient_entry = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    service_request = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
    service_request["extension"] = [{"url": "http://example.org/fhir/StructureDefinition/seen-with",
                                     "valueReference": {"reference": patient_entry["fullUrl"]}}]
    service_request["contained"] = [{"resourceType": "Provenance", "id": "prov",
                                     "target": [{"reference": patient_entry["fullUrl"]}],
                                     "recorded": "2026-11-01T00:00:00Z", "agent": [{"who": {"display": "EHR"}}]}]
    service_request["relevantHistory"] = [{"reference": "#prov"}]
    response = fhir.post("", bundle)
    assert response.status_code == 200, response.content
    body = json_of(response)
    patient_id = next(e["resource"]["id"] for e in body["entry"] if e["resource"]["resourceType"] == "Patient")
    stored = next(e["resource"] for e in body["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
    assert stored["extension"][0]["valueReference"]["reference"] == f"Patient/{patient_id}"
    assert stored["contained"][0]["target"][0]["reference"] == f"Patient/{patient_id}"
    assert stored["relevantHistory"] == [{"reference": "#prov"}]
