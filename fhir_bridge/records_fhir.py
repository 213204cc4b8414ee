"""The case records as FHIR: Observations and AdverseEvents rendered from the domain, stored as served resources.

On each ``referrals.records.record_changed`` (inside the record's transaction) the record's resources are rendered
and stored like the referral Task: version 1 when new, a new version when the content changed, with their search
tokens (store.py), under the referral's clinic, so that the clinic's EHR client (and only it) reads and searches
them. Each names the referral's Patient (``subject``) and ServiceRequest (``basedOn``; for an AdverseEvent the
core ``event-basedOn`` extension), taken from the referral Task.

What is rendered, and how it is coded:

- a PAVS check-in: the four PA EVS Observations (LOINC 89555-7 d/wk, 68516-4 min/d, 82290-8 min/wk, 82291-6
  d/wk), the only source of PAVS Observations;
- an attended session: exercise duration 55411-3 (min), heart rate mean 55425-3 and max 55426-1 (/min), as the
  PA IG's activity measures code them, and RPE (the hub's code, Borg CR10); the case's attendance counts so far
  as BSeR's participation Observations (SNOMED 298057009 attended, 298058004 missed), one each, a new version per
  session recorded;
- an assessment: each measure (MEASURES below), vital signs on R4's vital-signs profiles with category
  vital-signs, blood pressure as the 85354-9 panel with 8480-6 and 8462-4 components, PHQ-2 as the 55757-9
  panel with its 55758-7 score;
- an adverse event: an R4 AdverseEvent (subject, the ServiceRequest, seriousness and severity).

A session corrected to no-show or cancelled keeps its Observations' ids; they become ``entered-in-error``.
"""

import datetime as dt

from django.db.models import Count, Max, Min, Q
from django.dispatch import receiver
from django.utils import timezone

from fhir_bridge.codes import (
    ADVERSE_EVENT_KIND_SYSTEM,
    ADVERSE_EVENT_SERIOUSNESS_SYSTEM,
    ADVERSE_EVENT_SEVERITY_SYSTEM,
    CORE_STRUCTURE_DEFINITION,
    EVENT_BASED_ON_EXTENSION,
    LOINC_SYSTEM,
    MEASURE_SYSTEM,
    OBSERVATION_CATEGORY_SYSTEM,
    PA_CATEGORY_SYSTEM,
    PA_STRUCTURE_DEFINITION,
    SNOMED_SYSTEM,
    UCUM_SYSTEM,
    VITAL_SIGNS_PROFILE,
)
from fhir_bridge.models import StoredResource
from fhir_bridge.store import http_date_iso, resource_update, resources_create
from referrals.models import (
    AdverseEvent,
    Assessment,
    Attendance,
    ExerciseProgram,
    Measure,
    PavsCheckIn,
    Referral,
    Session,
)
from referrals.records import adverse_event_acknowledge, record_changed


def _category(system: str, code: str) -> dict:
    return {"coding": [{"system": system, "code": code}]}


PA_ACTIVITY_CATEGORIES = [_category(OBSERVATION_CATEGORY_SYSTEM, "activity"),
                          _category(PA_CATEGORY_SYSTEM, "PhysicalActivity")]
VITAL_SIGNS = [_category(OBSERVATION_CATEGORY_SYSTEM, "vital-signs")]
EXAM = [_category(OBSERVATION_CATEGORY_SYSTEM, "exam")]
SURVEY = [_category(OBSERVATION_CATEGORY_SYSTEM, "survey")]


def _loinc(code: str, display: str) -> dict:
    return {"system": LOINC_SYSTEM, "code": code, "display": display}


def _hub(code: str, display: str) -> dict:
    return {"system": MEASURE_SYSTEM, "code": code, "display": display}


