"""A request Django refuses to read (too many query or form parameters, a Host not in ALLOWED_HOSTS) is a 400 in
the shape of the edge it was sent to, with DEBUG on (``make run``) as off, and /fhir leaves its one audit row
(issue 12 §1, found trying the hub as a new user)."""

from urllib.parse import urlencode

import orjson
import pytest
from django.conf import settings
from django.test import Client

from audit.models import Access
from fhir_bridge.examples import scenario2_bundle
from referrals.models import Referral
from tests.conftest import FHIR_JSON, json_of

pytestmark = pytest.mark.django_db

FORM = "application/x-www-form-urlencoded"


def _too_many() -> str:
    return urlencode([(f"a{i}", "1") for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)])


def _client() -> Client:
    return Client(raise_request_exception=True)  # an exception that escapes fails the test, not a 500 page


def _operation_outcome(response, status: int) -> list[dict]:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith(FHIR_JSON)
    body = json_of(response)
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"]


@pytest.fixture(params=[False, True], ids=["debug-off", "debug-on"])
def debug(request, settings):
    settings.DEBUG = request.param
    return request.param


@pytest.mark.parametrize("path, audited", [("Task", 1), ("Task/abc", 1), ("Patient", 1), ("metadata", 0)])
@pytest.mark.parametrize("with_token", [True, False])
def test_too_many_query_parameters_on_fhir_are_a_400_operation_outcome(fhir, debug, path, audited, with_token):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {fhir.token}"} if with_token else {}
    before = Access.objects.count()

    response = _client().get(f"/fhir/{path}?{_too_many()}", HTTP_ACCEPT=FHIR_JSON, **headers)

    issues = _operation_outcome(response, 400)
    assert issues[0]["code"] == "too-costly"
    assert str(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS) in issues[0]["diagnostics"]
    rows = list(Access.objects.order_by("id")[before:])
    assert [(r.channel, r.status, r.path) for r in rows] == [("fhir", 400, f"/fhir/{path}")] * audited


def test_a_search_form_of_too_many_fields_is_a_400_operation_outcome_audited(fhir, debug):
    before = Access.objects.count()

    response = _client().post("/fhir/Task/_search", _too_many(), content_type=FORM, HTTP_ACCEPT=FHIR_JSON,
                              HTTP_AUTHORIZATION=f"Bearer {fhir.token}")

    issues = _operation_outcome(response, 400)
    assert issues[0]["code"] == "too-costly"
    row = Access.objects.get(id__gt=before) if before else Access.objects.get()
    assert (row.interaction, row.status, row.entity_type) == ("search", 400, "Task")


def test_the_token_endpoint_answers_an_oauth_error_to_too_many_fields(debug):
    response = _client().post("/auth/token", _too_many(), content_type=FORM)

    assert response.status_code == 400
    body = orjson.loads(response.content)
    assert body["error"] == "invalid_request"
    assert str(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS) in body["error_description"]
    response = _client().post(f"/auth/token?{_too_many()}", "grant_type=client_credentials", content_type=FORM)
    assert (response.status_code, orjson.loads(response.content)["error"]) == (400, "invalid_request")


def test_the_coordinators_api_answers_json_to_too_many_parameters(fhir, debug, django_user_model):
    assert fhir.post("", scenario2_bundle(identifier="api-form")).status_code == 200
    staff = django_user_model.objects.create_user("coordinator", password="x", is_staff=True)
    client = _client()
    client.force_login(staff)
    before = Access.objects.count()

    response = client.get(f"/api/admin/routing/queue?{_too_many()}")

    assert response.status_code == 400
    assert "parameters" in orjson.loads(response.content)["detail"]
    assert Access.objects.filter(id__gt=before, channel="api", status=400).count() == 1
    response = client.post(f"/api/admin/referrals/{Referral.objects.get().pk}/route", _too_many(), content_type=FORM)
    assert response.status_code == 400, response.content[:300]
    assert "cannot be read" in orjson.loads(response.content)["detail"]


@pytest.mark.parametrize("path", ["/console/referrals", "/portal/offers", "/portal/login"])
def test_a_page_answers_a_plain_400_to_too_many_parameters(debug, path):
    response = _client().get(f"{path}?{_too_many()}")

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    assert b"parameters" in response.content


def test_a_host_not_served_is_a_400_operation_outcome_on_fhir(fhir, debug):
    before = Access.objects.count()

    response = _client().get("/fhir/Task", HTTP_HOST="evil.example", HTTP_ACCEPT=FHIR_JSON,
                             HTTP_AUTHORIZATION=f"Bearer {fhir.token}")

    issues = _operation_outcome(response, 400)
    assert "Host" in issues[0]["diagnostics"]
    assert list(Access.objects.filter(id__gt=before).values_list("status", "path")) == [(400, "/fhir/Task")]


@pytest.mark.parametrize("path, kind", [("/auth/token", "oauth"), ("/api/admin/routing/queue", "api"),
                                        ("/portal/login", "page")])
def test_a_host_not_served_is_a_400_in_each_edges_shape(debug, path, kind):
    response = _client().post(path, "grant_type=client_credentials", content_type=FORM, HTTP_HOST="evil.example")

    assert response.status_code == 400
    if kind == "oauth":
        assert orjson.loads(response.content)["error"] == "invalid_request"
    elif kind == "api":
        assert "Host" in orjson.loads(response.content)["detail"]
    else:
        assert response["Content-Type"].startswith("text/plain")
