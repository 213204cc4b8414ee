"""A clinic manages its own Subscriptions over FHIR: switching one off and on again (a new handshake), moving its
endpoint, changing its filters or end under If-Match, deleting it; the hub switching one off at its ``end``; and
searching them as every other search pages and links."""

import datetime as dt
from urllib.parse import parse_qsl, urlsplit

import pytest
import time_machine
from django.utils import timezone

from fhir_bridge.examples import example as load_example
from fhir_bridge.subscriptions import FILTER_CRITERIA_URL
from notifications.models import Delivery, FollowUp, Subscription
from notifications.outbox import events_fan_out
from tests.conftest import fhir_client_for, issue_paths, json_of
from tests.network.factories import km_north, role_make
from tests.notifications.conftest import drain
from tests.notifications.test_subscriptions import backport_form, bodies, route_and_accept, status_of, subscribe

pytestmark = pytest.mark.django_db


def put(fhir, resource: dict, *, etag: str | None = None, **changes):
    """PUT the Subscription ``resource`` (as read) with ``changes``, under If-Match ``etag`` when given."""
    body = {**resource, **changes}
    return fhir.put(f"Subscription/{resource['id']}", body, headers={"If-Match": etag} if etag else None)


def read(fhir, fhir_id: str):
    response = fhir.get(f"Subscription/{fhir_id}")
    return json_of(response), response


def handshakes(receiver) -> list[dict]:
    return [status_of(b) for b in bodies(receiver) if status_of(b)["type"] == "handshake"]


# --- Update ----------------------------------------------------------------------------------------------------


def test_a_clinic_switches_its_subscription_off_and_then_on_again_with_a_new_handshake(
        fhir, clinic, http_receiver, dispatched):
    role_make(at=km_north(1), max_active_cases=5)
    created = subscribe(fhir, backport_form(f"{http_receiver.url}/hook", criteria=()))
    drain(timezone.now())
    current, response = read(fhir, created["id"])
    assert current["status"] == "active" and response["ETag"] == 'W/"1"'

    off = put(fhir, current, etag=response["ETag"], status="off")

    assert off.status_code == 200, off.content
    assert json_of(off)["status"] == "off" and off["ETag"] == 'W/"2"' and json_of(off)["meta"]["versionId"] == "2"
    route_and_accept(clinic)
    events_fan_out()
    drain(timezone.now())
    assert not Delivery.objects.filter(notification_type="event-notification").exists()  # nothing numbered
    assert len(http_receiver.requests) == 1  # the first handshake only

    on = put(fhir, json_of(off), etag=off["ETag"], status="active")

    assert on.status_code == 200 and json_of(on)["status"] == "requested" and on["ETag"] == 'W/"3"'
    drain(timezone.now())
    assert [h["status"] for h in handshakes(http_receiver)] == ["requested", "requested"]
    assert read(fhir, created["id"])[0]["status"] == "active"
    route_and_accept(clinic)
    events_fan_out()
    drain(timezone.now())
    numbers = [int(status_of(b)["events-since-subscription-start"]) for b in bodies(http_receiver)[2:]]
    assert numbers == [1, 2, 3]  # counted from where it stopped: nothing was numbered while it was off


def test_a_stale_if_match_is_412_and_changes_nothing(fhir, http_receiver, dispatched):
    created = subscribe(fhir, backport_form(f"{http_receiver.url}/hook"))
    current, response = read(fhir, created["id"])
    assert put(fhir, current, etag=response["ETag"], reason="First change").status_code == 200

    stale = put(fhir, current, etag=response["ETag"], status="off")

    assert stale.status_code == 412 and json_of(stale)["resourceType"] == "OperationOutcome"
    row = Subscription.objects.get(fhir_id=created["id"])
    assert (row.status, row.version_id, row.resource["reason"]) == ("requested", 2, "First change")
    assert put(fhir, current, etag='"nonsense').status_code == 400


