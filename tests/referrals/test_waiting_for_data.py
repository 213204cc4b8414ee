"""A referral opened from a Task alone (notify and pull) waits for its data: nothing routes it until
referral_facts_complete gives it the facts, in one compare-and-set with one event."""

import pytest

from referrals.errors import DomainError, ErrorCode
from referrals.models import BusinessStatus, ReferralEvent, RoutingDecision
from referrals.offers import referral_route_first
from referrals.services import ReferralFacts, referral_create, referral_facts_complete

pytestmark = pytest.mark.django_db

CARDIAC = [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I25.10"}]


def _waiting(clinic):
    return referral_create(
        clinic=clinic, actor="ehr-client:x", waiting_for_data=True,
        facts=ReferralFacts(requester_reference="PractitionerRole/lopez", requester_display="Dr. Lopez"),
    )


def test_a_referral_waiting_for_its_data_is_not_routed(clinic):
    referral = _waiting(clinic)

    assert referral.business_status == BusinessStatus.WAITING_FOR_DATA
    assert referral_route_first(referral_id=referral.pk) is None
    assert not RoutingDecision.objects.exists()


def test_its_facts_complete_it_once_with_one_event(clinic):
    referral = _waiting(clinic)
    facts = ReferralFacts(
        patient_name="Nancy Johansson", patient_postal_code="10001", condition_codes=CARDIAC,
        service_code="390893007", requester_reference="",
    )

    referral_facts_complete(referral=referral, facts=facts, actor="hub")

    referral.refresh_from_db()
    assert referral.business_status == BusinessStatus.RECEIVED
    assert referral.patient_name == "Nancy Johansson"
    assert referral.requester_reference == "PractitionerRole/lopez"  # the Task's, kept: the fetched one was empty
    assert referral.facts.condition_codes == CARDIAC and referral.facts.location_source == "postal-code"
    assert referral.version == 2
    [event] = ReferralEvent.objects.filter(referral=referral, kind=ReferralEvent.Kind.STATUS_CHANGED)
    assert event.detail == {"business_status": "received", "facts": "completed"}
    with pytest.raises(DomainError) as refused:
        referral_facts_complete(referral=referral, facts=facts, actor="hub")
    assert refused.value.code == ErrorCode.CONFLICT
