"""Celery adapters for the FHIR bridge. Each task is thin: it calls a service and logs what happened."""

import logging

from celery import shared_task
from config.queue import TRANSIENT_RETRY
from fhir_bridge.smart_tokens import purge_spent_assertions

logger = logging.getLogger(__name__)


# Named in CELERY_BEAT_SCHEDULE (config/settings.py). Running it twice, or late, is harmless: it only deletes
# the jtis of assertions that have expired, which the token endpoint would refuse anyway.
@shared_task(name="fhir_bridge.purge_spent_jtis", time_limit=300, soft_time_limit=240, ignore_result=True, **TRANSIENT_RETRY)
def purge_spent_jtis() -> int:
    deleted = purge_spent_assertions()
    logger.info("purged %d spent client assertion ids", deleted)
    return deleted
