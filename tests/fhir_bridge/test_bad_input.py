"""Bad input gets a clear 4xx OperationOutcome naming the element, the same on SQLite and PostgreSQL (issue 12).

Each reproduction of the issue is a test here; none may be answered 5xx or 503 "send it again".
"""

from urllib.parse import urlencode

import orjson
import pytest
from django.test import override_settings

from fhir_bridge.examples import example, scenario2_bundle
from fhir_bridge.models import InboundMessage, StoredResource
from referrals.models import Referral
from tests.conftest import issue_paths, json_of

pytestmark = pytest.mark.django_db


def _entry(bundle: dict, resource_type: str) -> dict:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type)


def _at(bundle: dict, resource_type: str) -> str:
    """The FHIRPath of the entry's resource of that type."""
    index = next(i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == resource_type)
    return f"Bundle.entry[{index}].resource"


def _assert_refused(response, status: int, *, path: str | None = None) -> None:
    assert response.status_code == status, response.content[:500]
    body = json_of(response)
    assert body["resourceType"] == "OperationOutcome"
    assert "Retry-After" not in response.headers
    if path is not None:
        assert any(p.startswith(path) for p in issue_paths(response)), issue_paths(response)
    assert Referral.objects.count() == 0
    assert StoredResource.objects.filter(referral__isnull=False).count() == 0


def test_a_family_name_of_200_characters_is_taken(fhir):
    bundle = scenario2_bundle(identifier="long-name")
    _entry(bundle, "Patient")["name"][0]["family"] = "F" * 200

    response = fhir.post("", bundle)

    assert response.status_code == 200, response.content[:500]
    assert Referral.objects.get().patient_name.endswith("F" * 200)


def test_long_displays_and_references_a_referral_copies_are_taken(fhir):
    bundle = scenario2_bundle(identifier="long-display")
    service_request = _entry(bundle, "ServiceRequest")
    service_request["code"]["coding"][0]["display"] = "D" * 3000
    service_request["requester"]["display"] = "R" * 600
    _entry(bundle, "Task")["owner"]["display"] = "O" * 400

    response = fhir.post("", bundle)

    assert response.status_code == 200, response.content[:500]
    referral = Referral.objects.get()
    assert (len(referral.service_display), len(referral.requester_display)) == (3000, 600)


def test_a_task_identifier_longer_than_its_key_is_refused_naming_it(fhir):
    bundle = scenario2_bundle(identifier="x" * 256)

    _assert_refused(fhir.post("", bundle), 422, path=f"{_at(bundle, 'Task')}.identifier[0].value")


def test_an_if_none_exist_query_longer_than_its_key_is_refused(fhir):
    task = example("Scen2TaskFit4LifeV2")  # refused before the Task is even looked at
    response = fhir.post("Patient", example("Scen2PatientJohansson"),
                         headers={"If-None-Exist": "identifier=urn:x|" + "9" * 520})

    _assert_refused(response, 400, path="If-None-Exist")
    assert task  # the example loads


@pytest.mark.parametrize("where", ["family", "identifier", "display"])
def test_a_null_character_in_any_string_is_refused_naming_the_element(fhir, where):
    bundle = scenario2_bundle(identifier="nul")
    if where == "family":
        _entry(bundle, "Patient")["name"][0]["family"] = "Jo\u0000hansson"
        path = f"{_at(bundle, 'Patient')}.name[0].family"
    elif where == "identifier":
        _entry(bundle, "Task")["identifier"][0]["value"] = "a\u0000b"
        path = f"{_at(bundle, 'Task')}.identifier[0].value"
    else:
        _entry(bundle, "ServiceRequest")["code"]["coding"][0]["display"] = "\u0000"
        path = f"{_at(bundle, 'ServiceRequest')}.code.coding[0].display"

    _assert_refused(fhir.post("", bundle), 400, path=path)
    assert InboundMessage.objects.count() == 0


def test_a_null_character_in_a_search_or_header_is_refused(fhir):
    assert fhir.get("Task", status="requ\u0000ested").status_code == 400
    response = fhir.post("Patient", example("Scen2PatientJohansson"), headers={"If-None-Exist": "identifier=a%00b"})
    _assert_refused(response, 400, path="If-None-Exist")


