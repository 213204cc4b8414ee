"""HTTP as R4's http page says: _format over Accept (X-08), the fhirVersion MIME parameter, and Prefer on writes."""

import pytest

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
