"""Celery adapters for routing. Each task is thin: it calls a service and logs what happened."""

import logging

from celery import shared_task
from django.utils import timezone

from referrals.offers import offers_expire_due, referral_route_first

logger = logging.getLogger(__name__)


# Enqueued on commit by intake for every new referral. Redelivery is harmless: a referral routed already is left
# alone. A lost message leaves the referral "received"; the admin queue shows it, and an admin can route it.
@shared_task(name="referrals.route_referral", time_limit=60, soft_time_limit=50, ignore_result=True)
def route_referral(referral_id: int) -> None:
    referral_route_first(referral_id=referral_id)


# For CELERY_BEAT_SCHEDULE (every few minutes). Running it twice, late, or on two workers at once is harmless:
# each offer is expired by a compare-and-set under its referral's lock, and one already answered is skipped.
@shared_task(name="referrals.expire_offers", time_limit=300, soft_time_limit=240, ignore_result=True)
def expire_offers() -> int:
    expired = offers_expire_due(now=timezone.now())
    if expired:
        logger.info("expired %d offers past their deadline and routed their referrals on", expired)
    return expired
