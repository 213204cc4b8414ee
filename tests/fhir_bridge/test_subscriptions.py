"""Subscriptions Backport 1.1.0 with the Task topic: parsing what clients post, matching Tasks, and rendering
notifications that parse as R4B and have the shape of the backport's own examples."""

import copy
import datetime as dt
import json
from pathlib import Path

import pytest

from fhir_bridge.examples import example as load_example
from fhir_bridge.fhir import structural_issues
from fhir_bridge.profiles import Issue
from fhir_bridge.subscriptions import (
    FILTER_CRITERIA_URL,
    HEARTBEAT_PERIOD_URL,
    MAX_COUNT_URL,
    PAYLOAD_CONTENT_URL,
    TASK_TOPIC,
    TIMEOUT_URL,
    Filter,
    NotificationEvent,
    SubscriptionRequest,
    events_range,
    filters_from_json,
    filters_to_json,
    notification_bundle,
    notification_issues,
    status_bundle,
    status_parameters,
    subscription_parse,
    task_matches,
)

BACKPORT = Path(__file__).parent / "backport"
BASE = "https://hub.example.org/fhir"
WHEN = dt.datetime(2024, 3, 5, 14, 30, 0, 123000, tzinfo=dt.UTC)


def _backport(name: str) -> dict:
    return json.loads((BACKPORT / name).read_text())


def _task_subscription(**changes) -> dict:
    """The backport's admission example, asking for the Task topic instead."""
    resource = _backport("Subscription-subscription-admission.json")
    resource["criteria"] = TASK_TOPIC
    resource["_criteria"]["extension"][0]["valueString"] = "Task?status=requested,accepted"
    resource["channel"]["header"] = ["Authorization: Bearer secret-token"]
    resource.update(changes)
    return resource


def _paths(result) -> list[str]:
    assert isinstance(result, list), result
    return [issue.expression for issue in result]


# --- Parsing ---------------------------------------------------------------------------------------------------


def test_the_pa_igs_own_example_is_taken_as_the_task_topic_with_its_query():
    request = subscription_parse(load_example("Subscription-Scen2SubscriptionEhr"))

    assert isinstance(request, SubscriptionRequest)
    assert (request.topic, request.criteria_form) == (TASK_TOPIC, "query")
    assert request.filters == (
        Filter("requester", "", ("https://registry.example.org/fhir/Organization/Scen2OrgGoodCardio",)),
    )
    assert (request.channel_type, request.endpoint) == ("rest-hook", "https://goodCardio.example.org/mySubscriptions")
    assert (request.payload_mime, request.payload_content) == ("application/fhir+json", "id-only")
    assert request.status == "requested" and request.end == "2024-01-01T00:00:00Z"


def test_the_backport_form_reads_filters_channel_headers_heartbeat_timeout_and_max_count():
    resource = _task_subscription()
    resource["_criteria"]["extension"].append({"url": FILTER_CRITERIA_URL, "valueString": "owner=Organization/hub"})

    request = subscription_parse(resource)

    assert isinstance(request, SubscriptionRequest), request
    assert request.criteria_form == "topic"
    assert request.filters == (
        Filter("status", "", ("requested", "accepted")), Filter("owner", "", ("Organization/hub",)))
    assert request.filter_criteria() == ["Task?status=requested,accepted", "Task?owner=Organization/hub"]
    assert request.headers == (("Authorization", "Bearer secret-token"),)
    assert (request.heartbeat_period, request.timeout, request.max_count) == (86400, 60, 20)


def test_the_backports_admission_example_is_refused_for_its_topic():
    result = subscription_parse(_backport("Subscription-subscription-admission.json"))

    assert _paths(result) == ["Subscription.criteria"]
    assert result[0].code == "not-supported" and TASK_TOPIC in result[0].diagnostics


