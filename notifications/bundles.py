"""What a subscription's messages say: the R4 Backport notification Bundles (fhir_bridge/subscriptions.py renders
them) for rest-hook channels, and a PHI-free text with a link for the e-mail channel.

Reads only: the outbox (outbox.py) fixes this content on a Delivery when it writes the row, so that every attempt
and every replay sends the same bytes, and ``$events`` renders a range again from the Task versions the rows
name.
"""

import datetime as dt
import json
from collections.abc import Iterable

from django.conf import settings
from django.db.models import Q

from fhir_bridge.models import ResourceVersion, StoredResource
from fhir_bridge.subscriptions import (
    Filter,
    NotificationEvent,
    filters_from_json,
    notification_bundle,
    status_parameters,
)
from notifications.models import Subscription

HANDSHAKE, HEARTBEAT, EVENT_NOTIFICATION = "handshake", "heartbeat", "event-notification"
# What a subscription in error reports in its SubscriptionStatus (the backport's subscription-error codes).
ERROR_CODE = "no-response"


def base_url_of(subscription: Subscription) -> str:
    """The FHIR base a subscription's notifications name: the one its client posted to, else the public one."""
    if subscription.base_url:
        return subscription.base_url.rstrip("/")
    base = (settings.HUB_PUBLIC_BASE_URL or "http://127.0.0.1:8000").rstrip("/")
    return f"{base}/fhir"


def filters_of(subscription: Subscription) -> tuple[Filter, ...]:
    """The subscription's Task-topic filters: the stored list form, or the admin's shorthand dict
    ``{"status": ["accepted"]}`` (each key one filter, its values ORed; ``name:modifier`` keys allowed)."""
    stored = subscription.filter_criteria or []
    if isinstance(stored, dict):
        filters = []
        for key, values in stored.items():
            name, _, modifier = str(key).partition(":")
            values = values if isinstance(values, list) else [values]
            filters.append(Filter(name, modifier, tuple(str(v) for v in values)))
        return tuple(filters)
    return filters_from_json(stored)


def task_versions(wanted: Iterable[tuple[str, int]]) -> dict[tuple[str, int], dict]:
    """The contents of referral Task versions, keyed ``(Task id, version)``, in two queries whatever their
    number (the current rows, then the older versions in ResourceVersion); a version not kept is missing from
    the answer. The fan-out reads a batch's changes with it, and ``$events`` a range."""
    wanted = set(wanted)
    if not wanted:
        return {}
    found: dict[tuple[str, int], dict] = {}
    older: dict[int, tuple[str, set[int]]] = {}  # stored resource id -> (Task id, versions to read from history)
    rows = StoredResource.objects.filter(resource_type="Task", fhir_id__in={task_id for task_id, _ in wanted})
    versions: dict[str, set[int]] = {}
    for task_id, version in wanted:
        versions.setdefault(task_id, set()).add(version)
    for pk, task_id, current, content in rows.values_list("pk", "fhir_id", "version_id", "content"):
        if current in versions[task_id]:
            found[(task_id, current)] = content
        rest = versions[task_id] - {current}
        if rest:
            older[pk] = (task_id, rest)
    if older:
        match = Q(pk__in=[])
        for pk, (_, numbers) in older.items():
            match |= Q(resource_id=pk, version_id__in=sorted(numbers))
        for pk, version, content in ResourceVersion.objects.filter(match).values_list("resource_id", "version_id", "content"):
            found[(older[pk][0], version)] = content
    return found


def _status_of(subscription: Subscription) -> tuple[str, list[str]]:
    status = subscription.status
    return status, [ERROR_CODE] if status == Subscription.Status.ERROR else []


def _bundle(subscription: Subscription, *, type: str, events=(), now: dt.datetime) -> str:  # noqa: A002
    status, errors = _status_of(subscription)
    bundle = notification_bundle(
        base_url=base_url_of(subscription),
        subscription_id=subscription.fhir_id or str(subscription.pk),
        status=status,
        type=type,
        events_since_start=events[-1].number if events else subscription.events_since_start,
        content=subscription.payload,
        events=events,
        errors=errors,
        timestamp=now,
    )
    return json.dumps(bundle, separators=(",", ":"))


def _subscription_url(subscription: Subscription) -> str:
    return f"{base_url_of(subscription)}/Subscription/{subscription.fhir_id or subscription.pk}"


def handshake(subscription: Subscription, *, now: dt.datetime) -> tuple[str, str]:
    """(subject, content) of the handshake a new subscription gets (status ``requested``, no events)."""
    if subscription.channel == Subscription.Channel.EMAIL:
        return (
            "Referral notifications are set up",
            f"This address now receives a notice when one of your clinic's referrals changes "
            f"(subscription {_subscription_url(subscription)}).\n"
            "Each notice carries a link and never patient details.\n",
        )
    return "", _bundle(subscription, type=HANDSHAKE, now=now)


def heartbeat(subscription: Subscription, *, now: dt.datetime) -> tuple[str, str]:
    """(subject, content) of a heartbeat: the subscription's status and its event count so far."""
    return "", _bundle(subscription, type=HEARTBEAT, now=now)


def event_notification(
    subscription: Subscription, *, number: int, task: dict, created: bool, at: dt.datetime, now: dt.datetime
) -> tuple[str, str]:
    """(subject, content) of event ``number``: ``task`` is the Task version the change produced. The e-mail
    carries no PHI: the event number and a link to the Task."""
    if subscription.channel == Subscription.Channel.EMAIL:
        return (
            "A referral changed",
            f"One of your referrals changed (notification {number}).\n"
            f"See it in your EHR, or at {base_url_of(subscription)}/Task/{task['id']}\n",
        )
    event = NotificationEvent(number=number, timestamp=at, task=task, created=created)
    return "", _bundle(subscription, type=EVENT_NOTIFICATION, events=[event], now=now)


def query_status(subscription: Subscription) -> dict:
    """The subscription's SubscriptionStatus for ``$status`` (type ``query-status``)."""
    status, errors = _status_of(subscription)
    return status_parameters(
        base_url=base_url_of(subscription),
        subscription_id=subscription.fhir_id or str(subscription.pk),
        status=status,
        type="query-status",
        events_since_start=subscription.events_since_start,
        content=subscription.payload,
        errors=errors,
    )


def query_event(subscription: Subscription, events: list[NotificationEvent], *, now: dt.datetime) -> dict:
    """``$events``' answer: a history Bundle (type ``query-event``) with the numbered events asked for."""
    status, errors = _status_of(subscription)
    # An e-mail subscription replays as id-only: over FHIR, to its own clinic, the ids are no disclosure.
    content = "id-only" if subscription.channel == Subscription.Channel.EMAIL else subscription.payload
    return notification_bundle(
        base_url=base_url_of(subscription),
        subscription_id=subscription.fhir_id or str(subscription.pk),
        status=status,
        type="query-event",
        events_since_start=subscription.events_since_start,
        content=content,
        events=events,
        errors=errors,
        timestamp=now,
    )