@pytest.mark.parametrize(
    "change, status, path",
    [
        (lambda r: r["channel"].update(endpoint="http://10.1.2.3/hook"), 422, "Subscription.channel.endpoint"),
        (lambda r: r["_criteria"]["extension"][0].update(valueString="Task?priority=urgent"), 422,
         "Subscription.criteria"),
        (lambda r: r["_criteria"]["extension"][0].update(valueString="Task?_lastUpdated=yesterday"), 422,
         "Subscription.criteria"),
        (lambda r: r["channel"]["_payload"]["extension"][0].update(valueCode="full-resource"), 422,
         "Subscription.channel.payload"),
        (lambda r: r.update(channel={"type": "email", "endpoint": "mailto:desk@clinic.example.org",
                                     "payload": "text/plain"}), 422, "Subscription.channel.type"),
        (lambda r: r.update(status="error"), 422, "Subscription.status"),
        (lambda r: r.update(end="2020-01-01T00:00:00Z"), 422, "Subscription.end"),
        (lambda r: r.update(id="another"), 400, "Subscription.id"),
        (lambda r: r.pop("channel"), 400, "Subscription.channel"),
    ],
)
def test_an_update_is_checked_as_a_create_is_and_a_refused_one_changes_nothing(
        fhir, http_receiver, dispatched, change, status, path):
    created = subscribe(fhir, backport_form(f"{http_receiver.url}/hook"))
    body = read(fhir, created["id"])[0]
    change(body)

    response = fhir.put(f"Subscription/{created['id']}", body)

    assert response.status_code == status, response.content
    assert any(p.startswith(path) for p in issue_paths(response)), issue_paths(response)
    row = Subscription.objects.get(fhir_id=created["id"])
    assert (row.version_id, row.endpoint, row.payload, row.status) == (
        1, f"{http_receiver.url}/hook", "id-only", "requested")
    assert Delivery.objects.filter(notification_type="handshake").count() == 1


def test_new_filters_and_headers_apply_to_the_next_change(fhir, clinic, http_receiver, dispatched):
    role_make(at=km_north(1), max_active_cases=5)
    created = subscribe(fhir, backport_form(f"{http_receiver.url}/hook", criteria=("status=cancelled",)))
    drain(timezone.now())
    body, response = read(fhir, created["id"])
    body["_criteria"]["extension"] = [{"url": FILTER_CRITERIA_URL, "valueString": "Task?status=accepted"}]
    body["channel"]["header"] = ["Authorization: Bearer rotated"]

    changed = put(fhir, body, etag=response["ETag"])

    assert changed.status_code == 200 and json_of(changed)["status"] == "active"  # same endpoint: no handshake
    row = Subscription.objects.get(fhir_id=created["id"])
    assert row.filter_criteria == [{"name": "status", "modifier": "", "values": ["accepted"]}]
    route_and_accept(clinic)
    events_fan_out()
    drain(timezone.now())
    [handshake, accepted] = http_receiver.requests
    assert accepted.headers["authorization"] == "Bearer rotated"
    assert status_of(bodies(http_receiver)[1])["events-since-subscription-start"] == "1"


def test_a_new_endpoint_gets_a_handshake_and_what_the_old_one_did_not_take(fhir, clinic, http_receiver, dispatched):
    role_make(at=km_north(1))
    created = subscribe(fhir, backport_form(f"{http_receiver.url}/old", criteria=("status=accepted",)))
    drain(timezone.now())
    http_receiver.fail(503)
    route_and_accept(clinic)
    events_fan_out()
    drain(timezone.now())
    [event] = Delivery.objects.filter(notification_type="event-notification")
    assert event.state == "pending" and event.endpoint.endswith("/old")
    http_receiver.recover()
    body, response = read(fhir, created["id"])
    body["channel"]["endpoint"] = f"{http_receiver.url}/new"

    moved = put(fhir, body, etag=response["ETag"])

    assert moved.status_code == 200 and json_of(moved)["status"] == "requested"
    drain(timezone.now() + dt.timedelta(hours=1))  # the event's retry falls due
    to_new = [r for r in http_receiver.requests if r.path == "/new"]
    assert [status_of(b)["type"] for b in bodies(http_receiver)[-2:]] == ["handshake", "event-notification"]
    assert len(to_new) == 2
    event.refresh_from_db()
    assert event.state == "delivered" and event.endpoint.endswith("/new")
    assert read(fhir, created["id"])[0]["status"] == "active"


