"""The case records a provider's system posts as FHIR Observations, mapped once, here, onto referrals.records'
services: a record sent over FHIR and one entered in the therapist's web app are the same rows, leave the same
ReferralEvent, and are served back as the same Observations (rendered by records_fhir.py, whose code tables are
read backwards here, so that the two directions cannot drift apart).

What a provider posts, and what it becomes (one POST, one record):

=====================================================  ===================================================
Observation.code (and components)                      domain service
=====================================================  ===================================================
PAVS: the EVS panel 89574-8, or one of the PAVS codes  records.checkin_record: days per week (89555-7, d/wk)
(89555-7, 68516-4, 82290-8, 82291-6) with its value;   and minutes per day (68516-4, min/d) are required;
the other answers as components                        strength days (82291-6, d/wk) optional; minutes per
                                                       week (82290-8, min/wk), if sent, must be their product
a measure of records_fhir.MEASURES (LOINC, SNOMED CT   records.assessment_record with that one measure, the
or the hub's codes), blood pressure as the 85354-9     kind it belongs to (records.ASSESSMENT_MEASURES), in
panel with 8480-6 / 8462-4 components, PHQ-2 as its    its UCUM unit (valueQuantity.code)
55758-7 score
exercise duration 55411-3 (min), with heart rate mean  records.session_record, an attended session at
55425-3 / max 55426-1 (/min) and RPE as components     effectiveDateTime
=====================================================  ===================================================

A PAVS answer alone (days per week without minutes per day) is refused: a check-in is the patient's whole answer
and its minutes per week are computed from both (issue 9: only check-ins produce PAVS Observations). Any other
code is none of the case records' and is stored as sent (provider_fhir.observation_create).

A refusal is a FhirError naming the element: 422 for a value the domain refuses (out of range, wrong unit, a
future time), 409 when the case moved on meanwhile; a case that takes no records (not accepted, or closed) is a
422 naming Observation.basedOn.
"""

import datetime as dt

from django.db import transaction

from fhir_bridge.codes import LOINC_SYSTEM, MEASURE_SYSTEM, UCUM_SYSTEM
from fhir_bridge.models import StoredResource
from fhir_bridge.outcomes import domain_error, error
from fhir_bridge.profiles import EVS_UNITS
from fhir_bridge.records_fhir import BP_DIASTOLIC, BP_PANEL, BP_SYSTOLIC, MEASURES, PAVS, PHQ2_SCORE, record_resources
from referrals.errors import DomainError
from referrals.models import MEASURE_UNITS, Attendance, Measure, Referral
from referrals.records import (
    ASSESSMENT_MEASURES,
    MeasureValue,
    assessment_record,
    checkin_record,
    session_record,
)

# The Exercise Vital Sign panel the PAVS answers belong to (PA IG measures.xml: its basis; the panel itself is
# optional, so a check-in may also come as one of its answers with the others as components).
PAVS_PANEL = "89574-8"
# LOINC code -> the check-in field it answers, from records_fhir's PAVS table.
PAVS_FIELDS = {code: name for code, name, *_ in PAVS}
# (system, code) -> the measure, from records_fhir's table; the blood pressure panel and the PHQ-2 score are
# rendered apart there, so they are added here.
MEASURE_CODES = {
    (coding["system"], coding["code"]): measure
    for measure, (codings, _, _) in MEASURES.items()
    for coding in codings
} | {(LOINC_SYSTEM, PHQ2_SCORE["code"]): Measure.PHQ2}
BP_COMPONENTS = {BP_SYSTOLIC["code"]: Measure.BP_SYSTOLIC, BP_DIASTOLIC["code"]: Measure.BP_DIASTOLIC}
SESSION_DURATION = "55411-3"
# Components a session Observation may carry: (system, code) -> (session_record argument, UCUM unit).
SESSION_COMPONENTS = {
    (LOINC_SYSTEM, "55425-3"): ("hr_average", "/min"),
    (LOINC_SYSTEM, "55426-1"): ("hr_peak", "/min"),
    (MEASURE_SYSTEM, "rpe"): ("rpe", "{score}"),
}
# A new record is a final result: a preliminary one is not the record yet, and an amended or corrected one
# would change a record this POST does not name (the hub takes no corrections over FHIR; they are new records).
RECORDED_STATUSES = frozenset({"final"})


def _codes(concept) -> list[tuple[str, str]]:
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return [(c.get("system", ""), c.get("code", "")) for c in codings or [] if isinstance(c, dict)]


