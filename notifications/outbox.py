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
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from audit.services import accesses_record
from fhir_bridge.models import ResourceVersion, StoredResource
from fhir_bridge.subscriptions import task_matches
from notifications import bundles
from notifications.delivery import DeliveryResult, deliver
from notifications.followups import Planned, backoff, followup_schedule
from notifications.http import Connections
from notifications.models import DELIVERY_INSERT_BATCH, NOTIFIED_SUBSCRIPTION_STATUSES, Delivery, Subscription
from referrals.models import Referral, ReferralEvent

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


# --- Fan-out ------------------------------------------------------------------------------------------------


def notification_queue(
    *, subscription: Subscription, notification_type: str, subject: str, content: str, now: dt.datetime
) -> Delivery:
    """Write one un-numbered message of ``subscription`` (a handshake or a heartbeat), attempted as soon as the
    current transaction commits."""
    delivery = Delivery.objects.create(
        channel=subscription.channel,
        subscription=subscription,
        notification_type=notification_type,
        endpoint=subscription.endpoint,
        subject=subject[:200],
        content=content,
        next_attempt_at=now,
    )
    followup_schedule(plans=[_attempt_plan(delivery, now)], now=now)
    return delivery


def _task_changes(events: list, tasks: dict[int, StoredResource]) -> dict[tuple[int, int], list]:
    """The events grouped by the referral Task version they produced: {(referral id, version): [events]}.

    One change to a referral (referral_update) may leave several events (its status and a note) and always one
    Task version, written after its events in the same transaction (fhir_bridge.projection). So an event's
    version is the first one written at or after it; a creation's is the first version. Later changes wait for
    the referral's lock, so no earlier version is written after a later change's event."""
    times: dict[int, list[tuple[int, dt.datetime]]] = defaultdict(list)
    first_at = min(e.at for e in events)
    for row in tasks.values():
        times[row.referral_id].append((row.version_id, row.last_updated))
    for referral_id, version_id, last_updated in (
        ResourceVersion.objects.filter(resource__in=list(tasks.values()), last_updated__gte=first_at)
        .values_list("resource__referral_id", "version_id", "last_updated")
    ):
        times[referral_id].append((version_id, last_updated))
    changes: dict[tuple[int, int], list] = defaultdict(list)
    for event in events:
        row = tasks.get(event.referral_id)
        if row is None:
            continue
        if event.kind == ReferralEvent.Kind.CREATED:
            version = 1
        else:
            later = [v for v, at in times[event.referral_id] if at >= event.at]
            version = min(later) if later else row.version_id
        changes[(event.referral_id, version)].append(event)
    return changes