@pytest.mark.parametrize("depth", [150, 200, 5000])
def test_deep_nesting_is_refused_before_it_is_parsed(fhir, depth):
    # The issue's Patient with nested extensions; 5000 is deeper than orjson itself will go.
    response = fhir.post("Patient", _deep_raw(depth))

    _assert_refused(response, 400)
    assert "deep" in json_of(response)["issue"][0]["diagnostics"]


def _deep_raw(depth: int) -> bytes:
    patient = orjson.dumps(example("Scen2PatientJohansson"))[:-1]
    nested = b'[{"url":"http://example.org/nested","extension":' * depth + b"[]" + b"}]" * depth
    return patient + b',"extension":' + nested + b"}"


@override_settings(HUB_MAX_BODY_BYTES=20_000)
def test_a_body_over_the_size_limit_is_413(fhir):
    bundle = scenario2_bundle(identifier="big")
    _entry(bundle, "Patient")["text"] = {"status": "generated", "div": "<div>" + "x" * 30_000 + "</div>"}

    _assert_refused(fhir.post("", bundle), 413)


@override_settings(HUB_MAX_BUNDLE_ENTRIES=5)
def test_a_bundle_with_too_many_entries_is_413(fhir):
    bundle = scenario2_bundle(identifier="many")
    assert len(bundle["entry"]) > 5

    _assert_refused(fhir.post("", bundle), 413, path="Bundle.entry")


@override_settings(HUB_MAX_STRING_CHARS=1000)
def test_a_string_over_the_length_limit_is_400_naming_it(fhir):
    bundle = scenario2_bundle(identifier="long-string")
    _entry(bundle, "Patient")["name"][0]["family"] = "F" * 1001

    _assert_refused(fhir.post("", bundle), 400, path=f"{_at(bundle, 'Patient')}.name[0].family")


@pytest.mark.parametrize("query", [{"_count": "100000"}, {"_count": "-1"}, {"_count": "x"}, {"_offset": "99999999"},
                                   {"_offset": "-3"}, {"_offset": "9" * 40}])
def test_count_and_offset_beyond_their_limits_are_400(fhir, query):
    response = fhir.get("Task", **query)

    assert response.status_code == 400, response.content[:300]
    assert issue_paths(response) == [next(iter(query))]


def test_a_count_within_its_limit_is_taken(fhir):
    fhir.post("", scenario2_bundle(identifier="c-1"))
    body = json_of(fhir.get("Task", _count="200", _offset="0"))
    assert body["total"] == 1


def test_post_search_with_a_form_body_answers_as_get_does(fhir):
    fhir.post("", scenario2_bundle(identifier="form-1"))
    fhir.post("", scenario2_bundle(identifier="form-2"))
    by_get = json_of(fhir.get("Task", status="requested"))

    response = fhir.post("Task/_search", urlencode({"status": "requested"}),
                         content_type="application/x-www-form-urlencoded")

    assert response.status_code == 200, response.content[:500]
    body = json_of(response)
    assert body["total"] == by_get["total"] == 2
    assert sorted(e["fullUrl"] for e in body["entry"]) == sorted(e["fullUrl"] for e in by_get["entry"])
    narrowed = json_of(fhir.post("Task/_search", urlencode({"status": "cancelled"}),
                                 content_type="application/x-www-form-urlencoded"))
    assert narrowed["total"] == 0


def test_the_limits_are_in_the_capability_statement(fhir):
    body = json_of(fhir.get("metadata"))
    text = orjson.dumps(body).decode()
    for name in ("body", "depth", "entries", "string", "_count", "_offset", "search values", "query or form"):
        assert name in text


def test_a_data_error_that_slips_past_the_limits_is_422_not_transient(fhir, monkeypatch):
    from django.db import DataError

    from fhir_bridge import routes

    def boom(request):
        raise DataError("value too long for type character varying(10)")

    monkeypatch.setattr(routes, "ROUTES", tuple(r if r.handler.__name__ != "handle_search" else
                                                routes.Route(r.method, r.pattern, boom) for r in routes.ROUTES))
    response = fhir.get("Task")
    assert response.status_code == 422
    assert "Retry-After" not in response.headers


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("failures, status", [(1, 200), (2, 503)])
def test_a_transient_error_is_retried_once_by_the_hub_before_503(fhir, monkeypatch, failures, status):
    from django.db import OperationalError

    from fhir_bridge import routes

    calls = []
    real = routes.handle_search

    def flaky(request):
        calls.append(1)
        if len(calls) <= failures:
            raise OperationalError("could not serialize access due to concurrent update")
        return real(request)

    monkeypatch.setattr(routes, "ROUTES", tuple(r if r.handler is not real else routes.Route(r.method, r.pattern, flaky)
                                                for r in routes.ROUTES))
    response = fhir.get("Task")

    assert (response.status_code, len(calls)) == (status, 2)
    assert ("Retry-After" in response.headers) == (status == 503)


