"""The transactional outbox: every message is a Delivery row, written in a transaction, attempted by a
follow-up, retried with backoff, and dead-lettered at the limit.

Notifications start from the referral's event rows (referrals.ReferralEvent), which the domain writes in the
transaction of each change. ``events_fan_out`` takes the events not yet fanned out (a partial index, not a cursor
on ids: ids commit out of order), matches them to the clinic's subscriptions, numbers them per subscription under
that subscription's row lock (one writer per subscription, gap-free; clinics never share a counter), and writes a
Delivery and its first delivery-attempt follow-up for each, all in one transaction with marking the events done.
E-mails (to therapists and coordinators) are Delivery rows too, written by ``emails_queue``.
"""

import datetime as dt
import json
import logging
from collections import defaultdict

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from notifications.delivery import deliver
from fhir_bridge.models import StoredResource
from notifications.followups import Planned, backoff, followup_schedule
from referrals.models import Referral, ReferralEvent
from notifications.models import NOTIFIED_SUBSCRIPTION_STATUSES, Delivery, Subscription

log = logging.getLogger(__name__)

DELIVERY_ATTEMPT = "delivery-attempt"
# After this many failed deliveries in a row a subscription shows "error" (it keeps being numbered and tried).
SUBSCRIPTION_ERROR_AFTER = 3


def link(path: str) -> str:
    """An absolute link into the hub for a message: HUB_PUBLIC_BASE_URL, else the development address."""
    base = (settings.HUB_PUBLIC_BASE_URL or "http://127.0.0.1:8000").rstrip("/")
    return f"{base}/{path.lstrip('/')}"


def _attempt_plan(delivery: Delivery, due_at: dt.datetime) -> Planned:
    return Planned(
        kind=DELIVERY_ATTEMPT,
        key=f"delivery:{delivery.pk}:round:{delivery.round}:attempt:{delivery.attempts + 1}",
        due_at=due_at,
        delivery_id=delivery.pk,
        subscription_id=delivery.subscription_id,
    )


def emails_queue(
    *, to: list[str], subject: str, body: str, now: dt.datetime | None = None, **concerns
) -> list[Delivery]:
    """Write one e-mail Delivery per address, each attempted as soon as the current transaction commits.
    ``body`` must carry no PHI: a link and ids only."""
    now = now or timezone.now()
    rows = Delivery.objects.bulk_create(
        Delivery(
            channel=Subscription.Channel.EMAIL, endpoint=address, subject=subject[:200], content=body, next_attempt_at=now
        )
        for address in to
    )
    followup_schedule(plans=[_attempt_plan(d, now) for d in rows], now=now)
    return rows


# --- What a notification says -------------------------------------------------------------------------------


def subscription_matches(subscription: Subscription, *, referral, status: str, task_id: str) -> bool:
    """Does a change to ``referral`` that left it in ``status`` pass the subscription's Task-topic filters? Each
    key must match one of its values; a key this hub does not filter on (``_lastUpdated``) passes."""
    facts = {
        "_id": [task_id, f"Task/{task_id}"],
        "status": [status],
        "requester": [referral.requester_reference],
        "owner": [referral.owner_reference],
        "code": [referral.service_code, f"{referral.service_system}|{referral.service_code}"],
    }
    for key, wanted in (subscription.filter_criteria or {}).items():
        if key not in facts:
            continue
        values = wanted if isinstance(wanted, list) else [wanted]
        if not set(map(str, values)) & {v for v in facts[key] if v}:
            return False
    return True


def notification_render(*, subscription: Subscription, number: int, event, task: tuple[str, int] | None) -> str:
    """The body of one numbered notification, fixed at fan-out. For now the facts a notification Bundle is
    built from (the subscription, the event number, the Task's id and version, the event); the R4 Backport
    Bundle from fhir_bridge/subscriptions.py replaces it here. E-mail notifications carry no PHI: a link."""
    task_id, version = task or ("", 0)
    if subscription.channel == Subscription.Channel.EMAIL:
        return (
            f"One of your referrals changed (notification {number}).\n"
            f"See it in your EHR, or at {link(f'fhir/Task/{task_id}')}\n"
        )
    return json.dumps(
        {
            "subscription": f"Subscription/{subscription.pk}",
            "eventsSinceSubscriptionStart": number,
            "payload": subscription.payload,
            "focus": f"Task/{task_id}/_history/{version}" if task_id else "",
            "event": {"kind": event.kind, "from": event.from_status, "to": event.to_status, "at": event.at.isoformat()},
        },
        sort_keys=True,
    )


def _status_after(event) -> str:
    """The referral's status as ``event`` left it: the referral may have moved on by fan-out time. A note
    carries none of its own: the status of the last event before it that did."""
    if event.to_status:
        return event.to_status
    return (
        ReferralEvent.objects.filter(referral_id=event.referral_id, id__lt=event.pk)
        .exclude(to_status="")
        .order_by("-id")
        .values_list("to_status", flat=True)
        .first()
        or ""
    )