def events_fan_out(*, limit: int | None = None, now: dt.datetime | None = None) -> int:
    """Fan out up to ``limit`` events not yet fanned out; return how many were. Each change (the Task version
    its events produced) is one numbered notification per matching subscription, its content fixed here. Two
    runs at once take different events (SKIP LOCKED), and lock the subscriptions they number in id order, so
    they never deadlock."""
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
        clinics = dict(Referral.objects.filter(pk__in=referral_ids).values_list("pk", "clinic_id"))
        task_rows = StoredResource.objects.filter(referral_id__in=referral_ids, resource_type="Task")
        tasks = {row.referral_id: row for row in task_rows.defer("content")}
        subscriptions = defaultdict(list)
        for sub in Subscription.objects.filter(
            clinic_id__in=set(clinics.values()), status__in=NOTIFIED_SUBSCRIPTION_STATUSES
        ):
            subscriptions[sub.clinic_id].append(sub)
        matches = []  # (first event, Task content, created, subscription id), in the order of the changes
        changes = _task_changes(events, tasks) if subscriptions else {}
        changes = {key: grouped for key, grouped in changes.items() if subscriptions.get(clinics.get(key[0]))}
        # Every change's Task version in two queries, not two per change (bench/followups.py).
        contents = bundles.task_versions((tasks[referral_id].fhir_id, version) for referral_id, version in changes)
        for (referral_id, version), grouped in sorted(changes.items(), key=lambda item: item[1][0].pk):
            candidates = subscriptions[clinics[referral_id]]
            task = contents.get((tasks[referral_id].fhir_id, version))
            if task is None:
                log.warning("referral %s: Task version %s is not kept; not notified", referral_id, version)
                continue
            created = grouped[0].kind == ReferralEvent.Kind.CREATED
            for sub in candidates:
                if task_matches(bundles.filters_of(sub), task):
                    matches.append((grouped[0], task, created, sub.pk))
        deliveries = []
        if matches:
            # One writer per subscription: its row lock, taken in id order, guards its counter.
            locked = {
                s.pk: s
                for s in Subscription.objects.select_for_update().filter(pk__in={m[3] for m in matches}).order_by("pk")
            }
            # A change whose events another batch split from these was notified with them: once per version.
            # Read under the locks, so that a batch running at the same moment has committed what it numbered.
            done = _versions_notified(
                subscription_ids=list(locked), versions={(m[1]["id"], int(m[1]["meta"]["versionId"])) for m in matches}
            )
            matches = [m for m in matches if (m[3], m[1]["id"], int(m[1]["meta"]["versionId"])) not in done]
            for event, task, created, sub_id in matches:
                sub = locked.get(sub_id)
                if sub is None or not sub.is_notified(now):
                    continue  # switched off meanwhile, or past its end: not numbered
                sub.events_since_start += 1
                subject, content = bundles.event_notification(
                    sub, number=sub.events_since_start, task=task, created=created, at=event.at, now=now
                )
                deliveries.append(
                    Delivery(
                        channel=sub.channel,
                        subscription=sub,
                        notification_type=bundles.EVENT_NOTIFICATION,
                        event_number=sub.events_since_start,
                        referral_event_id=event.pk,
                        task_id=task["id"],
                        task_version=int(task["meta"]["versionId"]),
                        endpoint=sub.endpoint,
                        subject=subject,
                        content=content,
                        next_attempt_at=now,
                    )
                )
            Subscription.objects.bulk_update(locked.values(), ["events_since_start"])
            deliveries = Delivery.objects.bulk_create(deliveries, batch_size=DELIVERY_INSERT_BATCH)
            followup_schedule(plans=[_attempt_plan(d, now) for d in deliveries], now=now)
        ReferralEvent.objects.filter(pk__in=[e.pk for e in events]).update(notified_at=now)
    log.info("fanned out %d events into %d deliveries", len(events), len(deliveries))
    return len(events)


