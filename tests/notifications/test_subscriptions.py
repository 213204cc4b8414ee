"""FHIR Subscriptions end to end: what a clinic posts, the handshake and heartbeats it receives, its numbered
notifications in order (to a real HTTP receiver and a real SMTP server), $status and $events, and each
clinic seeing only its own."""

import copy
import datetime as dt
import json

import pytest
from django.utils import timezone

from fhir_bridge.examples import example as load_example
from fhir_bridge.models import StoredResource
from fhir_bridge.subscriptions import (
    FILTER_CRITERIA_URL,
    HEARTBEAT_PERIOD_URL,
    PAYLOAD_CONTENT_URL,
    TASK_TOPIC,
    notification_issues,
)
from notifications.models import Delivery, FollowUp, Subscription
from notifications.outbox import events_fan_out
from referrals.offers import offer_accept, referral_route
from tests.conftest import issue_paths, json_of
from tests.network.factories import km_north, referral_make, role_make
from tests.notifications.conftest import drain
from tests.referrals.conftest import CARDIAC_PATIENT

pytestmark = pytest.mark.django_db


def pa_ig_example(endpoint: str) -> dict:
    """The PA IG's own Subscription (plain R4 criteria), pointed at ``endpoint`` and at the test's requester, and
    ending a year from now: its own end (2024-01-01) has passed, and the hub refuses a subscription that would be
    off before it starts (test_an_end_already_past_is_refused_naming_it)."""
    resource = load_example("Subscription-Scen2SubscriptionEhr")
    resource["criteria"] = "Task?requester=Practitioner/test-physician"
    resource["channel"]["endpoint"] = endpoint
    resource["end"] = (timezone.now() + dt.timedelta(days=365)).isoformat()
    return resource


def backport_form(endpoint: str, *, content="id-only", criteria=("status=accepted",), heartbeat=None,
                  headers=("Authorization: Bearer s3cret",)) -> dict:
    channel = {
        "type": "rest-hook",
        "endpoint": endpoint,
        "payload": "application/fhir+json",
        "_payload": {"extension": [{"url": PAYLOAD_CONTENT_URL, "valueCode": content}]},
        "header": list(headers),
    }
    if heartbeat:
        channel["extension"] = [{"url": HEARTBEAT_PERIOD_URL, "valueUnsignedInt": heartbeat}]
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "Referral updates",
        "criteria": TASK_TOPIC,
        "_criteria": {"extension": [{"url": FILTER_CRITERIA_URL, "valueString": f"Task?{c}"} for c in criteria]},
        "channel": channel,
    }


def status_of(bundle: dict) -> dict:
    """The SubscriptionStatus parameters of a Bundle's first entry, by name."""
    found = {"notification-event": []}
    for parameter in bundle["entry"][0]["resource"]["parameter"]:
        if parameter["name"] == "notification-event":
            found["notification-event"].append({p["name"]: p for p in parameter["part"]})
        else:
            found[parameter["name"]] = next(v for k, v in parameter.items() if k.startswith("value"))
    return found


def bodies(receiver) -> list[dict]:
    return [json.loads(r.body) for r in receiver.requests]


def subscribe(fhir, resource) -> dict:
    response = fhir.post("Subscription", resource)
    assert response.status_code == 201, response.content
    return json_of(response)


def route_and_accept(clinic):
    referral = referral_make(clinic, patient_name="Ann Example")
    offer = referral_route(referral=referral, patient=CARDIAC_PATIENT).offer
    offer_accept(offer=offer)
    return referral, offer


# --- Creating one ----------------------------------------------------------------------------------------------


