"""How much supervision a referred patient needs: ``risk_assess``, a pure function of plain facts.

It follows the exercise pre-participation health screening of ACSM's Guidelines for Exercise Testing and
Prescription, 11th ed. (2021), ch. 2 (Riebe et al. 2015), and adds what the referring physician said: the
intensity the patient is cleared for and the precautions to respect.

The result is a tier (network.models.RiskTier): a credential covers patients up to its tier.

- LOW (1): no known cardiovascular, metabolic or renal disease and no symptoms, cleared for moderate or
  vigorous exercise: anyone qualified for the condition groups may take them.
- MODERATE (2): known disease (or a group whose minimum is moderate), asymptomatic and cleared; or a
  light-only clearance; or a precaution that needs monitoring (a heart-rate cap, no Valsalva).
- HIGH (3): signs or symptoms of disease; known disease with a light-only clearance; medical clearance that
  ACSM recommends but the referral does not carry; or a precaution that asks for clinical supervision.

Absent facts take the conservative value, and the profile says which were assumed:
- no clearance → "light" (the least the physician can have meant);
- no screening answer on known disease → derived from the condition groups (their ``cardiometabolic_renal``
  flag), and taken as present when a condition code could not be mapped;
- no answer on symptoms → present when there is known disease, absent otherwise (ACSM asks a physician to
  clear a patient with disease; a referral without the answer is treated as not cleared of symptoms);
- no answer on current activity → inactive;
- an unrecognised precaution → moderate, flagged.

Where each fact sits in a FHIR ServiceRequest (fhir_bridge parses it into these plain values; see
referrals/README.md):
- condition groups ← ``reasonCode`` and the Conditions in ``reasonReference`` (ICD-10-CM or SNOMED CT), mapped
  by ``ConditionCodeMap`` (network/selectors.py::condition_codes_map);
- clearance ← an ``orderDetail`` coding in the hub's code system
  ``http://exercise-referral-hub.org/fhir/CodeSystem/exercise-clearance`` (light | moderate | vigorous);
- precautions ← ``orderDetail`` codings in ``.../CodeSystem/exercise-precaution`` (the keys of PRECAUTIONS
  below); a value such as the heart-rate cap in beats/min travels in that orderDetail's ``text`` ("hr-cap
  110") and, for a human, in ``note``;
- screening ← ``supportingInfo`` Observations: current activity from the PA IG's PAVS (LOINC 82290-8 minutes
  per week; "currently active" in ACSM's sense is at least 30 min of moderate activity on 3 days a week, i.e.
  90 or more minutes per week on 3 or more days, LOINC 89555-7), symptoms and known disease from Observations
  or Conditions the physician attached; free text in ``note`` is never parsed into a fact.
"""

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Protocol

LOW, MODERATE, HIGH = 1, 2, 3

CLEARANCES = ("light", "moderate", "vigorous")

# precaution code → the tier it asks for. Codes of the hub's exercise-precaution code system.
PRECAUTIONS = {
    "hr-cap": MODERATE,  # keep the heart rate under a cap: needs someone who monitors it
    "no-valsalva": MODERATE,  # no breath-holding or maximal straining (blood pressure, retinopathy, hernia)
    "bp-monitoring": MODERATE,  # measure blood pressure before and after sessions
    "glucose-monitoring": MODERATE,  # check blood glucose around sessions (insulin, sulfonylureas)
    "fall-risk": MODERATE,  # balance work supervised, no unsupported standing exercise
    "no-heavy-lifting": LOW,  # no heavy resistance work: any professional can respect it
    "no-high-impact": LOW,  # no running or jumping: any professional can respect it
    "weight-bearing-limits": LOW,  # as prescribed after surgery or injury
    "supervised-only": HIGH,  # the physician asks for clinical supervision
    "ecg-monitoring": HIGH,  # telemetry: a cardiac-rehab setting
}


class GroupFacts(Protocol):
    """What risk_assess needs of a condition group (a network.models.ConditionGroup has it)."""

    slug: str
    cardiometabolic_renal: bool
    min_risk_tier: int


@dataclass(frozen=True)
class Screening:
    """ACSM pre-participation screening answers; None where the referral does not say."""

    currently_active: bool | None = None
    known_disease: bool | None = None  # known cardiovascular, metabolic or renal disease
    symptoms: bool | None = None  # signs or symptoms suggestive of such disease


