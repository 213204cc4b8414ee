"""A referral that never came in over FHIR (opened through the domain services alone, as a web form or an import
would) has its Task, ServiceRequest and Patient all the same, rendered by the bridge from the domain's facts: it is
routed, declined, rerouted and accepted, and its Task is a valid PA Task at every step."""

import pytest

from fhir_bridge.models import StoredResource
from fhir_bridge.profiles import check_resource
from referrals.offers import offer_accept, offer_decline, referral_route_first
from referrals.models import ReferralStatus
from referrals.services import ReferralFacts, referral_create
from tests.network.factories import CARDIAC, ZIP_10001, km_north, role_make

pytestmark = pytest.mark.django_db

# Somewhere in Manhattan that is not the ZIP centroid, so that a fall-back to the postal code would show.
AT = (ZIP_10001[0] + 0.004, ZIP_10001[1] + 0.003)


def _facts(**overrides) -> ReferralFacts:
    values = dict(
        patient_name="Rosa Martinez",
        patient_birth_date="1958-04-02",
        patient_gender="female",
        patient_postal_code="10001",
        requester_reference="Practitioner/dr-lopez",
        requester_display="Dr Ana Lopez",
        condition_codes=list(CARDIAC),
        clearance="moderate",
        precautions=("no-valsalva", "hr-cap"),
        latitude=AT[0],
        longitude=AT[1],
        state="NY",
        required_language="es",
        preferred_languages=("es",),
        delivery_modes=("in-person",),
        pavs_baseline=[{"code": "82290-8", "value": 30, "unit": "min/wk", "date": "2026-11-01"}],
        goals=[{"text": "150 min/wk", "measure": {"system": "http://loinc.org", "code": "82290-8"},
                "target": {"value": 150, "unit": "min/wk", "comparator": ">="}, "due": "2027-03-01"}],
    )
    values.update(overrides)
    return ReferralFacts(**values)


def _referral_task(referral) -> StoredResource:
    # The referral's own Task (offers' child Tasks are stored without the referral).
    return StoredResource.objects.get(referral=referral, resource_type="Task")


def _profile_errors(content: dict) -> list:
    return [i for i in check_resource(content) if i.severity in ("error", "fatal")]


def _resolves(task: dict, element: str, resource_type: str) -> dict:
    kind, _, fhir_id = task[element]["reference"].partition("/")
    assert kind == resource_type
    return StoredResource.objects.get(resource_type=resource_type, fhir_id=fhir_id).content


def test_a_referral_opened_without_fhir_is_routed_declined_rerouted_and_accepted(clinic):
    spanish = [role_make(at=km_north(km, AT), languages=["es", "en"]) for km in (1, 2)]
    role_make(at=km_north(0.5, AT), languages=["en"])  # nearest, but does not speak Spanish

    referral = referral_create(clinic=clinic, facts=_facts(), actor="user:coordinator")

    # Its FHIR resources exist from the start, and the Task's focus and for resolve to them.
    row = _referral_task(referral)
    assert row.version_id == 1 and row.content["status"] == "requested"
    assert _profile_errors(row.content) == []
    service_request = _resolves(row.content, "focus", "ServiceRequest")
    patient = _resolves(row.content, "for", "Patient")
    assert _profile_errors(service_request) == []
    assert service_request["subject"]["reference"] == f"Patient/{patient['id']}"
    assert {c["code"] for d in service_request["orderDetail"] for c in d["coding"]} == {
        "moderate", "no-valsalva", "hr-cap", "in-person"}
    assert patient["communication"][0]["language"]["coding"][0]["code"] == "es"

    first = referral_route_first(referral_id=referral.pk).offer
    assert first.role == spanish[0]
    row.refresh_from_db()
    assert row.version_id == 2 and row.content["businessStatus"]["coding"][0]["code"] == "offered"
    assert _profile_errors(row.content) == []

    rerouted = offer_decline(offer=first, reason="No Spanish-speaking slot this month")
    assert rerouted.offer.role == spanish[1]
    # The reroute read the same facts: the geolocation (not the ZIP centroid), clearance, precautions, language.
    facts = rerouted.decision.patient_facts
    assert (facts["latitude"], facts["longitude"], facts["location_source"]) == (AT[0], AT[1], "geolocation")
    assert facts["clearance"] == "moderate"
    assert facts["precautions"] == ["no-valsalva", "hr-cap"]
    assert facts["required_language"] == "es"
    assert rerouted.decision.location_source == "geolocation"
    row.refresh_from_db()
    assert _profile_errors(row.content) == []

    offer_accept(offer=rerouted.offer)
    referral.refresh_from_db()
    assert referral.status == ReferralStatus.ACCEPTED
    row.refresh_from_db()
    assert row.content["status"] == "accepted"
    assert row.content["businessStatus"]["text"].startswith(f"Accepted by {spanish[1].professional.display_name}")
    assert row.content["owner"]["reference"] == "Organization/hub"
    assert _profile_errors(row.content) == []
    assert row.version_id > 2


def test_an_unplaced_referral_keeps_what_it_was_sent(clinic):
    referral = referral_create(
        clinic=clinic, facts=_facts(latitude=None, longitude=None, patient_postal_code="00000", state=""), actor="test"
    )
    assert (referral.facts.location_source, referral.facts.latitude) == ("", None)
    outcome = referral_route_first(referral_id=referral.pk)
    assert outcome.awaiting_manual_routing
    assert outcome.decision.outcome == "unplaced"