# The hub's own measure codes (MEASURE_SYSTEM), for what LOINC does not code as the hub records it. LOINC was
# checked first: it has the timed up-and-go (89423-8, seconds), which is sent beside the hub's code.
HUB_MEASURE_CODES = {
    "timed-up-and-go": "Timed up-and-go, seconds",
    "single-leg-stance": "Single-leg stance time, seconds",
    "grip-strength": "Hand grip strength (dynamometer), kg",
    "rpe": "Rating of perceived exertion for a session (Borg CR10, 0-10)",
}


def _vital(name: str) -> list[str]:
    return [VITAL_SIGNS_PROFILE, f"{CORE_STRUCTURE_DEFINITION}/{name}"]


# Measure -> (codings, categories, profiles). Blood pressure and PHQ-2 are rendered as panels (below).
MEASURES: dict[str, tuple[list[dict], list[dict], list[str]]] = {
    Measure.RESTING_HEART_RATE: ([_loinc("8867-4", "Heart rate")], VITAL_SIGNS, _vital("heartrate")),
    Measure.HEIGHT: ([_loinc("8302-2", "Body height")], VITAL_SIGNS, _vital("bodyheight")),
    Measure.WEIGHT: ([_loinc("29463-7", "Body weight")], VITAL_SIGNS, _vital("bodyweight")),
    Measure.BMI: ([_loinc("39156-5", "Body mass index (BMI) [Ratio]")], VITAL_SIGNS, _vital("bmi")),
    Measure.WAIST: ([_loinc("8280-0", "Waist Circumference at umbilicus by Tape measure")], EXAM, []),
    Measure.SIX_MINUTE_WALK: ([_loinc("64098-7", "Six minute walk test")], EXAM, []),
    Measure.CHAIR_STAND_30S: ([{"system": SNOMED_SYSTEM, "code": "450738001"}], EXAM, []),
    Measure.TIMED_UP_AND_GO: (
        [_loinc("89423-8", "Time to rise from chair, walk 10 feet and back, and return to sitting [TUG]"),
         _hub("timed-up-and-go", HUB_MEASURE_CODES["timed-up-and-go"])], EXAM, []),
    Measure.SINGLE_LEG_STANCE: ([_hub("single-leg-stance", HUB_MEASURE_CODES["single-leg-stance"])], EXAM, []),
    Measure.GRIP_STRENGTH: ([_hub("grip-strength", HUB_MEASURE_CODES["grip-strength"])], EXAM, []),
    Measure.PROMIS_PF: ([_loinc("71959-1", "PROMIS-29 Physical function score [T-score]")], SURVEY, []),
}
# What the Observations claim, for the CapabilityStatement's supportedProfile.
VITAL_SIGNS_PROFILES = sorted({p for _, _, profiles in MEASURES.values() for p in profiles} | set(_vital("bp")))
BP_PANEL = _loinc("85354-9", "Blood pressure panel with all children optional")
BP_SYSTOLIC = _loinc("8480-6", "Systolic blood pressure")
BP_DIASTOLIC = _loinc("8462-4", "Diastolic blood pressure")
PHQ2_PANEL = _loinc("55757-9", "Patient Health Questionnaire 2 item (PHQ-2) [Reported]")
PHQ2_SCORE = _loinc("55758-7", "Patient Health Questionnaire 2 item (PHQ-2) total score [Reported]")

# PA EVS (PAVS) profiles by LOINC code, and the check-in field each is read from.
PAVS = (
    ("89555-7", "days_per_week", "d/wk", "pa-observation-evs-days-per-week", "Days per week of moderate to vigorous physical activity"),
    ("68516-4", "minutes_per_day", "min/d", "pa-observation-evs-min-per-day", "Minutes per day of moderate to vigorous physical activity"),
    ("82290-8", "minutes_per_week", "min/wk", "pa-observation-evs-min-per-week", "Frequency of moderate to vigorous aerobic physical activity"),
    ("82291-6", "strength_days_per_week", "d/wk", "pa-observation-strength-days-per-week", "Frequency of muscle-strengthening physical activity"),
)
ACTIVITY_MEASURE_PROFILE = f"{PA_STRUCTURE_DEFINITION}/pa-observation-activity-measure"
ATTENDED = {"system": SNOMED_SYSTEM, "code": "298057009", "display": "Appointments attended"}
MISSED = {"system": SNOMED_SYSTEM, "code": "298058004", "display": "Appointments missed"}