def test_the_pa_igs_example_is_created_handshaken_and_then_active(fhir, http_receiver, dispatched):
    created = subscribe(fhir, pa_ig_example(f"{http_receiver.url}/hook"))

    assert created["status"] == "requested" and created["id"]
    row = Subscription.objects.get(fhir_id=created["id"])
    assert (row.channel, row.payload, row.status) == ("rest-hook", "id-only", "requested")
    assert row.filter_criteria == [{"name": "requester", "modifier": "", "values": ["Practitioner/test-physician"]}]

    drain(timezone.now())
    [handshake] = http_receiver.requests
    assert handshake.path == "/hook" and handshake.headers["content-type"] == "application/fhir+json"
    bundle = json.loads(handshake.body)
    assert not notification_issues(bundle) and bundle["type"] == "history"
    status = status_of(bundle)
    assert (status["type"], status["status"], status["events-since-subscription-start"]) == ("handshake", "requested", "0")
    assert status["subscription"]["reference"] == f"http://testserver/fhir/Subscription/{created['id']}"

    read = json_of(fhir.get(f"Subscription/{created['id']}"))
    assert read["status"] == "active" and read["channel"]["endpoint"] == f"{http_receiver.url}/hook"
    assert read["criteria"] == "Task?requester=Practitioner/test-physician"


def test_every_channel_header_is_sent_and_a_failed_handshake_is_an_error(fhir, http_receiver, dispatched):
    http_receiver.fail(503)
    created = subscribe(fhir, backport_form(f"{http_receiver.url}/hook",
                                            headers=("Authorization: Bearer s3cret", "X-Clinic: good-health")))
    drain(timezone.now())

    [attempt] = http_receiver.requests
    assert attempt.headers["authorization"] == "Bearer s3cret" and attempt.headers["x-clinic"] == "good-health"
    assert json_of(fhir.get(f"Subscription/{created['id']}"))["status"] == "error"
    http_receiver.recover()
    [delivery] = Delivery.objects.filter(notification_type="handshake")
    drain(delivery.next_attempt_at)
    assert json_of(fhir.get(f"Subscription/{created['id']}"))["status"] == "active"


@pytest.mark.parametrize(
    "change, path",
    [
        (lambda r: r.update(criteria="http://example.org/SubscriptionTopic/other"), "Subscription.criteria"),
        (lambda r: r["_criteria"]["extension"][0].update(valueString="Task?priority=urgent"), "Subscription.criteria"),
        # No Task has that status: a subscription that could never be told anything.
        (lambda r: r["_criteria"]["extension"][0].update(valueString="Task?status=accepted,notastatus"),
         "Subscription.criteria"),
        (lambda r: r["channel"].update(type="websocket"), "Subscription.channel.type"),
        (lambda r: r["channel"]["_payload"]["extension"][0].update(valueCode="everything"),
         "Subscription.channel.payload.extension[0].valueCode"),
    ],
)
def test_what_the_hub_cannot_honour_is_refused_naming_the_element(fhir, http_receiver, change, path):
    resource = backport_form(f"{http_receiver.url}/hook")
    change(resource)

    response = fhir.post("Subscription", resource)

    assert response.status_code in (400, 422)
    assert json_of(response)["resourceType"] == "OperationOutcome"
    assert any(p.startswith(path.split("[")[0]) for p in issue_paths(response)), issue_paths(response)
    assert not Subscription.objects.exists()


@pytest.mark.parametrize("endpoint", ["http://10.1.2.3/hook", "http://169.254.169.254/latest", "ftp://x.org/"])
def test_an_endpoint_the_hub_will_not_reach_is_refused_at_creation(fhir, endpoint):
    response = fhir.post("Subscription", backport_form(endpoint))

    assert response.status_code in (400, 422)
    assert issue_paths(response) == ["Subscription.channel.endpoint"]
    assert not Subscription.objects.exists()


def test_plain_http_is_refused_in_production_and_https_is_asked_for(fhir, settings):
    settings.HUB_OUTBOUND_ALLOW = ["127.0.0.1"]  # loopback allowed, but not over plain http (and DEBUG is off)

    response = fhir.post("Subscription", backport_form("http://127.0.0.1:9/hook"))

    assert response.status_code == 422 and issue_paths(response) == ["Subscription.channel.endpoint"]
    assert "https" in json_of(response)["issue"][0]["diagnostics"]


def test_junk_is_an_outcome_never_a_500(fhir):
    for body in (b"{", b"[]", json.dumps({"resourceType": "Subscription"}).encode(),
                 json.dumps({"resourceType": "Subscription", "status": "active", "criteria": 7}).encode()):
        response = fhir.post("Subscription", body)
        assert response.status_code in (400, 422), body
        assert json_of(response)["resourceType"] == "OperationOutcome"


