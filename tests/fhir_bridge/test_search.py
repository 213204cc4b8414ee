"""Search as R4's search page says (https://hl7.org/fhir/R4/search.html): dates as ranges, token and reference
forms, modifiers, _include/_revinclude, paging, _sort, _summary, _total, _elements, strict and lenient handling,
and a self link that lists what was applied. The interop cases X-04, X-05 and X-06 are here with their answers."""

import datetime as dt
import json
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.utils import timezone

from fhir_bridge.examples import scenario2_bundle
from fhir_bridge.models import StoredResource
from fhir_bridge.search import date_range
from referrals.tasks import route_referral
from referrals.models import Referral
from tests.conftest import issue_paths, json_of
from tests.network.factories import role_make

pytestmark = pytest.mark.django_db

SPRINGFIELD = (39.7990, -89.6440)  # near the centroid of ZIP 62701, where the Scenario 2 patient lives


def _open(fhir, identifier="r1", **kwargs) -> dict[str, dict]:
    response = fhir.post("", scenario2_bundle(identifier=identifier, **kwargs))
    assert response.status_code == 200, response.content
    return {e["resource"]["resourceType"]: e["resource"] for e in json_of(response)["entry"]}


def _search(fhir, path="Task", headers=None, **params) -> dict:
    response = fhir.get(path, headers=headers, **params)
    assert response.status_code == 200, response.content
    return json_of(response)


def _ids(bundle, mode="match") -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode}


def _self_params(bundle) -> list[tuple[str, str]]:
    url = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def _set_last_updated(task_id: str, moment: dt.datetime) -> None:
    StoredResource.objects.filter(resource_type="Task", fhir_id=task_id).update(last_updated=moment)


# --- dates (X-05) -------------------------------------------------------------------------------------------------


def test_x05_last_updated_today_is_a_range_at_day_month_and_year_precision(fhir):
    # on a hub whose Tasks were all updated today: eq today = all, le today = all, gt today = 0, yyyy-mm = all.
    _open(fhir, "a")
    _open(fhir, "b")
    today = timezone.now().astimezone(dt.UTC).date()

    def total(value):
        return _search(fhir, _count="0", _lastUpdated=value)["total"]

    everything = _search(fhir, _count="0")["total"]
    assert everything == 2
    assert total(today.isoformat()) == everything
    assert total(f"le{today.isoformat()}") == everything
    assert total(f"gt{today.isoformat()}") == 0
    assert total(today.isoformat()[:7]) == everything
    assert total(str(today.year)) == everything


@pytest.mark.parametrize(
    ("value", "matches"),
    [
        ("2026-03-15", {"mid"}),
        ("eq2026-03-15", {"mid"}),
        ("ne2026-03-15", {"early", "late"}),
        ("2026-03", {"early", "mid", "late"}),
        ("2026", {"early", "mid", "late"}),
        ("2025", set()),
        ("gt2026-03-15", {"late"}),
        ("sa2026-03-15", {"late"}),
        ("ge2026-03-15", {"mid", "late"}),
        ("lt2026-03-15", {"early"}),
        ("eb2026-03-15", {"early"}),
        ("le2026-03-15", {"early", "mid"}),
        ("2026-03-15T12:00:00Z", {"mid"}),
        ("2026-03-15T12:00:01Z", set()),
        ("2026-03-15T12:00Z", {"mid"}),
        ("gt2026-03-15T12:00:00Z", {"late"}),
        ("2026-03-15T13:00:00+01:00", {"mid"}),  # the same instant in another zone
        ("2026-03-15T13:00:00 01:00", {"mid"}),  # ... with its "+" sent unencoded
        ("2026-03-01,2026-03-31", {"early", "late"}),  # values ORed
    ],
)
def test_date_prefixes_follow_the_range_semantics(fhir, value, matches):
    names = {}
    for name, moment in (("early", "2026-03-01T08:00:00Z"), ("mid", "2026-03-15T12:00:00Z"), ("late", "2026-03-31T23:59:59Z")):
        task = _open(fhir, name)["Task"]
        _set_last_updated(task["id"], dt.datetime.fromisoformat(moment.replace("Z", "+00:00")))
        names[task["id"]] = name
    found = _ids(_search(fhir, _lastUpdated=value))
    assert {names[i] for i in found} == matches