def _versions_notified(*, subscription_ids: list[int], versions: set[tuple[str, int]]) -> set[tuple[int, str, int]]:
    """Which of the Task ``versions`` ``{(Task id, version)}`` the subscriptions were already notified of:
    ``{(subscription id, Task id, version)}``.

    On PostgreSQL one index probe of ``delivery_task_version`` per version (a join on the pairs): Task ids IN and
    versions IN made the planner take their cross product, or, with the statistics of a table that had just grown
    (the bench's), read every notification of those Tasks (10-18 ms a batch at ~1,000 versions a Task,
    bench/followups.py). Neither statement is ordered: the model's ordering by id would sort for nothing."""
    if not versions:
        return set()
    if connection.vendor != "postgresql":
        rows = Delivery.objects.filter(
            subscription_id__in=subscription_ids, notification_type=bundles.EVENT_NOTIFICATION,
            task_id__in={t for t, _ in versions}, task_version__in={v for _, v in versions},
        )
        return set(rows.exclude(task_id="").order_by().values_list("subscription_id", "task_id", "task_version"))
    table = Delivery._meta.db_table
    task_ids, numbers = zip(*sorted(versions), strict=True)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT d.subscription_id, d.task_id, d.task_version
            FROM unnest(%s::varchar[], %s::integer[]) AS v(task_id, task_version)
            JOIN {table} d ON d.task_id = v.task_id AND d.task_version = v.task_version
            WHERE d.task_id <> '' AND d.notification_type = %s AND d.subscription_id = ANY(%s)
            """,
            [list(task_ids), list(numbers), bundles.EVENT_NOTIFICATION, subscription_ids],
        )
        return set(cursor.fetchall())


# --- Attempts, dead letters, replays ------------------------------------------------------------------------


def _subscription_turns(subscription_ids: Iterable[int]) -> None:
    """Take the subscriptions' delivery turns until this transaction ends, in id order (two workers that take two
    subscriptions' turns never wait on each other crosswise), so that a subscription's deliveries are decided one
    at a time (an attempt that waits and one that finishes cannot miss each other). On PostgreSQL an advisory
    lock each, all in one statement: the subscription's row lock would make the fan-out, which numbers under
    it, wait for a slow receiver. SQLite runs one writer at a time anyway. A savepoint rolled back releases the
    turns taken inside it."""
    ids = sorted(set(subscription_ids))
    if ids and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # Key space: the subscription ids, in the hub's only use of advisory locks. The function scan yields
            # the array in its order, and each row's lock is taken as the row is produced.
            cursor.execute("SELECT pg_advisory_xact_lock(id) FROM unnest(%s::bigint[]) AS turn(id)", [ids])


def _earlier_pending(*, besides: Iterable[int] = ()):
    """For a numbered Delivery row (OuterRef): whether its subscription has a message that must go before it
    still pending (a handshake, even one newer than the notification: a re-activation's confirms the endpoint
    before anything else goes there; or a lower event number), ``besides`` those deliveries (a batch's own, whose
    state the batch follows in memory)."""
    return Exists(
        Delivery.objects.filter(subscription_id=OuterRef("subscription_id"), state=Delivery.State.PENDING)
        .filter(
            Q(notification_type=bundles.HANDSHAKE) | Q(event_number__lt=OuterRef("event_number"))
        )
        .exclude(pk=OuterRef("pk"))
        .exclude(pk__in=list(besides))
    )


def _goes_before(earlier: Delivery, delivery: Delivery) -> bool:
    """Whether ``earlier``, while pending, holds ``delivery`` back (in memory what _earlier_pending asks)."""
    if earlier.pk == delivery.pk or earlier.subscription_id != delivery.subscription_id:
        return False
    if earlier.notification_type == bundles.HANDSHAKE:
        return delivery.event_number is not None or earlier.pk < delivery.pk
    return (earlier.event_number is not None and delivery.event_number is not None
            and earlier.event_number < delivery.event_number)


def _resume_next(delivery: Delivery, now: dt.datetime) -> None:
    """``delivery`` (a handshake or a numbered notification) is delivered or dead: attempt the subscription's
    waiting notifications that nothing scheduled goes before now, the first HUB_FOLLOWUP_BATCH of them in
    event-number order. They are handed over in one message (a subscription's rows are never split,
    followups._dispatch_on_commit) and run as one batch, in order; one that fails holds the rest back again, and
    its own delivery (or death) resumes them. Those behind a message still scheduled (a retry, a first attempt
    not run yet) stay waiting: that one resumes them when it finishes. (Resuming only the next one cost a
    transaction and a message per waiting notification after a receiver came back.) Call holding the
    subscription's turn, after the deliveries' new states are written."""
    scheduled_before = Delivery.objects.filter(
        subscription_id=OuterRef("subscription_id"), state=Delivery.State.PENDING, next_attempt_at__isnull=False
    ).filter(Q(notification_type=bundles.HANDSHAKE) | Q(event_number__lt=OuterRef("event_number")))
    waiting = list(
        Delivery.objects.filter(
            subscription_id=delivery.subscription_id,
            state=Delivery.State.PENDING,
            event_number__isnull=False,
            next_attempt_at__isnull=True,
        )
        .filter(~Exists(scheduled_before))
        .order_by("event_number")
        .values_list("pk", "round")[: settings.HUB_FOLLOWUP_BATCH]
    )
    if not waiting:
        return
    Delivery.objects.filter(pk__in=[pk for pk, _ in waiting]).update(next_attempt_at=now)
    followup_schedule(
        plans=[
            Planned(
                kind=DELIVERY_ATTEMPT,
                key=f"delivery:{pk}:round:{round_}:after:{delivery.pk}:{delivery.round}",
                due_at=now,
                delivery_id=pk,
                subscription_id=delivery.subscription_id,
            )
            for pk, round_ in waiting
        ],
        now=now,
    )


def delivery_attempt(*, delivery_id: int, subscription_id: int | None, now: dt.datetime) -> str:
    """Attempt one delivery: the handler of the delivery-attempt follow-up, run in that row's transaction. What
    happens is ``delivery_attempts``', for one."""
    return delivery_attempts(attempts=[(delivery_id, subscription_id)], now=now)[0]


class SentElsewhere(RuntimeError):
    """The delivery is being sent by another worker right now (its ``sending_until`` has not passed)."""


