"""Celery adapters for the FHIR bridge. Each task is thin: it calls a service and logs what happened."""

import logging

from celery import shared_task
from django.db import InterfaceError, OperationalError

from fhir_bridge.referral_routing import referral_route_first
from fhir_bridge.smart_tokens import purge_spent_assertions

logger = logging.getLogger(__name__)

# What a task meets that a later try may not: a lock that did not come free (SQLite's "database is locked", a
# PostgreSQL lock timeout), a serialization failure or deadlock, a lost connection. Retried with backoff; any
# other error is a bug, and fails at once (logged by Celery).
TRANSIENT = (OperationalError, InterfaceError)
RETRY = {"autoretry_for": TRANSIENT, "retry_backoff": 2, "retry_backoff_max": 120, "retry_jitter": True,
         "max_retries": 6}


# Named in CELERY_BEAT_SCHEDULE (config/settings.py). Running it twice, or late, is harmless: it only deletes
# the jtis of assertions that have expired, which the token endpoint would refuse anyway.
@shared_task(name="fhir_bridge.purge_spent_jtis", time_limit=300, soft_time_limit=240, ignore_result=True, **RETRY)
def purge_spent_jtis() -> int:
    deleted = purge_spent_assertions()
    logger.info("purged %d spent client assertion ids", deleted)
    return deleted


# Enqueued on commit by intake for every new referral. Redelivery is harmless: a referral routed already is left
# alone. A lost message, or one that fails for good after its retries, leaves the referral "received".
@shared_task(name="fhir_bridge.route_referral", time_limit=60, soft_time_limit=50, ignore_result=True, **RETRY)
def route_referral(referral_id: int) -> None:
    referral_route_first(referral_id=referral_id)