@dataclass(frozen=True)
class RiskProfile:
    tier: int
    max_intensity: str  # what the patient is cleared for (or assumed to be)
    precautions: tuple[str, ...]
    reasons: tuple[str, ...]  # why the tier is what it is, in words
    assumptions: tuple[str, ...] = ()  # facts that were absent and took the conservative value
    # For the admin: "medical-clearance-missing", "unrecognised-clearance:<value>",
    # "unrecognised-precaution:<code>".
    flags: tuple[str, ...] = ()
    clearance_recommended: bool = False  # ACSM recommends medical clearance before starting

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def risk_assess(
    *,
    condition_groups: Iterable[GroupFacts],
    clearance: str | None,
    precautions: Iterable[str] = (),
    screening: Screening | None,
    unknown_conditions: bool = False,
) -> RiskProfile:
    """The patient's risk tier from plain facts. Pure: no database, no clock.

    ``unknown_conditions`` says that some condition code could not be mapped to a group: the patient may have
    a disease we cannot name, so known disease is assumed when the screening does not say, and the tier is at
    least moderate.
    """
    groups = list(condition_groups)
    screening = screening or Screening()
    reasons: list[str] = []
    assumptions: list[str] = []
    flags: list[str] = []
    tier = LOW

    def raise_to(level: int, why: str) -> None:
        nonlocal tier
        if level > tier:
            tier = level
        reasons.append(why)

    def answer(given: bool | None, assumed: bool, assumption: str) -> bool:
        """The screening's answer, else the conservative ``assumed`` value, recorded as an assumption."""
        if given is None:
            assumptions.append(assumption)
            return assumed
        return given

    for group in groups:
        if group.min_risk_tier > LOW:
            raise_to(
                group.min_risk_tier, f"condition group {group.slug} is at least tier {group.min_risk_tier}"
            )
    if unknown_conditions:
        raise_to(MODERATE, "a condition code could not be mapped to a group")

    from_codes = any(g.cardiometabolic_renal for g in groups) or unknown_conditions
    known_disease = answer(
        screening.known_disease,
        from_codes,
        f"known cardiovascular, metabolic or renal disease: {'yes' if from_codes else 'no'}, "
        "from the condition codes",
    )
    if known_disease:
        raise_to(MODERATE, "known cardiovascular, metabolic or renal disease")

    symptoms = answer(
        screening.symptoms,
        known_disease,
        f"symptoms: {'assumed present, with known disease' if known_disease else 'assumed absent'}",
    )
    if symptoms:
        raise_to(HIGH, "signs or symptoms of cardiovascular, metabolic or renal disease")

    currently_active = answer(screening.currently_active, False, "currently active: assumed not")

    # ACSM: inactive with disease or symptoms → clearance recommended; active with symptoms → stop and get
    # cleared; active with disease, asymptomatic → clearance before vigorous only.
    clearance_recommended = symptoms or (known_disease and not currently_active)

    if not clearance:
        max_intensity = "light"
        assumptions.append("clearance: assumed light intensity")
        if clearance_recommended:
            flags.append("medical-clearance-missing")
            raise_to(HIGH, "ACSM recommends medical clearance and the referral states none")
    elif clearance not in CLEARANCES:
        max_intensity = "light"
        flags.append(f"unrecognised-clearance:{clearance}")
        raise_to(MODERATE, f"clearance {clearance!r} is not light, moderate or vigorous: taken as light")
    else:
        max_intensity = clearance
    if max_intensity == "light":
        raise_to(HIGH if known_disease else MODERATE, "cleared for light intensity only")

    seen = tuple(dict.fromkeys(precautions))  # each once, in the order given
    for precaution in seen:
        level = PRECAUTIONS.get(precaution)
        if level is None:
            flags.append(f"unrecognised-precaution:{precaution}")
            raise_to(MODERATE, f"precaution {precaution!r} is not one the hub knows")
        elif level > LOW:
            raise_to(level, f"precaution {precaution}")

    if not reasons:
        reasons.append("no known disease, no symptoms, cleared for moderate or vigorous exercise")
    return RiskProfile(
        tier=tier,
        max_intensity=max_intensity,
        precautions=seen,
        reasons=tuple(reasons),
        assumptions=tuple(assumptions),
        flags=tuple(flags),
        clearance_recommended=clearance_recommended,
    )
