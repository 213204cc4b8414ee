"""A case to record on: a referral routed to a role and accepted, through the domain services."""

import datetime as dt

from referrals.offers import offer_accept, referral_route
from tests.network.factories import km_north, referral_make, role_make
from tests.referrals.conftest import CARDIAC_PATIENT

THERAPIST = "user:therapist"


def case_make(clinic, *, time_zone: str = "America/Chicago", **referral_fields):
    """An accepted referral of ``clinic`` (its offer's role's site in ``time_zone``)."""
    role = role_make(at=km_north(1))
    role.site.time_zone = time_zone
    role.site.save(update_fields=["time_zone"])
    referral = referral_make(clinic, patient=CARDIAC_PATIENT, **referral_fields)
    offer = referral_route(referral=referral, patient=CARDIAC_PATIENT).offer
    offer_accept(offer=offer)
    referral.refresh_from_db()
    return referral


def aware(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)
