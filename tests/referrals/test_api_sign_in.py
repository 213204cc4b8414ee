"""The coordinators' API takes the admin session or, for scripts, a staff user's DRF token."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from rest_framework.authtoken.models import Token

from audit.models import Access
from referrals.models import OfferStatus
from referrals.offers import referral_route
from tests.network.factories import km_north, referral_make, role_make
from tests.referrals.conftest import CARDIAC_PATIENT

pytestmark = pytest.mark.django_db


def _user(username: str, *, staff: bool):
    return get_user_model().objects.create_user(username, f"{username}@hub.invalid", "pw-" * 6, is_staff=staff)


def test_a_script_with_a_staff_token_reads_the_queue_and_answers_an_offer_without_csrf(clinic):
    _user("coord", staff=True)
    call_command("drf_create_token", "coord", verbosity=0)
    key = Token.objects.get(user__username="coord").key
    role_make(at=km_north(1))
    offer = referral_route(referral=referral_make(clinic, patient=CARDIAC_PATIENT), patient=CARDIAC_PATIENT).offer
    script = Client(enforce_csrf_checks=True)

    queue = script.get("/api/admin/routing/queue", HTTP_AUTHORIZATION=f"Token {key}")
    answer = script.post(f"/api/admin/offers/{offer.pk}/answer", {"answer": "accept"},
                         content_type="application/json", HTTP_AUTHORIZATION=f"Token {key}")

    assert queue.status_code == 200 and queue.json()["count"] == 0
    assert answer.status_code == 200 and answer.json()["status"] == "accepted"
    offer.refresh_from_db()
    assert offer.status == OfferStatus.ACCEPTED
    assert Access.objects.filter(path__startswith="/api/admin/offers/", agent_user="coord").exists()


def test_a_token_of_a_user_who_is_not_staff_or_a_wrong_token_is_refused(clinic):
    key = Token.objects.create(user=_user("therapist", staff=False)).key
    assert Client().get("/api/admin/routing/queue", HTTP_AUTHORIZATION=f"Token {key}").status_code == 403
    # Without credentials, or with a token that is none: 401, naming the scheme that would do.
    for headers in ({"HTTP_AUTHORIZATION": "Token nope"}, {}):
        refused = Client().get("/api/admin/routing/queue", **headers)
        assert refused.status_code == 401 and refused["WWW-Authenticate"] == "Token", headers
    refused = Client(enforce_csrf_checks=True).post("/api/admin/offers/1/answer", {"answer": "accept"},
                                                    content_type="application/json")
    assert refused.status_code == 401 and refused["WWW-Authenticate"] == "Token"
