"""The follow-up schedule: rows with a due time, claimed by a sweep under a lease, run by small idempotent tasks.

The path of one follow-up:
1. ``followup_schedule`` inserts it (once per key) in the transaction of the change that calls for it. One due
   already is handed to a worker when that transaction commits, so nobody waits for the sweep.
2. ``followups_claim`` (Celery beat's ``notifications.sweep``, every HUB_SWEEP_SECONDS) takes due rows whose
   lease is free with ``SELECT ... FOR UPDATE SKIP LOCKED``, sets the lease, and hands each to a task on commit.
   Two sweeps at once claim different rows; a row whose worker died is claimed again when its lease ends.
3. ``followups_run`` (the task, a chunk of rows at a time) locks its rows and runs each kind's handler only if
   the row is still pending and due; the handler's writes and the row's ``done`` commit together. A second
   delivery of the same task finds the rows done and does nothing. (``followup_run`` does the same for one row.)
4. A kind whose step goes out of the hub (``Kind.staged``: a delivery's POST or e-mail, a pull's fetch) takes it
   with no transaction open: ``followups_run`` claims those rows in one short transaction, runs the step, and
   records the outcomes in another, so that a slow receiver holds no lock.

Nothing is ever scheduled as a far-future ETA or countdown in the broker: the row is the schedule.
"""

import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from config.queue import enqueue_on_commit
from notifications.models import FollowUp

log = logging.getLogger(__name__)

# The queues of DESIGN.md §6 (CELERY_TASK_ROUTES): routing work never waits behind a flood of deliveries.
ROUTING, DELIVERY, SWEEPS = "routing", "delivery", "sweeps"


@dataclass(frozen=True)
class Kind:
    """One kind of follow-up: what runs it, how long after its cause it is due by default, and which queue its
    task goes to. ``handler(followup, now)`` runs inside the row's transaction, holding its lock; it returns a
    short outcome for the row and raises to have the row retried with backoff. ``staged``: see Staged."""

    handler: Callable[[FollowUp, dt.datetime], str]
    delay: dt.timedelta = field(default_factory=dt.timedelta)
    queue: str = SWEEPS
    staged: "Staged | None" = None


@dataclass(frozen=True)
class Staged:
    """A kind whose step in the outside world (an HTTP POST, an e-mail, a fetch) runs with no transaction open,
    so that a slow receiver holds no lock and no connection ``idle in transaction``: followups_run gives a chunk's
    due rows of the kind to ``claim`` in a short transaction (the rows locked), then to ``send`` with none, then
    to ``record`` in a second short transaction. ``handler`` still runs a row on its own (followup_run, and a
    chunk run again row by row).

    - ``claim(rows, now, lease_until) -> (work, settled)``: decide what to do, and claim it until ``lease_until``
      with a lease of the kind's own that keeps other workers off it until ``record`` (a worker killed before
      then lets it run out, and the rows are run again: at least once). ``settled`` is ``{row id: outcome}`` for
      rows done at once, or None for a row to leave alone, pending (another worker is on it). The other rows'
      own lease (``claimed_until``) is set to ``lease_until`` too, so that the sweep does not hand them over
      again meanwhile. ``lease_until`` is now + the chunk's budget + ``step_seconds()`` + a margin: what the
      sends may take, since none starts after the budget but the first.
    - ``send(work, until) -> sent``: the step outside, with no transaction open; no new step after ``until``
      (a ``time.monotonic()`` value) but the first.
    - ``record(rows, work, sent, now) -> {row id: outcome}`` for the rows ``claim`` did not settle: a text (the
      row is done), an exception (the row is retried with backoff, as when a handler raises) or None (not done
      for time: run again in the caller's next round)."""

    claim: Callable[[list[FollowUp], dt.datetime, dt.datetime], tuple[object, dict[int, str | None]]]
    send: Callable[[object, float], object]
    record: Callable[[list[FollowUp], object, object, dt.datetime], dict[int, str | Exception | None]]
    # The longest one step outside may take once started (a request's whole timeout), in seconds: the claim's
    # lease is the chunk's budget, this, and STAGED_LEASE_MARGIN_SECONDS.
    step_seconds: Callable[[], float] = lambda: 30.0


