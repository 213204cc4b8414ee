"""Every outbound disclosure leaves exactly one audit row (issue 12): each attempt that sends a rest-hook
notification naming or carrying a referral Task, and each e-mail a mail server takes. A handshake, a heartbeat,
an ``empty`` notification and a send that never left the hub leave none."""

import pytest
from django.utils import timezone

from audit.models import Access
from notifications import bundles
from notifications.models import Delivery, Subscription
from notifications.outbox import events_fan_out, notification_queue
from notifications.subscriptions import subscription_heartbeat
from referrals.offers import offer_accept, referral_route
from tests.network.factories import km_north, referral_make, role_make
from tests.notifications.conftest import drain
from tests.referrals.conftest import CARDIAC_PATIENT

pytestmark = pytest.mark.django_db


def _subscription(clinic, endpoint, **fields):
    fields.setdefault("status", Subscription.Status.ACTIVE)
    fields.setdefault("channel", "rest-hook")
    return Subscription.objects.create(clinic=clinic, endpoint=endpoint, **fields)


def _route_and_accept(clinic):
    referral = referral_make(clinic, patient_name="Ann Example")
    offer = referral_route(referral=referral, patient=CARDIAC_PATIENT).offer
    offer_accept(offer=offer)
    return referral


def _disclosures(**filters):
    return Access.objects.filter(channel=Access.Channel.DISCLOSURE, **filters)


def test_each_notification_with_a_payload_leaves_one_row_and_one_without_leaves_none(clinic, receiver, dispatched):
    role_make(at=km_north(1))
    full = _subscription(clinic, receiver.url, payload="full-resource", heartbeat_seconds=60)
    ids = _subscription(clinic, receiver.url, payload="id-only")
    empty = _subscription(clinic, receiver.url, payload="empty")
    for sub in (full, ids, empty):  # a handshake names the subscription only
        subject, content = bundles.handshake(sub, now=timezone.now())
        notification_queue(subscription=sub, notification_type=bundles.HANDSHAKE, subject=subject, content=content,
                           now=timezone.now())
    _route_and_accept(clinic)
    events_fan_out()
    subscription_heartbeat(subscription_id=full.pk, now=timezone.now())
    drain(timezone.now())

    assert len(receiver.received) == Delivery.objects.count() > 6  # everything went out
    for sub in (full, ids):
        notified = Delivery.objects.filter(subscription=sub, notification_type=bundles.EVENT_NOTIFICATION)
        rows = _disclosures(query__contains=f"subscription={sub.pk}&")
        assert rows.count() == notified.count() > 0
        assert sorted(rows.values_list("entity_id", flat=True)) == sorted(
            f"{d.task_id}/_history/{d.task_version}" for d in notified)
        for row in rows:
            assert (row.interaction, row.method, row.path, row.status, row.clinic_id, row.entity_type) == (
                "notify", "POST", receiver.url, 200, clinic.pk, "Task")
            assert f"content={sub.payload}" in row.query and row.action == Access.Action.EXECUTE
    assert not _disclosures(query__contains=f"subscription={empty.pk}&").exists()
    assert Delivery.objects.filter(notification_type=bundles.HEARTBEAT, state="delivered").count() == 1
    assert _disclosures().count() == Delivery.objects.filter(
        notification_type=bundles.EVENT_NOTIFICATION).exclude(subscription=empty).count()


def test_every_attempt_that_reached_the_receiver_is_a_row_with_its_answer(clinic, receiver, dispatched):
    role_make(at=km_north(1))
    _subscription(clinic, receiver.url, filter_criteria={"status": ["accepted"]})
    _route_and_accept(clinic)
    events_fan_out()
    [delivery] = Delivery.objects.all()

    receiver.status = 503
    now = timezone.now()
    drain(now)
    delivery.refresh_from_db()
    drain(delivery.next_attempt_at)
    receiver.status = 200
    delivery.refresh_from_db()
    drain(delivery.next_attempt_at)

    delivery.refresh_from_db()
    assert delivery.state == "delivered" and len(receiver.received) == 3
    rows = _disclosures().order_by("id")
    assert list(rows.values_list("status", flat=True)) == [503, 503, 200]
    assert [r.query.split("&")[1] for r in rows] == ["attempt=1", "attempt=2", "attempt=3"]
    assert {r.entity_id for r in rows} == {f"{delivery.task_id}/_history/{delivery.task_version}"}


def test_a_send_that_never_left_the_hub_is_no_disclosure(clinic, dispatched, settings):
    settings.HUB_OUTBOUND_ALLOW = []  # 127.0.0.1 refused by the outbound policy: nothing is sent
    role_make(at=km_north(1))
    _subscription(clinic, "http://127.0.0.1:9/hook", filter_criteria={"status": ["accepted"]})
    _route_and_accept(clinic)
    events_fan_out()
    drain(timezone.now())

    assert Delivery.objects.get().state == "dead"
    assert not _disclosures().exists()


def test_each_email_taken_is_a_row_without_its_text(clinic, smtp, dispatched):
    role_make(at=km_north(1))
    _subscription(clinic, "desk@clinic.test", channel="email", payload="id-only",
                  filter_criteria={"status": ["accepted"]})
    _route_and_accept(clinic)
    events_fan_out()
    drain(timezone.now())

    sent = Delivery.objects.filter(channel="email", state="delivered")
    assert len(smtp.messages) == sent.count() >= 1  # the clinic's, and the therapist's offer e-mail
    rows = _disclosures(interaction="email")
    assert rows.count() == sent.count() == _disclosures().count()
    assert sorted(rows.values_list("path", flat=True)) == sorted(sent.values_list("endpoint", flat=True))
    desk = rows.get(path="desk@clinic.test")
    assert (desk.method, desk.status, desk.clinic_id, desk.entity_type) == ("EMAIL", 200, clinic.pk, "Task")
    assert all(d.content not in r.query and "Ann Example" not in r.query for d in sent for r in rows)


def test_an_email_the_server_refused_is_no_disclosure(clinic, dispatched, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2  # nothing listens
    role_make(at=km_north(1))
    _subscription(clinic, "desk@clinic.test", channel="email", filter_criteria={"status": ["accepted"]})
    _route_and_accept(clinic)
    events_fan_out()
    drain(timezone.now())

    assert Delivery.objects.filter(channel="email", state="pending", attempts=1).exists()
    assert not _disclosures().exists()
