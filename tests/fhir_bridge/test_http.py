"""HTTP as R4's http page says: _format over Accept (X-08), the fhirVersion MIME parameter, and Prefer on writes."""

import pytest

from audit.models import Access
from fhir_bridge.examples import scenario2_bundle
from fhir_bridge.models import StoredResource
from tests.conftest import FhirClient, json_of

pytestmark = pytest.mark.django_db


def _get(path, accept=None, **params):
    client = FhirClient(None)
    headers = {"HTTP_ACCEPT": accept} if accept is not None else {}
    return client.http.get(f"/fhir/{path}", params or None, **headers)


def test_x08_format_overrides_accept():
    # _format=json with Accept: application/xml is 200 JSON; _format=xml is 406 (or XML, which we lack).
    response = _get("metadata", accept="application/xml", _format="json")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/fhir+json")
    assert json_of(response)["resourceType"] == "CapabilityStatement"
    response = _get("metadata", _format="xml")
    assert response.status_code == 406
    assert json_of(response)["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    ("fmt", "media_type"),
    [("json", "application/fhir+json"), ("application/fhir+json", "application/fhir+json"),
     ("application/json", "application/json"), ("application/fhir+json;fhirVersion=4.0", "application/fhir+json")],
)
def test_each_json_format_is_served_as_asked(fmt, media_type):
    response = _get("metadata", accept="text/html", _format=fmt)
    assert response.status_code == 200
    assert response["Content-Type"].split(";")[0] == media_type


@pytest.mark.parametrize("fmt", ["xml", "text/xml", "application/fhir+xml", "ttl", "html", "json;fhirVersion=3.0"])
def test_a_format_the_server_cannot_speak_is_406(fmt):
    assert _get("metadata", _format=fmt).status_code == 406


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        ("application/fhir+json", 200),
        ("application/fhir+json; fhirVersion=4.0", 200),
        ("application/fhir+json; fhirVersion=3.0", 406),
        ("application/fhir+json; fhirVersion=3.0, application/json;q=0.5", 200),
        ("application/fhir+xml", 406),
        ("application/xml, */*;q=0.1", 200),
        ("*/*", 200),
    ],
)
def test_accept_and_its_fhir_version_parameter(accept, status):
    assert _get("metadata", accept=accept).status_code == status


def test_a_body_of_another_fhir_version_is_415(fhir):
    response = fhir.post("Patient", {"resourceType": "Patient"}, content_type="application/fhir+json; fhirVersion=3.0")
    assert response.status_code == 415
    assert json_of(response)["resourceType"] == "OperationOutcome"
    response = fhir.post("Patient", {"resourceType": "Patient"}, content_type="application/fhir+json; fhirVersion=4.0")
    assert response.status_code == 201, response.content


@pytest.mark.parametrize("accept", ["text/html", "application/fhir+json", "application/xml", "*/*", None])
def test_smart_configuration_is_application_json_whatever_the_accept_header(accept):
    response = _get(".well-known/smart-configuration", accept=accept)
    assert response.status_code == 200
    assert response["Content-Type"].split(";")[0] == "application/json"
    assert json_of(response)["token_endpoint"] == "http://testserver/auth/token"


# --- Prefer: return= on every write ------------------------------------------------------------------------------


def _service_request():
    from fhir_bridge.examples import scenario2_bundle

    bundle = scenario2_bundle(identifier="prefer-sr")
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest"), bundle


@pytest.mark.parametrize("prefer", ["return=minimal", "return=representation", "return=OperationOutcome", None])
def test_prefer_return_on_create_and_update(fhir, prefer):
    from fhir_bridge.examples import scenario2_bundle

    headers = {"Prefer": prefer} if prefer else {}
    created = fhir.post("Patient", {"resourceType": "Patient", "name": [{"family": "Prefer"}]}, headers=headers)
    assert created.status_code == 201
    assert created["Location"].startswith("http://testserver/fhir/Patient/")
    body = json_of(created) if created.content else None
    if prefer == "return=minimal":
        assert body is None
    elif prefer == "return=OperationOutcome":
        assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["severity"] == "information"
    else:
        assert body["resourceType"] == "Patient"

    task = next(e["resource"] for e in json_of(fhir.post("", scenario2_bundle(identifier="prefer")))["entry"]
                if e["resource"]["resourceType"] == "Task")
    task["note"] = [{"authorReference": {"reference": "Organization/Scen2OrgGoodCardio"}, "text": "call first",
                     "time": "2026-01-01T00:00:00Z"}]
    updated = fhir.put(f"Task/{task['id']}", task, headers=headers)
    assert updated.status_code == 200, updated.content
    assert updated["ETag"] == 'W/"2"'
    if prefer == "return=minimal":
        assert updated.content == b""
    elif prefer == "return=OperationOutcome":
        assert "updated (version 2)" in json_of(updated)["issue"][0]["diagnostics"]
    else:
        assert json_of(updated)["meta"]["versionId"] == "2"