# What the claim's lease allows beyond the sends themselves: the record's short transaction.
STAGED_LEASE_MARGIN_SECONDS = 10


@dataclass(frozen=True)
class Planned:
    """A follow-up to insert: see followup_schedule."""

    kind: str
    key: str
    due_at: dt.datetime
    referral_id: int | None = None
    offer_id: int | None = None
    subscription_id: int | None = None
    delivery_id: int | None = None


def backoff(attempt: int, *, base: float, cap: float) -> dt.timedelta:
    """Exponential backoff with jitter for the ``attempt``-th retry (1, 2, ...): base·2^(attempt-1) seconds,
    capped at ``cap``, less a random part of up to half of it, so that receivers that failed together are not
    all retried in the same second."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return dt.timedelta(seconds=ceiling / 2 + random.uniform(0, ceiling / 2))  # noqa: S311 - not for secrets


def _kinds():
    # The table of kinds imports the services that handlers call, which themselves schedule follow-ups: read it
    # when a row is run, not when this module loads.
    from notifications.kinds import KINDS

    return KINDS


def followup_schedule(*, plans: Iterable[Planned], now: dt.datetime | None = None) -> list[int]:
    """Insert follow-ups, each at most once per key (a key seen before is skipped, whatever its state). Those
    due by ``now`` are handed to a worker when the current transaction commits. Returns the ids inserted.

    Call inside the transaction of the change that calls for them, so that they commit or roll back with it."""
    now = now or timezone.now()
    plans = list(plans)
    if not plans:
        return []
    kinds = _kinds()
    for plan in plans:
        if plan.kind not in kinds:
            raise ValueError(f"unknown follow-up kind {plan.kind!r}")
    # One statement, whatever the number of plans: INSERT ... ON CONFLICT (key) DO NOTHING RETURNING, which both
    # PostgreSQL and SQLite (3.35+) take. A key seen before, or inserted meanwhile by a concurrent writer, is
    # dropped by the unique key, not an error, and returns no row: no savepoint is needed.
    rows = {p.key: p for p in plans}
    columns = ("kind", "key", "due_at", "state", "attempts", "referral_id", "offer_id", "subscription_id",
               "delivery_id", "outcome", "created_at", "claimed_until")
    # Rows held for this process (deliveries_held) are leased to it from the start, as the sweep leases what it
    # claims: a sweep in between would hand them to another worker, which would send them beside this one.
    held = _held.get() is not None
    lease = now + dt.timedelta(seconds=settings.HUB_FOLLOWUP_LEASE_SECONDS)
    params = []
    for plan in rows.values():
        leased = held and plan.due_at <= now and kinds[plan.kind].queue == DELIVERY
        params += [plan.kind, plan.key, plan.due_at, FollowUp.State.PENDING, 0, plan.referral_id, plan.offer_id,
                   plan.subscription_id, plan.delivery_id, "", now, lease if leased else None]
    values = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(rows))
    table = FollowUp._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values} "
            f"ON CONFLICT (key) DO NOTHING RETURNING id, key",
            [connection.ops.adapt_datetimefield_value(v) if isinstance(v, dt.datetime) else v for v in params],
        )
        inserted = {key: pk for pk, key in cursor.fetchall()}
    rows = [r for r in rows.values() if r.key in inserted]
    due = [(inserted[r.key], r.kind, r.subscription_id) for r in rows if r.due_at <= now]
    if due:
        _dispatch_on_commit(due)
    return [inserted[r.key] for r in rows]


# The list of the innermost ``deliveries_held`` block, if any.
_held: ContextVar[list[tuple[int, int | None]] | None] = ContextVar("notifications_followups_held", default=None)


@contextmanager
def deliveries_held() -> Iterator[list[tuple[int, int | None]]]:
    """Within the block, the delivery queue's follow-ups that a transaction makes due at once are not handed to
    Celery when it commits: ``(id, subscription id)`` of each is added, at that commit, to the list the block
    yields, for the caller to run in its own process (notifications.tasks: the fan-out sends what it has just
    numbered, a delivery task what its deliveries resumed; a message per chunk cost another process a task, and
    the notification the wait for it, bench/followups.py). A transaction rolled back adds none. The rows are
    leased (HUB_FOLLOWUP_LEASE_SECONDS) from their insert, so that the sweep leaves them to the caller; rows the
    caller does not run (killed) are claimed by the sweep once that lease ends, as after any lost message."""
    held: list[tuple[int, int | None]] = []
    token = _held.set(held)
    try:
        yield held
    finally:
        _held.reset(token)


def _dispatch_on_commit(rows: list[tuple[int, str, int | None]]) -> None:
    """Hand ``(id, kind, subscription id)`` rows to their queue's task on commit (hand_over); within
    ``deliveries_held``, the delivery queue's to its list instead."""
    kinds = _kinds()
    held, kept = _held.get(), []
    by_queue: dict[str, list[tuple[int, int | None]]] = {}
    for followup_id, kind, subscription_id in rows:
        queue = kinds[kind].queue if kind in kinds else SWEEPS
        if held is not None and queue == DELIVERY:
            kept.append((followup_id, subscription_id))
        else:
            by_queue.setdefault(queue, []).append((followup_id, subscription_id))
    for queue, queued in by_queue.items():
        hand_over(queued, queue=queue)
    if kept:
        transaction.on_commit(lambda: held.extend(kept))


