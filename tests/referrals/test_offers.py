"""Offers: accept, decline and expiry move the referral on; an exhausted list goes to the manual queue; manual
routing keeps the hard constraints unless a reason is recorded."""

import datetime as dt

import pytest

from referrals.models import (
    BusinessStatus,
    Offer,
    OfferEvent,
    OfferStatus,
    Referral,
    ReferralStatus,
    RoutingDecision,
)
from referrals.offers import (
    OFFER_DEADLINE,
    offer_accept,
    offer_changed,
    offer_decline,
    offer_expire,
    referral_offers_cancel,
    referral_route,
    referral_route_manually,
)
from referrals.errors import DomainError, ErrorCode
from referrals.routing import referral_patient_facts
from referrals.selectors import role_active_case_count, routing_explain
from tests.network.factories import km_north, referral_make, role_make
from tests.referrals.conftest import CARDIAC_PATIENT

pytestmark = pytest.mark.django_db


@pytest.fixture
def three_roles():
    return [role_make(at=km_north(km)) for km in (1, 2, 3)]


@pytest.fixture
def referral(clinic):
    return referral_make(clinic, patient=CARDIAC_PATIENT)


def test_an_offer_has_a_48_hour_deadline(referral, three_roles):
    offer = referral_route(referral=referral, patient=CARDIAC_PATIENT).offer
    assert offer.status == OfferStatus.REQUESTED
    assert offer.deadline - offer.created_at == OFFER_DEADLINE == dt.timedelta(hours=48)
    assert list(offer.events.values_list("from_status", "to_status")) == [("", "requested")]


def test_accepting_an_offer_accepts_the_referral(referral, three_roles):
    offer = referral_route(referral=referral, patient=CARDIAC_PATIENT).offer

    offer_accept(offer=offer)

    offer.refresh_from_db()
    referral.refresh_from_db()
    assert offer.status == OfferStatus.ACCEPTED and offer.responded_at is not None
    assert referral.status == ReferralStatus.ACCEPTED
    assert referral.business_status == BusinessStatus.ACCEPTED
    assert role_active_case_count(role_id=offer.role_id) == 1  # an accepted case still holds its slot


def test_a_decline_goes_to_the_next_candidate(referral, three_roles):
    first = referral_route(referral=referral, patient=CARDIAC_PATIENT).offer
    assert first.role == three_roles[0]

    outcome = offer_decline(offer=first, reason="Fully booked this month")

    first.refresh_from_db()
    assert first.status == OfferStatus.REJECTED and first.decline_reason == "Fully booked this month"
    assert outcome.offer.role == three_roles[1]
    assert outcome.decision.trigger == RoutingDecision.Trigger.DECLINED
    entry = next(c for c in outcome.decision.candidates if c["role"] == three_roles[0].fhir_id)
    assert entry["excluded"][0]["constraint"] == "already-offered"
    # the re-run read the referral's clinical facts, as the first run would have
    assert outcome.decision.patient_facts == referral_patient_facts(referral=referral).as_dict()
    assert outcome.decision.patient_facts["clearance"] == "moderate"
    assert outcome.decision.patient_facts["screening"]["known_disease"] is True
    assert role_active_case_count(role_id=three_roles[0].pk) == 0


def test_an_expiry_goes_to_the_next_candidate(referral, three_roles):
    first = referral_route(referral=referral, patient=CARDIAC_PATIENT).offer

    outcome = offer_expire(offer=first, now=first.deadline + dt.timedelta(seconds=1))

    first.refresh_from_db()
    assert first.status == OfferStatus.EXPIRED
    assert outcome.offer.role == three_roles[1]
    assert outcome.decision.trigger == RoutingDecision.Trigger.EXPIRED


def test_an_offer_does_not_expire_before_its_deadline(referral, three_roles):
    offer = referral_route(referral=referral, patient=CARDIAC_PATIENT).offer
    with pytest.raises(DomainError) as early:
        offer_expire(offer=offer, now=offer.deadline - dt.timedelta(minutes=1))
    assert early.value.code == ErrorCode.NOT_OPEN
    assert Offer.objects.get(pk=offer.pk).status == OfferStatus.REQUESTED


