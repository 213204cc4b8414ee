"""A PA referral's clinical facts, mapped from FHIR once, at intake (README "What routing reads from a
referral" says where each fact sits). The domain keeps them in referrals.models.ClinicalFacts; nothing reads them
back out of the stored FHIR. Codes only: free text is never parsed into a fact.

Each function takes resources as plain dicts (already validated) and returns plain values for
referrals.services.ReferralFacts.
"""

from fhir_bridge.codes import (
    CLEARANCE_SYSTEM,
    DELIVERY_SYSTEM,
    GEOLOCATION_EXTENSION,
    LOINC_SYSTEM,
    PRECAUTION_SYSTEM,
)

# PAVS (PA IG, "Measures"): days/wk, min/day, min/wk of moderate to vigorous activity; strength days/wk.
DAYS_PER_WEEK, MINUTES_PER_DAY, MINUTES_PER_WEEK, STRENGTH_DAYS_PER_WEEK = "89555-7", "68516-4", "82290-8", "82291-6"
PAVS_CODES = (DAYS_PER_WEEK, MINUTES_PER_DAY, MINUTES_PER_WEEK, STRENGTH_DAYS_PER_WEEK)
ENGLISH = ("en",)


def _codings(concepts) -> list[dict]:
    return [c for concept in concepts or [] if isinstance(concept, dict) for c in concept.get("coding") or []
            if isinstance(c, dict)]


def home_address(patient: dict) -> dict:
    addresses = [a for a in patient.get("address") or [] if isinstance(a, dict)]
    return next((a for a in addresses if a.get("use") == "home"), addresses[0] if addresses else {})


def _geolocation(address: dict) -> tuple[float | None, float | None]:
    for extension in address.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == GEOLOCATION_EXTENSION:
            parts = {e.get("url"): e.get("valueDecimal") for e in extension.get("extension") or [] if isinstance(e, dict)}
            if isinstance(parts.get("latitude"), (int, float)) and isinstance(parts.get("longitude"), (int, float)):
                return float(parts["latitude"]), float(parts["longitude"])
    return None, None


def _effective(observation: dict) -> str:
    return (
        observation.get("effectiveDateTime")
        or (observation.get("effectivePeriod") or {}).get("end")
        or (observation.get("effectivePeriod") or {}).get("start")
        or observation.get("issued")
        or ""
    )


def pavs_baseline(observations: list[dict]) -> list[dict]:
    """[{"code", "value", "unit", "date"}] for each PAVS measure among ``observations`` (the latest of each code
    when several are sent), in PAVS_CODES order. The unit is the UCUM code sent, else the unit text."""
    latest: dict[str, dict] = {}
    for observation in observations:
        quantity = observation.get("valueQuantity") or {}
        value = quantity.get("value")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        for code in {c.get("code") for c in _codings([observation.get("code")]) if c.get("system") == LOINC_SYSTEM}:
            if code in PAVS_CODES:
                measure = {"code": code, "value": value, "unit": quantity.get("code") or quantity.get("unit") or "",
                           "date": _effective(observation)}
                if code not in latest or measure["date"] >= latest[code]["date"]:
                    latest[code] = measure
    return [latest[code] for code in PAVS_CODES if code in latest]


def goals(goal_resources: list[dict]) -> list[dict]:
    """The physician's goals: [{"text", "measure", "target", "due"}] (referrals.models.ClinicalFacts.goals)."""
    out = []
    for goal in goal_resources:
        targets = [t for t in goal.get("target") or [] if isinstance(t, dict)] or [{}]
        for target in targets:
            coding = next(iter(_codings([target.get("measure")])), None)
            quantity = target.get("detailQuantity") or {}
            out.append({
                "text": (goal.get("description") or {}).get("text", ""),
                "measure": {k: coding[k] for k in ("system", "code", "display") if k in coding} if coding else None,
                "target": {"value": quantity["value"], "unit": quantity.get("code") or quantity.get("unit") or "",
                           "comparator": quantity.get("comparator", "")}
                if isinstance(quantity.get("value"), (int, float)) else None,
                "due": target.get("dueDate", ""),
            })
    return out


def clinical_facts(*, service_request: dict, patient: dict, observations: list[dict], goal_resources: list[dict]) -> dict:
    """The clinical fields of referrals.services.ReferralFacts (condition codes excepted: intake reads those with
    the Conditions), from a referral's ServiceRequest, Patient, supporting Observations and Goals."""
    address = home_address(patient)
    latitude, longitude = _geolocation(address)
    details = _codings(service_request.get("orderDetail"))
    languages, required = [], ""
    for communication in patient.get("communication") or []:
        if not isinstance(communication, dict):
            continue
        code = next((c.get("code") for c in _codings([communication.get("language")]) if c.get("code")), "")
        if code:
            languages.append(code)
            if communication.get("preferred") and code.split("-")[0].lower() not in ENGLISH:
                required = code
    return {
        "clearance": next((c.get("code") or "" for c in details if c.get("system") == CLEARANCE_SYSTEM), ""),
        "precautions": tuple(c["code"] for c in details if c.get("system") == PRECAUTION_SYSTEM and c.get("code")),
        "delivery_modes": tuple(dict.fromkeys(c["code"] for c in details if c.get("system") == DELIVERY_SYSTEM and c.get("code"))),
        "latitude": latitude,
        "longitude": longitude,
        "state": (address.get("state") or "")[:2].upper() if isinstance(address.get("state"), str) else "",
        "required_language": required,
        "preferred_languages": tuple(languages),
        "pavs_baseline": pavs_baseline(observations),
        "goals": goals(goal_resources),
    }