def test_ap_matches_near_the_value_only(fhir):
    task = _open(fhir)["Task"]
    moment = timezone.now() - dt.timedelta(days=100)
    _set_last_updated(task["id"], moment)
    assert _ids(_search(fhir, _lastUpdated=f"ap{(moment + dt.timedelta(days=5)).date().isoformat()}")) == {task["id"]}
    assert _ids(_search(fhir, _lastUpdated=f"ap{(moment - dt.timedelta(days=60)).date().isoformat()}")) == set()


def test_date_range_spans_the_precision_given():
    assert date_range("d", "2024-02") [1:] == (dt.datetime(2024, 2, 1, tzinfo=dt.UTC), dt.datetime(2024, 3, 1, tzinfo=dt.UTC))
    _, start, end = date_range("d", "2026-11-29T10:00:00.5Z")
    assert end - start == dt.timedelta(milliseconds=100)
    _, start, end = date_range("d", "2026")
    assert (start.year, end.year) == (2026, 2027)


@pytest.mark.parametrize(
    "value", ["yesterday", "2026-13-01", "2026-11-31", "xx2026", "2026-11-29T25:00", "9999", "ap0001", "0000", "ge"]
)
def test_a_malformed_date_is_400(fhir, value):
    response = fhir.get("Task", _lastUpdated=value)
    assert response.status_code == 400
    assert issue_paths(response) == ["_lastUpdated"]


# --- tokens (X-06) ------------------------------------------------------------------------------------------------


def _x06_bundle() -> dict:
    with open(_interop("X-06.json")) as f:
        return json.load(f)


def _interop(name: str) -> str:
    import pathlib

    here = pathlib.Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "interop-cases" / name
        if candidate.exists():
            return str(candidate)
    pytest.skip("../shared/interop-cases is not beside this checkout")


def test_x06_token_forms_system_bar_and_bar_code(fhir):
    response = fhir.post("", _x06_bundle())
    assert response.status_code == 200, response.content
    with_system = _open(fhir, "with-system")["Task"]  # its identifier has a system: urn:... in scenario2_bundle
    nosys = next(e["resource"]["id"] for e in json_of(response)["entry"] if e["resource"]["resourceType"] == "Task")

    def total(**params):
        return _search(fhir, _count="0", **params)["total"]

    assert total(code="http://hl7.org/fhir/CodeSystem/task-code|fulfill") == 2
    assert total(code="http://hl7.org/fhir/CodeSystem/task-code|") == 2  # any code of the system
    assert total(code="http://example.org/other|") == 0
    assert total(identifier="X06-NOSYS-0001") == 1
    assert total(identifier="|X06-NOSYS-0001") == 1  # no system
    assert _ids(_search(fhir, identifier="|X06-NOSYS-0001")) == {nosys}
    system, value = with_system["identifier"][0]["system"], with_system["identifier"][0]["value"]
    assert total(identifier=f"|{value}") == 0  # it has a system, so |value does not match it
    assert total(identifier=f"{system}|{value}") == 1
    assert total(identifier=f"{system}|") >= 1
    assert total(code="|fulfill") == 0  # every Task's code has its system


