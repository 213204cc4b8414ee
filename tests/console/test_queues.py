"""The console's work queues: each item in the user's scope, its one-click action through a domain service,
refusals in place, and a fixed number of queries whatever the queue holds."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notifications.models import Delivery, FollowUp, Subscription
from referrals.models import (
    AdverseEvent,
    BusinessStatus,
    Offer,
    OfferStatus,
    ReferralEvent,
    RoutingDecision,
)
from referrals.offers import referral_route
from referrals.records import adverse_event_record
from tests.console.conftest import signed_in
from tests.network.factories import credential_give, km_north, referral_make, role_make
from tests.referrals.cases import case_make
from tests.referrals.conftest import CARDIAC_PATIENT

pytestmark = pytest.mark.django_db


def waiting_referral(clinic):
    """A cardiac referral nobody may take (no role near): it waits for a coordinator."""
    referral = referral_make(clinic, patient=CARDIAC_PATIENT)
    referral_route(referral=referral, patient=CARDIAC_PATIENT)
    referral.refresh_from_db()
    assert referral.business_status == BusinessStatus.AWAITING_MANUAL_ROUTING
    return referral


def dead_delivery(clinic) -> Delivery:
    subscription = Subscription.objects.create(clinic=clinic, channel="rest-hook", endpoint="https://ehr.test/hook")
    return Delivery.objects.create(channel="rest-hook", subscription=subscription, notification_type="event-notification",
                                   event_number=1, endpoint=subscription.endpoint, content="{}", state="dead",
                                   attempts=10, last_error="HTTP 503")


def test_a_clinic_admin_sees_only_their_clinics_items(clinic, other_clinic, clinic_admin):
    mine, theirs = waiting_referral(clinic), waiting_referral(other_clinic)
    mine_dead, theirs_dead = dead_delivery(clinic), dead_delivery(other_clinic)

    page = signed_in(clinic_admin).get("/console/queues")

    html = page.content.decode()
    assert page.status_code == 200
    assert f'id="manual-routing-{mine.pk}"' in html and f'id="manual-routing-{theirs.pk}"' not in html
    assert f'id="dead-letters-{mine_dead.pk}"' in html and f'id="dead-letters-{theirs_dead.pk}"' not in html


def test_the_queues_page_costs_the_same_queries_for_one_item_as_for_many(clinic, network_admin):
    client = signed_in(network_admin)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/console/queues").status_code == 200
        return len(captured)

    waiting_referral(clinic), dead_delivery(clinic)
    one = queries()
    for _ in range(4):
        waiting_referral(clinic), dead_delivery(clinic)
    assert queries() == one


def test_routing_by_hand_outside_the_constraints_needs_a_reason_shown_in_place(clinic, network_admin):
    referral = waiting_referral(clinic)
    trainer = role_make(credentials=["acsm-cpt"], at=km_north(1))  # not qualified for a cardiac patient
    client = signed_in(network_admin)

    refused = client.post(f"/console/queues/referrals/{referral.pk}/route", {"role": trainer.fhir_id})

    assert refused.status_code == 422
    assert "Record a reason to override" in refused.content.decode()
    assert not Offer.objects.filter(referral=referral).exists()

    routed = client.post(f"/console/queues/referrals/{referral.pk}/route",
                         {"role": trainer.fhir_id, "override_reason": "Cardiologist cleared a supervised walk"})

    assert routed.status_code == 302
    offer = Offer.objects.get(referral=referral)
    assert offer.role == trainer and offer.status == OfferStatus.REQUESTED
    decision = RoutingDecision.objects.filter(referral=referral).latest("id")
    assert decision.override_reason == "Cardiologist cleared a supervised walk"
    assert decision.actor == "user:networkadmin"


def test_an_unknown_role_is_a_form_error_not_a_500(clinic, network_admin):
    referral = waiting_referral(clinic)
    response = signed_in(network_admin).post(f"/console/queues/referrals/{referral.pk}/route", {"role": "no-such"})
    assert response.status_code == 422 and "No professional role has this id" in response.content.decode()
    response = signed_in(network_admin).post(f"/console/queues/referrals/{referral.pk}/route", {"role": "a b/"})
    assert response.status_code == 422


def test_a_clinic_admin_cannot_act_on_another_clinics_referral(clinic, other_clinic, clinic_admin):
    theirs = waiting_referral(other_clinic)
    role = role_make(at=km_north(1))
    response = signed_in(clinic_admin).post(f"/console/queues/referrals/{theirs.pk}/route", {"role": role.fhir_id})
    assert response.status_code == 404
    assert not Offer.objects.filter(referral=theirs).exists()


def test_an_offer_near_its_deadline_is_recorded_as_accepted_by_phone(clinic, clinic_admin):
    role_make(at=km_north(1))
    referral = referral_make(clinic, patient=CARDIAC_PATIENT)
    offer = referral_route(referral=referral, patient=CARDIAC_PATIENT).offer
    Offer.objects.filter(pk=offer.pk).update(deadline=timezone.now() + dt.timedelta(hours=2))
    client = signed_in(clinic_admin)
    assert f'id="near-deadline-{offer.pk}"' in client.get("/console/queues").content.decode()

    assert client.post(f"/console/queues/offers/{offer.pk}/accept").status_code == 302
    offer.refresh_from_db()
    assert offer.status == OfferStatus.ACCEPTED
    assert offer.events.last().actor.startswith("user:clinicadmin for practitioner-role:")
    again = client.post(f"/console/queues/offers/{offer.pk}/accept")
    assert again.status_code in (409, 422) and "errors" in again.content.decode()


def test_acknowledging_an_adverse_event_leaves_one_event_row(clinic, clinic_admin):
    referral = case_make(clinic)
    event = adverse_event_record(referral=referral, occurred_at=timezone.now(), kind="fall", severity="mild",
                                 actor="user:therapist", expected_version=referral.version)
    client = signed_in(clinic_admin)

    assert client.post(f"/console/queues/adverse-events/{event.pk}/acknowledge").status_code == 302
    assert client.post(f"/console/queues/adverse-events/{event.pk}/acknowledge").status_code == 302

    event.refresh_from_db()
    assert event.acknowledged_by == "user:clinicadmin"
    assert ReferralEvent.objects.filter(referral=referral, kind="adverse-event-acknowledged").count() == 1
    assert f'id="adverse-events-{event.pk}"' not in client.get("/console/queues").content.decode()


def test_a_clinic_admin_replays_their_dead_letter_and_not_another_clinics(clinic, other_clinic, clinic_admin):
    mine, theirs = dead_delivery(clinic), dead_delivery(other_clinic)
    client = signed_in(clinic_admin)

    assert client.post(f"/console/queues/deliveries/{theirs.pk}/replay").status_code == 404
    assert client.post(f"/console/queues/deliveries/{mine.pk}/replay").status_code == 302

    mine.refresh_from_db(), theirs.refresh_from_db()
    assert (mine.state, mine.round, mine.attempts) == ("pending", 2, 0)
    assert theirs.state == "dead"
    assert FollowUp.objects.filter(kind="delivery-attempt").count() == 1


def test_signed_out_users_are_sent_to_sign_in_and_gets_on_actions_are_refused(clinic, clinic_admin):
    from django.test import Client

    assert Client().get("/console/queues").status_code == 302
    assert signed_in(clinic_admin).get("/console/queues/deliveries/1/replay").status_code == 405
