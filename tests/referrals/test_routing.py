"""The routing engine: hard constraints first, then the score; every decision stored and explained."""

import datetime as dt
from dataclasses import replace

import pytest
from django.utils import timezone

from network.models import ConditionGroup, ProfessionalRole
from network.selectors import role_scope
from referrals.models import BusinessStatus, Offer, OfferStatus, Referral, ReferralEvent, RoutingDecision
from referrals.offers import offer_accept, referral_route, referral_route_manually
from referrals.routing import PatientFacts, routing_plan
from referrals.selectors import routing_explain
from tests.network.factories import HEALTHY, ZIP_10001, credential_give, km_north, referral_make, role_make
from tests.referrals.conftest import CARDIAC_PATIENT, HEALTHY_PATIENT

pytestmark = pytest.mark.django_db


def excluded_by(decision, role) -> list[str]:
    entry = next(c for c in decision.candidates if c["role"] == role.fhir_id)
    return [e["constraint"] for e in entry["excluded"]]


def test_a_cardiac_patient_never_goes_to_someone_without_a_cardiac_credential_even_closer(clinic):
    trainer = role_make(credentials=["acsm-cpt", "acsm-ep", "eim-2"], at=ZIP_10001)  # at the door
    clinical = role_make(credentials=["acsm-cep"], at=km_north(12))  # 12 km away
    referral = referral_make(clinic)

    outcome = referral_route(referral=referral, patient=CARDIAC_PATIENT)

    assert outcome.offer.role == clinical
    assert outcome.decision.risk["tier"] == 2
    assert excluded_by(outcome.decision, trainer) == ["not-qualified"]
    detail = next(c for c in outcome.decision.candidates if c["role"] == trainer.fhir_id)["excluded"][0][
        "detail"
    ]
    assert "cardiovascular" in detail


def test_with_no_cardiac_credential_anywhere_the_referral_waits_for_a_coordinator(clinic):
    role_make(credentials=["acsm-ep"])
    referral = referral_make(clinic)

    outcome = referral_route(referral=referral, patient=CARDIAC_PATIENT)

    assert outcome.offer is None
    assert Offer.objects.count() == 0
    referral.refresh_from_db()
    assert referral.business_status == BusinessStatus.AWAITING_MANUAL_ROUTING


def test_an_expired_credential_never_counts(clinic):
    lapsed = role_make(credentials=["acsm-cep"], expires_on=timezone.now().date() - dt.timedelta(days=1))
    referral = referral_make(clinic)

    outcome = referral_route(referral=referral, patient=CARDIAC_PATIENT)

    assert outcome.offer is None
    assert excluded_by(outcome.decision, lapsed) == ["credential-expired"]


def test_a_credential_is_current_through_its_expiry_date(clinic):
    role = role_make(credentials=["acsm-cep"], expires_on=timezone.now().date())
    outcome = referral_route(referral=referral_make(clinic), patient=CARDIAC_PATIENT)
    assert outcome.offer.role == role


def test_an_unverified_credential_never_counts(clinic):
    role = role_make(credentials=[])
    credential_give(role.professional, "acsm-cep", verified=False)
    outcome = referral_route(referral=referral_make(clinic), patient=CARDIAC_PATIENT)
    assert outcome.offer is None
    assert excluded_by(outcome.decision, role) == ["credential-unverified"]


def test_it_skips_professionals_at_capacity(clinic):
    full = role_make(max_active_cases=1)
    free = role_make(at=km_north(5))
    referral_route(referral=referral_make(clinic), patient=CARDIAC_PATIENT)  # takes full's only slot
    assert Offer.objects.get().role == full

    outcome = referral_route(referral=referral_make(clinic), patient=CARDIAC_PATIENT)

    assert outcome.offer.role == free
    assert excluded_by(outcome.decision, full) == ["at-capacity"]


