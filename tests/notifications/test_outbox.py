"""The outbox: referral events fanned out to subscriptions, numbered per subscription without gaps, delivered to
a real HTTP receiver, retried, dead-lettered and replayed."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone

from referrals.offers import offer_accept, referral_route
from notifications.followups import followup_run
from notifications.models import Delivery, FollowUp, Subscription
from notifications.outbox import events_fan_out
from fhir_bridge.models import StoredResource
from fhir_bridge.subscriptions import notification_issues
from referrals.models import ReferralEvent
from tests.factories import ClinicFactory
from tests.referrals.conftest import CARDIAC_PATIENT
from tests.network.factories import km_north, referral_make, role_make
from tests.notifications.conftest import drain

pytestmark = pytest.mark.django_db


def _subscription(clinic, endpoint, **fields):
    fields.setdefault("status", Subscription.Status.ACTIVE)
    return Subscription.objects.create(clinic=clinic, channel="rest-hook", endpoint=endpoint, **fields)


def _route_and_accept(clinic):
    referral = referral_make(clinic, patient_name="Ann Example")
    offer = referral_route(referral=referral, patient=CARDIAC_PATIENT).offer
    offer_accept(offer=offer)
    return referral


def _status(bundle: dict) -> dict:
    """The SubscriptionStatus parameters of a notification Bundle, by name (events as a list of their parts)."""
    status = {"notification-event": []}
    for parameter in bundle["entry"][0]["resource"]["parameter"]:
        if parameter["name"] == "notification-event":
            status["notification-event"].append({p["name"]: p for p in parameter["part"]})
        else:
            status[parameter["name"]] = next(v for k, v in parameter.items() if k.startswith("value"))
    return status


def test_each_change_is_numbered_per_subscription_without_gaps_and_filtered(clinic, receiver, dispatched):
    role_make(at=km_north(1), max_active_cases=5)
    everything = _subscription(clinic, receiver.url, headers=["Authorization: Bearer s3cret"])
    accepted_only = _subscription(clinic, receiver.url, filter_criteria={"status": ["accepted"]})
    other_clinic = _subscription(ClinicFactory(), receiver.url)
    switched_off = _subscription(clinic, receiver.url, status=Subscription.Status.OFF)
    first, second = _route_and_accept(clinic), _route_and_accept(clinic)
    events = ReferralEvent.objects.filter(referral__in=[first, second])
    accepted_events = events.filter(to_status="accepted", from_status="requested").count()
    assert accepted_events == 2
    # Each change is one Task version (created, routed with its note, accepted): one notification, not one per event.
    tasks = StoredResource.objects.filter(referral__in=[first, second], resource_type="Task")
    changes = sum(tasks.values_list("version_id", flat=True))
    assert changes == 6 and events.count() > changes

    assert events_fan_out(limit=3) == 3  # in batches (splitting a change's events); the rest stays for the next run
    events_fan_out()
    assert events_fan_out() == 0
    assert not ReferralEvent.objects.filter(notified_at__isnull=True).exists()

    numbers = lambda sub: list(Delivery.objects.filter(subscription=sub).order_by("event_number")  # noqa: E731
                               .values_list("event_number", flat=True))
    assert numbers(everything) == list(range(1, changes + 1))
    assert numbers(accepted_only) == [1, 2]
    assert numbers(other_clinic) == numbers(switched_off) == []
    everything.refresh_from_db()
    assert everything.events_since_start == changes
    versions = sorted(Delivery.objects.filter(subscription=everything).values_list("task_id", "task_version"))
    assert len(set(versions)) == changes  # every Task version once

    drain(timezone.now())
    assert len(receiver.received) == changes + 2
    mine_url = f"/fhir/Subscription/{everything.pk}"
    for r in receiver.received:  # each subscription's own channel.header, and nobody else's
        mine = _status(json.loads(r["body"]))["subscription"]["reference"].endswith(mine_url)
        assert r["headers"].get("Authorization") == ("Bearer s3cret" if mine else None)
        assert r["headers"]["Content-Type"] == "application/fhir+json"
    mine = sorted((b for b in receiver.bodies() if _status(b)["subscription"]["reference"].endswith(mine_url)),
                  key=lambda b: int(_status(b)["events-since-subscription-start"]))
    assert [int(_status(b)["events-since-subscription-start"]) for b in mine] == list(range(1, changes + 1))
    assert all(not notification_issues(b) and b["type"] == "history" for b in mine)
    assert [_status(b)["notification-event"][0]["event-number"]["valueString"] for b in mine] == [
        str(n) for n in range(1, changes + 1)]
    assert "/fhir/Task/" in mine[0]["entry"][1]["fullUrl"]
    assert mine[0]["entry"][1]["request"] == {"method": "POST", "url": "Task"}  # the creation


def test_the_email_channel_carries_a_link_and_no_phi(clinic, smtp, dispatched):
    role_make(at=km_north(1))
    Subscription.objects.create(clinic=clinic, channel="email", endpoint="desk@clinic.test", status="active",
                                filter_criteria={"status": ["accepted"]})
    referral = _route_and_accept(clinic)
    events_fan_out()
    drain(timezone.now())

    [message] = smtp.messages
    assert message["to"] == ["desk@clinic.test"]
    assert "/fhir/Task/" in message["data"] and "notification 1" in message["data"]
    assert "Ann Example" not in message["data"] and referral.patient_postal_code not in message["data"]


def test_a_failing_receiver_is_retried_then_dead_lettered_then_replayed(clinic, receiver, dispatched, settings):
    settings.HUB_DELIVERY_MAX_ATTEMPTS = 3
    role_make(at=km_north(1))
    sub = _subscription(clinic, receiver.url, filter_criteria={"status": ["accepted"]})
    _route_and_accept(clinic)
    events_fan_out()
    [delivery] = Delivery.objects.all()
    receiver.status = 503

    now = timezone.now()
    for attempt in (1, 2, 3):
        drain(now)
        delivery.refresh_from_db()
        assert delivery.attempts == attempt
        if attempt < 3:
            assert delivery.state == "pending" and delivery.next_attempt_at > now
            assert delivery.last_error == "HTTP 503"
            now = delivery.next_attempt_at
    assert delivery.state == "dead" and delivery.next_attempt_at is None
    drain(now + timezone.timedelta(days=30))
    assert len(receiver.received) == 3  # dead: tried no more
    sub.refresh_from_db()
    assert (sub.status, sub.error_count) == ("error", 3)

    receiver.status = 200
    call_command("replay_deliveries", str(delivery.pk))
    drain(timezone.now())

    delivery.refresh_from_db()
    assert (delivery.state, delivery.round, delivery.attempts) == ("delivered", 2, 1)
    assert len(receiver.received) == 4
    assert len({r["body"] for r in receiver.received}) == 1  # every attempt sent the same bytes
    sub.refresh_from_db()
    assert (sub.status, sub.error_count) == ("active", 0)


def test_an_attempt_run_twice_sends_once(clinic, receiver, dispatched):
    role_make(at=km_north(1))
    _subscription(clinic, receiver.url, filter_criteria={"status": ["accepted"]})
    _route_and_accept(clinic)
    events_fan_out()
    [attempt] = FollowUp.objects.filter(kind="delivery-attempt")

    assert followup_run(followup_id=attempt.pk).startswith("delivered")
    assert followup_run(followup_id=attempt.pk) == "not pending"
    assert len(receiver.received) == 1


def test_replay_refuses_a_delivery_that_is_not_dead(clinic, receiver, dispatched):
    role_make(at=km_north(1))
    _subscription(clinic, receiver.url, filter_criteria={"status": ["accepted"]})
    _route_and_accept(clinic)
    events_fan_out()
    [delivery] = Delivery.objects.all()

    with pytest.raises(CommandError, match=str(delivery.pk)):
        call_command("replay_deliveries", str(delivery.pk))


def test_dead_letters_are_replayed_from_the_admin(clinic, receiver, dispatched):
    delivery = Delivery.objects.create(channel="rest-hook", endpoint=receiver.url, content="{}", state="dead",
                                       attempts=10)
    admin = get_user_model().objects.create_superuser("admin", "admin@hub.test", "x")
    client = Client()
    client.force_login(admin)

    listed = client.get("/admin/notifications/delivery/?state__exact=dead")
    assert listed.status_code == 200 and f"delivery {delivery.pk}" in listed.content.decode()
    response = client.post("/admin/notifications/delivery/", {"action": "replay", "_selected_action": [delivery.pk]})
    assert response.status_code == 302

    delivery.refresh_from_db()
    assert (delivery.state, delivery.round, delivery.attempts) == ("pending", 2, 0)
    drain(timezone.now())
    delivery.refresh_from_db()
    assert delivery.state == "delivered" and receiver.received[0]["body"] == b"{}"


def test_the_admin_cannot_delete_a_delivery(clinic, receiver):
    delivery = Delivery.objects.create(channel="rest-hook", endpoint=receiver.url, content="{}", state="dead",
                                       attempts=10)
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("admin", "admin@hub.test", "x"))

    bulk = client.post("/admin/notifications/delivery/", {
        "action": "delete_selected", "_selected_action": [delivery.pk], "post": "yes",
    })
    single = client.post(f"/admin/notifications/delivery/{delivery.pk}/delete/", {"post": "yes"})

    assert single.status_code == 403 and bulk.status_code in (200, 302)
    assert Delivery.objects.filter(pk=delivery.pk).exists()  # a dead letter is replayed, never erased