def hand_over(rows: Iterable[tuple[int, int | None]], *, queue: str) -> None:
    """Hand ``(id, subscription id)`` rows to ``queue``'s task when the current transaction commits (at once
    outside one; a broker that is down is logged, and the rows' lease ends for the sweep), HUB_FOLLOWUP_CHUNK ids
    per message, a subscription's rows never split between messages (so possibly more in one).

    A subscription's deliveries go in event-number order, one at a time (outbox.delivery_attempt): in one message
    they run in order in one transaction. Split over two messages, two workers would take them at once, and the
    later ones would wait on the subscription's turn or find an earlier one still pending, park, and be resumed
    by a second attempt (bench/followups.py measured most of a run so)."""
    from notifications.tasks import QUEUE_TASKS  # the tasks module imports this one

    groups: dict[tuple, list[int]] = {}
    for followup_id, subscription_id in rows:
        key = ("subscription", subscription_id) if subscription_id is not None else ("row", followup_id)
        groups.setdefault(key, []).append(followup_id)
    size = settings.HUB_FOLLOWUP_CHUNK
    chunk: list[int] = []
    for ids in groups.values():
        if chunk and len(chunk) + len(ids) > size:
            _enqueue(QUEUE_TASKS[queue], *chunk)
            chunk = []
        chunk += ids
    if chunk:
        _enqueue(QUEUE_TASKS[queue], *chunk)


def _enqueue(task, *args) -> None:
    enqueue_on_commit(task, *args)


def followups_claim(*, now: dt.datetime | None = None, limit: int | None = None) -> list[int]:
    """Claim up to ``limit`` due pending rows whose lease is free, lease them for HUB_FOLLOWUP_LEASE_SECONDS, and
    hand each to its task when this transaction commits. Returns the ids claimed, earliest due first.

    Rows another transaction holds locked (being claimed or run right now) are skipped, not waited for."""
    now = now or timezone.now()
    limit = limit or settings.HUB_FOLLOWUP_BATCH
    lease = dt.timedelta(seconds=settings.HUB_FOLLOWUP_LEASE_SECONDS)
    with transaction.atomic():
        if connection.vendor == "postgresql":
            rows = _claim_postgresql(now=now, limit=limit, until=now + lease)
        else:  # SQLite: one writer at a time, so a plain read then write claims as safely
            rows = list(
                FollowUp.objects.select_for_update(skip_locked=True)
                .filter(state=FollowUp.State.PENDING, due_at__lte=now)
                .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
                .order_by("due_at")
                .values_list("id", "kind", "subscription_id")[:limit]
            )
            if rows:
                FollowUp.objects.filter(pk__in=[r[0] for r in rows]).update(claimed_until=now + lease)
        if rows:
            _dispatch_on_commit(rows)
    return [r[0] for r in rows]