def test_it_skips_paused_and_not_accepting_professionals(clinic):
    tomorrow = timezone.now().date() + dt.timedelta(days=1)
    paused = role_make(paused_until=tomorrow)
    org_paused = role_make()
    org_paused.organization.paused_until = tomorrow
    org_paused.organization.save()
    closed = role_make(accepting=False)
    resumed = role_make(at=km_north(8), paused_until=timezone.now().date())  # resumes today

    outcome = referral_route(referral=referral_make(clinic), patient=CARDIAC_PATIENT)

    assert outcome.offer.role == resumed
    assert excluded_by(outcome.decision, paused) == ["paused"]
    assert excluded_by(outcome.decision, org_paused) == ["paused"]
    assert excluded_by(outcome.decision, closed) == ["not-accepting"]


def test_inactive_members_are_skipped(clinic):
    role = role_make(active=False)
    professional_gone = role_make()
    professional_gone.professional.active = False
    professional_gone.professional.save()
    outcome = referral_route(referral=referral_make(clinic), patient=CARDIAC_PATIENT)
    assert outcome.offer is None
    assert excluded_by(outcome.decision, role) == ["role-inactive"]
    assert excluded_by(outcome.decision, professional_gone) == ["professional-inactive"]


def test_the_explanation_lists_excluded_candidates_with_their_constraint(clinic):
    unqualified = role_make(credentials=["acsm-cpt"])
    far = role_make(at=km_north(30), service_radius_km=35)
    near_small_radius = role_make(at=km_north(10), service_radius_km=12)
    chosen = role_make(at=km_north(3))
    referral = referral_make(clinic)

    referral_route(referral=referral, patient=CARDIAC_PATIENT)

    [explained] = routing_explain(referral_id=referral.pk)
    assert explained["outcome"] == "offered"
    assert explained["chosen_role"] == chosen.fhir_id
    by_role = {c["role"]: c for c in explained["candidates"]}
    assert [e["constraint"] for e in by_role[unqualified.fhir_id]["excluded"]] == ["not-qualified"]
    for role in (chosen, far, near_small_radius):
        assert by_role[role.fhir_id]["excluded"] == []
        assert set(by_role[role.fhir_id]["components"]) == {
            "distance",
            "load",
            "responsiveness",
            "acceptance",
            "continuity",
            "preferences",
        }
    # nearer ranks higher, all else equal
    assert by_role[chosen.fhir_id]["rank"] == 1
    assert by_role[near_small_radius.fhir_id]["rank"] == 2
    assert by_role[far.fhir_id]["rank"] == 3
    assert explained["summary"]["excluded"] == {"not-qualified": 1}
    assert "1 not qualified" in explained["gist"]


def test_a_role_whose_radius_does_not_reach_the_patient_is_not_considered(clinic):
    role_make(at=km_north(30), service_radius_km=10)
    referral = referral_make(clinic)
    outcome = referral_route(referral=referral, patient=CARDIAC_PATIENT)
    assert outcome.offer is None
    assert outcome.decision.candidates == []  # filtered by the database, not by a loop over the network
    assert outcome.decision.summary["pool"]["in_person"] == 0


def test_the_gist_names_who_and_how_far_and_carries_no_patient_details(clinic):
    role = role_make(at=km_north(3))
    referral = referral_make(clinic, patient_name="Nancy Johansson")
    outcome = referral_route(referral=referral, patient=CARDIAC_PATIENT)
    assert outcome.gist.startswith(
        f"Offered to {role.professional.display_name} ({role.organization.name}), "
        "in person, 3.0 km from the patient"
    )
    assert "Johansson" not in outcome.gist
    assert outcome.decision.gist == outcome.gist
    referral.refresh_from_db()
    assert referral.business_status == BusinessStatus.OFFERED
    assert ReferralEvent.objects.filter(referral=referral, kind="status-changed").count() == 1


def test_an_address_that_cannot_be_placed_goes_to_manual_routing(clinic):
    role_make()
    referral = referral_make(clinic, postal_code="00000")

    outcome = referral_route(
        referral=referral, patient=PatientFacts(postal_code="00000", clearance="moderate")
    )

    assert outcome.offer is None
    assert outcome.decision.outcome == RoutingDecision.Outcome.UNPLACED
    assert "address-not-placed" in outcome.decision.flags
    assert "could not be placed" in outcome.gist
    assert Referral.objects.get(pk=referral.pk).business_status == BusinessStatus.AWAITING_MANUAL_ROUTING


