"""Portal fixtures: a practice with two therapists and a manager, each with a portal account, and a live offer
made to the first therapist by the routing engine (so it has a real decision, clinical facts and FHIR Task)."""

import pytest
from django.contrib.auth.models import User
from django.test import Client

from network.models import Account, ConditionCodeMap, ConditionGroup, CredentialType
from referrals.offers import referral_route
from tests.network.factories import ICD, OrganizationFactory, RoleFactory, SiteFactory, credential_give, km_north, referral_make
from tests.referrals.conftest import CARDIAC_PATIENT

PASSWORD = "correct horse battery staple"  # noqa: S105 - a test user's
# What the referral says of the patient that must never reach a therapist before acceptance.
PATIENT = {
    "patient_name": "Ingrid Johansson",
    "patient_birth_date": "1958-04-12",
}


def account_make(username: str, *, role: str, professional=None, organization=None) -> Account:
    user = User.objects.create_user(username, f"{username}@example.org", PASSWORD)
    return Account.objects.create(user=user, role=role, professional=professional, organization=organization)


def signed_in(account: Account) -> Client:
    client = Client()
    client.force_login(account.user)
    return client


@pytest.fixture
def practice(db):
    """An organization with one site 1 km north of the patient, two therapists' roles there and a manager."""
    qualification_data()
    organization = OrganizationFactory(name="Fit Heart Practice")
    at = km_north(1)
    site = SiteFactory(organization=organization, latitude=at[0], longitude=at[1])
    roles = []
    for n in range(2):
        role = RoleFactory(site=site, organization=organization)
        credential_give(role.professional, "acsm-cep")
        roles.append(role)
    therapist = account_make("therapist", role="therapist", professional=roles[0].professional)
    colleague = account_make("colleague", role="therapist", professional=roles[1].professional)
    manager = account_make("manager", role="manager", organization=organization)
    return type("Practice", (), {"organization": organization, "roles": roles, "therapist": therapist,
                                 "colleague": colleague, "manager": manager})


def offer_make(clinic, role, **patient):
    """A referral routed to ``role`` (the only role with room: the others are filled or paused by the caller)."""
    referral = referral_make(clinic, patient=CARDIAC_PATIENT, **{**PATIENT, **patient})
    outcome = referral_route(referral=referral, patient=CARDIAC_PATIENT)
    assert outcome.offer is not None and outcome.offer.role_id == role.pk, outcome
    return outcome.offer


@pytest.fixture
def offer(clinic, practice):
    # Only the first therapist takes new clients, so the engine offers the case to them.
    practice.roles[1].accepting = False
    practice.roles[1].save(update_fields=["accepting"])
    return offer_make(clinic, practice.roles[0])


def qualification_data():
    """The rows the fill migration seeds, again: a transactional test may find them flushed by an earlier one."""
    group, _ = ConditionGroup.objects.get_or_create(
        slug="cardiovascular", defaults={"name": "Cardiovascular", "cardiometabolic_renal": True, "min_risk_tier": 2}
    )
    ConditionCodeMap.objects.get_or_create(system=ICD, code="I25", match="prefix", group=group)
    cep, _ = CredentialType.objects.get_or_create(slug="acsm-cep", defaults={"name": "ACSM-CEP", "max_risk_tier": 3})
    cep.condition_groups.add(group)
