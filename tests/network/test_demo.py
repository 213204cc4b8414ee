"""The demo network loads once, and a Scenario 2 referral (heart attack, hypertension) routes in it."""

import pytest
from django.core.management import call_command

from network.models import ProfessionalRole
from network.routing import PatientFacts
from network.services import referral_route
from tests.network.factories import ICD, referral_make

pytestmark = pytest.mark.django_db


def test_the_demo_network_loads_once_and_takes_a_cardiac_referral(clinic):
    call_command("load_network_demo", verbosity=0)
    call_command("load_network_demo", verbosity=0)
    assert ProfessionalRole.objects.count() == 6

    referral = referral_make(
        clinic, codes=[{"system": ICD, "code": "I25.2"}, {"system": ICD, "code": "I10"}], postal_code="62701"
    )
    outcome = referral_route(referral=referral, patient=PatientFacts(clearance="moderate"))

    # no screening: known disease from the codes, symptoms assumed → clinical credentials only
    assert outcome.decision.risk["tier"] == 3
    assert outcome.offer.role.fhir_id in {"get-fit-rivera", "fit-4-life-nguyen", "scr-patel"}
    excluded = {
        c["role"]: c["excluded"][0]["constraint"] for c in outcome.decision.candidates if c["excluded"]
    }
    assert excluded["get-fit-chen"] == "not-qualified"
