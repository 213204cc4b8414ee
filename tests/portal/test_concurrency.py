"""A therapist and their manager answer the same offer at the same moment: exactly one answer wins (PostgreSQL)."""

import pytest
from django.conf import settings
from django.urls import reverse

from referrals.models import Clinic, Offer, OfferEvent, OfferStatus, Referral, ReferralStatus
from tests.conftest import fire_at_once
from tests.portal.conftest import offer_make, qualification_data, signed_in

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
        reason="needs PostgreSQL's concurrent writers (set DATABASE_URL)",
    ),
    pytest.mark.django_db(transaction=True),
]


@pytest.mark.parametrize("rounds", [5])
def test_therapist_and_manager_at_once_exactly_one_wins(request, rounds):
    qualification_data()
    practice = request.getfixturevalue("practice")
    practice.roles[1].accepting = False
    practice.roles[1].save(update_fields=["accepting"])
    practice.roles[0].max_active_cases = rounds
    practice.roles[0].save(update_fields=["max_active_cases"])
    clinic = Clinic.objects.create(name="Race Clinic", slug="race-clinic")
    for _ in range(rounds):
        offer = offer_make(clinic, practice.roles[0])
        therapist, manager = signed_in(practice.therapist), signed_in(practice.manager)
        accept = reverse("portal:offer_accept", args=[offer.pk])
        decline = reverse("portal:offer_decline", args=[offer.pk])
        results = fire_at_once(
            2,
            lambda i: therapist.post(accept) if i == 0 else manager.post(decline, {"reason": "schedule"}),
        )
        statuses = sorted(r.status_code for r in results)
        assert statuses == [302, 409], results
        offer.refresh_from_db()
        winner = results[0] if results[0].status_code == 302 else results[1]
        loser = results[1] if winner is results[0] else results[0]
        assert "Someone answered first" in loser.content.decode()
        answers = OfferEvent.objects.filter(offer=offer).exclude(from_status="")
        assert answers.count() == 1
        referral = Referral.objects.get(pk=offer.referral_id)
        if offer.status == OfferStatus.ACCEPTED:
            assert answers.get().actor == "user:therapist" and referral.status == ReferralStatus.ACCEPTED
        else:
            assert offer.status == OfferStatus.REJECTED and answers.get().actor == "user:manager"
            assert not Offer.objects.filter(referral=referral, role=practice.roles[0], status="accepted").exists()