def test_a_zip_and_state_that_disagree_are_not_guessed(clinic):
    role_make()
    referral = referral_make(clinic)
    outcome = referral_route(referral=referral, patient=PatientFacts(postal_code="10001", state="CA"))
    assert outcome.decision.outcome == RoutingDecision.Outcome.UNPLACED


def test_the_zip_centroid_places_the_patient_without_a_geolocation(clinic):
    role = role_make(at=km_north(2))
    referral = referral_make(clinic, postal_code="10001-1234")
    outcome = referral_route(referral=referral, patient=PatientFacts(clearance="moderate"))
    assert outcome.decision.location_source == "postal-code"
    assert outcome.offer.role == role


def test_the_geolocation_wins_over_the_zip(clinic):
    brooklyn = (40.6782, -73.9442)
    near_zip = role_make(at=ZIP_10001, service_radius_km=5)
    near_home = role_make(at=brooklyn, service_radius_km=5)
    referral = referral_make(clinic, postal_code="10001")
    outcome = referral_route(
        referral=referral,
        patient=PatientFacts(
            latitude=brooklyn[0], longitude=brooklyn[1], clearance="moderate", postal_code="10001"
        ),
    )
    assert outcome.decision.location_source == "geolocation"
    assert outcome.offer.role == near_home
    assert near_zip.fhir_id not in {c["role"] for c in outcome.decision.candidates}


def test_a_required_language_is_a_hard_constraint(clinic):
    english = role_make(languages=["en"])
    spanish = role_make(at=km_north(6), languages=["en", "es-US"])
    outcome = referral_route(
        referral=referral_make(clinic),
        patient=replace(CARDIAC_PATIENT, required_language="es"),
    )
    assert outcome.offer.role == spanish
    assert excluded_by(outcome.decision, english) == ["language"]


def test_virtual_delivery_reaches_beyond_the_radius_only_when_the_referral_allows_it(clinic):
    albany = (42.6526, -73.7562)
    remote = role_make(at=albany, service_radius_km=10, offers_virtual=True)
    no_virtual = referral_route(referral=referral_make(clinic, codes=HEALTHY), patient=HEALTHY_PATIENT)
    assert no_virtual.offer is None
    assert no_virtual.decision.candidates == []  # out of reach in person, and the virtual pool is not read

    allowed = referral_route(
        referral=referral_make(clinic, codes=HEALTHY), patient=replace(HEALTHY_PATIENT, virtual_allowed=True)
    )
    assert allowed.offer.role == remote
    assert allowed.offer.delivery == Offer.Delivery.VIRTUAL
    assert "by video" in allowed.gist


def test_virtual_delivery_stays_within_the_sites_state(clinic):
    role_make(at=(40.2206, -74.7597), state="NJ", service_radius_km=5, offers_virtual=True)  # Trenton
    outcome = referral_route(
        referral=referral_make(clinic, codes=HEALTHY),
        patient=replace(HEALTHY_PATIENT, virtual_allowed=True),
    )
    assert outcome.offer is None


def test_a_directed_member_comes_first_when_qualified(clinic):
    role_make(at=km_north(1))
    named = role_make(at=km_north(15))
    referral = referral_make(clinic, performer_reference=f"PractitionerRole/{named.fhir_id}")

    outcome = referral_route(referral=referral, patient=CARDIAC_PATIENT)

    assert outcome.offer.role == named
    assert "as the clinic asked" in outcome.gist


def test_a_directed_practitioner_or_organization_names_their_roles(clinic):
    role_make(at=km_north(1))
    named = role_make(at=km_north(15))
    referral = referral_make(clinic, performer_reference=f"Organization/{named.organization.fhir_id}")
    assert referral_route(referral=referral, patient=CARDIAC_PATIENT).offer.role == named