def _claim_postgresql(*, now: dt.datetime, limit: int, until: dt.datetime) -> list[tuple[int, str, int | None]]:
    # One statement instead of a SELECT and an UPDATE: half the round trips, and the rows are read once. The
    # inner SELECT walks the partial index followup_due_pending in due order.
    table = FollowUp._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {table} SET claimed_until = %s
            WHERE id IN (
                SELECT id FROM {table}
                WHERE state = 'pending' AND due_at <= %s AND (claimed_until IS NULL OR claimed_until <= %s)
                ORDER BY due_at
                LIMIT %s
                FOR UPDATE SKIP LOCKED
            )
            RETURNING id, kind, due_at, subscription_id
            """,
            [until, now, now, limit],
        )
        return [(i, kind, sub) for i, kind, _, sub in sorted(cursor.fetchall(), key=lambda r: (r[2], r[0]))]


def followup_run(*, followup_id: int, now: dt.datetime | None = None) -> str:
    """Run one follow-up if it is still pending and due, and record its outcome in the same transaction.

    Safe to call any number of times: the row is locked first (waiting for a worker that holds it), and one
    already done (or failed, or gone) is left alone. A handler that raises has its writes rolled back; the row
    is retried with backoff, and marked failed after HUB_FOLLOWUP_MAX_ATTEMPTS. Returns what happened, for the
    log."""
    now = now or timezone.now()
    with transaction.atomic():
        row = FollowUp.objects.select_for_update().filter(pk=followup_id, state=FollowUp.State.PENDING).first()
        if row is None:
            return "not pending"
        outcome = _run_locked(row, now)
        if outcome is not None:
            _outcomes_write([row])
        return outcome or "not due"


# What running a row may change: written for a whole chunk in one UPDATE.
_RUN_FIELDS = ["attempts", "claimed_until", "outcome", "state", "done_at", "due_at"]


def followups_run(
    *,
    followup_ids: Iterable[int],
    now: dt.datetime | None = None,
    budget_seconds: float = 5.0,
    stop_after_seconds: float | None = None,
) -> list[tuple[int, str]]:
    """Run several follow-ups (a sweep's chunk), each as ``followup_run`` would, but sharing transactions:
    the rows are locked in one statement, the handlers run one after another in one savepoint (the rows of a Staged
    kind, a chunk's delivery attempts, go through its three steps together), and the rows' outcomes are written with an UPDATE per distinct outcome and committed together. When a handler raises, that
    savepoint is rolled back and the rows are run again, each handler in a savepoint of its own, so that only
    the failing one is retried (its side effects outside the database, an HTTP POST, may then happen twice, as
    after a killed worker). A transaction is committed once it has run for ``budget_seconds`` (a slow receiver
    must not hold a chunk's locks for long), and the rest go on in the next.

    Rows another worker holds locked are skipped, not waited for: it is running them (a duplicate message), or
    their lease ends and the sweep hands them over again. Returns ``(id, outcome)`` for each id it took; past
    ``stop_after_seconds`` it takes no more (the caller hands the rest on).

    A handler's side effect outside the database is at least once, as with one row: a worker killed before the
    commit leaves the rows pending, and they are run again with the same content."""
    left = list(dict.fromkeys(followup_ids))
    results: list[tuple[int, str]] = []
    begun = time.monotonic()
    while left:
        started = time.monotonic()
        if results and stop_after_seconds is not None and started - begun > stop_after_seconds:
            break
        claimed: list[tuple[Kind, list[FollowUp], object, dt.datetime]] = []
        with transaction.atomic():
            at = now or timezone.now()
            locked = FollowUp.objects.select_for_update(skip_locked=True).filter(pk__in=left, state=FollowUp.State.PENDING)
            rows = {row.pk: row for row in locked}
            kinds = _kinds()
            staged = [i for i in left if i in rows and rows[i].due_at <= at
                      and getattr(kinds.get(rows[i].kind), "staged", None) is not None]
            taken = set(staged)
            plain = [i for i in left if i not in taken] if taken else left
            try:
                with transaction.atomic():  # one savepoint for all: handlers that succeed pay none of their own
                    ran, rest, outcomes = _handlers_run(plain, rows, at, started, budget_seconds, each_apart=False)
                    settled, claimed = _staged_claim([rows[i] for i in staged], at, budget_seconds)
            except _HandlerFailed:
                rows = {row.pk: row for row in FollowUp.objects.filter(pk__in=list(rows))}  # still locked by us
                ran, rest, outcomes = _handlers_run(left, rows, at, started, budget_seconds, each_apart=True)
                settled, claimed = [], []
            for row, outcome in settled:
                outcomes.append((row.pk, outcome))
                if row.state != FollowUp.State.PENDING:
                    ran.append(row)
            _outcomes_write(ran)
            for _, group, _, lease_until in claimed:
                FollowUp.objects.filter(pk__in=[row.pk for row in group]).update(claimed_until=lease_until)
        # The outside world, with no transaction open; then each kind's outcomes in a short transaction.
        for kind, group, work, _ in claimed:
            sent = kind.staged.send(work, started + budget_seconds)
            with transaction.atomic():
                # The rows first, as the claim locked them: a duplicate message's claim, which holds them and waits
                # for what the record holds, must not deadlock with it.
                list(FollowUp.objects.select_for_update().filter(pk__in=[r.pk for r in group]).values_list("pk"))
                recorded = kind.staged.record(group, work, sent, at)
                done = []
                for row in group:
                    outcome = recorded.get(row.pk)
                    if outcome is None:
                        rest.append(row.pk)
                        continue
                    _outcome_set(row, outcome, at)
                    done.append(row)
                    outcomes.append((row.pk, row.outcome))
                _outcomes_write(done)
        results += outcomes
        left = rest
    return results


def _staged_claim(rows: list[FollowUp], now: dt.datetime, budget_seconds: float):
    """Step (a) of the staged kinds' rows (Kind.staged), in the caller's transaction: ``[(row, outcome)]`` for the
    rows settled at once (a row left alone stays pending, untouched) and ``[(kind, rows to send, work, their
    lease's end)]``."""
    kinds = _kinds()
    by_kind: dict[str, list[FollowUp]] = {}
    for row in rows:
        by_kind.setdefault(row.kind, []).append(row)
    settled: list[tuple[FollowUp, str]] = []
    claimed = []
    for name, group in by_kind.items():
        kind = kinds[name]
        seconds = budget_seconds + kind.staged.step_seconds() + STAGED_LEASE_MARGIN_SECONDS
        lease_until = now + dt.timedelta(seconds=seconds)
        try:
            work, decided = kind.staged.claim(group, now, lease_until)
        except Exception as exc:
            raise _HandlerFailed from exc
        for row in group:
            if row.pk not in decided:
                continue
            if decided[row.pk] is None:
                settled.append((row, "not pending, or being run by another worker"))
            else:
                _outcome_set(row, decided[row.pk], now)
                settled.append((row, row.outcome))
        sending = [row for row in group if row.pk not in decided]
        if sending:
            claimed.append((kind, sending, work, lease_until))
    return settled, claimed


def _outcome_set(row: FollowUp, outcome: str | Exception, now: dt.datetime) -> None:
    """Set a run row's new state on it, unsaved: done with ``outcome``, or, for an exception, retried with
    backoff (failed after HUB_FOLLOWUP_MAX_ATTEMPTS) as when a handler raises."""
    row.attempts += 1
    row.claimed_until = None
    if isinstance(outcome, Exception):
        _failure_set(row, outcome, now)
        return
    row.state = FollowUp.State.DONE
    row.done_at = now
    row.outcome = (outcome or "done")[:200]


def _failure_set(row: FollowUp, exc: Exception, now: dt.datetime) -> None:
    log.warning("follow-up %s (%s) failed: %s", row.pk, row.kind, exc, exc_info=exc)
    row.outcome = f"error: {exc}"[:200]
    if row.attempts >= settings.HUB_FOLLOWUP_MAX_ATTEMPTS:
        row.state = FollowUp.State.FAILED
        row.done_at = now
    else:
        row.due_at = now + backoff(
            row.attempts, base=settings.HUB_RETRY_BASE_SECONDS, cap=settings.HUB_RETRY_MAX_SECONDS
        )


class _HandlerFailed(Exception):
    pass


def _handlers_run(left, rows, at, started, budget_seconds, *, each_apart: bool):
    ran, outcomes = [], []
    # In subscription order (a stable sort: each subscription's rows keep theirs): a delivery attempt takes its
    # subscription's turn (an advisory lock held to the commit), and two chunks that took two subscriptions' turns
    # in opposite orders would deadlock.
    order = {i: n for n, i in enumerate(left)}
    left = sorted(left, key=lambda i: (getattr(rows.get(i), "subscription_id", None) or 0, order[i]))
    until = started + budget_seconds
    position = 0
    while position < len(left):
        if outcomes and time.monotonic() > until:
            break
        row = rows.get(left[position])
        position += 1
        if row is None:
            outcomes.append((left[position - 1], "not pending, or being run by another worker"))
            continue
        outcome = _run_locked(row, at, savepoint=each_apart)
        if outcome is None:
            outcomes.append((row.pk, "not due"))
            continue
        ran.append(row)
        outcomes.append((row.pk, outcome))
    return ran, left[position:], outcomes


def _outcomes_write(rows: list[FollowUp]) -> None:
    """Write the rows' new state: one UPDATE per distinct outcome (a chunk has a handful: "delivered: HTTP 200",
    "first session happened, ..."), not bulk_update's CASE per row and field, whose building cost more in
    Python than the handlers' own queries (bench/followups.py)."""
    groups: dict[tuple, list[int]] = {}
    for row in rows:
        groups.setdefault(tuple(getattr(row, name) for name in _RUN_FIELDS), []).append(row.pk)
    for values, ids in groups.items():
        FollowUp.objects.filter(pk__in=ids).update(**dict(zip(_RUN_FIELDS, values, strict=True)))


def _run_locked(row: FollowUp, now: dt.datetime, *, savepoint: bool = True) -> str | None:
    """Run ``row``'s handler (the caller holds its lock, in a transaction) and set the row's new state on it,
    unsaved; None when it is not due yet. Without ``savepoint`` a handler that raises raises _HandlerFailed: the
    caller rolls back and runs the rows again with one."""
    if row.due_at > now:
        return None
    kind = _kinds().get(row.kind)
    row.attempts += 1
    row.claimed_until = None
    try:
        if kind is None:
            raise LookupError(f"no handler for follow-up kind {row.kind!r}")
        if savepoint:
            with transaction.atomic():  # a savepoint: a failing handler leaves no half-done writes
                outcome = kind.handler(row, now) or "done"
        else:
            try:
                outcome = kind.handler(row, now) or "done"
            except Exception as exc:
                raise _HandlerFailed from exc
    except _HandlerFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - any handler error is retried, then parked
        _failure_set(row, exc, now)
        return row.outcome
    row.state = FollowUp.State.DONE
    row.done_at = now
    row.outcome = outcome[:200]
    return row.outcome
