"""Celery adapters of the follow-up engine. Each is thin: it takes ids, calls a service and logs; the fan-out
also decides which process fans out and sends (events_fan_out_and_send). All are safe to run twice
(followups.followups_run locks its rows and skips one already done)."""

import logging
import time

from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, connection

from notifications.followups import (
    DELIVERY, ROUTING, SWEEPS, deliveries_held, followups_claim, followups_run, hand_over,
)
from notifications.outbox import events_fan_out, subscriptions_slow
from referrals.models import ReferralEvent

log = logging.getLogger(__name__)


# A task carries several follow-ups (the sweep hands them over in chunks of HUB_FOLLOWUP_CHUNK: a message per
# row cost more than the row's own work under load, bench/followups.py). They share transactions and one UPDATE
# of their outcomes (followups_run: round trips per row were the rest of the cost); each handler still runs in
# its own savepoint, so a chunk is no less idempotent than one row. What a chunk cannot finish within its
# budget is handed on.
BUDGET_SECONDS = 30


def _run(task, followup_ids: tuple[int, ...], *, seconds: float = BUDGET_SECONDS) -> int:
    results = followups_run(followup_ids=followup_ids, budget_seconds=min(5.0, seconds), stop_after_seconds=seconds)
    for followup_id, outcome in results:
        log.info("follow-up %s: %s", followup_id, outcome)
    taken = {followup_id for followup_id, _ in results}
    rest = [i for i in followup_ids if i not in taken]
    if rest:
        log.info("handing %d follow-ups on to a new %s task", len(rest), task.name)
        task.delay(*rest)  # if this fails, their lease ends and the sweep claims them again
    return len(results)


# One task name per queue (CELERY_TASK_ROUTES sends each to its queue), all running the same idempotent step:
# routing work never waits behind a flood of deliveries.
@shared_task(name="notifications.followup_routing", time_limit=120, soft_time_limit=100, ignore_result=True)
def followup_routing(*followup_ids: int) -> int:
    return _run(followup_routing, followup_ids)


@shared_task(name="notifications.followup_delivery", time_limit=120, soft_time_limit=100, ignore_result=True)
def followup_delivery(*followup_ids: int) -> int:
    """Run the rows; then, here, the notifications their deliveries resumed (those that waited behind them),
    within the same budget: through the queue, each round of them cost a message, and the fan-out's next
    notifications of the subscription waited behind that round in turn for as long as the load lasted."""
    until = time.monotonic() + BUDGET_SECONDS
    with deliveries_held() as resumed:
        count = _run(followup_delivery, followup_ids)
        _held_send(resumed, until=until, slow_elsewhere=False)
    return count


def _held_send(held: list[tuple[int, int | None]], *, until: float, slow_elsewhere: bool) -> None:
    """Run the delivery follow-ups ``held`` (``(id, subscription id)``, filled by deliveries_held) here, and the
    ones their run resumes in turn, until ``until`` (a time.monotonic() value); then hand what is left to the
    delivery queue (followups.hand_over). With ``slow_elsewhere`` (the fan-out) the rows of
    subscriptions whose receiver was slow lately (outbox.subscriptions_slow) go to the queue at once: one slow
    receiver must not hold up the fan-out, and every clinic's notifications behind it."""
    while held and time.monotonic() < until:
        rows = list(held)
        held.clear()
        if slow_elsewhere:
            slow = subscriptions_slow(sub for _, sub in rows if sub is not None)
            if slow:
                hand_over([row for row in rows if row[1] in slow], queue=DELIVERY)
                rows = [row for row in rows if row[1] not in slow]
        if rows:
            _run(followup_delivery, tuple(i for i, _ in rows), seconds=max(0.0, until - time.monotonic()))
    if held:
        hand_over(held, queue=DELIVERY)  # out of time
        held.clear()


@shared_task(name="notifications.followup", time_limit=120, soft_time_limit=100, ignore_result=True)
def followup(*followup_ids: int) -> int:
    return _run(followup, followup_ids)


QUEUE_TASKS = {ROUTING: followup_routing, DELIVERY: followup_delivery, SWEEPS: followup}


# Celery beat, every HUB_SWEEP_SECONDS (CELERY_BEAT_SCHEDULE). Two at once claim different rows; late or twice
# is harmless. It also fans out events that no on-commit message announced (a broker that was down).
@shared_task(name="notifications.sweep", time_limit=300, soft_time_limit=240, ignore_result=True)
def sweep() -> int:
    events_fan_out_and_send()  # what no on-commit message announced (a broker that was down)
    claimed = 0
    for _ in range(settings.HUB_SWEEP_MAX_BATCHES):
        batch = followups_claim()
        claimed += len(batch)
        if len(batch) < settings.HUB_FOLLOWUP_BATCH:
            break
    if claimed:
        log.info("sweep claimed %d follow-ups", claimed)
    return claimed