@pytest.mark.parametrize("prefer", ["return=minimal", "return=OperationOutcome"])
def test_prefer_return_on_each_transaction_entry(fhir, prefer):
    from fhir_bridge.examples import scenario2_bundle

    bundle = scenario2_bundle(identifier="prefer-tx")
    body = json_of(fhir.post("", bundle, headers={"Prefer": prefer}))
    assert len(body["entry"]) == len(bundle["entry"])
    assert all("resource" not in e and e["response"]["location"] for e in body["entry"])
    if prefer == "return=OperationOutcome":
        assert all(e["response"]["outcome"]["issue"][0]["code"] == "informational" for e in body["entry"])
    else:
        assert all("outcome" not in e["response"] for e in body["entry"])


def test_a_posted_service_request_answers_with_its_location_and_names_its_task(fhir):
    from fhir_bridge.models import StoredResource

    _, bundle = _service_request()
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    patient_id = json_of(fhir.post("Patient", patient))["id"]
    service_request = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
    service_request["subject"] = {"reference": f"Patient/{patient_id}"}
    response = fhir.post("ServiceRequest", service_request, headers={"Prefer": "return=OperationOutcome"})
    assert response.status_code == 201, response.content
    sr_id = response["Location"].split("/ServiceRequest/")[1].split("/")[0]
    assert StoredResource.objects.filter(resource_type="ServiceRequest", fhir_id=sr_id).exists()
    task = StoredResource.objects.get(resource_type="Task")
    assert task.content["focus"]["reference"] == f"ServiceRequest/{sr_id}"
    assert response["Link"] == f'<http://testserver/fhir/Task/{task.fhir_id}>; rel="related"'
    issues = json_of(response)["issue"]
    assert any(f"Task/{task.fhir_id}" in i["diagnostics"] for i in issues)


def test_a_create_with_search_parameters_on_the_url_is_a_conditional_create(fhir):
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:test:mrn", "value": "Q-1"}]}
    first = fhir.post("Patient?identifier=urn:test:mrn%7CQ-1", patient)
    second = fhir.post("Patient?identifier=urn:test:mrn%7CQ-1", patient)
    assert (first.status_code, second.status_code) == (201, 200)
    assert json_of(first)["id"] == json_of(second)["id"]
    assert fhir.post("Patient?shoe-size=9", patient).status_code == 400
    clash = fhir.post("Patient?identifier=urn:test:mrn%7CQ-1", patient, headers={"If-None-Exist": "identifier=other"})
    assert clash.status_code == 400


def test_head_answers_as_get_without_the_body(fhir, ehr_client):
    # Before: 405 on every FHIR URL.
    assert fhir.post("", scenario2_bundle(identifier="head")).status_code == 200
    task_id = StoredResource.objects.get(resource_type="Task").fhir_id
    headers = fhir._headers(None)
    for path in (f"/fhir/Task/{task_id}", "/fhir/Task", "/fhir/metadata", "/fhir/Task/unknown"):
        got = fhir.http.get(path, **headers)
        rows = Access.objects.count()
        head = fhir.http.head(path, **headers)

        assert (head.status_code, head.content) == (got.status_code, b""), path
        assert head["Content-Type"] == got["Content-Type"] and head.get("ETag") == got.get("ETag")
        assert int(head["Content-Length"]) == len(got.content)
        assert Access.objects.count() - rows == (0 if path.endswith("metadata") else 1)  # audited as a GET is
    assert Access.objects.latest("pk").method == "HEAD"
    assert fhir.http.head("/fhir", **headers).status_code == 405  # the base answers POST only


def test_a_newline_in_the_path_is_a_fhir_404_not_an_html_page_nor_the_id_before_it(fhir):
    # Found by schemathesis: "." in the URL patterns stopped at a %0A (Django's HTML 404); and past them, a
    # route's "$" matches before a trailing newline, so Task/<id>%0A would read Task/<id> (routes use fullmatch).
    assert fhir.post("", scenario2_bundle(identifier="newline")).status_code == 200
    task_id = StoredResource.objects.get(resource_type="Task").fhir_id
    for path in (f"Task/{task_id}%0A", "Task/x%0Ay/_history", "Task/x/_history/%0A1", "Task/%0A"):
        response = fhir.http.get(f"/fhir/{path}", **fhir._headers(None))
        assert response.status_code == 404, path
        assert json_of(response)["resourceType"] == "OperationOutcome"
    response = fhir.http.get("/api/admin/referrals/1%0A/routing")
    assert (response.status_code, response["Content-Type"]) == (404, "application/json")