@pytest.mark.parametrize(
    "change, path, code",
    [
        (lambda r: r.update(criteria="http://example.org/SubscriptionTopic/other"), "Subscription.criteria",
         "not-supported"),
        (lambda r: r.update(criteria="Patient?name=x"), "Subscription.criteria", "not-supported"),
        (lambda r: r.update(criteria="Task?patient=Patient/1"), "Subscription.criteria", "not-supported"),
        (lambda r: r.update(criteria="Task?status="), "Subscription.criteria", "value"),
        (lambda r: r.update(criteria="Task?status:above=x"), "Subscription.criteria", "not-supported"),
        (lambda r: r.update(criteria="Task?owner:missing=maybe"), "Subscription.criteria", "value"),
        (lambda r: r.update(criteria="Task?_lastUpdated=yesterday"), "Subscription.criteria", "value"),
        (lambda r: r["_criteria"]["extension"][0].update(valueString="Task?focus=ServiceRequest/1"),
         "Subscription.criteria.extension[0].valueString", "not-supported"),
        (lambda r: r["_criteria"]["extension"][0].update(valueString="Encounter?status=x"),
         "Subscription.criteria.extension[0].valueString", "not-supported"),
        (lambda r: r["channel"].update(type="websocket"), "Subscription.channel.type", "not-supported"),
        (lambda r: r["channel"].update(type="message"), "Subscription.channel.type", "not-supported"),
        (lambda r: r["channel"]["_payload"]["extension"][0].update(valueCode="everything"),
         "Subscription.channel.payload.extension[0].valueCode", "code-invalid"),
        (lambda r: r["channel"].update(payload="application/fhir+xml"), "Subscription.channel.payload",
         "not-supported"),
        (lambda r: r["channel"].update(endpoint="ftp://example.org/x"), "Subscription.channel.endpoint", "value"),
        (lambda r: r["channel"].update(header=["Host: internal"]), "Subscription.channel.header[0]", "not-supported"),
        (lambda r: r["channel"].update(header=["no colon here"]), "Subscription.channel.header[0]", "value"),
        (lambda r: r["channel"]["extension"][0].update(valueUnsignedInt=5),
         "Subscription.channel.extension[0].valueUnsignedInt", "value"),
        (lambda r: r["channel"]["extension"][1].update(valueUnsignedInt=3600),
         "Subscription.channel.extension[1].valueUnsignedInt", "value"),
        (lambda r: r.update(status="bogus"), "Subscription.status", "code-invalid"),
        (lambda r: r["channel"].update(modifierExtension=[{"url": "http://example.org/x", "valueBoolean": True}]),
         "Subscription.channel.modifierExtension", "not-supported"),
    ],
)
def test_what_the_hub_cannot_honour_is_an_issue_at_its_element(change, path, code):
    resource = _task_subscription()
    change(resource)

    result = subscription_parse(resource)

    assert _paths(result) == [path]
    assert result[0].code == code and result[0].severity == "error"


def test_an_email_channel_takes_a_mailto_address_and_no_phi():
    resource = _task_subscription()
    resource["channel"] = {
        "type": "email",
        "endpoint": "mailto:referrals@goodhealth.example.org",
        "payload": "text/plain",
        "_payload": {"extension": [{"url": PAYLOAD_CONTENT_URL, "valueCode": "empty"}]},
    }

    request = subscription_parse(resource)
    resource["channel"]["_payload"]["extension"][0]["valueCode"] = "full-resource"
    full = subscription_parse(resource)
    resource["channel"]["_payload"]["extension"][0]["valueCode"] = "id-only"
    resource["channel"]["endpoint"] = "mailto:a@example.org?bcc=b@example.org"
    with_headers = subscription_parse(resource)

    assert isinstance(request, SubscriptionRequest)
    assert (request.channel_type, request.email_address, request.payload_content) == (
        "email", "referrals@goodhealth.example.org", "empty")
    assert _paths(full) == ["Subscription.channel.payload.extension[0].valueCode"]
    assert _paths(with_headers) == ["Subscription.channel.endpoint"]


def test_without_a_payload_a_notification_carries_nothing():
    resource = _task_subscription()
    del resource["channel"]["payload"], resource["channel"]["_payload"]

    assert subscription_parse(resource).payload_content == "empty"


