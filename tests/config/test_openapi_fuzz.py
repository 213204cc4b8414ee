"""schemathesis against the OpenAPI description the hub publishes (/openapi.json): every operation of the FHIR
surface (its operations $report, $status and $events too) and the coordinators' API, with generated (and
mutated) requests, passes every schemathesis check (``--checks all``: no 5xx, status codes, content types and
bodies as documented, invalid data refused, ...) but positive_data_acceptance (EXCLUDED, below), and a refused
request leaves no row behind.

Every operation meets real rows: the module seeds one row of every served type (and a referral with an open
offer for the coordinators' API), and every other valid path parameter is a seeded id (_aim_at_rows).

Small here (HUB_FUZZ_EXAMPLES, 2 generated per operation, no coverage phase) so the suite stays in its budget;
``make assure`` runs 1,000 per operation and the coverage phase's probes. HUB_FUZZ_SECONDS bounds the time each
operation's generated examples may take (its test then ends as skipped, saying so), so that a run with a time
bound still reaches every operation. With HUB_FUZZ_LOG set, each example sent appends one line (the operation, the status,
the rows a refusal left, the phase, the mode) to that file. Requests go in-process through Django's WSGI
handler, authenticated as an EHR client (bearer) and as a staff user (session cookie).
"""

import collections
import datetime as dt
import itertools
import os
import time

import orjson
import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, transaction
from django.test import Client
from django.utils import timezone
from django.utils.crypto import get_random_string
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation

from audit.models import Access
from config.openapi import openapi_document
from fhir_bridge.models import ResourceVersion, StoredResource
from fhir_bridge.network_fhir import PROGRAM_KINDS
from fhir_bridge.route_table import TABLE
from fhir_bridge.smart_tokens import access_token_encode
from network.models import Organization as NetworkOrganization
from network.models import Professional, ProfessionalRole, Site
from notifications.models import Delivery, Subscription
from referrals.models import Referral
from referrals.offers import referral_route
from referrals.records import adverse_event_record, session_record
from referrals.reports import report_request
from tests.factories import ALL_SCOPES, EhrClientFactory
from tests.network.factories import OrganizationFactory, referral_make
from tests.notifications.test_subscriptions import pa_ig_example
from tests.referrals.conftest import CARDIAC_PATIENT
from tests.referrals.report_cases import accepted_referral

EXAMPLES = int(os.environ.get("HUB_FUZZ_EXAMPLES", "2"))
LOG = os.environ.get("HUB_FUZZ_LOG")
SECONDS = float(os.environ.get("HUB_FUZZ_SECONDS", "0"))  # per operation's generated examples; 0: no bound
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
# The coverage phase sends some twenty fixed probes to every operation whatever the size (undocumented methods,
# missing auth, each parameter's boundaries): nine tenths of a small run's requests. The suite's run (a few
# generated examples of every operation) leaves it to ``make assure``, unless HUB_FUZZ_COVERAGE=1.
schema.config.phases.coverage.enabled = EXAMPLES >= 10 or os.environ.get("HUB_FUZZ_COVERAGE") == "1"
schema.app = get_wsgi_application()  # in-process, through every middleware, as a WSGI server would call it


@pytest.fixture
def wsgi_calls():
    # As Django's test client does: a request's end must not close the connection that holds the test's
    # transaction. Asked for after the seed, whose test client requests reconnect the handler as they end.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    """The module's data, written once in a transaction that stays open under every test (each one's own
    transaction is a savepoint in it, as Django's TestCase.setUpTestData does) and is rolled back at the end:
    seeding per operation cost half a second each. (ehr, credentials, ids): the EHR client (every scope and
    system/AuditEvent.rs), the headers of it (bearer) and of a staff user (session and CSRF cookies, X-CSRFToken),
    and _seed's ids."""
    with django_db_blocker.unblock():
        outer = transaction.atomic()
        outer.__enter__()
        try:
            ehr = EhrClientFactory(scopes=ALL_SCOPES + " system/AuditEvent.rs")
            token = _token(ehr)
            staff = get_user_model().objects.create_user("fuzz", password=None, is_staff=True)  # no hash to compute
            browser = Client()
            browser.force_login(staff)
            csrf = get_random_string(32)  # the cookie's secret, sent back as X-CSRFToken as a browser's script does
            credentials = {"Authorization": f"Bearer {token}", "X-CSRFToken": csrf,
                           "Cookie": f"sessionid={browser.cookies['sessionid'].value}; csrftoken={csrf}"}
            ids = _seed(ehr, credentials["Authorization"])
        except BaseException:
            transaction.set_rollback(True)
            outer.__exit__(None, None, None)
            raise
    yield ehr, credentials, ids
    with django_db_blocker.unblock():
        transaction.set_rollback(True)
        outer.__exit__(None, None, None)