@pytest.mark.parametrize("element, value", [("resourceType", ["Task"]), ("fullUrl", ["urn:uuid:x"]),
                                            ("fullUrl", {"a": 1})])
def test_a_bundle_entry_with_a_list_where_a_string_belongs_is_refused(fhir, element, value):
    # Found by the property tests: these were unhashable in a set lookup, a 500.
    bundle = scenario2_bundle(identifier="wrong-type")
    if element == "resourceType":
        bundle["entry"][1]["resource"]["resourceType"] = value
    else:
        bundle["entry"][1]["fullUrl"] = value

    response = fhir.post("", bundle)

    assert 400 <= response.status_code < 500
    assert json_of(response)["resourceType"] == "OperationOutcome"
    assert Referral.objects.count() == 0


@pytest.mark.parametrize("where", ["Patient.photo", "Bundle.link", "Subscription.channel"])
def test_a_number_in_a_url_element_is_400_naming_it(fhir, where):
    # fhir.resources' url type raised AttributeError on a non-string (found trying the hub as an EHR): a 500.
    stored_before = StoredResource.objects.count()
    if where == "Patient.photo":
        patient = example("Scen2PatientJohansson")
        patient["photo"] = [{"contentType": "image/png", "url": 5}]
        response, expected = fhir.post("Patient", patient), "Patient.photo[0].url"
    elif where == "Bundle.link":
        bundle = scenario2_bundle(identifier="url-number")
        bundle["link"] = [{"relation": "self", "url": 5}]
        response, expected = fhir.post("", bundle), "Bundle.link[0].url"
    else:
        subscription = example("Scen2SubscriptionEhr")
        subscription["channel"]["endpoint"] = 5
        response, expected = fhir.post("Subscription", subscription), "Subscription.channel.endpoint"

    assert response.status_code == 400, response.content[:500]
    assert expected in issue_paths(response)
    assert Referral.objects.count() == 0
    assert StoredResource.objects.count() == stored_before


def _repeated(make, n: int) -> str:
    return "&".join(make(i) for i in range(n))


_MANY = {
    "_id": lambda i: f"_id=t{i}",
    "status:not": lambda i: f"status:not=s{i}",
    "_lastUpdated": lambda i: f"_lastUpdated=gt2020-01-{i % 28 + 1:02d}",
}


@pytest.mark.parametrize("name", list(_MANY))
def test_a_search_of_999_repeats_is_400_naming_the_parameter_on_both_databases(fhir, name):
    # SQLite refused the statement ("Expression tree is too large"), which was answered 503 "send it again".
    response = fhir.http.get(f"/fhir/Task?{_repeated(_MANY[name], 999)}", **fhir._headers(None))

    _assert_refused(response, 400, path=name)
    issue = json_of(response)["issue"][0]
    assert issue["code"] == "too-costly"
    assert "999" in issue["diagnostics"] and "100" in issue["diagnostics"]


def test_comma_separated_values_count_toward_the_search_values_limit(fhir):
    response = fhir.get("Task", _id=",".join(f"t{i}" for i in range(101)))
    _assert_refused(response, 400, path="_id")
    form = fhir.post("Task/_search", _repeated(_MANY["_id"], 60), headers=None,
                     content_type="application/x-www-form-urlencoded")
    assert form.status_code == 200, form.content[:300]
    both = fhir.http.post(f"/fhir/Task/_search?{_repeated(_MANY['status:not'], 50)}", _repeated(_MANY["_id"], 60),
                          content_type="application/x-www-form-urlencoded", **fhir._headers(None))
    _assert_refused(both, 400, path="_id")  # the query and the form together are one request