@pytest.mark.parametrize(
    "junk",
    [None, [], "Subscription", {"resourceType": "Task", "status": "requested", "intent": "order"},
     {"resourceType": "Subscription"}, {"resourceType": "Subscription", "status": "requested", "reason": "x"},
     {"resourceType": "Subscription", "status": "requested", "criteria": 7, "channel": {"type": "rest-hook"}},
     {"resourceType": "Subscription", "status": "requested", "criteria": TASK_TOPIC, "channel": []},
     {"resourceType": "Subscription", "status": "requested", "criteria": TASK_TOPIC,
      "_criteria": {"extension": [{"url": FILTER_CRITERIA_URL}]}, "channel": {"type": "rest-hook"}}],
)
def test_junk_is_reported_not_raised(junk):
    result = subscription_parse(copy.deepcopy(junk))

    assert isinstance(result, list) and result
    assert all(isinstance(issue, Issue) and issue.expression for issue in result)


# --- Matching --------------------------------------------------------------------------------------------------


def _task(**changes) -> dict:
    task = load_example("Task-Scen2TaskFit4LifeV2")
    task["meta"] = {"versionId": "3", "lastUpdated": "2024-03-05T14:30:00Z"}
    task.update(changes)
    return task


def _filters(query: str) -> tuple[Filter, ...]:
    request = subscription_parse(_task_subscription(criteria=f"Task?{query}", _criteria=None))
    assert isinstance(request, SubscriptionRequest), request
    return request.filters


@pytest.mark.parametrize(
    "query, matches",
    [
        ("status=accepted", True), ("status=requested,accepted", True), ("status=requested", False),
        ("status:not=accepted", False), ("status:not=requested", True),
        ("code=fulfill", True), ("code=http://hl7.org/fhir/CodeSystem/task-code|fulfill", True),
        ("code=http://hl7.org/fhir/CodeSystem/task-code|", True), ("code=http://example.org|fulfill", False),
        ("code=|fulfill", False), ("code:not=fulfill", False),
        ("owner=Organization/Scen2OrgFit4Life", True),
        ("owner=https://elsewhere.example.org/fhir/Organization/Scen2OrgFit4Life", True),
        ("owner=Scen2OrgFit4Life", True), ("owner=Organization/Other", False),
        ("owner=PractitionerRole/Scen2OrgFit4Life", False),
        ("requester=https://registry.example.org/fhir/Organization/Scen2OrgGoodCardio", True),
        ("requester:missing=true", False), ("requester:missing=false", True),
        ("_id=Scen2TaskFit4LifeV2", True), ("_id=other,Scen2TaskFit4LifeV2", True), ("_id=other", False),
        ("_lastUpdated=2024-03-05", True), ("_lastUpdated=ge2024-03-05T14:30:00Z", True),
        ("_lastUpdated=gt2024-03-05T14:30:00Z", False), ("_lastUpdated=lt2024-03-06", True),
        ("_lastUpdated=lt2024-03-05", False), ("_lastUpdated=le2024-03", True), ("_lastUpdated=ne2024", False),
        ("_lastUpdated=sa2024-03-04", True), ("_lastUpdated=eb2024-03-05T14:00:00%2B00:00", False),
        ("status=accepted&owner=Organization/Scen2OrgFit4Life", True),
        ("status=accepted&owner=Organization/Other", False),
    ],
)
def test_a_task_matches_its_filters(query, matches):
    assert task_matches(_filters(query), _task()) is matches


def test_the_topic_leaves_out_drafts_and_tasks_that_are_not_orders():
    assert task_matches((), _task()) is True
    assert task_matches((), _task(status="draft")) is False
    assert task_matches((), _task(intent="plan")) is False


def test_filters_round_trip_through_json():
    filters = _filters("status:not=draft&owner=Organization/hub&_lastUpdated=ge2024-01-01")

    assert filters_from_json(json.loads(json.dumps(filters_to_json(filters)))) == filters


# --- Rendering -------------------------------------------------------------------------------------------------


