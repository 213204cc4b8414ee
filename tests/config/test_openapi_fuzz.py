"""schemathesis against the OpenAPI description the hub publishes (/openapi.json): every operation of the FHIR
surface and the coordinators' API, with generated (and mutated) requests, answers without a 5xx.

Small here (HUB_FUZZ_EXAMPLES, 2 per operation by default) so the suite stays in its budget; ``make assure``
runs 1,000 per operation. Requests go in-process through Django's WSGI handler, authenticated as an EHR client
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
from fhir_bridge.smart_tokens import access_token_encode
from tests.factories import ALL_SCOPES, EhrClientFactory

EXAMPLES = int(os.environ.get("HUB_FUZZ_EXAMPLES", "2"))


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


def test_the_published_description_lists_every_route(client):
    document = client.get("/openapi.json").json()
    assert "/fhir/Task/{id}" in document["paths"] and "put" in document["paths"]["/fhir/Task/{id}"]
    assert "/fhir/Task/_search" in document["paths"]
    assert "/api/admin/offers/{offer_id}/answer" in document["paths"]
    assert "/fhir/AuditEvent" in document["paths"]


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES < 10,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
@pytest.mark.django_db
def test_no_operation_answers_5xx(case, credentials):
    headers = {**(case.headers or {}), **credentials}
    response = case.call(headers=headers)
    case.validate_response(response, checks=[schemathesis.checks.not_a_server_error])
