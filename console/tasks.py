"""The console's beat task: refresh the milestones rollup, then compute the overviews everyone opens first (the
default window for the whole network and for each clinic with a clinic admin) and the network page's acceptance
and time to accept, so that no admin waits for them."""

import logging

from celery import shared_task

from config.queue import TRANSIENT_RETRY

logger = logging.getLogger(__name__)


# Beat, every HUB_ROLLUP_SECONDS. Idempotent: a redelivered or overlapping run rewrites the same rows and cache keys.
@shared_task(name="console.rollup_refresh", time_limit=300, soft_time_limit=280, ignore_result=True, **TRANSIENT_RETRY)
def rollup_refresh() -> None:
    from console.models import ConsoleRole
    from console.network import network_answers_refresh
    from console.views import overview_warm
    from referrals.funnel import milestones_refresh

    rows = milestones_refresh()
    clinics = sorted(set(ConsoleRole.objects.filter(clinic__isnull=False).values_list("clinic_id", flat=True)))
    overview_warm([None] + [[c] for c in clinics])
    network_answers_refresh()
    logger.info("milestones rollup: %d row(s) refreshed; %d default overview(s) computed", rows, len(clinics) + 1)
