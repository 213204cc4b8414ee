"""Celery adapters of the follow-up engine. Each is thin: it takes ids, calls a service and logs. All are safe to
run twice (followups.followups_run locks its rows and skips one already done)."""

import logging

from celery import shared_task
from django.conf import settings
from django.core.cache import cache

from notifications.followups import DELIVERY, ROUTING, SWEEPS, followups_claim, followups_run
from notifications.outbox import events_fan_out

log = logging.getLogger(__name__)


# A task carries several follow-ups (the sweep hands them over in chunks of HUB_FOLLOWUP_CHUNK: a message per
# row cost more than the row's own work under load, bench/followups.py). They share transactions and one UPDATE
# of their outcomes (followups_run: round trips per row were the rest of the cost); each handler still runs in
# its own savepoint, so a chunk is no less idempotent than one row. What a chunk cannot finish within its
# budget is handed on.
BUDGET_SECONDS = 30


def _run(task, followup_ids: tuple[int, ...]) -> int:
    results = followups_run(followup_ids=followup_ids, stop_after_seconds=BUDGET_SECONDS)
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
    return _run(followup_delivery, followup_ids)


@shared_task(name="notifications.followup", time_limit=120, soft_time_limit=100, ignore_result=True)
def followup(*followup_ids: int) -> int:
    return _run(followup, followup_ids)


QUEUE_TASKS = {ROUTING: followup_routing, DELIVERY: followup_delivery, SWEEPS: followup}


# Celery beat, every HUB_SWEEP_SECONDS (CELERY_BEAT_SCHEDULE). Two at once claim different rows; late or twice
# is harmless. It also fans out events that no on-commit message announced (a broker that was down).
@shared_task(name="notifications.sweep", time_limit=300, soft_time_limit=240, ignore_result=True)
def sweep() -> int:
    for _ in range(settings.HUB_SWEEP_MAX_BATCHES):
        if events_fan_out() < settings.HUB_FOLLOWUP_BATCH:
            break
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


# Enqueued on commit by every referral change (once per transaction; with HUB_FAN_OUT_COALESCE, only while no
# other is queued, notifications.receivers._fan_out_on_commit).
@shared_task(name="notifications.fan_out", time_limit=120, soft_time_limit=100, ignore_result=True)
def fan_out() -> int:
    """Fan out every event not yet fanned out, in batches of HUB_FOLLOWUP_BATCH (up to HUB_SWEEP_MAX_BATCHES of
    them, then a new task goes on). Returns how many."""
    if settings.HUB_FAN_OUT_COALESCE:
        # Before reading the events: a change that commits from now on sends a message of its own, and one that
        # committed before is read below.
        cache.delete(FAN_OUT_QUEUED)
    done = 0
    for _ in range(settings.HUB_SWEEP_MAX_BATCHES):
        count = events_fan_out(limit=settings.HUB_FOLLOWUP_BATCH)
        done += count
        if count < settings.HUB_FOLLOWUP_BATCH:
            return done
    fan_out.delay()  # a backlog: handed on, so that this task keeps within its time limit
    return done