def events_fan_out(*, limit: int | None = None, now: dt.datetime | None = None) -> int:
    """Fan out up to ``limit`` events not yet fanned out; return how many were. Two runs at once take different
    events (SKIP LOCKED), and lock the subscriptions they number in id order, so they never deadlock."""
    now = now or timezone.now()
    limit = limit or settings.HUB_FOLLOWUP_BATCH
    with transaction.atomic():
        events = list(
            ReferralEvent.objects.select_for_update(skip_locked=True)
            .filter(notified_at__isnull=True)
            .order_by("id")[:limit]
        )
        if not events:
            return 0
        referral_ids = {e.referral_id for e in events}
        referrals = Referral.objects.in_bulk(referral_ids)
        tasks = dict(
            (r, (f, v))
            for r, f, v in StoredResource.objects.filter(referral_id__in=referral_ids, resource_type="Task")
            .values_list("referral_id", "fhir_id", "version_id")
        )
        subscriptions = defaultdict(list)
        for sub in Subscription.objects.filter(
            clinic_id__in={r.clinic_id for r in referrals.values()}, status__in=NOTIFIED_SUBSCRIPTION_STATUSES
        ):
            subscriptions[sub.clinic_id].append(sub)
        matches = []  # (event, subscription id)
        for event in events:
            referral = referrals.get(event.referral_id)
            if referral is None:
                continue
            task_id = tasks.get(referral.pk, ("", 0))[0]
            status = _status_after(event)
            for sub in subscriptions.get(referral.clinic_id, []):
                if subscription_matches(sub, referral=referral, status=status, task_id=task_id):
                    matches.append((event, sub.pk))
        deliveries = []
        if matches:
            # One writer per subscription: its row lock, taken in id order, guards its counter.
            locked = {
                s.pk: s
                for s in Subscription.objects.select_for_update().filter(pk__in={m[1] for m in matches}).order_by("pk")
            }
            for event, sub_id in matches:
                sub = locked.get(sub_id)
                if sub is None or sub.status not in NOTIFIED_SUBSCRIPTION_STATUSES:
                    continue  # switched off meanwhile: not numbered
                sub.events_since_start += 1
                deliveries.append(
                    Delivery(
                        channel=sub.channel,
                        subscription=sub,
                        event_number=sub.events_since_start,
                        referral_event_id=event.pk,
                        endpoint=sub.endpoint,
                        subject="A referral changed" if sub.channel == Subscription.Channel.EMAIL else "",
                        content=notification_render(
                            subscription=sub,
                            number=sub.events_since_start,
                            event=event,
                            task=tasks.get(event.referral_id),
                        ),
                        next_attempt_at=now,
                    )
                )
            Subscription.objects.bulk_update(locked.values(), ["events_since_start"])
            deliveries = Delivery.objects.bulk_create(deliveries)
            followup_schedule(plans=[_attempt_plan(d, now) for d in deliveries], now=now)
        ReferralEvent.objects.filter(pk__in=[e.pk for e in events]).update(notified_at=now)
    log.info("fanned out %d events into %d deliveries", len(events), len(deliveries))
    return len(events)


# --- Attempts, dead letters, replays ------------------------------------------------------------------------


def delivery_attempt(*, delivery_id: int, now: dt.datetime) -> str:
    """Attempt one delivery: the handler of the delivery-attempt follow-up, run in that row's transaction.

    Delivered: done. Failed: the next attempt is scheduled with backoff and jitter, or, at
    HUB_DELIVERY_MAX_ATTEMPTS, the row is dead-lettered. A delivery already delivered or dead is not sent."""
    delivery = (
        Delivery.objects.select_for_update(of=("self",)).select_related("subscription").filter(pk=delivery_id).first()
    )
    if delivery is None or delivery.state != Delivery.State.PENDING:
        return f"delivery {delivery_id} is {delivery.state if delivery else 'gone'}"
    result = deliver(delivery)
    delivery.attempts += 1
    sub = delivery.subscription
    if result.ok:
        delivery.state = Delivery.State.DELIVERED
        delivery.delivered_at = now
        delivery.next_attempt_at = None
        delivery.last_error = ""
        if sub is not None:
            Subscription.objects.filter(pk=sub.pk).exclude(status=Subscription.Status.OFF).update(
                error_count=0, status=Subscription.Status.ACTIVE
            )
    else:
        delivery.last_error = result.detail[:500]
        if sub is not None:
            Subscription.objects.filter(pk=sub.pk).update(error_count=F("error_count") + 1)
            Subscription.objects.filter(
                pk=sub.pk, status=Subscription.Status.ACTIVE, error_count__gte=SUBSCRIPTION_ERROR_AFTER
            ).update(status=Subscription.Status.ERROR)
        if delivery.attempts >= settings.HUB_DELIVERY_MAX_ATTEMPTS:
            delivery.state = Delivery.State.DEAD
            delivery.next_attempt_at = None
            log.warning("delivery %s dead after %d attempts: %s", delivery.pk, delivery.attempts, result.detail)
        else:
            delivery.next_attempt_at = now + backoff(
                delivery.attempts, base=settings.HUB_RETRY_BASE_SECONDS, cap=settings.HUB_RETRY_MAX_SECONDS
            )
            followup_schedule(plans=[_attempt_plan(delivery, delivery.next_attempt_at)], now=now)
    delivery.save(update_fields=["attempts", "state", "delivered_at", "next_attempt_at", "last_error"])
    return f"{delivery.state}: {result.detail}"


@transaction.atomic
def deliveries_replay(*, delivery_ids: list[int], now: dt.datetime | None = None) -> int:
    """Give dead deliveries a new round of attempts, the first as soon as this commits; return how many. The
    content and event number stay: the receiver gets the same notification it missed."""
    now = now or timezone.now()
    dead = list(Delivery.objects.select_for_update().filter(pk__in=delivery_ids, state=Delivery.State.DEAD))
    for delivery in dead:
        delivery.state = Delivery.State.PENDING
        delivery.round += 1
        delivery.attempts = 0
        delivery.next_attempt_at = now
    Delivery.objects.bulk_update(dead, ["state", "round", "attempts", "next_attempt_at"])
    followup_schedule(plans=[_attempt_plan(d, now) for d in dead], now=now)
    return len(dead)
