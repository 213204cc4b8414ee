"""Celery adapters for the FHIR bridge. Each task is thin: it calls a service and logs what happened."""

import logging

from celery import shared_task

from fhir_bridge.referral_routing import referral_route_first
from fhir_bridge.smart_tokens import purge_spent_assertions

logger = logging.getLogger(__name__)


# Named in CELERY_BEAT_SCHEDULE (config/settings.py). Running it twice, or late, is harmless: it only deletes
# the jtis of assertions that have expired, which the token endpoint would refuse anyway.
@shared_task(name="fhir_bridge.purge_spent_jtis", time_limit=300, soft_time_limit=240, ignore_result=True)
def purge_spent_jtis() -> int:
    deleted = purge_spent_assertions()
    logger.info("purged %d spent client assertion ids", deleted)
    return deleted


# Enqueued on commit by intake for every new referral. Redelivery is harmless: a referral routed already is left
# alone. A lost message leaves the referral "received"; the admin queue shows it, and an admin can route it.
@shared_task(name="fhir_bridge.route_referral", time_limit=60, soft_time_limit=50, ignore_result=True)
def route_referral(referral_id: int) -> None:
    referral_route_first(referral_id=referral_id)