def _quantity(value, unit: str) -> dict:
    value = int(value) if float(value).is_integer() else round(float(value), 2)
    return {"value": value, "unit": unit, "system": UCUM_SYSTEM, "code": unit}


class _Context:
    """What every resource of one referral names: its Patient and ServiceRequest (from the referral Task)."""

    def __init__(self, referral: Referral):
        task = StoredResource.objects.only("content").get(referral_id=referral.pk, resource_type="Task").content
        self.referral = referral
        self.subject = {"reference": task["for"]["reference"]}
        self.request = {"reference": task["focus"]["reference"]}

    def observation(self, *, fhir_id: str, codings: list[dict], text: str, categories: list[dict],
                    profiles: list[str], effective: dt.datetime | dt.date, **value) -> dict:
        observation = {
            "resourceType": "Observation",
            "id": fhir_id,
            "status": "final",
            "category": categories,
            "code": {"coding": codings, "text": text},
            "subject": self.subject,
            "basedOn": [self.request],
            "effectiveDateTime": effective.isoformat() if isinstance(effective, dt.date)
            and not isinstance(effective, dt.datetime) else http_date_iso(effective),
            **value,
        }
        if profiles:
            observation["meta"] = {"profile": profiles}
        return observation


def _session_resources(ctx: _Context, session: Session) -> list[dict]:
    if session.attendance != Attendance.ATTENDED:
        return []
    base = f"session-{session.pk}"
    resources = [ctx.observation(
        fhir_id=f"{base}-duration", codings=[_loinc("55411-3", "Exercise duration")], text="Supervised exercise session",
        categories=PA_ACTIVITY_CATEGORIES, profiles=[ACTIVITY_MEASURE_PROFILE], effective=session.starts_at,
        valueQuantity=_quantity(session.duration_minutes, "min"),
    )]
    for suffix, code, display, value in (
        ("hr-mean", "55425-3", "Heart rate unspecified time mean", session.hr_average),
        ("hr-max", "55426-1", "Heart rate unspecified time maximum", session.hr_peak),
    ):
        if value is not None:
            resources.append(ctx.observation(
                fhir_id=f"{base}-{suffix}", codings=[_loinc(code, display)], text=display,
                categories=PA_ACTIVITY_CATEGORIES, profiles=[ACTIVITY_MEASURE_PROFILE], effective=session.starts_at,
                valueQuantity=_quantity(value, "/min"),
            ))
    if session.rpe is not None:
        resources.append(ctx.observation(
            fhir_id=f"{base}-rpe", codings=[_hub("rpe", HUB_MEASURE_CODES["rpe"])], text="Session RPE (Borg CR10)",
            categories=PA_ACTIVITY_CATEGORIES, profiles=[], effective=session.starts_at,
            valueQuantity=_quantity(session.rpe, "{score}"),
        ))
    return resources


def _attendance_resources(ctx: _Context) -> list[dict]:
    """The case's attendance so far, as BSeR counts it: attended and missed (no-show) appointments, over the
    period from its first to its last recorded session."""
    counts = Session.objects.filter(referral=ctx.referral).aggregate(
        attended=Count("id", filter=Q(attendance=Attendance.ATTENDED)),
        missed=Count("id", filter=Q(attendance=Attendance.NO_SHOW)),
        first=Min("starts_at", filter=~Q(attendance=Attendance.SCHEDULED)),
        last=Max("starts_at", filter=~Q(attendance=Attendance.SCHEDULED)),
    )
    if counts["first"] is None:
        return []
    period = {"start": http_date_iso(counts["first"]), "end": http_date_iso(counts["last"])}
    resources = []
    for suffix, coding, count in (("attended", ATTENDED, counts["attended"]), ("missed", MISSED, counts["missed"])):
        resources.append({
            "resourceType": "Observation",
            "id": f"case-{ctx.referral.pk}-{suffix}",
            "status": "final",
            "category": [_category(OBSERVATION_CATEGORY_SYSTEM, "activity")],
            "code": {"coding": [coding], "text": coding["display"]},
            "subject": ctx.subject,
            "basedOn": [ctx.request],
            "effectivePeriod": period,
            "valueInteger": count,
        })
    return resources