def test_a_directed_member_that_is_not_qualified_is_explained(clinic):
    fallback = role_make(at=km_north(1))
    named = role_make(credentials=["acsm-cpt"], at=km_north(2))
    referral = referral_make(clinic, performer_reference=f"Practitioner/{named.professional.fhir_id}")

    outcome = referral_route(referral=referral, patient=CARDIAC_PATIENT)

    assert outcome.offer.role == fallback
    assert "directed-member-not-eligible" in outcome.decision.flags
    assert outcome.gist.startswith(
        f"{named.professional.display_name}, named by the clinic, cannot take it (not qualified)."
    )


def test_a_directed_member_far_away_is_still_considered_and_explained(clinic):
    role_make(at=km_north(1))
    named = role_make(at=(34.05, -118.24), state="CA")
    referral = referral_make(clinic, performer_reference=f"PractitionerRole/{named.fhir_id}")
    outcome = referral_route(referral=referral, patient=CARDIAC_PATIENT)
    assert excluded_by(outcome.decision, named) == ["outside-service-area"]


def test_continuity_with_the_clinic_raises_the_score(clinic):
    usual = role_make(at=km_north(4))
    other = role_make(at=km_north(3))
    first = referral_route(referral=referral_make(clinic), patient=CARDIAC_PATIENT).offer
    assert first.role == other
    # as if the clinic's last patient had gone to `usual`
    Offer.objects.filter(pk=first.pk).update(role=usual, organization=usual.organization)
    first.refresh_from_db()
    offer_accept(offer=first)

    outcome = referral_route(referral=referral_make(clinic), patient=CARDIAC_PATIENT)
    entry = next(c for c in outcome.decision.candidates if c["role"] == usual.fhir_id)
    assert entry["components"]["continuity"] == 1.0
    assert outcome.offer.role == usual


def test_a_plan_reads_the_database_once_whatever_the_pool(clinic, django_assert_num_queries):
    for i in range(30):
        role_make(at=km_north(i % 15), credentials=["acsm-cep", "acsm-ep"])
    referral = referral_make(clinic, performer_reference="PractitionerRole/nobody")
    # codes, credential types, the directed member, the pools, and per candidate its credentials, capacity and
    # history: one query, not one per candidate nor one per kind of fact
    with django_assert_num_queries(1):
        plan = routing_plan(
            referral=referral, patient=replace(CARDIAC_PATIENT, virtual_allowed=True), now=timezone.now()
        )
    assert plan.summary["considered"] == 30 and plan.summary["eligible"] == 30
    assert "directed-member-not-found" in plan.flags


def test_the_virtual_pool_takes_the_nearest_in_the_state_whether_near_or_far(clinic, monkeypatch):
    def virtual_role(at, state="NY"):
        # a radius too small to reach the patient in person: only video brings them into the pool
        return role_make(
            at=at, state=state, credentials=["acsm-cpt"], offers_virtual=True, service_radius_km=1
        )

    near = [virtual_role(km_north(km)) for km in (30, 10, 20, 40)]
    buffalo = virtual_role((42.8864, -78.8784))  # some 470 km away, still in New York
    no_place = virtual_role(None)  # a site without coordinates comes last
    virtual_role(km_north(5), state="NJ")  # licensed elsewhere: never in the pool
    patient = replace(HEALTHY_PATIENT, virtual_allowed=True)

    def pool(limit):
        monkeypatch.setattr("referrals.routing.VIRTUAL_POOL_LIMIT", limit)
        plan = routing_plan(
            referral=referral_make(clinic, codes=HEALTHY), patient=patient, now=timezone.now()
        )
        return [c.fhir_id for c in sorted(plan.candidates, key=lambda c: c.rank)], plan.summary["pool"]

    # enough of them within VIRTUAL_NEAR_KM: read around the patient only
    assert pool(3) == (
        [near[1].fhir_id, near[2].fhir_id, near[0].fhir_id],
        {
            "directed": 0,
            "in_person": 0,
            "in_person_truncated": False,
            "virtual": 3,
            "virtual_truncated": True,
        },
    )
    # too few near: the whole state, nearest first, the site without coordinates last
    ranked, summary = pool(10)
    assert set(ranked) == {r.fhir_id for r in near} | {buffalo.fhir_id, no_place.fhir_id}
    assert summary["virtual"] == 6 and not summary["virtual_truncated"]
    assert ranked[-1] == no_place.fhir_id