# What an attempt changes on its Delivery: written for a batch with an UPDATE per distinct set of values.
_ATTEMPT_FIELDS = ("attempts", "state", "delivered_at", "next_attempt_at", "last_error", "sending_until")


def delivery_attempts(
    *, attempts: list[tuple[int, int | None]], now: dt.datetime, until: float | None = None
) -> dict[int, str]:
    """Attempt several deliveries, each ``(delivery id, its subscription id)``, all in the current transaction:
    ``deliveries_claim``, ``deliveries_send`` and ``deliveries_record`` in a row. Returns ``{index in attempts:
    outcome}`` of those taken. For one follow-up run on its own (followups.followup_run, and a chunk run again row
    by row); a sweep's chunk runs the three steps with no transaction open while it sends (Kind.staged)."""
    outgoing = deliveries_claim(attempts=attempts, now=now)
    sent = deliveries_send(outgoing, until=until)
    outcomes = deliveries_record(outgoing, sent, now=now)
    for index, outcome in outcomes.items():
        if isinstance(outcome, Exception):
            raise outcome
    if outgoing.elsewhere:  # its follow-up is retried later: marked done, it would be lost if that worker died
        raise SentElsewhere(f"delivery {attempts[min(outgoing.elsewhere)][0]} is being sent by another worker")
    return {index: outcome for index, outcome in outcomes.items() if outcome is not None}


@dataclass
class Outgoing:
    """What ``deliveries_claim`` decided for a batch of attempts (indexes into ``attempts``)."""

    attempts: list[tuple[int, int | None]]
    # Settled at the claim: not pending any more, or waiting for an earlier notification (parked, written).
    outcomes: dict[int, str] = field(default_factory=dict)
    # Left alone: another worker is sending the delivery right now (its ``sending_until`` has not passed).
    elsewhere: set[int] = field(default_factory=set)
    # To send: per subscription (or per e-mail), the deliveries in the order they must go; and for each delivery
    # the attempts that asked for it (the same delivery twice in one chunk is sent once).
    queues: list[list[Delivery]] = field(default_factory=list)
    asked: dict[int, list[int]] = field(default_factory=dict)


@dataclass
class Sent:
    """What ``deliveries_send`` got: per delivery id its DeliveryResult, or the exception ``deliver`` raised (a
    bug, not a receiver's failure); the disclosures' audit entries; and the deliveries it did not send (their
    queue ran out of time or stopped behind a failure)."""

    results: dict[int, DeliveryResult | Exception] = field(default_factory=dict)
    disclosures: list[dict] = field(default_factory=list)
    # Subscriptions whose receiver took longer than SLOW_SECONDS for one of them.
    slow: set[int] = field(default_factory=set)