def test_token_not_and_missing(fhir):
    a = _open(fhir, "a")["Task"]
    b = _open(fhir, "b")["Task"]
    b["status"] = "cancelled"
    b["statusReason"] = {"text": "moved away"}
    assert fhir.put(f"Task/{b['id']}", b).status_code == 200
    assert _ids(_search(fhir, **{"status:not": "cancelled"})) == {a["id"]}
    assert _ids(_search(fhir, **{"status:not": "cancelled,requested"})) == set()
    assert _ids(_search(fhir, **{"business-status:missing": "false"})) <= {a["id"], b["id"]}
    assert _ids(_search(fhir, **{"identifier:missing": "true"})) == set()
    assert _ids(_search(fhir, **{"identifier:missing": "false"})) == {a["id"], b["id"]}


def test_a_modifier_the_type_does_not_take_is_400_naming_it(fhir):
    for name in ("status:text", "identifier:text", "patient:not", "status:exact", "_lastUpdated:missing"):
        response = fhir.get("Task", **{name: "x"})
        assert response.status_code == 400, name
        assert issue_paths(response) == [name]
    response = fhir.get("Task", **{"status:missing": "maybe"})
    assert response.status_code == 400


def _coded_request(fhir, identifier: str, text: str | None, display: str) -> str:
    """A referral whose ServiceRequest.code has ``text`` and one coding shown as ``display``; its ServiceRequest's id."""
    bundle = scenario2_bundle(identifier=identifier)
    request = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
    request["code"] = {"coding": [{"system": "http://snomed.info/sct", "code": "409063005", "display": display}]}
    if text is not None:
        request["code"]["text"] = text
    response = fhir.post("", bundle)
    assert response.status_code == 200, response.content
    return next(e["resource"]["id"] for e in json_of(response)["entry"] if e["resource"]["resourceType"] == "ServiceRequest")


def test_text_matches_a_concepts_text_or_display_from_a_word_start_case_aside(fhir):
    cardiac = _coded_request(fhir, "t1", "Cardiac  rehabilitation, phase-III", "Counseling")
    walking = _coded_request(fhir, "t2", None, "Walking program")

    def found(value: str) -> set[str]:
        return _ids(_search(fhir, "ServiceRequest", **{"code:text": value}))

    assert found("cardiac") == {cardiac}
    assert found("CARDIAC REHAB") == {cardiac}  # case aside, across words, whitespace runs as one space
    assert found("cardiac   rehab") == {cardiac}
    assert found("rehab") == {cardiac}  # a later word's start
    assert found("iii") == {cardiac}  # a word starts after a hyphen too
    assert found("counsel") == {cardiac}  # a coding's display
    assert found("program") == {walking}
    assert found("walking,cardiac") == {cardiac, walking}  # values ORed
    assert found("ardiac") == set()  # not a word start
    assert found("cardiacs") == set()
    assert found("rehabilitation phase-iiii") == set()
    # The exact code, as a token, is unchanged by :text.
    assert _ids(_search(fhir, "ServiceRequest", code="http://snomed.info/sct|409063005")) == {cardiac, walking}


def test_text_is_an_indexed_prefix_range(fhir):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    _coded_request(fhir, "t1", "Cardiac rehabilitation", "Counseling")
    with CaptureQueriesContext(connection) as queries:
        assert _search(fhir, "ServiceRequest", **{"code:text": "Rehab"})["total"] == 1
    token_sql = [q["sql"] for q in queries.captured_queries if "code:text" in q["sql"]]
    assert token_sql and all("'rehab'" in sql and "'rehac'" in sql for sql in token_sql), token_sql


def test_business_status_text_finds_referrals_by_their_step(fhir):
    task = _open(fhir, "bs")["Task"]
    text = task["businessStatus"]["text"]
    word = text.split()[-1][:4]
    assert task["id"] in _ids(_search(fhir, **{"business-status:text": word}))
    assert task["id"] not in _ids(_search(fhir, **{"business-status:text": "zzz" + word}))