def test_an_exhausted_list_goes_to_the_manual_queue(referral, three_roles):
    offer = referral_route(referral=referral, patient=CARDIAC_PATIENT).offer
    for _ in range(2):
        offer = offer_decline(offer=offer, reason="No room").offer
    outcome = offer_decline(offer=offer, reason="Not my specialty")

    assert outcome.offer is None
    assert outcome.decision.outcome == RoutingDecision.Outcome.MANUAL
    referral.refresh_from_db()
    assert referral.business_status == BusinessStatus.AWAITING_MANUAL_ROUTING
    assert referral.status == ReferralStatus.REQUESTED
    assert outcome.decision.summary["excluded"] == {"already-offered": 3}
    assert "a coordinator will route" in outcome.gist
    assert len(routing_explain(referral_id=referral.pk)) == 4


def test_an_answered_offer_cannot_be_answered_again(referral, three_roles):
    offer = referral_route(referral=referral, patient=CARDIAC_PATIENT).offer
    stale = Offer.objects.get(pk=offer.pk)
    offer_decline(offer=offer, reason="No room")

    with pytest.raises(DomainError) as twice:
        offer_decline(offer=stale, reason="Twice")
    assert twice.value.code == ErrorCode.CONFLICT
    with pytest.raises(DomainError) as late:
        offer_expire(offer=stale, now=stale.deadline + dt.timedelta(hours=1))
    assert late.value.code == ErrorCode.CONFLICT
    assert OfferEvent.objects.filter(offer=offer).count() == 2


def test_an_offer_of_a_cancelled_referral_cannot_be_accepted(referral, three_roles):
    from referrals.services import referral_update

    offer = referral_route(referral=referral, patient=CARDIAC_PATIENT).offer
    referral_offers_cancel(referral=referral, reason="Clinic withdrew", actor="hub")
    referral_update(
        referral=Referral.objects.get(pk=referral.pk), status="cancelled", reason="moved", actor="hub"
    )

    with pytest.raises(DomainError) as refused:
        offer_accept(offer=Offer.objects.get(pk=offer.pk))
    assert refused.value.code == ErrorCode.NOT_OPEN
    assert Offer.objects.get(pk=offer.pk).status == OfferStatus.CANCELLED


def test_a_decline_needs_a_reason(referral, three_roles):
    offer = referral_route(referral=referral, patient=CARDIAC_PATIENT).offer
    with pytest.raises(DomainError) as refused:
        offer_decline(offer=offer, reason="  ")
    assert (refused.value.code, refused.value.field) == (ErrorCode.REASON_REQUIRED, "decline_reason")
    assert Offer.objects.get(pk=offer.pk).status == OfferStatus.REQUESTED


def test_a_referral_with_a_live_offer_is_not_routed_twice(referral, three_roles):
    referral_route(referral=referral, patient=CARDIAC_PATIENT)
    with pytest.raises(DomainError) as refused:
        referral_route(referral=referral, patient=CARDIAC_PATIENT)
    assert refused.value.code == ErrorCode.NOT_ROUTABLE
    assert Offer.objects.count() == 1


def test_every_offer_change_is_announced_in_the_transaction(referral, three_roles):
    seen = []

    def receiver(sender, offer, from_status, actor, **kwargs):
        seen.append((from_status, offer.status, actor))

    offer_changed.connect(receiver)
    try:
        offer = referral_route(referral=referral, patient=CARDIAC_PATIENT).offer
        offer_decline(offer=offer, reason="No room", actor="practitioner-role:x")
    finally:
        offer_changed.disconnect(receiver)
    assert seen == [
        ("", "requested", "hub"),
        ("requested", "rejected", "practitioner-role:x"),
        ("", "requested", "hub"),
    ]


# --- Manual routing -----------------------------------------------------------------------------------------


