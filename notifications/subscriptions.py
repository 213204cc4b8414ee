"""A clinic's FHIR Subscriptions as rows: creating one (its handshake and first heartbeat in the same
transaction), changing it (off, on again with a new handshake, a new endpoint, filters or end), deleting it, its
heartbeats, switching it off at its ``end``, and the reads behind ``$status`` and ``$events``.

The FHIR edge (fhir_bridge/subscription_routes.py) parses and checks what a client posts
(fhir_bridge/subscriptions.py) and hands the checked request here; what goes out is written to the outbox
(outbox.py) and sent by the delivery follow-ups, like every other message.
"""

import datetime as dt
import uuid

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from fhir_bridge.subscriptions import NotificationEvent, SubscriptionRequest, filters_to_json
from notifications import bundles
from notifications.followups import Planned, followup_schedule
from notifications.models import Delivery, FollowUp, Subscription
from notifications.outbox import notification_queue
from referrals.models import ReferralEvent

HEARTBEAT_KIND = "subscription-heartbeat"
END_KIND = "subscription-end"


def _heartbeat_plan(subscription: Subscription, due: dt.datetime) -> Planned:
    return Planned(
        kind=HEARTBEAT_KIND,
        key=f"heartbeat:{subscription.pk}:{int(due.timestamp())}",
        due_at=due,
        subscription_id=subscription.pk,
    )


def subscription_end_plan(subscription: Subscription) -> list[Planned]:
    """The follow-up that switches ``subscription`` off at its ``end`` (none without one). Keyed by the end, so
    that a changed end is a new row; the old one finds the end moved and does nothing (subscription_end)."""
    if subscription.end is None:
        return []
    return [Planned(kind=END_KIND, key=f"subscription-end:{subscription.pk}:{int(subscription.end.timestamp())}",
                    due_at=subscription.end, subscription_id=subscription.pk)]


def subscription_create(
    *, clinic_id: int, request: SubscriptionRequest, resource: dict, base_url: str, now: dt.datetime | None = None
) -> Subscription:
    """Store a checked Subscription for ``clinic_id`` as ``requested``, with its handshake in the outbox and,
    for a rest-hook with a heartbeat period (seconds), its first heartbeat due one period on. ``resource`` is what
    the client posted (served back with the hub's id and status); ``base_url`` the FHIR base it posted to.

    The handshake's delivery makes it ``active`` (or ``error``, outbox.delivery_attempt). The caller checks
    beforehand that the endpoint may be reached (notifications.http.outbound_refusal)."""
    now = now or timezone.now()
    email = request.channel_type == Subscription.Channel.EMAIL
    with transaction.atomic():
        subscription = Subscription.objects.create(
            clinic_id=clinic_id,
            fhir_id=str(uuid.uuid4()),
            resource=resource,
            base_url=base_url.rstrip("/"),
            channel=request.channel_type,
            endpoint=request.email_address if email else request.endpoint,
            headers=[f"{name}: {value}" for name, value in request.headers],
            payload=request.payload_content,
            filter_criteria=filters_to_json(request.filters),
            status=Subscription.Status.REQUESTED,
            # E-mail gets no heartbeats: an inbox is not a receiver that needs to know the hub is alive.
            heartbeat_seconds=None if email else request.heartbeat_period,
            end=request.end_at,
            updated_at=now,
        )
        _handshake_queue(subscription, now)
        if subscription.heartbeat_seconds:
            followup_schedule(
                plans=[_heartbeat_plan(subscription, now + dt.timedelta(seconds=subscription.heartbeat_seconds))],
                now=now,
            )
        followup_schedule(plans=subscription_end_plan(subscription), now=now)
    return subscription


def _handshake_queue(subscription: Subscription, now: dt.datetime) -> None:
    subject, content = bundles.handshake(subscription, now=now)
    notification_queue(
        subscription=subscription, notification_type=bundles.HANDSHAKE, subject=subject, content=content, now=now
    )


# The statuses a client may write on an update: off stops it; requested or active asks for it to run (again).
CLIENT_STATUSES = frozenset({Subscription.Status.OFF, Subscription.Status.REQUESTED, Subscription.Status.ACTIVE})