def test_fill_text_tokens_indexes_resources_stored_before_text_search(fhir):
    import importlib

    from django.apps import apps

    from fhir_bridge.models import SearchToken

    cardiac = _coded_request(fhir, "t1", "Cardiac rehabilitation", "Counseling")
    rows = SearchToken.objects.filter(param__endswith=":text")
    before = set(rows.values_list("resource_id", "param", "value"))
    rows.delete()  # as stored before the hub indexed text
    assert _ids(_search(fhir, "ServiceRequest", **{"code:text": "rehab"})) == set()
    fill = importlib.import_module("fhir_bridge.migrations.0011_fill_text_tokens").fill_text_tokens
    fill(apps, None)
    assert _ids(_search(fhir, "ServiceRequest", **{"code:text": "rehab"})) == {cardiac}
    fill(apps, None)  # twice adds nothing
    assert set(rows.values_list("resource_id", "param", "value")) == before
    assert rows.count() == len(before)


# --- references ---------------------------------------------------------------------------------------------------


def test_reference_forms_type_id_bare_id_and_this_servers_absolute_url(fhir):
    first = _open(fhir, "a")
    _open(fhir, "b")
    patient, task = first["Patient"]["id"], first["Task"]["id"]
    assert _ids(_search(fhir, patient=f"Patient/{patient}")) == {task}
    assert _ids(_search(fhir, patient=patient)) == {task}
    assert _ids(_search(fhir, patient=f"http://testserver/fhir/Patient/{patient}")) == {task}
    assert _ids(_search(fhir, patient=f"http://elsewhere.example/fhir/Patient/{patient}")) == set()
    assert _ids(_search(fhir, owner="hub")) == _ids(_search(fhir, owner="Organization/hub"))


@pytest.fixture
def routed(fhir, django_capture_on_commit_callbacks):
    """A referral routed to an exercise physiologist nearby: its Task and the offer's child Task."""
    role_make(credentials=("acsm-cep",), at=SPRINGFIELD, state="IL", fhir_id="cep-near")
    with django_capture_on_commit_callbacks(execute=False):
        parts = _open(fhir, "routed")
    route_referral(Referral.objects.get().pk)
    children = _search(fhir, **{"part-of": f"Task/{parts['Task']['id']}"})
    assert len(children["entry"]) == 1
    return parts["Task"], children["entry"][0]["resource"]


def test_part_of_missing_lists_referral_tasks_only(fhir, routed):
    referral, offer = routed
    assert _ids(_search(fhir)) == {referral["id"], offer["id"]}
    assert _ids(_search(fhir, **{"part-of:missing": "true"})) == {referral["id"]}
    assert _ids(_search(fhir, **{"part-of:missing": "false"})) == {offer["id"]}


# --- _include and _revinclude (X-04) ------------------------------------------------------------------------------


def test_x04_a_match_that_is_also_included_appears_once_as_a_match(fhir, routed):
    referral, offer = routed
    bundle = _search(fhir, _include="Task:part-of", _count="50")
    full_urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(full_urls) == len(set(full_urls))  # bdl-7
    assert {(e["resource"]["id"], e["search"]["mode"]) for e in bundle["entry"]} == {
        (referral["id"], "match"), (offer["id"], "match"),
    }


def test_an_include_of_a_non_match_is_an_include(fhir, routed):
    referral, offer = routed
    bundle = _search(fhir, _id=offer["id"], _include="Task:part-of")
    assert _ids(bundle) == {offer["id"]}
    assert _ids(bundle, "include") == {referral["id"]}


def test_revinclude_brings_a_referrals_offers(fhir, routed):
    referral, offer = routed
    bundle = _search(fhir, **{"part-of:missing": "true", "_revinclude": "Task:part-of"})
    assert _ids(bundle) == {referral["id"]} and _ids(bundle, "include") == {offer["id"]}
    patient_id = referral["for"]["reference"].split("/")[1]
    bundle = _search(fhir, "Patient", _id=patient_id, _revinclude=["Task:patient", "ServiceRequest:patient"])
    included = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"] if e["search"]["mode"] == "include"}
    assert ("Task", referral["id"]) in included
    assert {t for t, _ in included} == {"Task", "ServiceRequest"}


