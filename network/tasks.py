"""Celery adapters for routing. Each task is thin: it calls a service and logs what happened."""

import logging

from celery import shared_task
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from network.services import offers_expire_due

logger = logging.getLogger(__name__)


# For CELERY_BEAT_SCHEDULE (every few minutes). Running it twice, late, or on two workers at once is harmless:
# each offer is expired by a compare-and-set under its referral's lock, and one already answered is skipped.
# A lock or connection error is retried (the next beat would also pick the offers up, but not before a minute).
@shared_task(name="network.expire_offers", time_limit=300, soft_time_limit=240, ignore_result=True,
             autoretry_for=(OperationalError, InterfaceError), retry_backoff=2, retry_backoff_max=60,
             retry_jitter=True, max_retries=3)
def expire_offers() -> int:
    expired = offers_expire_due(now=timezone.now())
    if expired:
        logger.info("expired %d offers past their deadline and routed their referrals on", expired)
    return expired