def _skeleton(bundle: dict) -> dict:
    """The shape the backport fixes: the Bundle's type and profile, each entry's parts, and the status
    parameters' names and value types in order."""
    parameters = bundle["entry"][0]["resource"]
    return {
        "type": bundle["type"],
        "profile": bundle["meta"]["profile"],
        "entries": [  # the focus differs (their Encounter, our Task): its type is left out
            (sorted(entry), entry.get("request", {}).get("method"), entry.get("response", {}).get("status"),
             entry.get("resource", {}).get("resourceType") if index == 0 else None)
            for index, entry in enumerate(bundle["entry"])
        ],
        "status_profile": parameters["meta"]["profile"],
        "parameters": [
            (p["name"], sorted(k for k in p if k != "name" and k != "part"),
             [(part["name"], sorted(k for k in part if k != "name")) for part in p.get("part", [])])
            for p in parameters["parameter"]
        ],
    }


def _render(type_, content, *, events=(), status="active", since=2, errors=()):
    return notification_bundle(
        base_url=BASE, subscription_id="sub-1", status=status, type=type_, events_since_start=since,
        content=content, events=events, errors=errors, timestamp=WHEN,
    )


def _event(number=2, created=False):
    return NotificationEvent(number, WHEN, _task(), created=created)


@pytest.mark.parametrize(
    "example, rendered",
    [
        ("handshake", lambda: _render("handshake", "id-only", status="requested", since=0)),
        ("heartbeat", lambda: _render("heartbeat", "id-only")),
        ("id-only", lambda: _render("event-notification", "id-only", events=[_event()])),
        ("full-resource", lambda: _render("event-notification", "full-resource", events=[_event(created=True)])),
        ("error", lambda: _render("query-status", "id-only", status="error", since=3, errors=["no-response"])),
    ],
)
def test_notifications_have_the_shape_of_the_backports_examples(example, rendered):
    ours = rendered()
    theirs = _backport(f"Bundle-r4-notification-{example}.json")

    assert notification_issues(ours) == []
    assert notification_issues(theirs) == []
    ours_shape, theirs_shape = _skeleton(ours), _skeleton(theirs)
    if example == "id-only":
        # The backport's id-only example has the status entry only; the payloads page lets (and the hub chooses
        # to) add an entry per focus with its fullUrl and request, and no resource.
        assert ours_shape["entries"][1] == (["fullUrl", "request", "response"], "PUT", "200", None)
        ours_shape["entries"] = ours_shape["entries"][:1]
    assert ours_shape == theirs_shape


def test_an_empty_notification_names_no_resource():
    bundle = _render("event-notification", "empty", events=[_event(5)], since=5)

    assert notification_issues(bundle) == []
    assert len(bundle["entry"]) == 1
    names = [p["name"] for p in bundle["entry"][0]["resource"]["parameter"]]
    assert "topic" not in names  # SHOULD NOT with empty payloads
    (event,) = [p for p in bundle["entry"][0]["resource"]["parameter"] if p["name"] == "notification-event"]
    assert [part["name"] for part in event["part"]] == ["event-number", "timestamp"]
    assert "Scen2TaskFit4LifeV2" not in json.dumps(bundle)


def test_an_event_notification_carries_the_numbers_focus_and_task_version():
    bundle = _render("event-notification", "full-resource", events=[_event(7), _event(8)], since=8)

    parameters = bundle["entry"][0]["resource"]["parameter"]
    events = [p for p in parameters if p["name"] == "notification-event"]
    assert [e["part"][0]["valueString"] for e in events] == ["7", "8"]
    assert events[0]["part"][1]["valueInstant"] == "2024-03-05T14:30:00.123Z"
    assert events[0]["part"][2]["valueReference"]["reference"] == f"{BASE}/Task/Scen2TaskFit4LifeV2"
    assert {"name": "events-since-subscription-start", "valueString": "8"} in parameters
    assert bundle["entry"][0]["request"]["url"] == f"{BASE}/Subscription/sub-1/$status"
    assert [e["fullUrl"] for e in bundle["entry"][1:]] == [f"{BASE}/Task/Scen2TaskFit4LifeV2"] * 2
    assert bundle["entry"][1]["resource"]["id"] == "Scen2TaskFit4LifeV2"
    assert bundle["entry"][1]["response"] == {"status": "200", "etag": 'W/"3"', "lastModified": "2024-03-05T14:30:00Z"}


