"""My offers: the least PHI before acceptance; accept; decline with a reason; the first answer wins."""

import zoneinfo

import pytest
from django.urls import reverse

from referrals.models import Offer, OfferStatus, Referral, ReferralStatus
from tests.portal.conftest import PATIENT, signed_in

pytestmark = pytest.mark.django_db


def test_a_therapist_sees_the_offer_with_the_least_phi(offer, practice):
    response = signed_in(practice.therapist).get(reverse("portal:offers"))
    assert response.status_code == 200
    page = response.content.decode()
    assert f'id="offer-{offer.pk}"' in page
    assert "60-69" in page  # born 1958: an age band, never the date
    assert "Cardiovascular" in page and "moderate" in page  # condition group and clearance
    assert "1.0 km" in page  # the routing decision's distance
    for value in PATIENT.values():
        assert value not in page


def test_the_deadline_is_shown_in_the_sites_time_zone(offer, practice):
    site = offer.role.site
    site.time_zone = "America/Los_Angeles"
    site.save(update_fields=["time_zone"])
    page = signed_in(practice.therapist).get(reverse("portal:offers")).content.decode()
    local = offer.deadline.astimezone(zoneinfo.ZoneInfo("America/Los_Angeles"))
    assert local.strftime("%a %-d %b, %H:%M P") in page  # PST or PDT, never the server's UTC


def test_a_colleague_does_not_see_another_therapists_offer(offer, practice):
    page = signed_in(practice.colleague).get(reverse("portal:offers")).content.decode()
    assert f'id="offer-{offer.pk}"' not in page
    response = signed_in(practice.colleague).post(reverse("portal:offer_accept", args=[offer.pk]))
    assert response.status_code == 404
    offer.refresh_from_db()
    assert offer.status == OfferStatus.REQUESTED


def test_the_manager_sees_every_offer_of_the_organization(offer, practice):
    page = signed_in(practice.manager).get(reverse("portal:offers")).content.decode()
    assert f'id="offer-{offer.pk}"' in page
    assert str(practice.roles[0].professional) in page  # whose offer it is


def test_accepting_opens_the_case_with_name_and_the_task_moves(offer, practice):
    client = signed_in(practice.therapist)
    response = client.post(reverse("portal:offer_accept", args=[offer.pk]))
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:case", args=[offer.referral_id])
    offer.refresh_from_db()
    assert offer.status == OfferStatus.ACCEPTED
    assert Referral.objects.get(pk=offer.referral_id).status == ReferralStatus.ACCEPTED
    assert offer.events.last().actor == "user:therapist"
    page = client.get(response["Location"]).content.decode()
    assert PATIENT["patient_name"] in page and PATIENT["patient_birth_date"] in page


def test_accept_over_htmx_redirects_the_browser(offer, practice):
    response = signed_in(practice.therapist).post(
        reverse("portal:offer_accept", args=[offer.pk]), HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("portal:case", args=[offer.referral_id])


def test_declining_needs_a_reason_and_records_it(offer, practice):
    client = signed_in(practice.therapist)
    url = reverse("portal:offer_decline", args=[offer.pk])
    assert client.get(url).status_code == 200
    response = client.post(url, {"reason": "other", "detail": ""})
    assert response.status_code == 400
    assert "Say why" in response.content.decode()
    offer.refresh_from_db()
    assert offer.status == OfferStatus.REQUESTED

    response = client.post(url, {"reason": "no-capacity", "detail": "full until March"})
    assert response.status_code == 302
    offer.refresh_from_db()
    assert offer.status == OfferStatus.REJECTED
    assert offer.decline_reason == "No room for a new client now: full until March"


def test_the_second_answer_sees_who_answered_first(offer, practice):
    assert signed_in(practice.manager).post(reverse("portal:offer_accept", args=[offer.pk])).status_code == 302
    response = signed_in(practice.therapist).post(
        reverse("portal:offer_decline", args=[offer.pk]), {"reason": "schedule"}
    )
    assert response.status_code == 409
    page = response.content.decode()
    assert "already accepted" in page and "user:manager" in page
    offer.refresh_from_db()
    assert offer.status == OfferStatus.ACCEPTED and offer.decline_reason == ""
    from portal.selectors import offer_answer_get

    answered = offer_answer_get(offer=offer).at.astimezone(zoneinfo.ZoneInfo(offer.role.site.time_zone))
    assert answered.strftime("%a %-d %b, %H:%M") in page  # when, in the site's time zone


def test_an_unknown_offer_is_404(practice):
    assert signed_in(practice.therapist).post(reverse("portal:offer_accept", args=[999999])).status_code == 404
    assert signed_in(practice.therapist).get(reverse("portal:offer_decline", args=[999999])).status_code == 404


def test_a_bad_decline_reason_is_a_form_error_not_a_500(offer, practice):
    response = signed_in(practice.therapist).post(
        reverse("portal:offer_decline", args=[offer.pk]), {"reason": "<script>", "detail": "x" * 5000}
    )
    assert response.status_code == 400
    assert Offer.objects.get(pk=offer.pk).status == OfferStatus.REQUESTED
