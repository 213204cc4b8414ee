"""A clinic's FHIR Subscriptions as rows: creating one (its handshake and first heartbeat in the same
transaction), its heartbeats, and the reads behind ``$status`` and ``$events``.

The FHIR edge (fhir_bridge/subscription_routes.py) parses and checks what a client posts
(fhir_bridge/subscriptions.py) and hands the checked request here; what goes out is written to the outbox
(outbox.py) and sent by the delivery follow-ups, like every other message.
"""

import datetime as dt
import uuid

from django.db import transaction
from django.utils import timezone

from fhir_bridge.subscriptions import NotificationEvent, SubscriptionRequest, filters_to_json
from notifications import bundles
from notifications.followups import Planned, followup_schedule
from notifications.models import Delivery, Subscription
from notifications.outbox import notification_queue
from referrals.models import ReferralEvent

HEARTBEAT_KIND = "subscription-heartbeat"


def _heartbeat_plan(subscription: Subscription, due: dt.datetime) -> Planned:
    return Planned(
        kind=HEARTBEAT_KIND,
        key=f"heartbeat:{subscription.pk}:{int(due.timestamp())}",
        due_at=due,
        subscription_id=subscription.pk,
    )


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
        )
        subject, content = bundles.handshake(subscription, now=now)
        notification_queue(
            subscription=subscription, notification_type=bundles.HANDSHAKE, subject=subject, content=content, now=now
        )
        if subscription.heartbeat_seconds:
            followup_schedule(
                plans=[_heartbeat_plan(subscription, now + dt.timedelta(seconds=subscription.heartbeat_seconds))],
                now=now,
            )
    return subscription


def subscription_heartbeat(*, subscription_id: int, now: dt.datetime) -> str:
    """A heartbeat falls due: send one (the subscription's status and event count now) and schedule the next.
    A subscription switched off, or without a period, gets none and no more."""
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


def subscriptions_of(clinic_id: int):
    """The clinic's subscriptions served over FHIR (those made in the admin have no FHIR id)."""
    return Subscription.objects.filter(clinic_id=clinic_id).exclude(fhir_id="")


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