def _assessment_resources(ctx: _Context, assessment: Assessment) -> list[dict]:
    resources = []
    measurements = {m.code: m for m in assessment.measurements.all()}
    systolic, diastolic = measurements.pop(Measure.BP_SYSTOLIC, None), measurements.pop(Measure.BP_DIASTOLIC, None)
    if systolic and diastolic:
        resources.append(ctx.observation(
            fhir_id=f"measurement-{systolic.pk}-bp", codings=[BP_PANEL], text="Blood pressure",
            categories=VITAL_SIGNS, profiles=_vital("bp"), effective=systolic.measured_at,
            component=[
                {"code": {"coding": [BP_SYSTOLIC]}, "valueQuantity": _quantity(systolic.value, "mm[Hg]")},
                {"code": {"coding": [BP_DIASTOLIC]}, "valueQuantity": _quantity(diastolic.value, "mm[Hg]")},
            ],
        ))
    phq2 = measurements.pop(Measure.PHQ2, None)
    if phq2:
        score = ctx.observation(
            fhir_id=f"measurement-{phq2.pk}", codings=[PHQ2_SCORE], text="PHQ-2 total score", categories=SURVEY,
            profiles=[], effective=phq2.measured_at, valueQuantity=_quantity(phq2.value, phq2.unit),
        )
        panel = ctx.observation(
            fhir_id=f"measurement-{phq2.pk}-panel", codings=[PHQ2_PANEL], text="PHQ-2", categories=SURVEY,
            profiles=[], effective=phq2.measured_at, hasMember=[{"reference": f"Observation/{score['id']}"}],
        )
        resources += [panel, score]
    for m in measurements.values():
        codings, categories, profiles = MEASURES[m.code]
        resources.append(ctx.observation(
            fhir_id=f"measurement-{m.pk}", codings=codings, text=Measure(m.code).label, categories=categories,
            profiles=profiles, effective=m.measured_at, valueQuantity=_quantity(m.value, m.unit),
        ))
    return resources


def _checkin_resources(ctx: _Context, checkin: PavsCheckIn) -> list[dict]:
    resources = []
    for code, name, unit, profile, display in PAVS:
        value = getattr(checkin, name)
        if value is None:
            continue
        resources.append(ctx.observation(
            fhir_id=f"checkin-{checkin.pk}-{code}", codings=[_loinc(code, display)], text=display,
            categories=PA_ACTIVITY_CATEGORIES, profiles=[f"{PA_STRUCTURE_DEFINITION}/{profile}"],
            effective=checkin.date, valueQuantity=_quantity(value, unit),
        ))
    return resources


def adverse_event_render(ctx: _Context, event: AdverseEvent) -> dict:
    label = AdverseEvent.Kind(event.kind).label
    rendered = {
        "resourceType": "AdverseEvent",
        "id": f"adverse-event-{event.pk}",
        "extension": [{"url": EVENT_BASED_ON_EXTENSION, "valueReference": ctx.request}],
        "actuality": "actual",
        "event": {
            "coding": [{"system": ADVERSE_EVENT_KIND_SYSTEM, "code": event.kind, "display": label}],
            "text": f"{label}: {event.description}" if event.description else label,
        },
        "subject": ctx.subject,
        "date": http_date_iso(event.occurred_at),
        "recordedDate": http_date_iso(event.recorded_at),
        "seriousness": {"coding": [{
            "system": ADVERSE_EVENT_SERIOUSNESS_SYSTEM,
            "code": "serious" if event.serious else "non-serious",
            "display": "Serious" if event.serious else "Non-serious",
        }]},
        "severity": {"coding": [{
            "system": ADVERSE_EVENT_SEVERITY_SYSTEM, "code": event.severity, "display": event.severity.capitalize()
        }]},
    }
    return rendered