def deliveries_claim(
    *, attempts: list[tuple[int, int | None]], now: dt.datetime, lease_until: dt.datetime | None = None
) -> Outgoing:
    """Step (a) of a batch of delivery attempts, in a short transaction of the caller's: decide what to send.

    Under the subscriptions' turns (``_subscription_turns``, to this transaction's end) the rows are locked and
    read in one statement, with whether a message outside the batch is pending before each. A delivery already
    delivered or dead is settled; one whose ``sending_until`` has not passed is being sent by another worker (a
    duplicate message) and left alone; a numbered notification with an earlier one pending (handshake or lower
    number, including one in flight elsewhere, which is pending until recorded) waits: ``next_attempt_at``
    emptied, resumed by that one's record. The rest are claimed: ``sending_until`` = ``lease_until`` (by default
    now + HUB_DELIVERY_TIMEOUT_SECONDS + 10 s, for one send), the lease under which no other worker sends them,
    and which a worker killed before recording lets run out, so that they are sent again with the same content
    (at least once)."""
    outgoing = Outgoing(attempts=attempts)
    if not attempts:
        return outgoing
    _subscription_turns(sub for _, sub in attempts if sub is not None)
    ids = {delivery_id for delivery_id, _ in attempts}
    rows = {
        d.pk: d
        for d in Delivery.objects.select_for_update(of=("self",)).select_related("subscription")
        .defer("subscription__resource").filter(pk__in=ids).annotate(behind=_earlier_pending(besides=ids))
        .order_by("pk")
    }
    subscriptions: dict[int, Subscription] = {}
    for d in rows.values():  # one Subscription object per subscription: the batch keeps its status up to date
        if d.subscription_id is not None:
            d.subscription = subscriptions.setdefault(d.subscription_id, d.subscription)

    def order(index: int):
        d = rows.get(attempts[index][0])
        if d is None:
            return (0, 0, 0, 0)
        # A subscription's handshake (and heartbeats) before its numbered notifications, those by number.
        return (d.subscription_id or 0, d.event_number is not None, d.event_number or 0, d.pk)

    before: dict[int, list[Delivery]] = defaultdict(list)  # per subscription: the batch's pending, not sent now
    parked: list[Delivery] = []
    queues: dict[object, list[Delivery]] = {}
    for index in sorted(range(len(attempts)), key=order):
        delivery_id = attempts[index][0]
        delivery = rows.get(delivery_id)
        if delivery is None or delivery.state != Delivery.State.PENDING:
            outgoing.outcomes[index] = f"delivery {delivery_id} is {delivery.state if delivery else 'gone'}"
            continue
        if delivery.pk in outgoing.asked:
            outgoing.asked[delivery.pk].append(index)
            continue
        sub = delivery.subscription
        if delivery.sending_until is not None and delivery.sending_until > now:
            outgoing.elsewhere.add(index)
            if sub is not None:
                before[sub.pk].append(delivery)  # pending until that worker records it: later ones wait
            continue
        ordered = sub is not None and delivery.event_number is not None
        if ordered and (delivery.behind or any(_goes_before(e, delivery) for e in before[sub.pk])):
            before[sub.pk].append(delivery)
            parked.append(delivery)
            outgoing.outcomes[index] = f"waits for an earlier notification of subscription {sub.pk}"
            continue
        outgoing.asked[delivery.pk] = [index]
        # A subscription's on one thread, in order; messages of no subscription (e-mails, plain rest-hooks) to
        # the same receiver on one thread too, over one kept-open connection: one connection each, in parallel,
        # overflowed a receiver's listen backlog, and each dropped SYN cost TCP's 1 s retransmit
        # (bench/followups.py's steady load fell from 234 to 106 follow-ups/s).
        key = sub.pk if sub is not None else ("to", delivery.channel, delivery.endpoint)
        queues.setdefault(key, []).append(delivery)
    waiting = [d.pk for d in parked if d.next_attempt_at is not None]
    if waiting:
        Delivery.objects.filter(pk__in=waiting).update(next_attempt_at=None)
    if outgoing.asked:
        lease_until = lease_until or now + dt.timedelta(seconds=settings.HUB_DELIVERY_TIMEOUT_SECONDS + 10)
        Delivery.objects.filter(pk__in=list(outgoing.asked)).update(sending_until=lease_until)
    outgoing.queues = list(queues.values())
    return outgoing


_senders: ThreadPoolExecutor | None = None
_senders_lock = threading.Lock()


def _sender_pool() -> ThreadPoolExecutor:
    """The process's sending threads (HUB_DELIVERY_SENDERS), made at first use: after a prefork worker forks."""
    global _senders
    with _senders_lock:
        if _senders is None:
            _senders = ThreadPoolExecutor(max_workers=settings.HUB_DELIVERY_SENDERS, thread_name_prefix="hub-send")
        return _senders


def deliveries_send(outgoing: Outgoing, *, until: float | None = None) -> Sent:
    """Step (b): send what ``deliveries_claim`` claimed, touching no database (call it with no transaction open,
    so that a slow receiver holds nothing up). Each queue (a subscription's deliveries in event-number order, or
    the messages of no subscription to one receiver) goes on one thread over its own kept-open connections; different subscriptions' queues go at once,
    up to HUB_DELIVERY_SENDERS threads. A queue stops at its first failure of a message that later ones wait for
    (a handshake or a numbered notification), and starts no message after ``until`` (a ``time.monotonic()``
    value) but the first queue's first: every send ends by ``until`` + one request's timeout, inside the
    claim's lease."""
    sent = Sent()
    if not outgoing.queues:
        return sent
    if len(outgoing.queues) == 1:
        parts = [_queue_send(outgoing.queues[0], until, first=True)]
    else:
        parts = list(_sender_pool().map(
            lambda n: _queue_send(outgoing.queues[n], until, first=n == 0), range(len(outgoing.queues))
        ))
    for queue, (results, disclosures, slow) in zip(outgoing.queues, parts, strict=True):
        sent.results.update(results)
        sent.disclosures += disclosures
        if slow and queue[0].subscription_id is not None:
            sent.slow.add(queue[0].subscription_id)
    return sent


