"""Closed cases for the scorecard tests: referrals opened through the domain, then an accepted offer, its routing
decision (with the condition groups), the referral's end and its PAVS written as rows, as months of cases would
have left them (the scorecards only read)."""

import datetime as dt

import pytest
from django.core.cache import cache
from django.utils import timezone

from referrals.models import (
    ClinicalFacts,
    Offer,
    OfferStatus,
    PavsCheckIn,
    Referral,
    ReferralStatus,
    RoutingDecision,
)
from tests.network.factories import referral_make


def closed_case_make(clinic, role, *, status=ReferralStatus.COMPLETED, groups=("cardiovascular",),
                     baseline: float | None = 30.0, latest: float | None = 90.0) -> Referral:
    """One case of ``role`` closed as ``status``, in ``groups``, with a PAVS baseline of ``baseline`` min/week
    and a last check-in of ``latest`` min/week (None: not recorded)."""
    referral = referral_make(clinic)
    if baseline is not None:
        ClinicalFacts.objects.filter(referral=referral).update(
            pavs_baseline=[{"code": "82290-8", "value": baseline, "unit": "min/wk", "date": ""}])
    now = timezone.now()
    decision = RoutingDecision.objects.create(
        referral=referral, trigger="initial", outcome="offered", chosen_role=role,
        condition_groups=list(groups), gist="test")
    Offer.objects.create(referral=referral, role=role, organization=role.organization, decision=decision,
                         status=OfferStatus.ACCEPTED, created_at=now - dt.timedelta(days=90),
                         deadline=now - dt.timedelta(days=88), responded_at=now - dt.timedelta(days=89),
                         response_seconds=86400)
    reason = {ReferralStatus.FAILED: "No session attended", ReferralStatus.CANCELLED: "Withdrawn"}.get(status, "")
    Referral.objects.filter(pk=referral.pk).update(status=status, status_reason=reason)
    if latest is not None:
        PavsCheckIn.objects.create(referral=referral, date=now.date() - dt.timedelta(days=60),
                                   days_per_week=1, minutes_per_day=1, minutes_per_week=1,
                                   recorded_by="test", recorded_at=now)
        PavsCheckIn.objects.create(referral=referral, date=now.date(), days_per_week=1,
                                   minutes_per_day=int(latest), minutes_per_week=int(latest),
                                   recorded_by="test", recorded_at=now)
    referral.refresh_from_db()
    return referral


@pytest.fixture
def no_kept_scorecards():
    """No scorecards kept in the cache from another test, nor left for the next."""
    cache.clear()
    yield
    cache.clear()