def test_manual_routing_refuses_a_role_that_breaks_hard_constraints_without_a_reason(referral, three_roles):
    referral_route(referral=referral, patient=CARDIAC_PATIENT)
    unqualified = role_make(credentials=["acsm-cpt"])

    with pytest.raises(DomainError) as refused:
        referral_route_manually(referral=referral, role=unqualified, admin="coordinator")

    assert refused.value.code == ErrorCode.CONSTRAINT
    assert [c["constraint"] for c in refused.value.detail["constraints"]] == ["not-qualified"]
    assert Offer.objects.filter(role=unqualified).count() == 0


def test_manual_routing_with_a_reason_records_the_override_and_withdraws_the_live_offer(
    referral, three_roles
):
    live = referral_route(referral=referral, patient=CARDIAC_PATIENT).offer
    unqualified = role_make(credentials=["acsm-cpt"])

    outcome = referral_route_manually(
        referral=referral,
        role=unqualified,
        admin="coordinator",
        override_reason="Cardiologist approved by phone",
    )

    assert outcome.offer.role == unqualified
    assert Offer.objects.get(pk=live.pk).status == OfferStatus.CANCELLED
    decision = outcome.decision
    assert decision.trigger == RoutingDecision.Trigger.MANUAL and decision.actor == "user:coordinator"
    assert [o["constraint"] for o in decision.overrides] == ["not-qualified"]
    assert decision.override_reason == "Cardiologist approved by phone"
    assert referral.business_status == BusinessStatus.OFFERED


def test_manual_routing_to_a_qualified_role_needs_no_reason(clinic, three_roles):
    referral = referral_make(clinic)
    offer = referral_route(referral=referral, patient=CARDIAC_PATIENT).offer
    for _ in range(2):
        offer = offer_decline(offer=offer, reason="No room").offer
    offer_decline(offer=offer, reason="No room")  # now waiting for a coordinator

    outcome = referral_route_manually(referral=referral, role=three_roles[0], admin="coordinator")

    assert outcome.offer.role == three_roles[0]  # offering again to one who declined is the admin's call
    assert outcome.decision.overrides == []


def test_manual_routing_keeps_capacity_unless_overridden(clinic):
    full = role_make(max_active_cases=1)
    referral_route(referral=referral_make(clinic), patient=CARDIAC_PATIENT)
    referral = referral_make(clinic)
    referral_route(referral=referral, patient=CARDIAC_PATIENT)  # nobody left: manual

    with pytest.raises(DomainError) as refused:
        referral_route_manually(referral=referral, role=full, admin="coordinator")
    assert refused.value.code == ErrorCode.CONSTRAINT
    outcome = referral_route_manually(
        referral=referral, role=full, admin="coordinator", override_reason="Extra slot"
    )
    assert [o["constraint"] for o in outcome.decision.overrides] == ["at-capacity"]
    assert role_active_case_count(role_id=full.pk) == 2


def test_the_manual_queue_shows_each_referrals_latest_gist_and_flags_in_a_fixed_number_of_queries(
    clinic, django_assert_max_num_queries
):
    from django.contrib.auth import get_user_model
    from django.test import Client

    nobody_near = [referral_make(clinic, codes=[{"system": "urn:unknown", "code": f"x{i}"}]) for i in range(3)]
    outcomes = [referral_route(referral=r, patient=CARDIAC_PATIENT) for r in nobody_near]
    assert all(o.awaiting_manual_routing for o in outcomes)
    coordinator = Client()
    coordinator.force_login(get_user_model().objects.create_user("coordinator", password="x", is_staff=True))

    with django_assert_max_num_queries(5):  # session, user, count, page, the audit row: not one more per referral
        answer = coordinator.get("/api/admin/routing/queue")

    assert answer.status_code == 200
    listed = answer.json()["referrals"]
    assert [r["id"] for r in listed] == [r.pk for r in nobody_near]
    assert [r["gist"] for r in listed] == [o.gist for o in outcomes]
    assert all("unmapped-condition-code" in r["flags"] for r in listed)