def subscription_update(
    *, subscription: Subscription, request: SubscriptionRequest, resource: dict, now: dt.datetime | None = None
) -> Subscription:
    """Apply a clinic's update to ``subscription`` (call holding its row lock, select_for_update): the checked
    ``request`` (its status one of CLIENT_STATUSES, or ``error`` as read, its endpoint already allowed by
    notifications.http.outbound_refusal, its end not past) and ``resource``, what the client sent, served from
    now on. The caller has checked that the channel type, payload and heartbeat period are unchanged.

    - status ``off``: nothing more is numbered for it and its heartbeats stop; what was numbered before is still
      delivered (the receiver was owed it when the change happened).
    - ``requested`` or ``active`` on one that is off or in error, or any status with a new endpoint: it is
      ``requested`` again with a new handshake (the backport's re-activation: the client asks, the server
      confirms the endpoint); heartbeats resume. Otherwise its status stays what the deliveries made it.
    - a new endpoint: the messages not yet delivered (pending or dead) go to it, so that a receiver that moved
      gets what it missed there; headers are read at each send, so the new ones apply to those too. A handshake
      still pending is superseded by the new one (dead, not sent).
    - filters and ``end`` apply to the next change fanned out; a new end gets its own switch-off follow-up.

    One more version (meta.versionId)."""
    now = now or timezone.now()
    email = request.channel_type == Subscription.Channel.EMAIL
    endpoint = request.email_address if email else request.endpoint
    moved = endpoint != subscription.endpoint
    was = subscription.status
    if request.status == Subscription.Status.OFF:
        status = Subscription.Status.OFF
    elif request.status == was == Subscription.Status.ERROR and not moved:
        status = was  # sent back as read: the deliveries' to change
    elif moved or was in (Subscription.Status.OFF, Subscription.Status.ERROR):
        status = Subscription.Status.REQUESTED
    else:
        status = was
    end_moved = request.end_at != subscription.end
    subscription.resource = resource
    subscription.endpoint = endpoint
    subscription.headers = [f"{name}: {value}" for name, value in request.headers]
    subscription.filter_criteria = filters_to_json(request.filters)
    subscription.end = request.end_at
    subscription.status = status
    subscription.version_id += 1
    subscription.updated_at = now
    if status == Subscription.Status.REQUESTED and was != status:
        subscription.error_count = 0
    subscription.save(update_fields=[
        "resource", "endpoint", "headers", "filter_criteria", "end", "status", "version_id", "updated_at",
        "error_count",
    ])
    if moved:
        Delivery.objects.filter(subscription=subscription).exclude(state=Delivery.State.DELIVERED).update(
            endpoint=endpoint
        )
    if status == Subscription.Status.REQUESTED and (moved or was != status):
        # A handshake not delivered yet is superseded by this one: sent after it, it would show the receiver an
        # older event count and time (and an endpoint that moved twice would get it at its new address).
        Delivery.objects.filter(
            subscription=subscription, notification_type=bundles.HANDSHAKE, state=Delivery.State.PENDING
        ).update(state=Delivery.State.DEAD, next_attempt_at=None, last_error="superseded by a newer handshake")
        _handshake_queue(subscription, now)
        heartbeat_pending = FollowUp.objects.filter(
            kind=HEARTBEAT_KIND, subscription_id=subscription.pk, state=FollowUp.State.PENDING
        ).exists()
        if subscription.heartbeat_seconds and not heartbeat_pending:
            followup_schedule(
                plans=[_heartbeat_plan(subscription, now + dt.timedelta(seconds=subscription.heartbeat_seconds))],
                now=now,
            )
    if end_moved:
        followup_schedule(plans=subscription_end_plan(subscription), now=now)
    return subscription


