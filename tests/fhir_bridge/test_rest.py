"""The REST surface around a referral: read, vread, _history, search, update, auth and clinic isolation."""

import pytest

from fhir_bridge.examples import scenario2_bundle
from referrals.models import Referral, ReferralEvent
from tests.conftest import FhirClient, fhir_client_for, issue_paths, json_of

pytestmark = pytest.mark.django_db


def _open(fhir, identifier="r1", **kwargs) -> dict[str, dict]:
    body = json_of(fhir.post("", scenario2_bundle(identifier=identifier, **kwargs)))
    return {e["resource"]["resourceType"]: e["resource"] for e in body["entry"]}


def test_metadata_and_smart_configuration_are_public():
    anonymous = FhirClient(None)
    metadata = anonymous.get("metadata")
    assert metadata.status_code == 200
    statement = json_of(metadata)
    assert statement["fhirVersion"] == "4.0.1"
    task = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Task")
    assert {p["name"] for p in task["searchParam"]} >= {"_id", "status", "owner", "requester", "patient", "focus", "code", "_lastUpdated"}
    assert set(task["searchInclude"]) >= {"Task:focus", "Task:patient"}
    assert statement["rest"][0]["security"]["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    smart = json_of(anonymous.get(".well-known/smart-configuration"))
    assert smart["token_endpoint"] == "http://testserver/auth/token"
    assert "private_key_jwt" in smart["token_endpoint_auth_methods_supported"]


def test_everything_else_needs_a_token():
    response = FhirClient(None).get("Task")
    assert response.status_code == 401
    assert json_of(response)["resourceType"] == "OperationOutcome"
    assert FhirClient("not-a-token").post("", scenario2_bundle()).status_code == 401


def test_the_hub_organization_is_readable(fhir):
    response = fhir.get("Organization/hub")
    assert response.status_code == 200
    assert json_of(response)["name"] == "Exercise referral hub"


def test_a_task_reads_back_with_version_headers(fhir):
    task = _open(fhir)["Task"]
    response = fhir.get(f"Task/{task['id']}")
    assert response.status_code == 200
    assert json_of(response)["id"] == task["id"]
    assert response["ETag"] == 'W/"1"'
    assert response["Last-Modified"]
    assert fhir.get(f"Task/{task['id']}", headers={"If-None-Match": 'W/"1"'}).status_code == 304


def test_another_clinic_gets_404_for_a_referral_it_did_not_send(fhir, other_fhir):
    task = _open(fhir)["Task"]
    assert other_fhir.get(f"Task/{task['id']}").status_code == 404
    assert other_fhir.get(f"Patient/{task['for']['reference'].split('/')[1]}").status_code == 404
    assert json_of(other_fhir.get("Task"))["total"] == 0


def test_scopes_are_enforced_on_each_interaction(ehr_client):
    writer = fhir_client_for(ehr_client)
    task = _open(writer)["Task"]
    reader = fhir_client_for(ehr_client, "system/Task.rs")
    assert reader.get(f"Task/{task['id']}").status_code == 200
    response = reader.post("", scenario2_bundle(identifier="r2"))
    assert response.status_code == 403
    assert reader.get("ServiceRequest").status_code == 403
    v1_reader = fhir_client_for(ehr_client, "system/Task.read")
    assert v1_reader.get("Task").status_code == 200


def test_search_by_each_parameter(fhir):
    first = _open(fhir, "a")
    second = _open(fhir, "b")
    task_id = first["Task"]["id"]

    def ids(**params):
        response = fhir.get("Task", **params)
        assert response.status_code == 200, response.content
        return {e["resource"]["id"] for e in json_of(response)["entry"] if e["search"]["mode"] == "match"}

    both = {task_id, second["Task"]["id"]}
    assert ids(_id=task_id) == {task_id}
    assert ids(status="requested") == both
    assert ids(status="completed") == set()
    assert ids(owner="Organization/hub") == both
    assert ids(requester="Organization/Scen2OrgGoodCardio") == both
    assert ids(patient=first["Patient"]["id"]) == {task_id}
    assert ids(patient=f"Patient/{first['Patient']['id']}") == {task_id}
    assert ids(focus=f"ServiceRequest/{first['ServiceRequest']['id']}") == {task_id}
    assert ids(code="fulfill") == both
    assert ids(code="http://hl7.org/fhir/CodeSystem/task-code|fulfill") == both
    assert ids(code="http://example.org|fulfill") == set()
    assert ids(_lastUpdated="gt2000-01-01") == both
    assert ids(_lastUpdated="lt2000-01-01") == set()


def test_search_includes_focus_and_patient(fhir):
    parts = _open(fhir)
    response = fhir.get("Task", status="requested", _include=["Task:focus", "Task:patient"])
    entries = json_of(response)["entry"]
    included = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in entries if e["search"]["mode"] == "include"}
    assert included == {("ServiceRequest", parts["ServiceRequest"]["id"]), ("Patient", parts["Patient"]["id"])}