def test_an_unsupported_include_is_400_or_ignored_when_lenient(fhir):
    _open(fhir)
    response = fhir.get("Task", _include="Task:owner")
    assert response.status_code == 400 and issue_paths(response) == ["_include"]
    assert fhir.get("Task", _revinclude="Observation:subject").status_code == 400
    lenient = _search(fhir, headers={"Prefer": "handling=lenient"}, _include="Task:owner")
    assert ("_include", "Task:owner") not in _self_params(lenient)
    assert len(lenient["entry"]) == 1


# --- result parameters --------------------------------------------------------------------------------------------


def test_count_zero_and_summary_count_give_the_total_only(fhir):
    _open(fhir, "a")
    _open(fhir, "b")
    for params in ({"_count": "0"}, {"_summary": "count"}):
        bundle = _search(fhir, **params)
        assert bundle["total"] == 2 and "entry" not in bundle
        assert not any(link["relation"] == "next" for link in bundle["link"])


def test_total_none_leaves_the_total_out_but_still_pages(fhir):
    for n in range(3):
        _open(fhir, f"t{n}")
    bundle = _search(fhir, _total="none", _count="2")
    assert "total" not in bundle and len(bundle["entry"]) == 2
    assert any(link["relation"] == "next" for link in bundle["link"])
    assert _search(fhir, _total="accurate")["total"] == 3
    assert fhir.get("Task", _total="maybe").status_code == 400


def test_offset_pages_and_sort_orders_both_ways(fhir):
    ids = []
    for n in range(4):
        task = _open(fhir, f"s{n}")["Task"]
        _set_last_updated(task["id"], dt.datetime(2026, 1, 1 + n, tzinfo=dt.UTC))
        ids.append(task["id"])

    def order(**params):
        return [e["resource"]["id"] for e in _search(fhir, **params)["entry"]]

    assert order(_sort="_lastUpdated") == ids
    assert order(_sort="-_lastUpdated") == ids[::-1]
    assert order(_sort="_lastUpdated", _count="2", _offset="1") == ids[1:3]
    assert order(_sort="_id") == sorted(ids)
    assert order(_sort="-_id") == sorted(ids, reverse=True)
    response = fhir.get("Task", _sort="status")
    assert response.status_code == 400 and issue_paths(response) == ["_sort"]


def test_elements_keeps_what_was_asked_and_tags_it_subsetted(fhir):
    task = _open(fhir)["Task"]
    entry = _search(fhir, _elements="status,for")["entry"][0]["resource"]
    assert set(entry) == {"resourceType", "id", "meta", "status", "for"}
    assert entry["for"] == task["for"]
    assert any(tag["code"] == "SUBSETTED" for tag in entry["meta"]["tag"])
    whole = _search(fhir)["entry"][0]["resource"]
    assert "tag" not in whole["meta"] or not any(t["code"] == "SUBSETTED" for t in whole["meta"]["tag"])
    assert fhir.get("Task", _elements="status;drop").status_code == 400


def test_an_unknown_parameter_is_400_by_default_and_ignored_when_lenient(fhir):
    _open(fhir)
    response = fhir.get("Task", colour="blue", shape="round", status="requested")
    assert response.status_code == 400
    assert set(issue_paths(response)) == {"colour", "shape"}
    bundle = _search(fhir, headers={"Prefer": "handling=lenient"}, colour="blue", status="requested")
    assert bundle["total"] == 1
    assert _self_params(bundle) == [("status", "requested"), ("_count", "20"), ("_offset", "0")]
    response = fhir.get("Task", headers={"Prefer": "handling=strict"}, colour="blue")
    assert response.status_code == 400
    assert _search(fhir, _pretty="true")["total"] == 1  # a general parameter (R4 http.html), not a filter


