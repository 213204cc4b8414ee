"""A case to record on: a referral routed to a role and accepted, through the domain services."""

import datetime as dt

from referrals.models import Referral
from referrals.offers import offer_accept, referral_route
from tests.network.factories import km_north, referral_make, role_make
from tests.referrals.conftest import CARDIAC_PATIENT

THERAPIST = "user:therapist"

# When the test cases' referrals came in: before every date the tests record (a record may not be dated before
# its referral was received: referrals.records.RecordWindow).
RECEIVED = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


def received_at(referral, when: dt.datetime = RECEIVED):
    """Date the referral's receipt back to ``when`` (as if it had come in then), and return it."""
    Referral.objects.filter(pk=referral.pk).update(created_at=when)
    referral.created_at = when
    return referral


def case_make(clinic, *, time_zone: str = "America/Chicago", **referral_fields):
    """An accepted referral of ``clinic`` (its offer's role's site in ``time_zone``), received at RECEIVED."""
    role = role_make(at=km_north(1))
    role.site.time_zone = time_zone
    role.site.save(update_fields=["time_zone"])
    referral = referral_make(clinic, patient=CARDIAC_PATIENT, **referral_fields)
    offer = referral_route(referral=referral, patient=CARDIAC_PATIENT).offer
    offer_accept(offer=offer)
    referral.refresh_from_db()
    return received_at(referral)


def aware(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)
