"""Condition codes → condition groups: the table the fill migration seeds, exact codes, ICD-10-CM prefixes,
and unmapped codes kept and flagged."""

import pytest

from network.models import ConditionCodeMap, ConditionGroup, CredentialType
from network.selectors import condition_codes_map
from referrals.offers import referral_route
from tests.network.factories import ICD, SCT, referral_make, role_make
from tests.referrals.conftest import CARDIAC_PATIENT

pytestmark = pytest.mark.django_db


def test_the_fill_migration_seeds_every_group_and_credential_type():
    assert set(ConditionGroup.objects.values_list("slug", flat=True)) == {
        "cardiovascular",
        "metabolic",
        "hypertension",
        "pulmonary",
        "renal",
        "oncology",
        "musculoskeletal",
        "neurological",
        "pregnancy",
        "falls",
        "obesity",
        "healthy",
    }
    slugs = set(CredentialType.objects.values_list("slug", flat=True))
    assert {
        "acsm-cep",
        "acsm-ep",
        "acsm-cpt",
        "eim-1",
        "eim-2",
        "eim-3",
        "pt-license",
        "issa-et",
        "cardiac-rehab",
    } <= slugs
    cep = CredentialType.objects.get(slug="acsm-cep")
    assert cep.condition_groups.count() == 12 and cep.max_risk_tier == 3
    cpt = CredentialType.objects.get(slug="acsm-cpt")
    assert not cpt.condition_groups.filter(slug="cardiovascular").exists()


def test_an_icd_code_maps_through_its_category_prefix_with_or_without_the_dot():
    mapping = condition_codes_map(codes=[{"system": ICD, "code": "I25.10"}, {"system": ICD, "code": "M1711"}])
    assert mapping.group_slugs == ["cardiovascular", "musculoskeletal"]
    assert mapping.unmapped == []


def test_one_code_can_map_to_several_groups():
    mapping = condition_codes_map(codes=[{"system": ICD, "code": "E11.22"}])
    assert mapping.group_slugs == ["metabolic", "renal"]
    assert mapping.mapped[0]["groups"] == ["metabolic", "renal"]


def test_snomed_codes_map_exactly():
    mapping = condition_codes_map(
        codes=[{"system": SCT, "code": "22298006", "display": "Myocardial infarction"}]
    )
    assert mapping.group_slugs == ["cardiovascular"]
    # an exact code is not a prefix: a longer code with the same start maps to nothing
    assert condition_codes_map(codes=[{"system": SCT, "code": "222980061"}]).group_slugs == []


def test_mapping_is_one_query(django_assert_num_queries):
    codes = [{"system": ICD, "code": c} for c in ("I25.10", "E11.9", "Z72.3", "M54.50")]
    with django_assert_num_queries(1):
        mapping = condition_codes_map(codes=codes)
    assert len(mapping.mapped) == 4


def test_unmapped_codes_are_kept_returned_and_never_dropped():
    codes = [
        {"system": ICD, "code": "Q99.9", "display": "Chromosomal abnormality"},
        {"system": "http://loinc.org", "code": "1234-5"},
        {"system": "", "code": "", "display": "tired all the time"},
        {"system": ICD, "code": "I10"},
    ]
    mapping = condition_codes_map(codes=codes)
    assert mapping.group_slugs == ["hypertension"]
    assert [u["code"] for u in mapping.unmapped] == ["Q99.9", "1234-5", ""]
    assert mapping.unmapped[2]["display"] == "tired all the time"
    assert all(u["why"] for u in mapping.unmapped)


def test_an_unmapped_condition_code_is_flagged_on_the_routing_decision(clinic):
    role_make(credentials=["acsm-cep"])
    referral = referral_make(
        clinic, codes=[{"system": ICD, "code": "I25.10"}, {"system": ICD, "code": "Q99.9", "display": "Odd"}]
    )

    outcome = referral_route(referral=referral, patient=CARDIAC_PATIENT)

    decision = outcome.decision
    assert "unmapped-condition-code" in decision.flags
    assert decision.unmapped_codes == [
        {"system": ICD, "code": "Q99.9", "display": "Odd", "why": "not in the condition code map"}
    ]
    assert decision.condition_groups == ["cardiovascular"]
    assert "Q99.9" in outcome.gist
    assert outcome.offer is not None  # routed on what is known, conservatively


def test_admins_add_mappings_as_data():
    group = ConditionGroup.objects.get(slug="metabolic")
    ConditionCodeMap.objects.create(system=ICD, code="E78.5", match="exact", group=group)
    assert condition_codes_map(codes=[{"system": ICD, "code": "E785"}]).group_slugs == ["metabolic"]