def test_another_clinics_subscription_cannot_be_changed_or_deleted(fhir, other_fhir, http_receiver, dispatched):
    theirs = subscribe(other_fhir, backport_form(f"{http_receiver.url}/theirs"))
    body = {**theirs, "status": "off"}

    assert fhir.put(f"Subscription/{theirs['id']}", body).status_code == 404
    assert fhir.delete(f"Subscription/{theirs['id']}").status_code == 404
    assert fhir.delete("Subscription/never-was").status_code == 404
    row = Subscription.objects.get(fhir_id=theirs["id"])
    assert (row.status, row.version_id, row.deleted_at) == ("requested", 1, None)


def test_delete_needs_the_delete_scope_and_other_types_have_no_delete(ehr_client, http_receiver, dispatched):
    reader = fhir_client_for(ehr_client, "system/Subscription.crus")
    created = subscribe(reader, backport_form(f"{http_receiver.url}/hook"))

    assert reader.delete(f"Subscription/{created['id']}").status_code == 403
    refused = fhir_client_for(ehr_client).delete("Task/x")
    assert refused.status_code == 405 and "DELETE" not in refused["Allow"]
    assert Subscription.objects.get(fhir_id=created["id"]).deleted_at is None


# --- Delete ----------------------------------------------------------------------------------------------------


def test_a_deleted_subscription_is_off_no_longer_served_and_its_deliveries_stay(fhir, clinic, http_receiver,
                                                                                dispatched):
    role_make(at=km_north(1), max_active_cases=5)
    created = subscribe(fhir, backport_form(f"{http_receiver.url}/hook", criteria=()))
    route_and_accept(clinic)
    events_fan_out()
    drain(timezone.now())
    kept = set(Delivery.objects.values_list("pk", "event_number"))

    deleted = fhir.delete(f"Subscription/{created['id']}")

    assert deleted.status_code == 200 and json_of(deleted)["resourceType"] == "OperationOutcome"
    for path in (f"Subscription/{created['id']}", f"Subscription/{created['id']}/$status",
                 f"Subscription/{created['id']}/$events"):
        gone = fhir.get(path)
        assert gone.status_code == 410 and json_of(gone)["issue"][0]["code"] == "deleted", path
    assert fhir.put(f"Subscription/{created['id']}", {**created, "status": "active"}).status_code == 410
    assert json_of(fhir.get("Subscription"))["total"] == 0
    assert json_of(fhir.get("Subscription/$status"))["total"] == 0
    row = Subscription.objects.get(fhir_id=created["id"])
    assert row.status == "off" and row.deleted_at is not None and row.events_since_start == 3
    assert set(Delivery.objects.values_list("pk", "event_number")) == kept
    route_and_accept(clinic)
    events_fan_out()
    assert set(Delivery.objects.values_list("pk", "event_number")) == kept  # nothing numbered for it
    assert fhir.delete(f"Subscription/{created['id']}").status_code == 200  # again: no change
    row.refresh_from_db()
    assert row.version_id == 2


# --- end -------------------------------------------------------------------------------------------------------


def test_an_end_already_past_is_refused_naming_it(fhir, http_receiver):
    resource = load_example("Subscription-Scen2SubscriptionEhr")  # as the PA IG has it: end 2024-01-01
    resource["channel"]["endpoint"] = f"{http_receiver.url}/hook"

    response = fhir.post("Subscription", resource)

    assert response.status_code == 422 and issue_paths(response) == ["Subscription.end"]
    assert "2024-01-01" in json_of(response)["issue"][0]["diagnostics"]
    assert not Subscription.objects.exists()