def record_resources(*, referral: Referral, record) -> tuple[list[dict], str]:
    """The resources of one record, and the id prefix they all share (what else carries it is withdrawn)."""
    ctx = _Context(referral)
    if isinstance(record, Session):
        return _session_resources(ctx, record) + _attendance_resources(ctx), f"session-{record.pk}-"
    if isinstance(record, Assessment):
        return _assessment_resources(ctx, record), ""
    if isinstance(record, PavsCheckIn):
        return _checkin_resources(ctx, record), ""
    if isinstance(record, AdverseEvent):
        return [adverse_event_render(ctx, record)], ""
    return [], ""  # an exercise program is the therapist's plan, not an observation


def _same(stored: dict, content: dict) -> bool:
    return {k: v for k, v in stored.items() if k not in ("meta",)} == {
        k: v for k, v in {"id": content["id"], **content}.items() if k not in ("meta",)
    } and (stored.get("meta") or {}).get("profile") == (content.get("meta") or {}).get("profile")


def resources_store(*, referral: Referral, contents: list[dict], withdraw_prefix: str = "") -> None:
    """Store ``contents`` as the current versions of their resources: new ones as version 1, changed ones as a new
    version, unchanged ones left alone. Resources of the referral whose Observation id starts with
    ``withdraw_prefix`` and that are not in ``contents`` become entered-in-error. Call inside the change's
    transaction."""
    now = timezone.now()
    ids = [c["id"] for c in contents]
    existing_rows = StoredResource.objects.select_for_update().filter(referral_id=referral.pk).filter(
        Q(fhir_id__in=ids) | (Q(fhir_id__startswith=withdraw_prefix, resource_type="Observation")
                              if withdraw_prefix else Q(pk__in=[]))
    )
    existing = {(r.resource_type, r.fhir_id): r for r in existing_rows}
    new = []
    for content in contents:
        row = existing.pop((content["resourceType"], content["id"]), None)
        if row is None:
            new.append(content)
        elif not _same(row.content, content):
            resource_update(resource=row, content=content, now=now)
    for row in existing.values():  # withdrawn: the session was corrected to not attended
        if row.content.get("status") != "entered-in-error":
            resource_update(resource=row, content={**row.content, "status": "entered-in-error"}, now=now)
    if new:
        resources_create(contents=new, clinic_id=referral.clinic_id, referral_id=referral.pk, now=now)


@receiver(record_changed, dispatch_uid="fhir_bridge.records_projection")
def record_project(sender, *, referral: Referral, record, **kwargs) -> None:
    """Render and store the record's resources. Runs inside the record's transaction."""
    if isinstance(record, ExerciseProgram):
        return
    contents, prefix = record_resources(referral=referral, record=record)
    if contents or prefix:
        resources_store(referral=referral, contents=contents, withdraw_prefix=prefix)


def adverse_events_acknowledge_by_notes(*, referral: Referral, notes, actor: str) -> list[AdverseEvent]:
    """The physician's acknowledgment, read from the notes the clinic added to the referral Task: a note that
    names ``AdverseEvent/<id>`` acknowledges that event; any note made after an unacknowledged event was recorded
    acknowledges it. Call inside the Task update's transaction."""
    if not notes:
        return []
    acknowledged = []
    for event in AdverseEvent.objects.filter(referral=referral, acknowledged_at__isnull=True):
        reference = f"AdverseEvent/adverse-event-{event.pk}"
        note = next((n for n in notes if reference in (n.text or "")), None) or next(
            (n for n in notes if n.time >= event.recorded_at), None
        )
        if note is not None:
            acknowledged.append(adverse_event_acknowledge(adverse_event=event, actor=actor, at=note.time))
    return acknowledged
