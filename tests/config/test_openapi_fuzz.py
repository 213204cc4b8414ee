"""schemathesis against the OpenAPI description the hub publishes (/openapi.json): every operation of the FHIR
surface and the coordinators' API, with generated (and mutated) requests, passes every schemathesis check
(``--checks all``: no 5xx, status codes, content types and bodies as documented, invalid data refused, valid
data taken, ...), and a refused request leaves no row behind.

Small here (HUB_FUZZ_EXAMPLES, 2 per operation by default) so the suite stays in its budget; ``make assure``
runs 1,000 per operation. With HUB_FUZZ_LOG set, each example appends one line (the operation, the status,
the rows a refusal left) to that file, so that a run stopped at its time bound still gives its figures. Requests go in-process through Django's WSGI handler, authenticated as an EHR client
(bearer) and as a staff user (session cookie).
"""

import os

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, settings

from config.openapi import openapi_document
from fhir_bridge.models import ResourceVersion, StoredResource
from notifications.models import Delivery, Subscription
from referrals.models import Referral
from fhir_bridge.smart_tokens import access_token_encode
from tests.factories import ALL_SCOPES, EhrClientFactory

EXAMPLES = int(os.environ.get("HUB_FUZZ_EXAMPLES", "2"))
LOG = os.environ.get("HUB_FUZZ_LOG")
# None is schemathesis's default set in validate_response: every built-in check, as ``--checks all``.
# HUB_FUZZ_CHECKS=not_a_server_error,... names a subset (a long run that only counts 5xx).
CHECKS = [getattr(schemathesis.checks, name) for name in os.environ.get("HUB_FUZZ_CHECKS", "").split(",") if name] or None
# positive_data_acceptance wants a 2xx for every request its schema allows; the description leaves FHIR bodies
# and search values as plain objects and strings (the FHIR specification defines them, this document does not),
# so most generated "valid" ones are rightly refused with a 4xx OperationOutcome (a body of {}, _lastUpdated='').
EXCLUDED = [schemathesis.checks.positive_data_acceptance]

_KEPT = (StoredResource, ResourceVersion, Referral, Subscription, Delivery)  # what a refused request must not write


def _rows() -> tuple[int, ...]:
    return tuple(model.objects.count() for model in _KEPT)


schema = schemathesis.openapi.from_dict(openapi_document())
schema.app = get_wsgi_application()  # in-process, through every middleware, as a WSGI server would call it


@pytest.fixture(autouse=True)
def _keep_the_test_connection():
    # As Django's test client does: a request's end must not close the connection that holds the test's
    # transaction.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def credentials(db):
    client = EhrClientFactory(scopes=ALL_SCOPES + " system/AuditEvent.rs")
    token, _ = access_token_encode(client=client, scopes=(ALL_SCOPES + " system/AuditEvent.rs").split())
    staff = get_user_model().objects.create_user("fuzz", password=None, is_staff=True)  # no hash to compute
    browser = Client()
    browser.force_login(staff)
    return {"Authorization": f"Bearer {token}", "Cookie": f"sessionid={browser.cookies['sessionid'].value}"}


def test_every_method_a_url_does_not_answer_is_a_405_naming_what_it_does(client, credentials):
    headers = {"HTTP_AUTHORIZATION": credentials["Authorization"]}
    # Before: DRF answered OPTIONS itself and put "GET, POST, PUT, HEAD, OPTIONS" in Allow on every answer, and a
    # PUT on a read-only type was read (415 for its missing body) before being refused.
    for method, path, allow in (("options", "/fhir/metadata", "GET"), ("delete", "/fhir/Task/1", "GET, PUT"),
                                ("put", "/fhir/Patient/1", "GET"), ("patch", "/fhir/Practitioner", "GET, POST"),
                                ("options", "/fhir/Task/_search", "POST")):
        response = getattr(client, method)(path, **headers)
        assert (response.status_code, response["Allow"]) == (405, allow), (method, path)
        assert response.json()["resourceType"] == "OperationOutcome"
    assert "Allow" not in client.get("/fhir/metadata")


def test_the_published_description_lists_every_route(client):
    document = client.get("/openapi.json").json()
    assert "/fhir/Task/{id}" in document["paths"] and "put" in document["paths"]["/fhir/Task/{id}"]
    assert "/fhir/Task/_search" in document["paths"]
    assert "/api/admin/offers/{offer_id}/answer" in document["paths"]
    assert "/fhir/AuditEvent" in document["paths"]
    answer = document["paths"]["/api/admin/offers/{offer_id}/answer"]["post"]
    assert answer["security"] == [{"session": []}, {"token": []}] and answer["parameters"][0]["schema"]["minimum"] == 1
    assert "drf_create_token" in document["components"]["securitySchemes"]["token"]["description"]
    assert "/admin/login/" in document["components"]["securitySchemes"]["session"]["description"]
    assert "X-CSRFToken" in document["info"]["description"]


def test_a_coordinators_api_url_with_an_id_that_is_no_number_is_a_json_404(admin_client):
    response = admin_client.get("/api/admin/referrals/null%2Cnull/routing")
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    response = admin_client.post("/api/admin/offers/null/answer", {"answer": "accept"}, content_type="application/json")
    assert response.status_code == 404 and response["Content-Type"] == "application/json"  # not the CSRF 403 page


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES < 10,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
@pytest.mark.django_db
def test_no_operation_answers_5xx(case, credentials):
    headers = {**(case.headers or {}), **credentials}
    before = _rows()
    response = case.call(headers=headers)
    left = [b - a for a, b in zip(before, _rows())] if 400 <= response.status_code < 500 else []
    if LOG:
        with open(LOG, "a") as log:
            log.write(f"{case.operation.label}\t{response.status_code}\t{sum(left)}\n")
    assert not any(left), f"a {response.status_code} left rows behind: {dict(zip(_KEPT, left))}"
    case.validate_response(response, headers=headers, checks=CHECKS, excluded_checks=EXCLUDED)