def subscription_delete(*, subscription: Subscription, now: dt.datetime | None = None) -> Subscription:
    """Delete a clinic's subscription (call holding its row lock): it is switched off and no longer served
    (FHIR answers 410 Gone for it), but the row stays with its deliveries, the record of what went to whom.
    Deleting it again changes nothing."""
    now = now or timezone.now()
    if subscription.deleted_at is None:
        Subscription.objects.filter(pk=subscription.pk).update(
            status=Subscription.Status.OFF, deleted_at=now, updated_at=now, version_id=F("version_id") + 1
        )
        subscription.refresh_from_db()
    return subscription


def _switch_off_if_ended(subscription_id: int, now: dt.datetime) -> bool:
    """Switch the subscription off if its end has come (a compare-and-set: once, whoever gets there first);
    whether this call did."""
    return bool(
        Subscription.objects.filter(pk=subscription_id, end__lte=now)
        .exclude(status=Subscription.Status.OFF)
        .update(status=Subscription.Status.OFF, updated_at=now, version_id=F("version_id") + 1)
    )


def subscription_end(*, subscription_id: int, now: dt.datetime) -> str:
    """A subscription's end falls due (R4 Subscription.end: "the time for the server to turn the subscription
    off"): it is switched off. Nothing is sent to the receiver; the backport has no notification for it, and a
    receiver learns it from $status or the Subscription. An end moved later since, or a subscription already
    off, is left alone."""
    if _switch_off_if_ended(subscription_id, now):
        return "switched off at its end"
    subscription = Subscription.objects.filter(pk=subscription_id).first()
    if subscription is None:
        return "subscription gone"
    return "off already" if subscription.status == Subscription.Status.OFF else "not ended: its end moved"


def subscription_heartbeat(*, subscription_id: int, now: dt.datetime) -> str:
    """A heartbeat falls due: send one (the subscription's status and event count now) and schedule the next.
    A subscription switched off, or without a period, gets none and no more."""
    if _switch_off_if_ended(subscription_id, now):
        return "switched off at its end: no heartbeat"
    subscription = Subscription.objects.filter(pk=subscription_id).first()
    if subscription is None or subscription.status == Subscription.Status.OFF or not subscription.heartbeat_seconds:
        return "no heartbeat wanted"
    subject, content = bundles.heartbeat(subscription, now=now)
    notification_queue(
        subscription=subscription, notification_type=bundles.HEARTBEAT, subject=subject, content=content, now=now
    )
    followup_schedule(
        plans=[_heartbeat_plan(subscription, now + dt.timedelta(seconds=subscription.heartbeat_seconds))], now=now
    )
    return "heartbeat sent; next scheduled"


# --- Reads -----------------------------------------------------------------------------------------------------


def subscriptions_of(clinic_id: int, *, deleted: bool = False):
    """The clinic's subscriptions served over FHIR (those made in the admin have no FHIR id); with ``deleted``,
    those deleted over FHIR too (which are answered 410 Gone, not served)."""
    rows = Subscription.objects.filter(clinic_id=clinic_id).exclude(fhir_id="")
    return rows if deleted else rows.filter(deleted_at__isnull=True)


def subscription_events(subscription: Subscription, first: int, last: int) -> list[NotificationEvent]:
    """The subscription's events ``first`` to ``last`` (inclusive), each with the Task version it carried, in
    event-number order. An event whose Task version is no longer kept is left out."""
    rows = list(
        Delivery.objects.filter(
            subscription=subscription, event_number__gte=first, event_number__lte=last
        ).order_by("event_number").values("event_number", "referral_event_id", "task_id", "task_version", "created_at")
    )
    referral_events = {
        pk: (at, kind)
        for pk, at, kind in ReferralEvent.objects.filter(pk__in=[r["referral_event_id"] for r in rows])
        .values_list("pk", "at", "kind")
    }
    rows = [row for row in rows if row["task_id"] and row["task_version"] is not None]
    tasks = bundles.task_versions((row["task_id"], row["task_version"]) for row in rows)
    events = []
    for row in rows:
        task = tasks.get((row["task_id"], row["task_version"]))
        if task is None:
            continue
        at, kind = referral_events.get(row["referral_event_id"], (row["created_at"], ""))
        events.append(
            NotificationEvent(
                number=row["event_number"], timestamp=at, task=task, created=kind == ReferralEvent.Kind.CREATED
            )
        )
    return events