def test_at_its_end_a_subscription_is_switched_off_its_heartbeats_stop_and_nothing_more_is_numbered(
        ehr_client, clinic, http_receiver, dispatched):
    role_make(at=km_north(1), max_active_cases=5)
    start = timezone.now().replace(microsecond=0)
    end = start + dt.timedelta(minutes=90)
    with time_machine.travel(start, tick=False):
        fhir = fhir_client_for(ehr_client)
        created = subscribe(fhir, {**backport_form(f"{http_receiver.url}/hook", criteria=(), heartbeat=3600),
                                   "end": end.isoformat()})
        drain(start)
    assert Subscription.objects.get(fhir_id=created["id"]).end == end
    with time_machine.travel(start + dt.timedelta(minutes=61), tick=False):
        drain(timezone.now())  # a heartbeat: still on
    assert [status_of(b)["type"] for b in bodies(http_receiver)] == ["handshake", "heartbeat"]

    with time_machine.travel(end + dt.timedelta(seconds=1), tick=False):
        # Past its end, before the sweep has switched it off: the fan-out numbers nothing for it already.
        route_and_accept(clinic)
        events_fan_out()
        assert Subscription.objects.get(fhir_id=created["id"]).status == "active"
        assert not Delivery.objects.filter(notification_type="event-notification").exists()
        drain(timezone.now())
        served, response = read(fhir_client_for(ehr_client), created["id"])
    assert served["status"] == "off" and response["ETag"] == 'W/"2"'
    assert FollowUp.objects.get(kind="subscription-end").outcome == "switched off at its end"

    with time_machine.travel(start + dt.timedelta(hours=3), tick=False):
        drain(timezone.now())
    assert [status_of(b)["type"] for b in bodies(http_receiver)] == ["handshake", "heartbeat"]
    assert not FollowUp.objects.filter(state="pending", subscription_id__isnull=False).exists()


def test_a_heartbeat_due_past_the_end_switches_it_off_without_a_beat(ehr_client, http_receiver, dispatched):
    start = timezone.now().replace(microsecond=0)
    with time_machine.travel(start, tick=False):
        created = subscribe(fhir_client_for(ehr_client), {
            **backport_form(f"{http_receiver.url}/hook", heartbeat=3600),
            "end": (start + dt.timedelta(minutes=30)).isoformat()})
        drain(start)
    row = Subscription.objects.get(fhir_id=created["id"])
    FollowUp.objects.filter(kind="subscription-end").delete()  # as if the end's own row had not run yet

    with time_machine.travel(start + dt.timedelta(minutes=61), tick=False):
        outcomes = drain(timezone.now())

    assert "switched off at its end: no heartbeat" in outcomes
    row.refresh_from_db()
    assert row.status == "off" and len(http_receiver.requests) == 1


def test_a_later_end_keeps_it_on_past_the_first(ehr_client, http_receiver, dispatched):
    start = timezone.now().replace(microsecond=0)
    with time_machine.travel(start, tick=False):
        fhir = fhir_client_for(ehr_client)
        created = subscribe(fhir, {**backport_form(f"{http_receiver.url}/hook"),
                                   "end": (start + dt.timedelta(hours=1)).isoformat()})
        body, response = read(fhir, created["id"])
        later = put(fhir, body, etag=response["ETag"], end=(start + dt.timedelta(hours=5)).isoformat())
        assert later.status_code == 200, later.content
    with time_machine.travel(start + dt.timedelta(hours=2), tick=False):
        outcomes = drain(timezone.now())
    assert "not ended: its end moved" in outcomes
    assert Subscription.objects.get(fhir_id=created["id"]).status != "off"
    with time_machine.travel(start + dt.timedelta(hours=6), tick=False):
        drain(timezone.now())
    assert Subscription.objects.get(fhir_id=created["id"]).status == "off"


# --- Search ----------------------------------------------------------------------------------------------------


def _query(url: str) -> dict:
    return dict(parse_qsl(urlsplit(url).query))


def test_search_pages_and_links_as_every_search_does(fhir, http_receiver, dispatched):
    made = [subscribe(fhir, backport_form(f"{http_receiver.url}/{n}"))["id"] for n in range(4)]

    first = json_of(fhir.get("Subscription", _count="1", status="requested"))

    assert first["total"] == 4 and [e["resource"]["id"] for e in first["entry"]] == made[:1]
    links = {link["relation"]: link["url"] for link in first["link"]}
    assert _query(links["self"]) == {"status": "requested", "_count": "1", "_offset": "0"}
    assert _query(links["next"]) == {"status": "requested", "_count": "1", "_offset": "1"}
    seen = []
    url = links["self"]
    while url:
        page = json_of(fhir.get("Subscription", **_query(url)))
        seen += [e["resource"]["id"] for e in page["entry"]]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert seen == made

    counted = json_of(fhir.get("Subscription", _summary="count"))
    assert counted["total"] == 4 and "entry" not in counted
    assert "total" not in json_of(fhir.get("Subscription", _total="none"))
    [subset] = json_of(fhir.get("Subscription", _elements="status", _id=made[2]))["entry"]
    assert set(subset["resource"]) == {"resourceType", "id", "meta", "status"}
    assert subset["resource"]["meta"]["tag"][0]["code"] == "SUBSETTED"
    assert fhir.get("Subscription", _sort="_id").status_code == 400
    assert fhir.get("Subscription", **{"status:not": "off"}).status_code == 400
    lenient = fhir.get("Subscription", bogus="1", headers={"Prefer": "handling=lenient"})
    assert lenient.status_code == 200 and "bogus" not in json_of(lenient)["link"][0]["url"]