# --- Reading and searching -------------------------------------------------------------------------------------


def test_read_and_search_by_url_status_and_id_see_only_the_clinics_own(fhir, other_fhir, http_receiver, dispatched):
    mine = subscribe(fhir, backport_form(f"{http_receiver.url}/mine"))
    second = subscribe(fhir, backport_form(f"{http_receiver.url}/second"))
    theirs = subscribe(other_fhir, backport_form(f"{http_receiver.url}/theirs"))
    drain(timezone.now())  # handshakes: all active

    def ids(**params):
        bundle = json_of(fhir.get("Subscription", **params))
        assert bundle["type"] == "searchset" and bundle["total"] == len(bundle["entry"])
        return sorted(e["resource"]["id"] for e in bundle["entry"])

    assert ids() == sorted([mine["id"], second["id"]])
    assert ids(url=f"{http_receiver.url}/mine") == [mine["id"]]
    assert ids(status="active") == sorted([mine["id"], second["id"]]) and ids(status="requested") == []
    assert ids(_id=second["id"]) == [second["id"]]
    assert ids(_id=theirs["id"]) == [] and ids(url=f"{http_receiver.url}/theirs") == []
    assert fhir.get(f"Subscription/{theirs['id']}").status_code == 404
    assert fhir.get(f"Subscription/{theirs['id']}/$status").status_code == 404
    assert fhir.get("Subscription", bogus="1").status_code == 400


