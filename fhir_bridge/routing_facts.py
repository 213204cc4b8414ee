"""What routing needs to know about a patient, read from the referral's FHIR resources (referrals/README.md says
where each fact sits). Codes only: free text is never parsed into a fact."""

from referrals.risk import Screening
from referrals.routing import PatientFacts

HUB_CODES = "http://exercise-referral-hub.org/fhir/CodeSystem"
CLEARANCE_SYSTEM = f"{HUB_CODES}/exercise-clearance"
PRECAUTION_SYSTEM = f"{HUB_CODES}/exercise-precaution"
DELIVERY_SYSTEM = f"{HUB_CODES}/exercise-delivery"  # in-person | virtual | group | virtual-ok
GEOLOCATION = "http://hl7.org/fhir/StructureDefinition/geolocation"
LOINC = "http://loinc.org"
MINUTES_PER_WEEK, DAYS_PER_WEEK, MINUTES_PER_DAY = "82290-8", "89555-7", "68516-4"
ENGLISH = ("en",)


def _codings(concepts) -> list[dict]:
    return [c for concept in concepts or [] if isinstance(concept, dict) for c in concept.get("coding") or []
            if isinstance(c, dict)]


def _home_address(patient: dict) -> dict:
    addresses = [a for a in patient.get("address") or [] if isinstance(a, dict)]
    return next((a for a in addresses if a.get("use") == "home"), addresses[0] if addresses else {})


def _geolocation(address: dict) -> tuple[float | None, float | None]:
    for extension in address.get("extension") or []:
        if extension.get("url") == GEOLOCATION:
            parts = {e.get("url"): e.get("valueDecimal") for e in extension.get("extension") or []}
            if isinstance(parts.get("latitude"), (int, float)) and isinstance(parts.get("longitude"), (int, float)):
                return float(parts["latitude"]), float(parts["longitude"])
    return None, None


def _observation_value(observations: list[dict], code: str) -> float | None:
    for observation in observations:
        codes = {c.get("code") for c in _codings([observation.get("code")]) if c.get("system") == LOINC}
        value = (observation.get("valueQuantity") or {}).get("value")
        if code in codes and isinstance(value, (int, float)):
            return float(value)
    return None


def _currently_active(observations: list[dict]) -> bool | None:
    """ACSM's "currently active": 30 min of moderate activity on 3 or more days a week (PAVS)."""
    days = _observation_value(observations, DAYS_PER_WEEK)
    minutes_week = _observation_value(observations, MINUTES_PER_WEEK)
    minutes_day = _observation_value(observations, MINUTES_PER_DAY)
    if minutes_week is None and days is not None and minutes_day is not None:
        minutes_week = days * minutes_day
    if days is None and minutes_week is None:
        return None
    if days is not None and days < 3:
        return False
    return minutes_week is not None and minutes_week >= 90


def patient_facts(*, service_request: dict, patient: dict, observations: list[dict]) -> PatientFacts:
    address = _home_address(patient)
    latitude, longitude = _geolocation(address)
    details = _codings(service_request.get("orderDetail"))
    clearance = next((c.get("code") for c in details if c.get("system") == CLEARANCE_SYSTEM), None)
    precautions = tuple(c["code"] for c in details if c.get("system") == PRECAUTION_SYSTEM and c.get("code"))
    delivery = {c.get("code") for c in details if c.get("system") == DELIVERY_SYSTEM}
    languages = []
    required = ""
    for communication in patient.get("communication") or []:
        code = next((c.get("code") for c in _codings([communication.get("language")]) if c.get("code")), "")
        if code:
            languages.append(code)
            if communication.get("preferred") and code.split("-")[0].lower() not in ENGLISH:
                required = code
    preferred = next((d for d in ("in-person", "virtual", "group") if d in delivery), "")
    return PatientFacts(
        latitude=latitude,
        longitude=longitude,
        postal_code=(address.get("postalCode") or "")[:10],
        state=(address.get("state") or "")[:2].upper(),
        clearance=clearance,
        precautions=precautions,
        screening=Screening(currently_active=_currently_active(observations)),
        required_language=required,
        preferred_languages=tuple(languages),
        virtual_allowed=bool(delivery & {"virtual", "virtual-ok"}),
        preferred_delivery=preferred,
    )
