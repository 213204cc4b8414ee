"""Celery adapters of the follow-up engine. Each is thin: it takes ids, calls a service and logs. All are safe to
run twice (followups.followup_run locks its row and skips one already done)."""

import logging

from celery import shared_task
from django.conf import settings

from notifications.followups import DELIVERY, ROUTING, SWEEPS, followup_run, followups_claim
from notifications.outbox import events_fan_out

log = logging.getLogger(__name__)


def _run(followup_id: int) -> str:
    outcome = followup_run(followup_id=followup_id)
    log.info("follow-up %s: %s", followup_id, outcome)
    return outcome


# One task name per queue (CELERY_TASK_ROUTES sends each to its queue), all running the same idempotent step:
# routing work never waits behind a flood of deliveries.
@shared_task(name="notifications.followup_routing", time_limit=120, soft_time_limit=100, ignore_result=True)
def followup_routing(followup_id: int) -> str:
    return _run(followup_id)


@shared_task(name="notifications.followup_delivery", time_limit=60, soft_time_limit=50, ignore_result=True)
def followup_delivery(followup_id: int) -> str:
    return _run(followup_id)


@shared_task(name="notifications.followup", time_limit=120, soft_time_limit=100, ignore_result=True)
def followup(followup_id: int) -> str:
    return _run(followup_id)


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


# Enqueued on commit by every referral change (once per transaction).
@shared_task(name="notifications.fan_out", time_limit=120, soft_time_limit=100, ignore_result=True)
def fan_out() -> int:
    return events_fan_out(limit=settings.HUB_FOLLOWUP_BATCH)