# A subscription whose receiver took longer than SLOW_SECONDS to answer a notification is slow for SLOW_FOR
# (Subscription.slow_until, written by the record): the fan-out sends its notifications through the delivery
# queue, not itself, so that one slow receiver does not hold up every clinic's next notifications
# (notifications.tasks._held_send).
SLOW_SECONDS = 0.5
SLOW_FOR = dt.timedelta(minutes=10)


def subscriptions_slow(subscription_ids: Iterable[int], now: dt.datetime | None = None) -> set[int]:
    """Of ``subscription_ids``, those whose receiver was slow within SLOW_FOR: one query."""
    ids = set(subscription_ids)
    if not ids:
        return set()
    return set(Subscription.objects.filter(pk__in=ids, slow_until__gt=now or timezone.now()).values_list("pk", flat=True))


def _queue_send(queue: list[Delivery], until: float | None, *, first: bool) -> tuple[dict, list[dict], bool]:
    results: dict[int, DeliveryResult | Exception] = {}
    disclosures: list[dict] = []
    failed: list[Delivery] = []
    slow = False
    with Connections() as connections:  # one TCP connection per receiver for the queue, not one per POST
        for position, delivery in enumerate(queue):
            if (position or not first) and until is not None and time.monotonic() > until:
                break
            if any(_goes_before(earlier, delivery) for earlier in failed):
                break
            began = time.monotonic()
            try:
                result = deliver(delivery, disclosures=disclosures, connections=connections)
            except Exception as exc:  # noqa: BLE001 - a bug in the send: this row is retried, the others recorded
                log.warning("delivery %s: sending raised %s", delivery.pk, exc, exc_info=True)
                results[delivery.pk] = exc
                failed.append(delivery)
                continue
            finally:
                slow = slow or time.monotonic() - began > SLOW_SECONDS
            results[delivery.pk] = result
            if not result.ok:
                failed.append(delivery)
    return results, disclosures, slow


def deliveries_record(outgoing: Outgoing, sent: Sent, *, now: dt.datetime) -> dict[int, str | Exception | None]:
    """Step (c), in a short transaction of the caller's: record what ``deliveries_send`` got, under the
    subscriptions' turns again. Delivered: done. A transient failure (timeout, connection, 5xx, 408, 429)
    schedules the next attempt with backoff and jitter, or, at HUB_DELIVERY_MAX_ATTEMPTS, dead-letters the row; a
    permanent one (refused by policy, other 4xx) dead-letters it at once, and so does any failed heartbeat (the
    next is due anyway). A numbered notification left unsent behind a failure waits (resumed when that one is
    delivered or dead); one left unsent for time is released for the caller's next round. Then the rows' new
    states (one UPDATE per distinct set), the disclosures' audit rows, the retries' follow-ups and one look per
    subscription for a waiting notification to resume.

    Returns ``{index in attempts: outcome}`` for every attempt the claim did not settle or leave alone: the text,
    the exception ``deliver`` raised (the caller retries that row), or None (not sent for time: run it again)."""
    outcomes: dict[int, str | Exception | None] = dict(outgoing.outcomes)
    queued = [d for queue in outgoing.queues for d in queue]
    if not queued:
        return outcomes
    _subscription_turns(d.subscription_id for d in queued if d.subscription_id is not None)
    fresh = dict(
        (pk, (status, errors))
        for pk, status, errors in Subscription.objects.filter(
            pk__in={d.subscription_id for d in queued if d.subscription_id is not None}
        ).values_list("pk", "status", "error_count")
    )
    for d in queued:  # the health another worker may have written since the claim
        if d.subscription is not None and d.subscription_id in fresh:
            d.subscription.status, d.subscription.error_count = fresh[d.subscription_id]
    retries: list[Planned] = []
    finished: dict[int, Delivery] = {}  # per subscription: the batch's last one delivered or dead
    for queue in outgoing.queues:
        stopped: list[Delivery] = []
        for delivery in queue:
            delivery.sending_until = None
            result = sent.results.get(delivery.pk)
            if result is None:
                if any(_goes_before(earlier, delivery) for earlier in stopped):
                    delivery.next_attempt_at = None
                    outcome = f"waits for an earlier notification of subscription {delivery.subscription_id}"
                else:
                    outcome = None  # out of time: the caller runs it again
            elif isinstance(result, Exception):
                stopped.append(delivery)
                outcome = result
            else:
                outcome = _attempt_record(delivery, result, now, retries=retries)
                if delivery.state == Delivery.State.PENDING:
                    stopped.append(delivery)
                elif delivery.subscription_id is not None and delivery.notification_type != bundles.HEARTBEAT:
                    finished[delivery.subscription_id] = delivery
            first, *again = outgoing.asked[delivery.pk]
            outcomes[first] = outcome
            for index in again:
                outcomes[index] = f"delivery {delivery.pk} is {delivery.state}" if outcome is not None else None
    accesses_record(sent.disclosures)
    if sent.slow:
        Subscription.objects.filter(pk__in=sent.slow).update(slow_until=now + SLOW_FOR)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for delivery in queued:
        groups[tuple(getattr(delivery, name) for name in _ATTEMPT_FIELDS)].append(delivery.pk)
    for values, pks in groups.items():
        Delivery.objects.filter(pk__in=pks).update(**dict(zip(_ATTEMPT_FIELDS, values, strict=True)))
    followup_schedule(plans=retries, now=now)
    for delivery in finished.values():
        _resume_next(delivery, now)
    return outcomes