def _kind(body: dict) -> str:
    """What the Observation is a record of: "pavs", "measure", "bp", "session", or "" (none of the case records)."""
    codes = _codes(body.get("code"))
    if any(system == LOINC_SYSTEM and (code == PAVS_PANEL or code in PAVS_FIELDS) for system, code in codes):
        return "pavs"
    if (LOINC_SYSTEM, BP_PANEL["code"]) in codes:
        return "bp"
    if any(code in MEASURE_CODES for code in codes):
        return "measure"
    if (LOINC_SYSTEM, SESSION_DURATION) in codes:
        return "session"
    return ""


def _quantity(holder: dict, path: str, unit: str | None) -> float:
    """The value of ``holder``'s valueQuantity, checked to be in UCUM's ``unit`` (None: any, checked later)."""
    quantity = holder.get("valueQuantity")
    if not isinstance(quantity, dict) or quantity.get("value") is None:
        raise error(422, "required", f"{path}.valueQuantity.value is required for this code",
                    expression=f"{path}.valueQuantity")
    if quantity.get("system", UCUM_SYSTEM) != UCUM_SYSTEM or not quantity.get("code"):
        raise error(422, "value", f"{path}.valueQuantity needs a UCUM unit: system {UCUM_SYSTEM} and its code",
                    expression=f"{path}.valueQuantity.code")
    if unit is not None and quantity["code"] != unit:
        raise error(422, "value", f"{path}.valueQuantity.code must be {unit!r}, not {quantity['code']!r}",
                    expression=f"{path}.valueQuantity.code")
    return quantity["value"]


def _effective(body: dict, *, timed: bool) -> dt.datetime | dt.date:
    """effectiveDateTime: a date and time with its zone (``timed``), else the date it names."""
    raw = body.get("effectiveDateTime")
    if not isinstance(raw, str):
        raise error(422, "required", "Observation.effectiveDateTime is required: when it was measured",
                    expression="Observation.effectiveDateTime")
    if not timed:
        try:
            return dt.date.fromisoformat(raw[:10])
        except ValueError:
            pass
    else:
        try:
            moment = dt.datetime.fromisoformat(raw) if "T" in raw else None
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment
    what = "a date and time with its time zone" if timed else "a full date"
    raise error(422, "value", f"Observation.effectiveDateTime must be {what}, not {raw!r}",
                expression="Observation.effectiveDateTime")


def _components(body: dict) -> list[tuple[int, list[tuple[str, str]], dict]]:
    return [(i, _codes(c.get("code")), c) for i, c in enumerate(body.get("component") or []) if isinstance(c, dict)]


def _checkin(body: dict) -> tuple[dict, dict]:
    """checkin_record's arguments from a PAVS Observation, and the FHIRPath of each."""
    answers: dict[str, tuple[float, str]] = {}
    sources = [(-1, _codes(body.get("code")), body)] + _components(body)
    for index, codes, holder in sources:
        path = "Observation" if index < 0 else f"Observation.component[{index}]"
        for system, code in codes:
            if system != LOINC_SYSTEM or code not in PAVS_FIELDS:
                continue
            if code in answers:
                raise error(422, "business-rule", f"{path}: PAVS {code} is given twice", expression=f"{path}.code")
            answers[code] = (_quantity(holder, path, EVS_UNITS[code]), f"{path}.valueQuantity.value")
            break
    missing = [code for code in ("89555-7", "68516-4") if code not in answers]
    if missing:
        raise error(
            422, "required",
            f"a PAVS check-in is the patient's whole answer: {' and '.join(missing)} missing. Send days per week "
            "(89555-7, d/wk) and minutes per day (68516-4, min/d), and strength days per week (82291-6) if asked, as "
            "the components of the EVS panel 89574-8 (or of one of them)",
            expression="Observation.component",
        )
    values = {PAVS_FIELDS[code]: value for code, (value, _) in answers.items()}
    paths = {PAVS_FIELDS[code]: path for code, (_, path) in answers.items()}
    per_week = values.pop("minutes_per_week", None)
    if per_week is not None and per_week != values["days_per_week"] * values["minutes_per_day"]:
        raise error(
            422, "business-rule",
            f"minutes per week (82290-8) is days per week × minutes per day, "
            f"{values['days_per_week']:g} × {values['minutes_per_day']:g}, not {per_week:g}",
            expression=paths["minutes_per_week"],
        )
    values["date"] = _effective(body, timed=False)
    paths["date"] = "Observation.effectiveDateTime"
    return values, paths