@pytest.mark.parametrize("name", list(_MANY))
def test_a_search_at_the_values_limit_is_answered(fhir, name):
    fhir.post("", scenario2_bundle(identifier="at-limit"))
    half = _repeated(_MANY[name], 50)
    response = fhir.http.get(f"/fhir/Task?{half}&{_repeated(_MANY['_lastUpdated'], 50)}", **fhir._headers(None))

    assert response.status_code == 200, response.content[:300]


def test_a_permanent_operational_error_is_never_transient(fhir, monkeypatch):
    import sqlite3

    from django.db import OperationalError

    from fhir_bridge import routes

    calls = []

    def too_large(request):
        calls.append(1)
        try:
            raise sqlite3.OperationalError("Expression tree is too large (maximum depth 1000)")
        except sqlite3.OperationalError as exc:
            raise OperationalError(str(exc)) from exc

    monkeypatch.setattr(routes, "ROUTES", tuple(r if r.handler is not routes.handle_search else
                                                routes.Route(r.method, r.pattern, too_large) for r in routes.ROUTES))
    response = fhir.get("Task")

    assert response.status_code == 400, response.content[:300]
    assert json_of(response)["issue"][0]["code"] == "too-costly"
    assert "Retry-After" not in response.headers
    assert len(calls) == 1  # not tried again


def test_a_search_body_in_fhir_json_is_415_not_ignored(fhir):
    # The body was ignored: every Task came back.
    fhir.post("", scenario2_bundle(identifier="json-search"))

    response = fhir.post("Task/_search", {"status": "accepted"})

    assert response.status_code == 415, response.content[:300]
    assert "x-www-form-urlencoded" in json_of(response)["issue"][0]["diagnostics"]


def test_a_body_without_content_type_is_415_saying_so(fhir):
    headers = fhir._headers(None)
    patient = orjson.dumps(example("Scen2PatientJohansson"))
    stored_before = StoredResource.objects.count()

    response = fhir.http.generic("POST", "/fhir/Patient", patient, content_type="", **headers)
    # Django's development server (make run) reports a missing Content-Type as text/plain.
    dev_server = fhir.http.generic("POST", "/fhir/Patient", patient, content_type="text/plain",
                                   SERVER_SOFTWARE="WSGIServer/0.2 CPython/3.11", **headers)

    for answer in (response, dev_server):
        assert answer.status_code == 415, answer.content[:300]
        assert "no Content-Type" in json_of(answer)["issue"][0]["diagnostics"]
    sent = fhir.http.generic("POST", "/fhir/Patient", patient, content_type="text/plain", **headers)
    assert sent.status_code == 415 and "text/plain" in json_of(sent)["issue"][0]["diagnostics"]
    assert StoredResource.objects.count() == stored_before


def test_a_body_that_is_not_utf8_is_400_saying_so(fhir):
    response = fhir.post("Patient", b'{"resourceType":"Patient","name":[{"family":"\xff\xfe"}]}')

    _assert_refused(response, 400)
    diagnostics = json_of(response)["issue"][0]["diagnostics"]
    assert "not UTF-8" in diagnostics and "surrogates" not in diagnostics


def test_a_chunked_body_without_content_length_is_411(fhir):
    patient = orjson.dumps(example("Scen2PatientJohansson"))
    headers = {**fhir._headers(None), "HTTP_TRANSFER_ENCODING": "chunked"}
    stored_before = StoredResource.objects.count()

    response = fhir.http.generic("POST", "/fhir/Patient", patient, content_type="application/fhir+json",
                                 CONTENT_LENGTH="", **headers)

    assert response.status_code == 411, response.content[:300]
    assert "Content-Length" in json_of(response)["issue"][0]["diagnostics"]
    assert StoredResource.objects.count() == stored_before


@pytest.mark.parametrize("path", ["Subscription/abc/_history", "Location/abc/_history", "AuditEvent/abc/_history/1"])
def test_a_url_with_no_interaction_at_all_is_404_not_an_empty_405(fhir, path):
    response = fhir.get(path)

    assert response.status_code == 404, response.content[:300]
    assert "Allow" not in response.headers
    assert "allowed: )" not in json_of(response)["issue"][0]["diagnostics"]


def test_a_search_post_without_a_body_needs_no_content_type(fhir):
    response = fhir.http.generic("POST", "/fhir/Task/_search", b"", content_type="", **fhir._headers(None))

    assert response.status_code == 200, response.content[:300]
    assert json_of(response)["resourceType"] == "Bundle"