def test_search_pages_with_next_links(fhir):
    for n in range(5):
        _open(fhir, f"page-{n}")
    first = json_of(fhir.get("Task", _count="2"))
    assert first["total"] == 5 and len(first["entry"]) == 2
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    seen = {e["resource"]["id"] for e in first["entry"]}
    while next_url:
        page = json_of(fhir.http.get(next_url.replace("http://testserver", ""), **fhir._headers(None)))
        seen |= {e["resource"]["id"] for e in page["entry"]}
        next_url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert len(seen) == 5


def test_an_unknown_search_parameter_is_400(fhir):
    response = fhir.get("Task", colour="blue")
    assert response.status_code == 400
    assert issue_paths(response) == ["colour"]


def test_cancelling_a_referral_writes_a_new_version_and_history(fhir):
    task = _open(fhir)["Task"]
    task["status"] = "cancelled"
    task["statusReason"] = {"text": "Patient moved away"}
    response = fhir.put(f"Task/{task['id']}", task, headers={"If-Match": 'W/"1"'})

    assert response.status_code == 200, response.content
    updated = json_of(response)
    assert updated["status"] == "cancelled" and updated["meta"]["versionId"] == "2"
    assert response["ETag"] == 'W/"2"'
    assert Referral.objects.get().status == "cancelled"
    assert ReferralEvent.objects.filter(kind="status-changed").count() == 1
    history = json_of(fhir.get(f"Task/{task['id']}/_history"))
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
    assert json_of(fhir.get(f"Task/{task['id']}/_history/1"))["status"] == "requested"
    assert fhir.get(f"Task/{task['id']}/_history/3").status_code == 404


def test_a_stale_if_match_is_412_and_changes_nothing(fhir):
    task = _open(fhir)["Task"]
    task["note"] = [{"authorReference": {"reference": "Organization/Scen2OrgGoodCardio"}, "time": "2026-01-01T00:00:00Z", "text": "Call first"}]
    assert fhir.put(f"Task/{task['id']}", task, headers={"If-Match": 'W/"1"'}).status_code == 200
    task["status"] = "cancelled"
    task["statusReason"] = {"text": "no longer needed"}
    response = fhir.put(f"Task/{task['id']}", task, headers={"If-Match": 'W/"1"'})
    assert response.status_code == 412
    assert Referral.objects.get().status == "requested"


def test_a_terminal_task_is_never_reopened(fhir):
    task = _open(fhir)["Task"]
    task.update(status="cancelled", statusReason={"text": "duplicate"})
    assert fhir.put(f"Task/{task['id']}", task).status_code == 200
    task["status"] = "requested"
    del task["statusReason"]
    response = fhir.put(f"Task/{task['id']}", task)
    assert response.status_code == 422
    assert issue_paths(response) == ["Task.status"]


def test_the_clinic_cannot_accept_its_own_referral_or_change_its_focus(fhir):
    task = _open(fhir)["Task"]
    task["status"] = "accepted"
    task["focus"] = {"reference": "ServiceRequest/other"}
    response = fhir.put(f"Task/{task['id']}", task)
    assert response.status_code == 422
    assert set(issue_paths(response)) == {"Task.status", "Task.focus"}


def test_a_cancel_without_reason_breaks_pa_taskrm_1(fhir):
    task = _open(fhir)["Task"]
    task["status"] = "cancelled"
    response = fhir.put(f"Task/{task['id']}", task)
    assert response.status_code == 422
    assert "Task.statusReason" in issue_paths(response)
    assert Referral.objects.get().status == "requested"


def test_wrong_method_and_unknown_type(fhir):
    assert fhir.http.delete("/fhir/Task/x", **fhir._headers(None)).status_code == 405
    assert fhir.get("Spaceship").status_code == 404
    assert fhir.get("Task/nope").status_code == 404


def test_a_deactivated_client_is_refused_within_the_recheck_window(ehr_client, settings):
    from fhir_bridge import smart_tokens

    settings.HUB_CLIENT_RECHECK_SECONDS = 60
    smart_tokens._recent_clients.clear()
    fhir = fhir_client_for(ehr_client)
    assert fhir.get("Task").status_code == 200
    ehr_client.is_active = False
    ehr_client.save()
    assert fhir.get("Task").status_code == 200  # still trusted: read less than a minute ago in this process
    smart_tokens._recent_clients.clear()  # as when the window passes
    assert fhir.get("Task").status_code == 401


def test_an_entered_in_error_task_is_still_found_by_owner_search(fhir):
    # PA conformance case 13: service providers SHALL NOT filter these out.
    task = _open(fhir)["Task"]
    task["status"] = "entered-in-error"
    assert fhir.put(f"Task/{task['id']}", task).status_code == 200
    found = json_of(fhir.get("Task", owner="Organization/hub"))
    assert [(e["resource"]["id"], e["resource"]["status"]) for e in found["entry"]] == [(task["id"], "entered-in-error")]