# The cache key that marks a fan-out message queued and not started (HUB_FAN_OUT_COALESCE). It expires on its own
# after a while, in case its message was lost; the sweep fans out meanwhile.
FAN_OUT_QUEUED = "notifications:fan-out-queued"
FAN_OUT_QUEUED_SECONDS = 10
# The fan-out's turn, held by the one process fanning out: a PostgreSQL session advisory lock on this key pair (the
# two-int form, apart from the subscriptions' one-bigint keys, outbox._subscription_turns). It goes with its
# holder's connection: a worker killed while holding it holds up nobody.
FAN_OUT_TURN = (0x68756221, 1)  # "hub!", 1


# Enqueued on commit by every referral change (once per transaction; with HUB_FAN_OUT_COALESCE, only while no
# other is queued, notifications.receivers._fan_out_on_commit).
@shared_task(name="notifications.fan_out", time_limit=120, soft_time_limit=100, ignore_result=True)
def fan_out() -> int:
    return events_fan_out_and_send()


def events_fan_out_and_send() -> int:
    """Fan out every event not yet fanned out, in batches of HUB_FOLLOWUP_BATCH, and send each batch's
    notifications in this process as soon as the batch commits; returns how many events. Notifications not sent
    within HUB_FAN_OUT_SEND_SECONDS of a batch go to the delivery queue, and so do those of a receiver that was slow
    lately (_held_send), and a backlog that outlasts BUDGET_SECONDS to a new fan-out task.

    Sent here, not handed to the delivery queue: a message per chunk kept each notification waiting for a worker
    process, and cost that process a task (bench/followups.py). On PostgreSQL one process at a time fans out
    (FAN_OUT_TURN): two at once numbered the same subscriptions, and the later one's notifications, finding the
    earlier ones still on their way, waited for them and were resumed through the delivery queue, most of them,
    for as long as the load lasted (bench/followups.py: 7,341 of 9,000). A message that finds another process
    fanning out leaves its events to it: that one reads the events again after it lets go of its turn, and a
    change that commits later sends a message of its own."""
    coalesce = settings.HUB_FAN_OUT_COALESCE
    taken = _turn_take()
    if taken is False:
        return 0
    holding, done = bool(taken), 0
    until = time.monotonic() + BUDGET_SECONDS
    try:
        while True:
            if coalesce:
                # Before reading the events: a change that commits from now on sends a message of its own, and
                # one that committed before is read below.
                _forget(FAN_OUT_QUEUED)
            with deliveries_held() as numbered:
                count = events_fan_out(limit=settings.HUB_FOLLOWUP_BATCH)
                done += count
                _held_send(numbered, until=time.monotonic() + settings.HUB_FAN_OUT_SEND_SECONDS,
                           slow_elsewhere=True)
            if count < settings.HUB_FOLLOWUP_BATCH:
                if not holding:
                    return done
                # Let go, then look again: an event that committed while this process held the turn, and whose
                # message found it held, is read now; one that commits after this look sends a message that
                # finds the turn free.
                holding = False
                _turn_give()
                if coalesce:
                    _forget(FAN_OUT_QUEUED)
                if not ReferralEvent.objects.filter(notified_at__isnull=True).exists():
                    return done
                taken = _turn_take()
                if taken is False:
                    return done  # another process took the turn, and those events with it
                holding = bool(taken)
            if time.monotonic() > until:
                fan_out.delay()  # a backlog, or a steady stream: handed on, so that this task keeps within its limit
                return done
    finally:
        if holding:
            _turn_give()


def _turn_take() -> bool | None:
    """Take the fan-out's turn (FAN_OUT_TURN): True, or False when another process holds it; None on SQLite,
    which has no turn to take (one writer at a time: two fan-outs cannot number at once)."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", FAN_OUT_TURN)
        return bool(cursor.fetchone()[0])


def _turn_give() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", FAN_OUT_TURN)
    except DatabaseError:  # a connection that broke: its session, and the lock with it, ended
        log.warning("could not give the fan-out's turn back", exc_info=True)


def _forget(*keys: str) -> None:
    try:
        cache.delete_many(keys)
    except Exception:  # noqa: BLE001 - each key expires on its own
        log.warning("could not forget %s", keys, exc_info=True)
