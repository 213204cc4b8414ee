"""Time travel (time-machine) through a referral's follow-ups, with a real SMTP server: an offer expires and the
next candidate is offered, the nudges fire on their days, and coordinators hear of a referral nobody can take."""

import datetime as dt

import pytest
import time_machine
from django.utils import timezone

from referrals.models import Offer, OfferStatus
from referrals.offers import offer_accept, referral_route
from notifications.models import Delivery
from referrals.models import BusinessStatus
from referrals.services import referral_update
from tests.referrals.conftest import CARDIAC_PATIENT
from tests.network.factories import km_north, referral_make, role_make
from tests.notifications.conftest import drain

pytestmark = pytest.mark.django_db

HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)


def _at(moment):
    return time_machine.travel(moment, tick=False)


def _mail_to(smtp) -> list[tuple[str, str]]:
    """(recipient, subject) of every message that reached the SMTP server."""
    out = []
    for message in smtp.messages:
        subject = next(line[9:] for line in message["data"].splitlines() if line.startswith("Subject: "))
        out += [(to, subject) for to in message["to"]]
    return out


def test_an_offer_expires_the_next_is_offered_and_the_nudges_fire_on_their_days(clinic, smtp, coordinator, dispatched):
    near, far = (role_make(at=km_north(km), email=f"pro{km}@fit.test") for km in (1, 2))
    start = timezone.now().replace(microsecond=0)
    with _at(start):
        referral = referral_make(clinic, patient_name="Ann Example")
        first = referral_route(referral=referral, patient=CARDIAC_PATIENT).offer
        drain(start)
    assert _mail_to(smtp) == [("pro1@fit.test", "New referral offer")]
    body = smtp.messages[0]["data"]
    assert f"offer {first.pk}" in body and f"/portal/offers#offer-{first.pk}" in body
    assert f"{first.deadline:%Y-%m-%d %H:%M} UTC" in body
    assert "Ann Example" not in body and "10001" not in body  # no PHI in an e-mail

    with _at(start + 47 * HOUR):
        drain(timezone.now())
    assert Offer.objects.get(pk=first.pk).status == OfferStatus.REQUESTED

    with _at(start + 48 * HOUR + dt.timedelta(minutes=1)):
        outcomes = drain(timezone.now())
    assert any(o.startswith("expired; offered on") for o in outcomes), outcomes
    assert Offer.objects.get(pk=first.pk).status == OfferStatus.EXPIRED
    second = Offer.objects.get(referral=referral, status=OfferStatus.REQUESTED)
    assert second.role == far
    assert _mail_to(smtp)[-1] == ("pro2@fit.test", "New referral offer")

    accepted_at = start + 49 * HOUR
    with _at(accepted_at):
        offer_accept(offer=second)
    with _at(accepted_at + 7 * DAY - HOUR):
        drain(timezone.now())
    assert len(smtp.messages) == 2  # not yet a week

    with _at(accepted_at + 7 * DAY + dt.timedelta(minutes=1)):
        drain(timezone.now())
    assert _mail_to(smtp)[2:] == [("pro2@fit.test", "A referral you accepted has no first session yet")]

    with _at(accepted_at + 14 * DAY - HOUR):
        drain(timezone.now())
    assert len(smtp.messages) == 3
    with _at(accepted_at + 14 * DAY + dt.timedelta(minutes=1)):
        drain(timezone.now())
    assert _mail_to(smtp)[3:] == [
        ("coordinator@hub.test", f"Referral {referral.pk}: no first session two weeks after acceptance")
    ]
    assert set(Delivery.objects.values_list("state", flat=True)) == {"delivered"}


def test_no_nudge_once_the_first_session_happened(clinic, smtp, coordinator, dispatched):
    role_make(at=km_north(1), email="pro@fit.test")
    start = timezone.now()
    with _at(start):
        referral = referral_make(clinic)
        offer = referral_route(referral=referral, patient=CARDIAC_PATIENT).offer
        offer_accept(offer=offer)
    referral.refresh_from_db()
    referral_update(referral=referral, status="in-progress", actor="hub")
    with _at(start + 15 * DAY):
        outcomes = drain(timezone.now())
    assert outcomes.count("first session happened, or the referral closed") == 2
    assert _mail_to(smtp) == [("pro@fit.test", "New referral offer")]


def test_coordinators_hear_when_an_offer_expires_with_nobody_left(clinic, smtp, coordinator, dispatched):
    role_make(at=km_north(1))  # no e-mail address: no offer e-mail
    start = timezone.now()
    with _at(start):
        referral = referral_make(clinic)
        referral_route(referral=referral, patient=CARDIAC_PATIENT)
        drain(start)
    assert smtp.messages == []
    with _at(start + 49 * HOUR):
        drain(timezone.now())
    referral.refresh_from_db()
    assert referral.business_status == BusinessStatus.AWAITING_MANUAL_ROUTING
    assert _mail_to(smtp) == [("coordinator@hub.test", f"Referral {referral.pk} needs manual routing")]
    assert "api/admin/routing/queue" in smtp.messages[0]["data"]