def _attempt_record(delivery: Delivery, result: DeliveryResult, now: dt.datetime, *, retries: list[Planned]) -> str:
    """Set ``delivery``'s new state after one send (``result``) on it, unsaved; its next attempt's follow-up goes
    to ``retries``. The subscription's health is written at once (rarely: only a failure, or the first success
    after one) and kept up to date on the object."""
    delivery.attempts += 1
    sub = delivery.subscription
    if result.ok:
        delivery.state = Delivery.State.DELIVERED
        delivery.delivered_at = now
        delivery.next_attempt_at = None
        delivery.last_error = ""
        # Only when there is something to reset: a no-op UPDATE per message would still take the subscription's
        # row lock to the chunk's commit, and the fan-out, which numbers under that lock, would wait for the
        # chunk's slower receivers (the reason for the advisory turn, _subscription_turns).
        healthy = sub is not None and sub.error_count == 0 and sub.status == Subscription.Status.ACTIVE
        if sub is not None and not healthy:
            if Subscription.objects.filter(pk=sub.pk).exclude(status=Subscription.Status.OFF).update(
                error_count=0, status=Subscription.Status.ACTIVE
            ):
                sub.error_count, sub.status = 0, Subscription.Status.ACTIVE
    else:
        delivery.last_error = result.detail[:500]
        if sub is not None:
            Subscription.objects.filter(pk=sub.pk).update(error_count=F("error_count") + 1)
            sub.error_count += 1
            # A failed handshake is an error at once (the backport: requested -> error); otherwise after a run.
            failing = Q(error_count__gte=SUBSCRIPTION_ERROR_AFTER)
            if delivery.notification_type == bundles.HANDSHAKE:
                failing |= Q(status=Subscription.Status.REQUESTED)
            if Subscription.objects.filter(
                failing, pk=sub.pk, status__in=(Subscription.Status.REQUESTED, Subscription.Status.ACTIVE)
            ).update(status=Subscription.Status.ERROR):
                sub.status = Subscription.Status.ERROR
        final = (
            result.permanent
            or delivery.notification_type == bundles.HEARTBEAT
            or delivery.attempts >= settings.HUB_DELIVERY_MAX_ATTEMPTS
        )
        if final:
            delivery.state = Delivery.State.DEAD
            delivery.next_attempt_at = None
            log.warning("delivery %s dead after %d attempts: %s", delivery.pk, delivery.attempts, result.detail)
        else:
            delivery.next_attempt_at = now + backoff(
                delivery.attempts, base=settings.HUB_RETRY_BASE_SECONDS, cap=settings.HUB_RETRY_MAX_SECONDS
            )
            retries.append(_attempt_plan(delivery, delivery.next_attempt_at))
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