def _assessment(body: dict, kind: str) -> tuple[dict, dict]:
    """assessment_record's arguments from a measure's (or the blood pressure panel's) Observation."""
    at = _effective(body, timed=True)
    paths = {"assessed_at": "Observation.effectiveDateTime", "measurements": "Observation.code",
             "measurements[0].measured_at": "Observation.effectiveDateTime",
             "measurements[1].measured_at": "Observation.effectiveDateTime"}
    measures = []
    if kind == "bp":
        for index, codes, component in _components(body):
            measure = next((BP_COMPONENTS[c] for s, c in codes if s == LOINC_SYSTEM and c in BP_COMPONENTS), None)
            if measure is None:
                continue
            path = f"Observation.component[{index}]"
            where = f"measurements[{len(measures)}]"
            paths |= {f"{where}.value": f"{path}.valueQuantity.value", f"{where}.unit": f"{path}.valueQuantity.code",
                      f"{where}.code": f"{path}.code"}
            measures.append(MeasureValue(code=measure, value=_quantity(component, path, MEASURE_UNITS[measure])))
        paths["measurements"] = "Observation.component"
    else:
        measure = next(MEASURE_CODES[c] for c in _codes(body.get("code")) if c in MEASURE_CODES)
        paths |= {"measurements[0].value": "Observation.valueQuantity.value",
                  "measurements[0].unit": "Observation.valueQuantity.code"}
        measures.append(MeasureValue(code=measure, value=_quantity(body, "Observation", None),
                                     unit=body["valueQuantity"]["code"]))
    first = measures[0].code if measures else Measure.BP_SYSTOLIC  # a panel without its values: the domain says so
    kind = next(k for k, codes in ASSESSMENT_MEASURES.items() if first in codes)
    return {"kind": kind, "assessed_at": at, "measurements": measures}, paths


def _session(body: dict) -> tuple[dict, dict]:
    """session_record's arguments from an exercise duration Observation and its components."""
    values = {"attendance": Attendance.ATTENDED, "starts_at": _effective(body, timed=True),
              "duration_minutes": _quantity(body, "Observation", "min")}
    paths = {"starts_at": "Observation.effectiveDateTime", "duration_minutes": "Observation.valueQuantity.value",
             "attendance": "Observation.code"}
    for index, codes, component in _components(body):
        known = next((SESSION_COMPONENTS[c] for c in codes if c in SESSION_COMPONENTS), None)
        if known is None:
            continue
        name, unit = known
        path = f"Observation.component[{index}]"
        values[name] = _quantity(component, path, unit)
        paths[name] = f"{path}.valueQuantity.value"
    return values, paths


def observation_record(*, referral: Referral, body: dict, actor: str) -> StoredResource | None:
    """Record a provider's Observation (already validated against the profiles, for ``referral``, a case its
    organization accepted) through the case records' service it belongs to, in one transaction. Returns the
    Observation the hub serves for it (the one of the posted code; for the PAVS panel, minutes per week), or None
    when the code is none of the case records' (the caller stores it as sent). Raises FhirError."""
    kind = _kind(body)
    if not kind:
        return None
    if body.get("status") not in RECORDED_STATUSES:
        raise error(
            422, "business-rule",
            f"a case record is a final result: Observation.status must be 'final', not {body.get('status')!r}",
            expression="Observation.status",
        )
    if kind == "pavs":
        service, (values, paths) = checkin_record, _checkin(body)
    elif kind == "session":
        service, (values, paths) = session_record, _session(body)
    else:
        service, (values, paths) = assessment_record, _assessment(body, kind)
    paths |= {"status": "Observation.basedOn", "expected_version": "Observation.basedOn"}
    try:
        with transaction.atomic():
            # A provider records against the case as it is now (there is no form to be stale): the version is
            # read under the referral's lock, so only a write that slips in between can make it stale.
            referral = Referral.objects.select_for_update().get(pk=referral.pk)
            record = service(referral=referral, **values, actor=actor, expected_version=referral.version)
            return _served_row(referral, record, body)
    except DomainError as exc:
        raise domain_error(exc, paths=paths) from None


def _served_row(referral: Referral, record, body: dict) -> StoredResource:
    posted = set(_codes(body.get("code")))
    contents, _ = record_resources(referral=referral, record=record)
    observations = [c for c in contents if c["resourceType"] == "Observation"]
    chosen = next((c for c in observations if posted & set(_codes(c["code"]))), None)
    if chosen is None:  # the PAVS panel: its headline, minutes per week
        chosen = next(c for c in observations if (LOINC_SYSTEM, "82290-8") in _codes(c["code"]))
    return StoredResource.objects.get(referral_id=referral.pk, resource_type="Observation", fhir_id=chosen["id"])