def test_it_matches_the_pa_igs_notification_example():
    pa = load_example("Bundle-Scen2NotificationCompletedTaskBundle")
    ours = notification_bundle(
        base_url="https://goodCardio.example.org/fhir", subscription_id="Scen2SubscriptionEhr", status="active",
        type="event-notification", events_since_start=916, content="id-only",
        events=[NotificationEvent(916, WHEN, {"resourceType": "Task", "id": "Scen2TaskFit4LifeV3"})], timestamp=WHEN,
    )

    def values(bundle):
        found = {}
        for p in bundle["entry"][0]["resource"]["parameter"]:
            for item in [p, *p.get("part", [])]:
                for key, value in item.items():
                    if key.startswith("value"):
                        is_reference = isinstance(value, dict)
                        found[item["name"]] = value.get("reference", "").split("fhir/")[-1] if is_reference else value
        return found

    theirs = values(pa)
    assert {k: v for k, v in values(ours).items() if k in theirs} == theirs
    assert ours["entry"][0]["request"] == pa["entry"][0]["request"]
    assert ours["type"] == pa["type"] == "history"


def test_a_handshake_or_heartbeat_carries_no_event_and_events_come_in_order():
    with pytest.raises(ValueError):
        _render("handshake", "id-only", events=[_event()])
    with pytest.raises(ValueError):
        _render("event-notification", "id-only", events=[_event(3), _event(2)])
    with pytest.raises(ValueError):
        _render("event-notification", "full-resource",
                events=[NotificationEvent(1, WHEN, {"id": "x"})])


def test_status_for_the_status_operation_is_a_searchset_of_parameters():
    statuses = [
        status_parameters(base_url=BASE, subscription_id=sid, status=status, type="query-status",
                          events_since_start=count)
        for sid, status, count in (("a", "active", 4), ("b", "error", 9))
    ]

    bundle = status_bundle(statuses, timestamp=WHEN)

    assert structural_issues(bundle, path="Bundle") == []
    assert (bundle["type"], bundle["total"]) == ("searchset", 2)
    assert [e["resource"]["parameter"][2] for e in bundle["entry"]] == [
        {"name": "status", "valueCode": "active"}, {"name": "status", "valueCode": "error"}]


def test_events_replays_a_range_as_a_query_event_bundle():
    first, last = events_range("3", "5", events_since_start=9)
    bundle = _render("query-event", "id-only", events=[_event(n) for n in range(first, last + 1)], since=9)

    assert notification_issues(bundle) == []
    numbers = [p["part"][0]["valueString"] for p in bundle["entry"][0]["resource"]["parameter"]
               if p["name"] == "notification-event"]
    assert numbers == ["3", "4", "5"]
    assert {"name": "type", "valueCode": "query-event"} in bundle["entry"][0]["resource"]["parameter"]


@pytest.mark.parametrize(
    "since, until, total, max_count, expected",
    [
        (None, None, 9, None, (1, 9)), ("4", None, 9, None, (4, 9)), (None, "3", 9, None, (1, 3)),
        ("0", "99", 9, None, (1, 9)), ("9", "99", 3, None, (9, 8)), ("1", None, 0, None, (1, 0)),
        ("2", None, 9, 3, (2, 4)),
    ],
)
def test_the_events_range_is_clipped_to_the_events_there_are(since, until, total, max_count, expected):
    assert events_range(since, until, events_since_start=total, max_count=max_count) == expected


def test_a_bad_events_number_is_an_issue():
    result = events_range("two", "-1", events_since_start=9)

    assert [issue.expression for issue in result] == ["eventsSinceNumber", "eventsUntilNumber"]


@pytest.mark.parametrize("since, until", [("5", "2"), ("²", None), ("10", "0")])
def test_a_since_after_its_until_or_a_digit_of_another_script_is_an_issue_not_an_empty_range(since, until):
    # Before: 5..2 answered an empty Bundle, and "²" (str.isdigit, but not int()) a 500.
    result = events_range(since, until, events_since_start=9)

    assert [issue.expression for issue in result] == ["eventsSinceNumber"]