def _token(ehr) -> str:
    return access_token_encode(client=ehr, scopes=(ALL_SCOPES + " system/AuditEvent.rs").split())[0]


@pytest.fixture
def credentials(world, db) -> dict[str, str]:
    # A fresh token for each test: an access token lives five minutes, and a full-size run lasts far longer (the
    # module's first token answered 401 to every FHIR request after that).
    ehr, credentials, _ = world
    return {**credentials, "Authorization": f"Bearer {_token(ehr)}"}


@pytest.fixture
def seeded(world, db) -> dict[str, str]:
    return world[2]


_NETWORK = {"Organization": NetworkOrganization.objects, "Location": Site.objects, "Practitioner": Professional.objects,
            "PractitionerRole": ProfessionalRole.objects,
            "HealthcareService": NetworkOrganization.objects.filter(kind__in=PROGRAM_KINDS)}


def _seed(ehr, bearer: str) -> dict[str, str]:
    """One row of every type the description names, visible to ``ehr``'s clinic, and their ids by path
    parameter: {"Task": fhir id, ..., "referral_id": pk, "offer_id": pk}. Without it every generated id is a
    404 and no read, update or operation ever meets a row."""
    clinic = ehr.clinic
    referral = accepted_referral(clinic)  # the Task, ServiceRequest, Patient and PAVS Observations
    version = lambda: Referral.objects.get(pk=referral.pk).version  # noqa: E731 - moves with each record
    when = timezone.now() - dt.timedelta(days=1)
    session_record(referral=referral, attendance="attended", starts_at=when, duration_minutes=40, rpe=5,
                   actor="user:fuzz", expected_version=version())
    adverse_event_record(referral=referral, occurred_at=when, kind="fall", severity="mild", actor="user:fuzz",
                         expected_version=version())
    report_request(referral=referral, actor="user:fuzz", send_now=True)  # a DiagnosticReport and its Binary
    OrganizationFactory(kind=NetworkOrganization.Kind.YMCA)  # a HealthcareService
    waiting = referral_make(clinic)  # a referral routed to an open offer, for the coordinators' API
    offer = referral_route(referral=waiting, patient=CARDIAC_PATIENT).offer
    browser = Client(HTTP_AUTHORIZATION=bearer)
    # What only an EHR sends: its Condition, Consent, CarePlan, RelatedPerson and Goal, and a Subscription.
    patient = f"Patient/{StoredResource.objects.filter(referral=referral, resource_type='Patient').get().fhir_id}"
    for body in (
        {"resourceType": "Condition", "subject": {"reference": patient},
         "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I25.10"}]}},
        {"resourceType": "Consent", "status": "active", "scope": {"text": "treatment"}, "category": [{"text": "x"}],
         "patient": {"reference": patient}, "policyRule": {"text": "hub"}},
        {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": patient}},
        {"resourceType": "RelatedPerson", "patient": {"reference": patient}},
        {"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "Walk 150 min/wk"},
         "subject": {"reference": patient}},
        pa_ig_example("http://127.0.0.1:9/hook"),
    ):
        response = browser.post(f"/fhir/{body['resourceType']}", orjson.dumps(body), content_type="application/fhir+json")
        assert response.status_code == 201, response.content[:500]
    ids = {"referral_id": str(waiting.pk), "offer_id": str(offer.pk), "vid": "1",
           "AuditEvent": str(Access.objects.filter(clinic_id=clinic.pk).latest("pk").pk),
           "Subscription": Subscription.objects.get(clinic_id=clinic.pk).fhir_id}
    for served in TABLE:
        if served.network:
            ids[served.name] = _NETWORK[served.name].order_by("pk").first().fhir_id
        elif not served.own:
            row = StoredResource.objects.filter(clinic_id=clinic.pk, resource_type=served.name).order_by("pk").first()
            assert row is not None, f"nothing of {served.name} to read"
            ids[served.name] = row.fhir_id
    return ids


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
    # The operations, where the router answers them.
    assert "post" in document["paths"]["/fhir/Task/{id}/$report"]
    assert {"get", "post"} <= set(document["paths"]["/fhir/Subscription/{id}/$events"])
    assert {"get", "post"} <= set(document["paths"]["/fhir/Subscription/$status"])
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


