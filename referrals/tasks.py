"""Celery adapters for routing. Each task is thin: it calls a service and logs what happened."""

import logging

from celery import shared_task

from config.queue import TRANSIENT_RETRY
from referrals.offers import referral_route_first
from referrals.scorecards import scorecards_refresh as scorecards_compute_and_keep

logger = logging.getLogger(__name__)


# Enqueued on commit by intake for every new referral. Redelivery is harmless: a referral routed already is left
# alone. A lost message, or one that fails for good after its retries, leaves the referral "received" until the
# routing safety net (a follow-up row, notifications' route-referral kind) routes it.
@shared_task(name="referrals.route_referral", time_limit=60, soft_time_limit=50, ignore_result=True, **TRANSIENT_RETRY)
def route_referral(referral_id: int) -> None:
    referral_route_first(referral_id=referral_id)


# Celery beat runs it every few minutes so that the console and routing read scorecards at most
# SCORECARD_MAX_AGE old without computing them in a request. Safe to run twice: it only recomputes a cache entry.
@shared_task(name="referrals.scorecards_refresh", time_limit=240, soft_time_limit=200, ignore_result=True)
def scorecards_refresh() -> None:
    cards = scorecards_compute_and_keep()
    logger.info("scorecards refreshed: %d, %d shown", len(cards.cards), len(cards.shown()))


# Beat, every HUB_ROLLUP_SECONDS: the console's funnel reads the milestones rollup, at most that stale (its age is
# shown). Incremental and idempotent: a redelivered or overlapping run rewrites the same rows.
@shared_task(name="referrals.milestones_refresh", time_limit=300, soft_time_limit=280, ignore_result=True, **TRANSIENT_RETRY)
def milestones_refresh_task() -> None:
    from referrals.funnel import milestones_refresh

    rows = milestones_refresh()
    logger.info("milestones rollup: %d row(s) refreshed", rows)