def test_an_endpoint_moved_twice_gets_one_handshake_the_newest(fhir, clinic, http_receiver, dispatched):
    created = subscribe(fhir, backport_form(f"{http_receiver.url}/first"))
    http_receiver.fail(503)
    drain(timezone.now())  # the first handshake fails: pending, retried later
    body, response = read(fhir, created["id"])
    body["channel"]["endpoint"] = f"{http_receiver.url}/second"
    moved = put(fhir, body, etag=response["ETag"])
    body, response = read(fhir, created["id"])
    body["channel"]["endpoint"] = f"{http_receiver.url}/third"
    again = put(fhir, body, etag=response["ETag"])
    assert moved.status_code == 200 and again.status_code == 200, json_of(again)
    http_receiver.recover()
    seen = len(http_receiver.requests)

    drain(timezone.now() + dt.timedelta(hours=1))  # every retry falls due

    arrived = http_receiver.requests[seen:]
    assert [r.path for r in arrived] == ["/third"]  # one handshake, not the superseded two moved there as well
    assert read(fhir, created["id"])[0]["status"] == "active"
    superseded = Delivery.objects.filter(notification_type="handshake", state="dead")
    assert superseded.count() == 2 and {d.last_error for d in superseded} == {"superseded by a newer handshake"}


def test_a_failing_subscription_put_back_as_read_keeps_its_error(fhir, http_receiver, dispatched):
    created = subscribe(fhir, backport_form(f"{http_receiver.url}/hook"))
    http_receiver.fail(503)
    drain(timezone.now())  # its handshake fails: error
    body, response = read(fhir, created["id"])
    assert body["status"] == "error"
    handshakes_before = Delivery.objects.filter(notification_type="handshake").count()

    answer = put(fhir, body, etag=response["ETag"])  # as read, nothing changed but what the client may change

    assert answer.status_code == 200 and json_of(answer)["status"] == "error"
    assert Delivery.objects.filter(notification_type="handshake").count() == handshakes_before  # no re-activation


def test_a_notification_numbered_before_a_new_endpoint_waits_for_its_handshake(fhir, clinic, http_receiver,
                                                                                 dispatched):
    from notifications.followups import followup_run

    role_make(at=km_north(1))
    created = subscribe(fhir, backport_form(f"{http_receiver.url}/old", criteria=("status=accepted",)))
    drain(timezone.now())  # its handshake, delivered
    http_receiver.fail(503)
    route_and_accept(clinic)
    events_fan_out()
    drain(timezone.now())  # the notification fails: retried later
    [event] = Delivery.objects.filter(notification_type="event-notification")
    http_receiver.recover()
    body, response = read(fhir, created["id"])
    body["channel"]["endpoint"] = f"{http_receiver.url}/new"
    assert put(fhir, body, etag=response["ETag"]).status_code == 200
    seen = len(http_receiver.requests)
    retry = FollowUp.objects.get(kind="delivery-attempt", delivery_id=event.pk, state="pending")
    later = timezone.now() + dt.timedelta(hours=1)

    followup_run(followup_id=retry.pk, now=later)  # its retry runs before the new handshake's first attempt

    assert http_receiver.requests[seen:] == []  # it waits: the new endpoint is confirmed first
    event.refresh_from_db()
    assert event.state == "pending" and event.next_attempt_at is None
    drain(later)
    assert [r.path for r in http_receiver.requests[seen:]] == ["/new", "/new"]
    assert [status_of(b)["type"] for b in bodies(http_receiver)[-2:]] == ["handshake", "event-notification"]