_TURNS: dict[str, itertools.count] = collections.defaultdict(itertools.count)  # per operation
_FUZZING_SINCE: dict[str, float] = {}


def _aim_at_rows(case, seeded: dict[str, str]) -> None:
    """The first valid path parameters of an operation, and every other one after (in the order they come, so
    a derandomized run repeats), become a seeded row's id: reads, updates and operations meet real rows as well
    as unknown ids. Invalid ones (negative mode, the coverage phase's probes) stay as generated: they must still
    be refused."""
    if not case.path_parameters or not case.meta.generation.mode.is_positive:
        return
    if next(_TURNS[case.operation.label]) % 2:
        return
    kind = case.operation.path.split("/")[2]  # /fhir/<type>/... or /api/admin/...
    for name in case.path_parameters:
        case.path_parameters[name] = seeded[kind if name == "id" else name]


def _leaves_out_authorization(case) -> bool:
    """Whether a negative case's headers leave out the required Authorization header on purpose (schemathesis:
    "header: violates `required`"). Sent with the fuzz's own token, it was accepted: a finding of the harness,
    not of the hub (the two "schema-violating request accepted" of the 2026-11-30 full-size run)."""
    return case.meta.is_negative_at(ParameterLocation.HEADER) and "Authorization" not in (case.headers or {})


def _signs_in_by_session(case) -> bool:
    return any("session" in scheme for scheme in case.operation.definition.raw.get("security", []))


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES < 10,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
@pytest.mark.django_db
def test_no_operation_answers_5xx(case, credentials, seeded, wsgi_calls):
    headers = {**(case.headers or {}), "Authorization": credentials["Authorization"],
               "X-CSRFToken": credentials["X-CSRFToken"]}
    if _leaves_out_authorization(case):
        del headers["Authorization"]  # a negative case without the bearer token on purpose: it must be refused
    cookies = dict(pair.split("=", 1) for pair in credentials["Cookie"].split("; "))
    if "sessionid" not in (case.cookies or {}) and _signs_in_by_session(case):
        del cookies["sessionid"]  # a negative case leaves the session out on purpose: it must be refused
    if case.meta.phase.name == "fuzzing" and SECONDS:
        started = _FUZZING_SINCE.setdefault(case.operation.label, time.monotonic())
        if time.monotonic() - started > SECONDS:
            # This operation's time is spent: end its test (Hypothesis lets a skip through; the coverage phase's
            # probes came first), so the next operation's starts instead of drawing examples nobody sends.
            pytest.skip(f"HUB_FUZZ_SECONDS={SECONDS:g} spent on {case.operation.label}'s generated examples")
    _aim_at_rows(case, seeded)
    before = _rows()
    # The session and CSRF cookies as cookies the WSGI client keeps: werkzeug drops a Cookie header its jar does
    # not hold, and the coordinators' API answered every request with 403 (so none of it was fuzzed).
    response = case.call(headers=headers, cookies=cookies)
    left = [b - a for a, b in zip(before, _rows())] if 400 <= response.status_code < 500 else []
    if LOG:
        with open(LOG, "a") as log:
            log.write(f"{case.operation.label}\t{response.status_code}\t{sum(left)}\t{case.meta.phase.name}\t"
                      f"{case.meta.generation.mode}\n")
    assert not any(left), f"a {response.status_code} left rows behind: {dict(zip(_KEPT, left))}"
    case.validate_response(response, headers=headers, checks=CHECKS, excluded_checks=EXCLUDED)


def test_the_seed_gives_a_readable_row_of_every_type(client, credentials, seeded):
    headers = {"HTTP_AUTHORIZATION": credentials["Authorization"]}
    for served in TABLE:
        if "read" in served.interactions:
            response = client.get(f"/fhir/{served.name}/{seeded[served.name]}", **headers)
            assert response.status_code == 200, (served.name, response.content[:300])

