"""A provider's answer racing another change of the same referral (PostgreSQL): exactly one answer wins, and no
pair of writers waits on each other in a cycle (a deadlock would surface as a 503)."""

import copy

import pytest
from django.db import connection

from fhir_bridge.examples import scenario2_bundle
from fhir_bridge.smart_scopes import PROVIDER_SCOPES
from referrals.models import Offer, OfferStatus, Referral, ReferralStatus
from referrals.offers import referral_route_manually
from tests.conftest import fhir_client_for, fire_at_once, json_of
from tests.factories import EhrClientFactory
from tests.network.factories import OrganizationFactory, RoleFactory, SiteFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
SCOPES = " ".join(PROVIDER_SCOPES)


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL's concurrent writers (set DATABASE_URL)")


@pytest.fixture
def offered():
    clinic_client = EhrClientFactory()
    fhir = fhir_client_for(clinic_client)
    organization = OrganizationFactory(fhir_id="fit4life")
    site = SiteFactory(organization=organization, state="IL", latitude=39.799, longitude=-89.644)
    role = RoleFactory(site=site, fhir_id="lopez")
    response = fhir.post("", scenario2_bundle(identifier="race-provider"))
    assert response.status_code == 200
    task = next(e["resource"] for e in json_of(response)["entry"] if e["resource"]["resourceType"] == "Task")
    referral = Referral.objects.get()
    offer = referral_route_manually(referral=referral, role=role, admin="coordinator", override_reason="test").offer
    return {"fhir": fhir, "task": task, "offer": offer, "organization": organization}


def _provider(organization):
    return fhir_client_for(EhrClientFactory(clinic=None, organization=organization, scopes=SCOPES), SCOPES)


def _accept_body(provider, offer):
    task = json_of(provider.get(f"Task/offer-{offer.pk}"))
    return {k: v for k, v in task.items() if k != "meta"} | {"status": "accepted"}


def test_two_systems_of_one_organization_accepting_at_once_one_wins(offered):
    providers = [_provider(offered["organization"]) for _ in range(2)]
    body = _accept_body(providers[0], offered["offer"])

    responses = fire_at_once(2, lambda i: providers[i].put(f"Task/{body['id']}", body, headers={"If-Match": 'W/"1"'}))

    assert sorted(r.status_code for r in responses) == [200, 412]
    assert Offer.objects.get(pk=offered["offer"].pk).status == OfferStatus.ACCEPTED
    referral = Referral.objects.get()
    assert referral.status == ReferralStatus.ACCEPTED
    assert referral.events.filter(to_status="accepted").count() == 1


def test_a_provider_accepting_while_the_clinic_cancels_ends_consistent(offered):
    provider = _provider(offered["organization"])
    accept = _accept_body(provider, offered["offer"])
    cancel = copy.deepcopy(offered["task"])
    cancel.pop("meta", None)
    cancel |= {"status": "cancelled", "statusReason": {"text": "Patient moved"}}

    def work(i):
        if i == 0:
            return provider.put(f"Task/{accept['id']}", accept, headers={"If-Match": 'W/"1"'})
        return offered["fhir"].put(f"Task/{cancel['id']}", cancel)

    accepted, cancelled = fire_at_once(2, work)

    assert cancelled.status_code == 200, cancelled.content  # the clinic may always cancel
    # Never a deadlock's 503. Refused when the clinic came first: 412 (the offer Task moved on, cancelled) or 409.
    assert accepted.status_code in (200, 409, 412), accepted.content
    referral = Referral.objects.get()
    offer = Offer.objects.get(pk=offered["offer"].pk)
    assert referral.status == ReferralStatus.CANCELLED
    # Either the provider came first (its offer stays accepted, then the case was cancelled) or the clinic did
    # (the offer was withdrawn, and the provider was told so).
    assert offer.status == (OfferStatus.ACCEPTED if accepted.status_code == 200 else OfferStatus.CANCELLED)