def test_subscription_is_in_the_capability_statement_with_its_operations(fhir):
    statement = json_of(fhir.get("metadata"))
    [entry] = [r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription"]

    assert {i["code"] for i in entry["interaction"]} == {"create", "read", "update", "delete", "search-type"}
    assert {p["name"] for p in entry["searchParam"]} == {"_id", "url", "status"}
    assert {o["name"] for o in entry["operation"]} == {"status", "events"}
    assert entry["versioning"] == "versioned" and entry["readHistory"] is False
    for promised in ("end is honoured", "If-Match", "_total", "_summary", "_elements", "410 Gone"):
        assert promised in entry["documentation"], promised


# --- Notifications, $status and $events ------------------------------------------------------------------------


def test_a_full_resource_notification_carries_the_task_version_the_change_produced(fhir, clinic, http_receiver,
                                                                                    dispatched):
    role_make(at=km_north(1))
    subscribe(fhir, backport_form(f"{http_receiver.url}/hook", content="full-resource", criteria=()))
    referral, _ = route_and_accept(clinic)
    events_fan_out()
    drain(timezone.now())

    handshake, *events = bodies(http_receiver)
    assert status_of(handshake)["type"] == "handshake"
    numbers = [int(status_of(b)["events-since-subscription-start"]) for b in events]
    assert numbers == [1, 2, 3]  # created, routed, accepted: one each
    tasks = [b["entry"][1]["resource"] for b in events]
    assert [t["meta"]["versionId"] for t in tasks] == ["1", "2", "3"]
    assert [t["businessStatus"]["coding"][0]["code"] for t in tasks][1:] == ["offered", "accepted"]
    assert all(not notification_issues(b) for b in events)
    assert [b["entry"][1]["request"]["method"] for b in events] == ["POST", "PUT", "PUT"]


def test_status_and_events_replay_any_range(fhir, clinic, http_receiver, dispatched):
    role_make(at=km_north(1), max_active_cases=5)
    created = subscribe(fhir, backport_form(f"{http_receiver.url}/hook", criteria=()))
    route_and_accept(clinic)
    route_and_accept(clinic)
    events_fan_out()
    drain(timezone.now())
    sub_id = created["id"]

    status = json_of(fhir.get(f"Subscription/{sub_id}/$status"))
    assert status["type"] == "searchset" and status["total"] == 1
    parameters = {p["name"]: p for p in status["entry"][0]["resource"]["parameter"]}
    assert parameters["status"]["valueCode"] == "active"
    assert parameters["events-since-subscription-start"]["valueString"] == "6"
    assert parameters["type"]["valueCode"] == "query-status"
    server_wide = json_of(fhir.get("Subscription/$status"))
    assert server_wide["total"] == 1

    replay = json_of(fhir.get(f"Subscription/{sub_id}/$events", eventsSinceNumber="2", eventsUntilNumber="4"))
    assert replay["type"] == "history" and not notification_issues(replay)
    replayed = status_of(replay)
    assert replayed["type"] == "query-event"
    assert [e["event-number"]["valueString"] for e in replayed["notification-event"]] == ["2", "3", "4"]
    # The same focus as the notifications that carried those numbers.
    sent = {int(status_of(b)["events-since-subscription-start"]): b for b in bodies(http_receiver)[1:]}
    assert [e["fullUrl"] for e in replay["entry"][1:]] == [sent[n]["entry"][1]["fullUrl"] for n in (2, 3, 4)]
    assert [e["response"]["etag"] for e in replay["entry"][1:]] == [sent[n]["entry"][1]["response"]["etag"]
                                                                     for n in (2, 3, 4)]
    everything = json_of(fhir.get(f"Subscription/{sub_id}/$events"))
    assert len(status_of(everything)["notification-event"]) == 6
    bad = fhir.get(f"Subscription/{sub_id}/$events", eventsSinceNumber="two")
    assert bad.status_code == 400 and issue_paths(bad) == ["eventsSinceNumber"]
    backwards = fhir.get(f"Subscription/{sub_id}/$events", eventsSinceNumber="4", eventsUntilNumber="2")
    assert backwards.status_code == 400 and issue_paths(backwards) == ["eventsSinceNumber"]
    for path in ("Subscription/$status", f"Subscription/{sub_id}/$status", "Subscription"):
        bogus = fhir.get(path, status="bogus")
        assert bogus.status_code == 400 and issue_paths(bogus) == ["status"], path
    assert len(json_of(fhir.get("Subscription/$status", status="active,requested"))["entry"]) == 1
    for body in ([None, None], "null"):  # before: ignored, and a 200 (found by schemathesis)
        not_parameters = fhir.post("Subscription/$status", body)
        assert not_parameters.status_code == 400 and issue_paths(not_parameters) == ["Parameters"]


def test_delivery_is_in_event_number_order_and_resumes_when_the_receiver_answers(fhir, clinic, http_receiver,
                                                                                 dispatched, settings):
    settings.HUB_DELIVERY_MAX_ATTEMPTS = 50
    role_make(at=km_north(1), max_active_cases=5)
    created = subscribe(fhir, backport_form(f"{http_receiver.url}/hook", criteria=()))
    drain(timezone.now())  # the handshake
    http_receiver.fail(503)
    route_and_accept(clinic)
    events_fan_out()
    now = timezone.now()
    for _ in range(4):
        drain(now)
        now += dt.timedelta(hours=7)  # past the longest backoff
    # Only event 1 was tried while failing: the later ones wait for it.
    tried = {int(status_of(b)["events-since-subscription-start"]) for b in bodies(http_receiver)[1:]}
    assert tried == {1}
    assert json_of(fhir.get(f"Subscription/{created['id']}"))["status"] == "error"
    assert Subscription.objects.get().error_count >= 3  # and it keeps counting

    http_receiver.recover()
    drain(now)
    delivered = [int(status_of(json.loads(r.body))["events-since-subscription-start"])
                 for r in http_receiver.delivered()[1:]]
    assert delivered == [1, 2, 3]
    assert json_of(fhir.get(f"Subscription/{created['id']}"))["status"] == "active"


def test_a_permanent_refusal_is_dead_at_once_and_the_next_number_goes_on(fhir, clinic, http_receiver, dispatched):
    role_make(at=km_north(1))
    subscribe(fhir, backport_form(f"{http_receiver.url}/hook", criteria=()))
    drain(timezone.now())
    http_receiver.fail(410, count=1)
    route_and_accept(clinic)
    events_fan_out()
    drain(timezone.now())

    states = dict(Delivery.objects.exclude(event_number=None).values_list("event_number", "state"))
    assert states == {1: "dead", 2: "delivered", 3: "delivered"}
    assert Delivery.objects.get(event_number=1).attempts == 1


def test_heartbeats_come_at_the_requested_period(fhir, http_receiver, dispatched):
    created = subscribe(fhir, backport_form(f"{http_receiver.url}/hook", heartbeat=3600))
    now = timezone.now()
    drain(now)
    assert len(http_receiver.requests) == 1  # the handshake only

    drain(now + dt.timedelta(minutes=59))
    assert len(http_receiver.requests) == 1
    drain(now + dt.timedelta(minutes=61))
    drain(now + dt.timedelta(minutes=122))
    heartbeats = [status_of(b) for b in bodies(http_receiver)[1:]]
    assert [(h["type"], h["status"]) for h in heartbeats] == [("heartbeat", "active")] * 2
    assert all(h["subscription"]["reference"].endswith(created["id"]) for h in heartbeats)

    Subscription.objects.update(status="off")
    drain(now + dt.timedelta(hours=5))
    assert len(http_receiver.requests) == 3
    assert not FollowUp.objects.filter(kind="subscription-heartbeat", state="pending").exists()


def test_the_email_channel_gets_a_handshake_and_links_without_phi(fhir, clinic, smtp_backend, dispatched):
    role_make(at=km_north(1))
    resource = backport_form("mailto:desk@clinic.test")
    resource["channel"] = {"type": "email", "endpoint": "mailto:desk@clinic.test", "payload": "text/plain"}
    created = subscribe(fhir, resource)
    referral, _ = route_and_accept(clinic)
    events_fan_out()
    drain(timezone.now())

    handshake, accepted = smtp_backend.messages
    assert handshake.rcpt_tos == ["desk@clinic.test"] and created["id"] in handshake.message.get_content()
    text = accepted.message.get_content()
    assert "notification 1" in text and "/fhir/Task/" in text
    assert "Ann Example" not in text and referral.patient_postal_code not in text
    assert json_of(fhir.get(f"Subscription/{created['id']}"))["status"] == "active"


def test_an_email_subscription_cannot_ask_for_full_resources(fhir):
    resource = backport_form("mailto:desk@clinic.test", content="full-resource")
    resource["channel"]["type"] = "email"
    resource["channel"]["payload"] = "text/plain"
    resource["channel"].pop("header")

    response = fhir.post("Subscription", resource)

    assert response.status_code == 422 and not Subscription.objects.exists()


def test_a_subscription_posted_twice_is_two_subscriptions_with_their_own_numbers(fhir, clinic, http_receiver,
                                                                                 dispatched):
    role_make(at=km_north(1))
    first = subscribe(fhir, backport_form(f"{http_receiver.url}/a"))
    second = subscribe(fhir, copy.deepcopy(backport_form(f"{http_receiver.url}/b")))
    route_and_accept(clinic)
    events_fan_out()
    drain(timezone.now())

    assert first["id"] != second["id"]
    by_path = {}
    for r in http_receiver.requests:
        by_path.setdefault(r.path, []).append(status_of(json.loads(r.body))["type"])
    assert by_path == {"/a": ["handshake", "event-notification"], "/b": ["handshake", "event-notification"]}


def test_an_empty_payload_names_no_resource_and_id_only_names_the_task_version(fhir, clinic, http_receiver,
                                                                              dispatched):
    role_make(at=km_north(1))
    subscribe(fhir, backport_form(f"{http_receiver.url}/empty", content="empty"))
    subscribe(fhir, backport_form(f"{http_receiver.url}/ids", content="id-only"))
    referral, _ = route_and_accept(clinic)
    events_fan_out()
    drain(timezone.now())

    [empty] = [json.loads(r.body) for r in http_receiver.requests if r.path == "/empty"][1:]
    [ids] = [json.loads(r.body) for r in http_receiver.requests if r.path == "/ids"][1:]
    assert len(empty["entry"]) == 1 and "Task" not in json.dumps(empty)  # not even the focus
    assert status_of(empty)["notification-event"][0]["event-number"]["valueString"] == "1"
    [entry] = ids["entry"][1:]
    task_id = StoredResource.objects.get(referral=referral, resource_type="Task").fhir_id
    assert "resource" not in entry and entry["fullUrl"] == f"http://testserver/fhir/Task/{task_id}"
    assert entry["response"]["etag"] == 'W/"3"'  # the accepted version: created, routed, accepted
    assert all(not notification_issues(b) for b in (empty, ids))
