"""Capacity under load: 20 referrals routed at once into a network with 5 free slots (PostgreSQL)."""


import pytest
from django.conf import settings

from network.models import ConditionCodeMap, ConditionGroup, CredentialType
from referrals.models import BusinessStatus, Clinic, Offer, OfferStatus, Referral, RoutingDecision
from referrals.offers import referral_route
from referrals.selectors import role_active_case_count
from tests.conftest import fire_at_once
from tests.network.factories import ICD, km_north, referral_make, role_make
from tests.referrals.conftest import CARDIAC_PATIENT

# Skipped before any database set-up on SQLite, whose single writer cannot race. No serialized_rollback: with
# a transactional test before it that flushed without it, Django re-creates content types and the restore
# collides.
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
        reason="needs PostgreSQL's concurrent writers (set DATABASE_URL)",
    ),
    pytest.mark.django_db(transaction=True),
]


def _qualification_data():
    # A transactional test may find the tables that the fill migration seeded flushed by an earlier one.
    group, _ = ConditionGroup.objects.get_or_create(
        slug="cardiovascular",
        defaults={"name": "Cardiovascular", "cardiometabolic_renal": True, "min_risk_tier": 2},
    )
    ConditionCodeMap.objects.get_or_create(system=ICD, code="I25", match="prefix", group=group)
    cep, _ = CredentialType.objects.get_or_create(
        slug="acsm-cep", defaults={"name": "ACSM-CEP", "max_risk_tier": 3}
    )
    cep.condition_groups.add(group)


def test_twenty_referrals_at_once_never_overfill_five_slots():
    _qualification_data()
    clinic = Clinic.objects.create(name="Race Clinic", slug="race-clinic")
    roles = [role_make(at=km_north(1), max_active_cases=2), role_make(at=km_north(2), max_active_cases=3)]
    referrals = [referral_make(clinic) for _ in range(20)]

    results = fire_at_once(20, lambda i: referral_route(referral=referrals[i], patient=CARDIAC_PATIENT))

    errors = [r for r in results if isinstance(r, Exception)]
    assert errors == []
    assert sum(1 for r in results if r.offer is not None) == 5
    assert Offer.objects.filter(status=OfferStatus.REQUESTED).count() == 5
    for role in roles:
        assert role_active_case_count(role_id=role.pk) == role.max_active_cases
    assert Referral.objects.filter(business_status=BusinessStatus.AWAITING_MANUAL_ROUTING).count() == 15
    assert RoutingDecision.objects.count() == 20
    # a referral that lost the race to a slot says so in its explanation
    for decision in RoutingDecision.objects.filter(outcome="manual"):
        assert {c["excluded"][0]["constraint"] for c in decision.candidates} == {"at-capacity"}