def test_a_role_that_stops_taking_referrals_after_the_plan_is_skipped_and_explained(clinic, monkeypatch):
    first = role_make(at=km_north(1))
    second = role_make(at=km_north(2))
    real_plan = routing_plan

    def plan_then_pause(**kwargs):
        plan = real_plan(**kwargs)
        ProfessionalRole.objects.filter(pk=first.pk).update(accepting=False)  # between the plan and the lock
        return plan

    monkeypatch.setattr("referrals.offers.routing_plan", plan_then_pause)
    outcome = referral_route(referral=referral_make(clinic), patient=CARDIAC_PATIENT)

    assert outcome.offer.role == second
    assert outcome.offer.role.professional.display_name in outcome.gist
    entry = next(c for c in outcome.decision.candidates if c["role"] == first.fhir_id)
    assert entry["excluded"] == [
        {"constraint": "not-accepting", "detail": "changed while this referral was being routed"}
    ]
    assert Offer.objects.get().role == second


def test_explicit_restrictions_narrow_what_the_credentials_allow(clinic):
    msk_only = role_make()
    msk_only.only_condition_groups.add(ConditionGroup.objects.get(slug="musculoskeletal"))
    low_only = role_make(max_risk_tier=1)
    outcome = referral_route(referral=referral_make(clinic), patient=CARDIAC_PATIENT)
    assert outcome.offer is None
    assert excluded_by(outcome.decision, msk_only) == ["role-restriction"]
    assert excluded_by(outcome.decision, low_only) == ["role-restriction"]


def test_the_role_scope_is_derived_from_current_credentials_and_restrictions():
    role = role_make(credentials=["acsm-ep"], max_risk_tier=1)

    credential_give(role.professional, "acsm-cep", expires_on=timezone.now().date() - dt.timedelta(days=1))
    scope = role_scope(role=role, today=timezone.now().date())
    assert scope.current == ["acsm-ep"] and scope.expired == ["acsm-cep"]
    assert "cardiovascular" not in scope.groups
    assert scope.groups["metabolic"] == 1  # EP covers tier 2, the role's own cap says 1


def test_past_answers_move_a_role_up(clinic):
    slow = role_make(at=km_north(2))
    quick = role_make(at=km_north(2.2))
    # a history: `slow` let two offers expire, `quick` accepted two within the hour
    for role, status in (
        (slow, OfferStatus.EXPIRED),
        (slow, OfferStatus.EXPIRED),
        (quick, OfferStatus.ACCEPTED),
        (quick, OfferStatus.ACCEPTED),
    ):
        past = referral_make(clinic)
        outcome = referral_route_to(past, role)
        changes = {"status": status}
        if status == OfferStatus.ACCEPTED:
            changes.update(responded_at=outcome.created_at + dt.timedelta(minutes=30), response_seconds=1800)
            Referral.objects.filter(pk=past.pk).update(status="completed")
        Offer.objects.filter(pk=outcome.pk).update(**changes)

    outcome = referral_route(referral=referral_make(clinic), patient=CARDIAC_PATIENT)

    by_role = {c["role"]: c for c in outcome.decision.candidates}
    assert by_role[quick.fhir_id]["components"]["acceptance"] == 0.75  # (2 + 1) / (2 + 2)
    assert by_role[slow.fhir_id]["components"]["acceptance"] == 0.25
    assert by_role[quick.fhir_id]["components"]["responsiveness"] > 0.9
    assert outcome.offer.role == quick


def referral_route_to(referral, role):
    return referral_route_manually(referral=referral, role=role, admin="tester").offer
