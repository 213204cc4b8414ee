"""Routing a new referral: hand it to the network's routing service with the patient's facts from the domain."""

import logging

from network.services import RoutingOutcome, referral_route
from referrals.models import Referral, ReferralStatus
from referrals.services import ReferralRuleError, referral_patient_facts

log = logging.getLogger(__name__)


def referral_route_first(*, referral_id: int) -> RoutingOutcome | None:
    """Route a new referral once. Safe to call again: a referral already routed, or no longer requested, is
    left alone (the decline, expiry and manual-routing services move it on from there)."""
    referral = Referral.objects.filter(pk=referral_id).select_related("facts").first()
    if referral is None or referral.status != ReferralStatus.REQUESTED:
        log.info("referral %s is gone or no longer requested; not routed", referral_id)
        return None
    try:
        outcome = referral_route(referral=referral, patient=referral_patient_facts(referral=referral), first_only=True)
    except ReferralRuleError as exc:  # routed already (a redelivery), or answered or cancelled meanwhile
        log.info("referral %s not routed: %s", referral_id, exc)
        return None
    log.info("referral %s routed: %s", referral_id, outcome.gist)
    return outcome
