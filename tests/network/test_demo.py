"""The demo network: about fifty professionals across Springfield, IL, the same on every load and every
machine, in which Scenario 2's cardiac patient goes to a cardiac-qualified professional (Get Fit, the nearer
one)."""

import random
from dataclasses import replace

import pytest
from django.core.management import call_command
from django.utils import timezone

from network.demo import demo_network_load, demo_network_spec
from network.geo import zip_place
from network.models import Credential, Organization, Professional, ProfessionalRole, Site
from network.selectors import role_scope
from referrals.offers import referral_route
from referrals.routing import PatientFacts
from tests.network.factories import ICD, referral_make

pytestmark = pytest.mark.django_db

SCENARIO_2 = [{"system": ICD, "code": "I25.2"}, {"system": ICD, "code": "I10"}]  # after a heart attack


def network_snapshot() -> list:
    return [
        list(Organization.objects.order_by("fhir_id").values_list("fhir_id", "name", "kind")),
        list(Site.objects.order_by("fhir_id").values_list("fhir_id", "postal_code", "latitude", "longitude")),
        list(
            ProfessionalRole.objects.order_by("fhir_id").values_list(
                "fhir_id", "professional__fhir_id", "site__fhir_id", "languages", "max_active_cases",
                "paused_until", "service_radius_km", "offers_virtual",
            )
        ),
        list(
            Credential.objects.order_by("number").values_list(
                "number", "type__slug", "expires_on", "verified_by"
            )
        ),
    ]  # fmt: skip


def excluded(decision) -> dict[str, str]:
    return {c["role"]: c["excluded"][0]["constraint"] for c in decision.candidates if c["excluded"]}


def test_the_demo_network_loads_once():
    call_command("load_network_demo", verbosity=0)
    first = network_snapshot()

    assert demo_network_load() == 0
    assert network_snapshot() == first
    assert 45 <= Professional.objects.count() <= 55
    assert ProfessionalRole.objects.count() == Professional.objects.count() + 1  # one person at two YMCAs


def test_the_demo_network_is_drawn_the_same_way_whatever_the_global_random_state():
    random.seed(1)
    first = demo_network_spec()
    random.seed(2)
    assert demo_network_spec() == first
    assert len({r.professional_id for r in first.roles}) == len({(r.given, r.family) for r in first.roles})


def test_every_site_is_in_springfield():
    for site in demo_network_spec().sites:
        assert site.postal_code in {"62701", "62702", "62703", "62704", "62707", "62711", "62712"}
        assert zip_place(site.postal_code).state == "IL"
        assert 39.72 < site.latitude < 39.88 and -89.76 < site.longitude < -89.56  # the city, not the county


def test_the_demo_has_credentials_and_roles_that_do_not_count():
    demo_network_load()
    today = timezone.now().date()
    assert Credential.objects.filter(expires_on__lt=today, verified_at__isnull=False).exists()
    assert Credential.objects.filter(verified_at__isnull=True).exists()
    assert ProfessionalRole.objects.filter(paused_until__gt=today).count() == 1
    languages = {tag for role in ProfessionalRole.objects.all() for tag in role.languages}
    assert {"en", "es", "pl"} <= languages
    assert ProfessionalRole.objects.filter(offers_virtual=True).exists()


def test_a_cardiac_referral_goes_to_get_fit_and_the_decision_shows_why_the_others_did_not(clinic):
    demo_network_load()
    today = timezone.now().date()
    referral = referral_make(clinic, codes=SCENARIO_2, postal_code="62701")

    outcome = referral_route(referral=referral, patient=PatientFacts(clearance="moderate"))

    # no screening: known disease from the codes, symptoms assumed → clinical credentials only
    assert outcome.decision.risk["tier"] == 3
    assert outcome.offer.role.fhir_id == "get-fit-rivera"  # Scenario 2: the nearer clinical choice
    assert role_scope(role=outcome.offer.role, today=today).groups["cardiovascular"] == 3
    why = excluded(outcome.decision)
    assert why["get-fit-chen"] == "not-qualified"  # a personal trainer
    self_reported = ProfessionalRole.objects.get(
        professional__credentials__type__slug="acsm-cep", professional__credentials__verified_at__isnull=True
    )
    assert why[self_reported.fhir_id] == "credential-unverified"
    assert why[ProfessionalRole.objects.get(max_risk_tier=2).fhir_id] == "role-restriction"
    assert (
        why[ProfessionalRole.objects.get(only_condition_groups__slug="pulmonary").fhir_id]
        == "role-restriction"
    )
    assert why[ProfessionalRole.objects.get(paused_until__gt=today).fhir_id] == "paused"
    eligible = [c for c in outcome.decision.candidates if not c["excluded"]]
    assert {"scr-patel", "fit-4-life-nguyen"} <= {c["role"] for c in eligible}
    for candidate in eligible:  # every one of them cardiac-qualified
        role = ProfessionalRole.objects.get(fhir_id=candidate["role"])
        assert role_scope(role=role, today=today).groups["cardiovascular"] == 3


def test_a_polish_speaking_cardiac_patient_goes_to_cardiac_rehab(clinic):
    demo_network_load()
    referral = referral_make(clinic, codes=SCENARIO_2, postal_code="62701")
    patient = replace(PatientFacts(clearance="moderate"), required_language="pl")

    outcome = referral_route(referral=referral, patient=patient)

    assert outcome.offer.role.organization.fhir_id == "springfield-cardiac-rehab"
    assert "pl" in outcome.offer.role.languages
    assert excluded(outcome.decision)["get-fit-rivera"] == "language"


def test_a_knee_osteoarthritis_referral_goes_to_someone_qualified_for_it(clinic):
    demo_network_load()
    today = timezone.now().date()
    referral = referral_make(clinic, codes=[{"system": ICD, "code": "M17.11"}], postal_code="62704")

    outcome = referral_route(referral=referral, patient=PatientFacts(clearance="moderate"))

    tier = outcome.decision.risk["tier"]
    assert role_scope(role=outcome.offer.role, today=today).groups["musculoskeletal"] >= tier
    lapsed = ProfessionalRole.objects.get(
        professional__credentials__type__slug="pt-license", professional__credentials__expires_on__lt=today
    )
    assert excluded(outcome.decision)[lapsed.fhir_id] == "credential-expired"
