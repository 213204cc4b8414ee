"""risk_assess: ACSM pre-participation screening plus the physician's clearance and precautions, pure."""

import json
from dataclasses import dataclass

from referrals.risk import HIGH, LOW, MODERATE, Screening, risk_assess


@dataclass(frozen=True)
class Group:
    slug: str
    cardiometabolic_renal: bool = False
    min_risk_tier: int = LOW


CARDIO = Group("cardiovascular", cardiometabolic_renal=True, min_risk_tier=MODERATE)
HEALTHY = Group("healthy")
MSK = Group("musculoskeletal")


def test_a_cardiac_patient_cleared_for_moderate_is_moderate_tier():
    risk = risk_assess(
        condition_groups=[CARDIO],
        clearance="moderate",
        precautions=[],
        screening=Screening(currently_active=False, known_disease=True, symptoms=False),
    )
    assert risk.tier == MODERATE
    assert risk.max_intensity == "moderate"
    assert risk.clearance_recommended is True
    assert risk.flags == ()


def test_a_healthy_patient_cleared_for_moderate_is_low_tier():
    risk = risk_assess(condition_groups=[HEALTHY], clearance="moderate", screening=None)
    assert risk.tier == LOW
    # what was not said is listed, with the value taken
    assert any(a.startswith("symptoms: assumed absent") for a in risk.assumptions)


def test_absent_facts_take_the_conservative_value():
    risk = risk_assess(condition_groups=[CARDIO], clearance=None, precautions=(), screening=None)
    assert risk.tier == HIGH  # known disease → symptoms assumed present, and no clearance is stated
    assert risk.max_intensity == "light"
    assert "medical-clearance-missing" in risk.flags
    assert "clearance: assumed light intensity" in risk.assumptions


def test_no_clearance_keeps_a_healthy_patient_off_the_lowest_tier():
    assert risk_assess(condition_groups=[HEALTHY], clearance=None, screening=None).tier == MODERATE


def test_symptoms_make_it_high_whatever_the_clearance():
    risk = risk_assess(
        condition_groups=[MSK],
        clearance="vigorous",
        screening=Screening(currently_active=True, symptoms=True),
    )
    assert risk.tier == HIGH


def test_a_light_only_clearance_with_known_disease_is_high():
    risk = risk_assess(
        condition_groups=[CARDIO], clearance="light", screening=Screening(known_disease=True, symptoms=False)
    )
    assert risk.tier == HIGH


def test_precautions_raise_the_tier_and_unknown_ones_are_flagged():
    hr_cap = risk_assess(
        condition_groups=[HEALTHY], clearance="moderate", precautions=["hr-cap"], screening=None
    )
    assert hr_cap.tier == MODERATE
    lifting = risk_assess(
        condition_groups=[HEALTHY], clearance="moderate", precautions=["no-heavy-lifting"], screening=None
    )
    assert lifting.tier == LOW
    unknown = risk_assess(
        condition_groups=[HEALTHY], clearance="moderate", precautions=["no-yoga"], screening=None
    )
    assert unknown.tier == MODERATE
    assert "unrecognised-precaution:no-yoga" in unknown.flags
    repeated = risk_assess(
        condition_groups=[HEALTHY],
        clearance="moderate",
        precautions=["hr-cap", "no-yoga", "hr-cap"],
        screening=None,
    )
    assert repeated.precautions == ("hr-cap", "no-yoga")  # each once, in the order given
    assert repeated.flags == ("unrecognised-precaution:no-yoga",)


def test_an_unmappable_condition_counts_as_possible_disease():
    risk = risk_assess(condition_groups=[], clearance="moderate", screening=None, unknown_conditions=True)
    assert risk.tier == HIGH  # assumed disease, so symptoms assumed, so high
    explicit = risk_assess(
        condition_groups=[],
        clearance="moderate",
        screening=Screening(known_disease=False, symptoms=False),
        unknown_conditions=True,
    )
    assert explicit.tier == MODERATE


def test_the_profile_serialises_to_json_values():
    risk = risk_assess(
        condition_groups=[CARDIO], clearance="moderate", precautions=["hr-cap"], screening=None
    )
    data = risk.as_dict()
    assert data["precautions"] == ["hr-cap"] and isinstance(data["reasons"], list)
    assert json.loads(json.dumps(data)) == data  # what RoutingDecision.risk stores