def test_the_self_link_lists_exactly_the_parameters_applied(fhir):
    _open(fhir)
    bundle = _search(fhir, status="requested", _include="Task:patient", _sort="-_lastUpdated", _count="150")
    assert _self_params(bundle) == [
        ("status", "requested"), ("_include", "Task:patient"), ("_sort", "-_lastUpdated"),
        ("_count", "150"), ("_offset", "0"),
    ]
    # Over the server's maximum is refused, not cut (README "Limits"): the client learns what it asked is not
    # what it would get.
    assert fhir.get("Task", _count="500").status_code == 400


def test_network_search_follows_the_same_rules(fhir):
    role_make(credentials=("acsm-cep",), at=SPRINGFIELD, state="IL", fhir_id="cep-a")
    role_make(credentials=("acsm-cep",), at=SPRINGFIELD, state="IL", fhir_id="cep-b")
    assert fhir.get("PractitionerRole", _include="PractitionerRole:practitioner").status_code == 400
    assert fhir.get("PractitionerRole", _sort="_id").status_code == 400
    assert fhir.get("PractitionerRole", **{"active:not": "true"}).status_code == 400
    bundle = _search(fhir, "PractitionerRole", _count="1")
    assert bundle["total"] == 2 and len(bundle["entry"]) == 1
    assert any(link["relation"] == "next" for link in bundle["link"])
    assert "entry" not in _search(fhir, "PractitionerRole", _summary="count")
    subset = _search(fhir, "PractitionerRole", _elements="active")["entry"][0]["resource"]
    assert set(subset) == {"resourceType", "id", "meta", "active"}
    lenient = _search(fhir, "PractitionerRole", headers={"Prefer": "handling=lenient"}, _include="PractitionerRole:practitioner")
    assert lenient["total"] == 2


def test_the_capability_statement_lists_what_search_applies(fhir):
    statement = json_of(fhir.get("metadata"))
    task = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Task")
    params = {p["name"]: p for p in task["searchParam"]}
    assert params["_lastUpdated"]["type"] == "date"
    assert ":not" in params["status"]["documentation"] and ":missing" in params["part-of"]["documentation"]
    assert ":text" in params["code"]["documentation"] and ":text" in params["business-status"]["documentation"]
    assert ":text" not in params["status"]["documentation"]  # a code has no text to search
    assert set(task["searchInclude"]) == {"Task:focus", "Task:patient", "Task:part-of"}
    assert task["searchRevInclude"] == ["Task:part-of"]
    # Every declared modifier is accepted, every declared include answers.
    for name, param in params.items():
        for modifier in ("missing", "not", "text"):
            if f":{modifier}" in param.get("documentation", ""):
                value = "true" if modifier == "missing" else "x"
                assert fhir.get("Task", **{f"{name}:{modifier}": value}).status_code == 200, (name, modifier)
    for value in task["searchInclude"]:
        assert fhir.get("Task", _include=value).status_code == 200


def test_postgresql_keeps_joint_statistics_on_the_token_lookup(fhir):
    # Without them the planner takes the columns as independent and underestimates a common token by 30x,
    # hashing every such token instead of looping over the few resources a date range selects (0009).
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's extended statistics")
    _coded_request(fhir, "t1", "Cardiac rehabilitation", "Counseling")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE fhir_bridge_searchtoken")
        cursor.execute(
            "SELECT stxkind FROM pg_statistic_ext WHERE stxname = 'search_token_lookup_stats'"
            " AND stxrelid = 'fhir_bridge_searchtoken'::regclass"
        )
        kinds = cursor.fetchone()
        cursor.execute(
            "SELECT count(*) FROM pg_stats_ext WHERE statistics_name = 'search_token_lookup_stats'"
            " AND most_common_vals IS NOT NULL"
        )
        filled = cursor.fetchone()[0]
    assert kinds is not None and set(kinds[0]) >= {"m", "f"}
    assert filled == 1
