"""Writes of the case records: what the exercise professional records once a case is theirs (sessions,
assessments, the exercise program, PAVS check-ins, adverse events).

Every write is keyword-only and takes the ``referral``, the values, the ``actor`` ("user:<username>",
"provider-client:<client_id>") and ``expected_version``: the case's version (Referral.version) the caller's form
was built from. The write claims the case with a compare-and-set on that version, so a stale form is refused
(DomainError STALE) and never silently overwrites what someone else recorded. Each write leaves one
ReferralEvent and sends ``record_changed`` inside its transaction (the FHIR bridge renders the record's
Observations or AdverseEvent on it). A record that moves the case (the first attended session, an adverse event
that puts the case on hold) does so through referrals.services.referral_update: one Task version per change.

Values are checked here, whoever sends them (a web form, a provider's FHIR client): DomainError INVALID names the
offending field.
"""

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import F, Max
from django.dispatch import Signal
from django.utils import timezone

from referrals.models import (
    MEASURE_RANGES,
    MEASURE_UNITS,
    AdverseEvent,
    Assessment,
    Attendance,
    BusinessStatus,
    ComponentKind,
    ExerciseProgram,
    Measure,
    Measurement,
    PavsCheckIn,
    ProgramComponent,
    Referral,
    ReferralEvent,
    ReferralStatus,
    Session,
    SessionComponent,
)
from referrals.errors import DomainError, ErrorCode
from referrals.services import referral_update

# Sent inside the transaction of every record written or changed. kwargs: referral, record (the row: Session,
# Assessment, ExerciseProgram, PavsCheckIn or AdverseEvent), event (its ReferralEvent).
record_changed = Signal()

# A case takes records from acceptance until it ends.
RECORDABLE_STATUSES = frozenset({ReferralStatus.ACCEPTED, ReferralStatus.IN_PROGRESS, ReferralStatus.ON_HOLD})

# Which measures each kind of assessment takes.
ASSESSMENT_MEASURES: dict[str, frozenset[str]] = {
    Assessment.Kind.STATIC: frozenset(
        {Measure.RESTING_HEART_RATE, Measure.BP_SYSTOLIC, Measure.BP_DIASTOLIC, Measure.HEIGHT, Measure.WEIGHT,
         Measure.BMI, Measure.WAIST}
    ),
    Assessment.Kind.DYNAMIC: frozenset(
        {Measure.SIX_MINUTE_WALK, Measure.CHAIR_STAND_30S, Measure.TIMED_UP_AND_GO, Measure.SINGLE_LEG_STANCE,
         Measure.GRIP_STRENGTH}
    ),
    Assessment.Kind.PROM: frozenset({Measure.PROMIS_PF, Measure.PHQ2}),
}

# Allowed ranges of a program's intensity, by kind: heart rate in beats/min, Borg CR10, percent of 1RM.
INTENSITY_RANGES = {"hr-range": (30, 250), "rpe": (0, 10), "pct-1rm": (1, 100)}


@dataclass(frozen=True)
class MeasureValue:
    """One measure of an assessment. ``unit`` "" means the measure's own (MEASURE_UNITS); ``measured_at`` None
    means the assessment's time."""

    code: str
    value: float
    unit: str = ""
    measured_at: dt.datetime | None = None


@dataclass(frozen=True)
class ComponentPlan:
    """FITT of one program component: frequency per week, intensity (kind, low, high), time in minutes per
    occasion, type; progressions as [{"date": ISO date, "note": str}]."""

    kind: str
    frequency_per_week: int
    minutes: int
    intensity_kind: str = ""
    intensity_low: float | None = None
    intensity_high: float | None = None
    type: str = ""
    progressions: Sequence[dict] = field(default_factory=tuple)


@dataclass(frozen=True)
class SessionWork:
    """The work done on one component in a session: minutes, sets, reps, load in kg."""

    kind: str
    minutes: int | None = None
    sets: int | None = None
    reps: int | None = None
    load_kg: float | None = None


# --- checks ----------------------------------------------------------------------------------------------------


def _number(value, name: str, low: float, high: float, *, whole: bool = False, optional: bool = False):
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and value != int(value)):
        kind = "a whole number" if whole else "a number"
        raise DomainError(ErrorCode.INVALID, f"{name} must be {kind}, not {value!r}", field=name)
    if not low <= value <= high:
        raise DomainError(ErrorCode.INVALID, f"{name} must be between {low:g} and {high:g}, not {value:g}", field=name)
    return int(value) if whole else float(value)


def _moment(value, name: str, *, earliest: dt.datetime, latest: dt.datetime,
            future: str = "in the future") -> dt.datetime:
    """``value`` if it is an aware datetime within ``earliest``..``latest`` (see RecordWindow). ``future`` says
    what lies past ``latest``."""
    if not isinstance(value, dt.datetime) or timezone.is_naive(value):
        raise DomainError(ErrorCode.INVALID, f"{name} must be a date and time with its time zone", field=name)
    if value < earliest:
        raise DomainError(ErrorCode.INVALID, f"{name} ({value.isoformat()}) is before the referral was received "
                          f"({earliest.date().isoformat()} at the earliest)", field=name)
    if value > latest:
        raise DomainError(ErrorCode.INVALID, f"{name} ({value.isoformat()}) is {future}", field=name)
    return value


def _day(value, name: str, *, earliest: dt.date, latest: dt.date, future: str = "in the future") -> dt.date:
    """``value`` if it is a date within ``earliest``..``latest`` (see RecordWindow)."""
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        raise DomainError(ErrorCode.INVALID, f"{name} must be a date", field=name)
    if value < earliest:
        raise DomainError(ErrorCode.INVALID, f"{name} ({value.isoformat()}) is before the referral was received "
                          f"({earliest.isoformat()} at the earliest)", field=name)
    if value > latest:
        raise DomainError(ErrorCode.INVALID, f"{name} ({value.isoformat()}) is {future}", field=name)
    return value


def _choice(value, name: str, choices) -> str:
    if value not in choices.values:
        raise DomainError(ErrorCode.INVALID, f"{name} must be one of {', '.join(choices.values)}, not {value!r}", field=name)
    return value


# Recording the time of something that happened: a clock a little fast on a phone is not an error.
_CLOCK_SLACK = dt.timedelta(minutes=10)

# How early a record may be dated: the day before the referral came in. A date is the site's calendar day,
# which may be the day before the UTC day of receipt (up to 12 hours behind UTC); and a first contact or an
# intake assessment the evening before the Task arrived is still this case's.
RECORD_MARGIN_BEFORE_RECEIPT = dt.timedelta(days=1)
# How far ahead a session may be booked, or a program (and its progressions) planned: a year.
SCHEDULE_HORIZON = dt.timedelta(days=365)


@dataclass(frozen=True)
class RecordWindow:
    """The dates a case's records may carry, from the referral's receipt (``Referral.created_at``) less
    RECORD_MARGIN_BEFORE_RECEIPT: what happened (a session attended, a measure, a check-in, an adverse event) up
    to now (give or take _CLOCK_SLACK, or tomorrow for a calendar date), what is planned (a booking, a program)
    up to SCHEDULE_HORIZON ahead. A date outside it is a typo (year 0001, 9999) that would tell the physician
    nonsense, and may not even survive a time-zone conversion (Python's datetime ends at 9999-12-31)."""

    earliest: dt.datetime  # aware
    now: dt.datetime

    @classmethod
    def of(cls, referral: Referral, *, now: dt.datetime) -> "RecordWindow":
        return cls(earliest=referral.created_at - RECORD_MARGIN_BEFORE_RECEIPT, now=now)

    def happened(self, value, name: str) -> dt.datetime:
        """A moment that has happened: receipt (less the margin) to now (plus the clock's slack)."""
        return _moment(value, name, earliest=self.earliest, latest=self.now + _CLOCK_SLACK)

    def planned(self, value, name: str) -> dt.datetime:
        """A moment booked: receipt (less the margin) to SCHEDULE_HORIZON ahead."""
        return _moment(value, name, earliest=self.earliest, latest=self.now + SCHEDULE_HORIZON,
                       future=f"more than {SCHEDULE_HORIZON.days} days ahead")

    def happened_on(self, value, name: str) -> dt.date:
        """A calendar day that has come: the UTC day of ``earliest`` to tomorrow (UTC), so that every site's
        today is in."""
        return _day(value, name, earliest=self.earliest.astimezone(dt.UTC).date(),
                    latest=self.now.astimezone(dt.UTC).date() + dt.timedelta(days=1))

    def planned_on(self, value, name: str) -> dt.date:
        """A calendar day planned: the UTC day of ``earliest`` to SCHEDULE_HORIZON ahead."""
        return _day(value, name, earliest=self.earliest.astimezone(dt.UTC).date(),
                    latest=(self.now + SCHEDULE_HORIZON).astimezone(dt.UTC).date(),
                    future=f"more than {SCHEDULE_HORIZON.days} days ahead")


def _case_claim(*, referral: Referral, expected_version: int, now: dt.datetime) -> None:
    """Claim the case for one write: compare-and-set its version from ``expected_version``. Raises
    DomainError NOT_OPEN when the case takes no records, STALE when it moved on."""
    if referral.status not in RECORDABLE_STATUSES:
        raise DomainError(
            ErrorCode.NOT_OPEN,
            f"a referral that is {referral.status!r} takes no case records: only an accepted, in-progress or "
            "on-hold case does",
            field="status",
        )
    if isinstance(expected_version, bool) or not isinstance(expected_version, int):
        raise DomainError(ErrorCode.INVALID, "expected_version (the case's version the form was built from) is required",
                                field="expected_version")
    won = Referral.objects.filter(
        pk=referral.pk, version=expected_version, status__in=sorted(RECORDABLE_STATUSES)
    ).update(version=F("version") + 1, updated_at=now)
    if not won:
        raise DomainError(
            ErrorCode.STALE,
            f"the case changed since version {expected_version} was read (someone else recorded or moved it); "
            "reload it and record again",
            field="expected_version",
        )
    referral.version, referral.updated_at = expected_version + 1, now


def _recorded(*, referral: Referral, record, kind: str, actor: str, detail: dict) -> ReferralEvent:
    event = ReferralEvent.objects.create(referral=referral, kind=kind, actor=actor, detail=detail)
    record_changed.send(sender=type(record), referral=referral, record=record, event=event)
    return event


# --- sessions --------------------------------------------------------------------------------------------------


@transaction.atomic
def session_schedule(*, referral: Referral, starts_at: dt.datetime, actor: str, expected_version: int) -> Session:
    """Book a session, at most SCHEDULE_HORIZON ahead (and not before the referral came in: RecordWindow). The
    case's first booking tells the physician (businessStatus first-session-scheduled)."""
    now = timezone.now()
    starts_at = RecordWindow.of(referral, now=now).planned(starts_at, "starts_at")
    _case_claim(referral=referral, expected_version=expected_version, now=now)
    session = Session.objects.create(
        referral=referral, starts_at=starts_at, attendance=Attendance.SCHEDULED, recorded_by=actor, recorded_at=now
    )
    _recorded(referral=referral, record=session, kind=ReferralEvent.Kind.SESSION_SCHEDULED, actor=actor,
              detail={"session": session.pk, "starts_at": starts_at.isoformat()})
    if referral.status == ReferralStatus.ACCEPTED and referral.business_status == BusinessStatus.ACCEPTED:
        referral_update(
            referral=referral, status=referral.status, business_status=BusinessStatus.FIRST_SESSION_SCHEDULED,
            business_status_text=f"First session scheduled for {starts_at.date().isoformat()}", actor=actor,
        )
    return session


def _session_values(
    *, attendance, duration_minutes, hr_average, hr_peak, rpe, components: Sequence[SessionWork]
) -> dict:
    if attendance != Attendance.ATTENDED:
        if any(v is not None for v in (duration_minutes, hr_average, hr_peak, rpe)) or components:
            raise DomainError(
                ErrorCode.INVALID,
                f"a session that was {attendance} has no duration, heart rate, RPE or work done",
                field="attendance",
            )
        return {"duration_minutes": None, "hr_average": None, "hr_peak": None, "rpe": None}
    values = {
        "duration_minutes": _number(duration_minutes, "duration_minutes", 1, 600, whole=True),
        "hr_average": _number(hr_average, "hr_average", 20, 250, whole=True, optional=True),
        "hr_peak": _number(hr_peak, "hr_peak", 20, 250, whole=True, optional=True),
        "rpe": _number(rpe, "rpe", 0, 10, whole=True, optional=True),
    }
    if values["hr_average"] is not None and values["hr_peak"] is not None and values["hr_peak"] < values["hr_average"]:
        raise DomainError(ErrorCode.INVALID, "hr_peak cannot be below hr_average", field="hr_peak")
    for i, work in enumerate(components):
        if not isinstance(work, SessionWork):
            raise DomainError(ErrorCode.INVALID, f"components[{i}] must be a SessionWork", field="components")
        _choice(work.kind, f"components[{i}].kind", ComponentKind)
        _number(work.minutes, f"components[{i}].minutes", 0, 600, whole=True, optional=True)
        _number(work.sets, f"components[{i}].sets", 0, 100, whole=True, optional=True)
        _number(work.reps, f"components[{i}].reps", 0, 1000, whole=True, optional=True)
        _number(work.load_kg, f"components[{i}].load_kg", 0, 1000, optional=True)
    return values


@transaction.atomic
def session_record(
    *,
    referral: Referral,
    attendance: str,
    starts_at: dt.datetime | None = None,
    session: Session | None = None,
    duration_minutes: int | None = None,
    hr_average: int | None = None,
    hr_peak: int | None = None,
    rpe: int | None = None,
    notes: str = "",
    components: Sequence[SessionWork] = (),
    actor: str,
    expected_version: int,
) -> Session:
    """Record how a session went: attended (duration in minutes required; heart rate average and peak in
    beats/min, RPE on Borg CR10, the work per component), no-show or cancelled. ``session`` is a booked one
    (or one recorded before, to correct it); without it a new session at ``starts_at`` is recorded.

    ``starts_at`` lies within the case's RecordWindow: not before the referral came in, and not in the future
    when attended. The case's first attended session moves an accepted referral to in-progress (businessStatus
    first-session-attended). An on-hold case takes no attended session: resume it first."""
    attendance = _choice(attendance, "attendance", Attendance)
    if attendance == Attendance.SCHEDULED:
        raise DomainError(ErrorCode.INVALID, "use session_schedule to book a session", field="attendance")
    if session is not None and session.referral_id != referral.pk:
        raise DomainError(ErrorCode.NOT_FOUND, f"session {session.pk} is not one of this case's", field="session")
    now = timezone.now()
    if starts_at is None and session is None:
        raise DomainError(ErrorCode.INVALID, "starts_at is required for a session that was not booked", field="starts_at")
    window = RecordWindow.of(referral, now=now)
    # An attended session has happened; a missed one may be a booking called off ahead.
    starts_at = (window.happened if attendance == Attendance.ATTENDED else window.planned)(
        starts_at if starts_at is not None else session.starts_at, "starts_at"
    )
    if attendance == Attendance.ATTENDED and referral.status == ReferralStatus.ON_HOLD:
        raise DomainError(ErrorCode.NOT_OPEN, "the case is on hold: resume it before recording an attended session",
                                field="attendance")
    values = _session_values(attendance=attendance, duration_minutes=duration_minutes, hr_average=hr_average,
                             hr_peak=hr_peak, rpe=rpe, components=components)
    _case_claim(referral=referral, expected_version=expected_version, now=now)
    first_attended = (
        attendance == Attendance.ATTENDED
        and not Session.objects.filter(referral=referral, attendance=Attendance.ATTENDED)
        .exclude(pk=getattr(session, "pk", None)).exists()
    )
    fields = dict(starts_at=starts_at, attendance=attendance, notes=notes, recorded_by=actor, recorded_at=now, **values)
    if session is None:
        session = Session.objects.create(referral=referral, **fields)
    else:
        Session.objects.filter(pk=session.pk).update(**fields)
        for name, value in fields.items():
            setattr(session, name, value)
        SessionComponent.objects.filter(session=session).delete()
    SessionComponent.objects.bulk_create(
        SessionComponent(session=session, kind=w.kind, minutes=w.minutes, sets=w.sets, reps=w.reps, load_kg=w.load_kg)
        for w in components
    )
    _recorded(referral=referral, record=session, kind=ReferralEvent.Kind.SESSION_RECORDED, actor=actor,
              detail={"session": session.pk, "attendance": attendance})
    if first_attended and referral.status == ReferralStatus.ACCEPTED:
        referral_update(
            referral=referral, status=ReferralStatus.IN_PROGRESS,
            business_status=BusinessStatus.FIRST_SESSION_ATTENDED,
            business_status_text=f"First session attended on {starts_at.date().isoformat()}", actor=actor,
        )
    return session


# --- assessments -----------------------------------------------------------------------------------------------


@transaction.atomic
def assessment_record(
    *,
    referral: Referral,
    kind: str,
    assessed_at: dt.datetime,
    measurements: Sequence[MeasureValue],
    notes: str = "",
    actor: str,
    expected_version: int,
) -> Assessment:
    """Record an assessment and its measures. Each measure belongs to the assessment's kind (ASSESSMENT_MEASURES),
    is given once, in its own UCUM unit (MEASURE_UNITS; "" for that unit), within a plausible range
    (MEASURE_RANGES). Its times lie within the case's RecordWindow (received to now)."""
    kind = _choice(kind, "kind", Assessment.Kind)
    now = timezone.now()
    window = RecordWindow.of(referral, now=now)
    assessed_at = window.happened(assessed_at, "assessed_at")
    if not measurements:
        raise DomainError(ErrorCode.INVALID, "an assessment records at least one measure", field="measurements")
    seen, rows = set(), []
    for i, m in enumerate(measurements):
        where = f"measurements[{i}]"
        if not isinstance(m, MeasureValue):
            raise DomainError(ErrorCode.INVALID, f"{where} must be a MeasureValue", field="measurements")
        code = _choice(m.code, f"{where}.code", Measure)
        if code not in ASSESSMENT_MEASURES[kind]:
            raise DomainError(ErrorCode.INVALID, f"{code} is not part of a {kind} assessment", field=f"{where}.code")
        if code in seen:
            raise DomainError(ErrorCode.INVALID, f"{code} is given twice", field=f"{where}.code")
        seen.add(code)
        unit = m.unit or MEASURE_UNITS[code]
        if unit != MEASURE_UNITS[code]:
            raise DomainError(
                ErrorCode.INVALID,
                f"{code} is recorded in {MEASURE_UNITS[code]!r} (UCUM), not {unit!r}", field=f"{where}.unit"
            )
        low, high = MEASURE_RANGES[code]
        value = _number(m.value, f"{where}.value", low, high)
        measured_at = window.happened(m.measured_at or assessed_at, f"{where}.measured_at")
        rows.append(Measurement(referral=referral, code=code, value=value, unit=unit, measured_at=measured_at,
                                recorded_by=actor, recorded_at=now))
    if (Measure.BP_SYSTOLIC in seen) != (Measure.BP_DIASTOLIC in seen):
        raise DomainError(ErrorCode.INVALID, "blood pressure needs both the systolic and the diastolic value",
                                field="measurements")
    _case_claim(referral=referral, expected_version=expected_version, now=now)
    assessment = Assessment.objects.create(
        referral=referral, kind=kind, assessed_at=assessed_at, notes=notes, recorded_by=actor, recorded_at=now
    )
    for row in rows:
        row.assessment = assessment
    Measurement.objects.bulk_create(rows)
    _recorded(referral=referral, record=assessment, kind=ReferralEvent.Kind.ASSESSMENT_RECORDED, actor=actor,
              detail={"assessment": assessment.pk, "kind": kind, "measures": sorted(seen)})
    return assessment


# --- the exercise program --------------------------------------------------------------------------------------


def _component_check(i: int, c: ComponentPlan, window: "RecordWindow") -> None:
    where = f"components[{i}]"
    if not isinstance(c, ComponentPlan):
        raise DomainError(ErrorCode.INVALID, f"{where} must be a ComponentPlan", field="components")
    _choice(c.kind, f"{where}.kind", ComponentKind)
    _number(c.frequency_per_week, f"{where}.frequency_per_week", 1, 14, whole=True)
    _number(c.minutes, f"{where}.minutes", 1, 300, whole=True)
    if c.intensity_kind:
        _choice(c.intensity_kind, f"{where}.intensity_kind", ProgramComponent.Intensity)
        low, high = INTENSITY_RANGES[c.intensity_kind]
        lo = _number(c.intensity_low, f"{where}.intensity_low", low, high)
        hi = _number(c.intensity_high, f"{where}.intensity_high", low, high)
        if lo > hi:
            raise DomainError(ErrorCode.INVALID, f"{where}: intensity_low is above intensity_high", field=f"{where}.intensity_low")
    elif c.intensity_low is not None or c.intensity_high is not None:
        raise DomainError(ErrorCode.INVALID, f"{where}: an intensity needs its kind (hr-range, rpe or pct-1rm)",
                                field=f"{where}.intensity_kind")
    for j, step in enumerate(c.progressions):
        try:
            day = dt.date.fromisoformat(step["date"])
            ok = isinstance(step["note"], str) and step["note"].strip() != ""
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise DomainError(ErrorCode.INVALID, f"{where}.progressions[{j}] must be {{'date': 'YYYY-MM-DD', 'note': text}}",
                                    field=f"{where}.progressions")
        window.planned_on(day, f"{where}.progressions[{j}].date")


@transaction.atomic
def program_set(
    *,
    referral: Referral,
    starts_on: dt.date,
    components: Sequence[ComponentPlan],
    ends_on: dt.date | None = None,
    notes: str = "",
    actor: str,
    expected_version: int,
) -> ExerciseProgram:
    """Write the case's exercise program as a new version and make it the current one (the old versions stay).
    Its dates (and its components' progressions) lie within the case's RecordWindow: from the referral's receipt
    to SCHEDULE_HORIZON ahead."""
    now = timezone.now()
    window = RecordWindow.of(referral, now=now)
    starts_on = window.planned_on(starts_on, "starts_on")
    if ends_on is not None and window.planned_on(ends_on, "ends_on") < starts_on:
        raise DomainError(ErrorCode.INVALID, "ends_on is before starts_on", field="ends_on")
    if not components:
        raise DomainError(ErrorCode.INVALID, "a program has at least one component", field="components")
    for i, c in enumerate(components):
        _component_check(i, c, window)
    _case_claim(referral=referral, expected_version=expected_version, now=now)  # serialises writers of the case
    last = ExerciseProgram.objects.filter(referral=referral).aggregate(v=Max("version"))["v"] or 0
    ExerciseProgram.objects.filter(referral=referral, is_current=True).update(is_current=False)
    program = ExerciseProgram.objects.create(
        referral=referral, version=last + 1, is_current=True, starts_on=starts_on, ends_on=ends_on, notes=notes,
        recorded_by=actor, recorded_at=now,
    )
    ProgramComponent.objects.bulk_create(
        ProgramComponent(
            program=program, kind=c.kind, frequency_per_week=c.frequency_per_week, minutes=c.minutes,
            intensity_kind=c.intensity_kind, intensity_low=c.intensity_low, intensity_high=c.intensity_high,
            type=c.type, progressions=[dict(p) for p in c.progressions],
        )
        for c in components
    )
    _recorded(referral=referral, record=program, kind=ReferralEvent.Kind.PROGRAM_SET, actor=actor,
              detail={"program": program.pk, "version": program.version})
    return program


# --- PAVS check-ins --------------------------------------------------------------------------------------------


@transaction.atomic
def checkin_record(
    *,
    referral: Referral,
    date: dt.date,
    days_per_week: int,
    minutes_per_day: int,
    strength_days_per_week: int | None = None,
    actor: str,
    expected_version: int,
) -> PavsCheckIn:
    """Record the patient's own PAVS report: days per week x minutes per day = minutes per week (computed here),
    and strength days per week. ``date`` lies within the case's RecordWindow (received to tomorrow)."""
    now = timezone.now()
    date = RecordWindow.of(referral, now=now).happened_on(date, "date")
    days = _number(days_per_week, "days_per_week", 0, 7, whole=True)
    minutes = _number(minutes_per_day, "minutes_per_day", 0, 1440, whole=True)
    strength = _number(strength_days_per_week, "strength_days_per_week", 0, 7, whole=True, optional=True)
    _case_claim(referral=referral, expected_version=expected_version, now=now)
    checkin = PavsCheckIn.objects.create(
        referral=referral, date=date, days_per_week=days, minutes_per_day=minutes, minutes_per_week=days * minutes,
        strength_days_per_week=strength, recorded_by=actor, recorded_at=now,
    )
    _recorded(referral=referral, record=checkin, kind=ReferralEvent.Kind.CHECKIN_RECORDED, actor=actor,
              detail={"checkin": checkin.pk, "minutes_per_week": checkin.minutes_per_week})
    return checkin


# --- adverse events --------------------------------------------------------------------------------------------


@transaction.atomic
def adverse_event_record(
    *,
    referral: Referral,
    occurred_at: dt.datetime,
    kind: str,
    severity: str,
    serious: bool = False,
    description: str = "",
    action_taken: str = "",
    put_on_hold: bool = False,
    actor: str,
    expected_version: int,
) -> AdverseEvent:
    """Record an adverse event or red flag. Its ADVERSE_EVENT ReferralEvent is what the follow-up engine alerts
    the physician from. ``put_on_hold`` puts an in-progress case on hold in the same transaction (an accepted case
    cannot be on hold: the PA state machine holds only a started one). ``occurred_at`` lies within the case's
    RecordWindow (received to now)."""
    kind = _choice(kind, "kind", AdverseEvent.Kind)
    severity = _choice(severity, "severity", AdverseEvent.Severity)
    if not isinstance(serious, bool) or not isinstance(put_on_hold, bool):
        raise DomainError(ErrorCode.INVALID, "serious and put_on_hold are yes or no", field="serious")
    now = timezone.now()
    occurred_at = RecordWindow.of(referral, now=now).happened(occurred_at, "occurred_at")
    hold = put_on_hold and referral.status == ReferralStatus.IN_PROGRESS
    if put_on_hold and referral.status == ReferralStatus.ACCEPTED:
        raise DomainError(ErrorCode.TRANSITION, "an accepted case that has not started cannot be put on hold", field="put_on_hold")
    _case_claim(referral=referral, expected_version=expected_version, now=now)
    event = AdverseEvent.objects.create(
        referral=referral, occurred_at=occurred_at, kind=kind, severity=severity, serious=serious,
        description=description, action_taken=action_taken, put_on_hold=put_on_hold, recorded_by=actor,
        recorded_at=now,
    )
    _recorded(referral=referral, record=event, kind=ReferralEvent.Kind.ADVERSE_EVENT, actor=actor,
              detail={"adverse_event": event.pk, "kind": kind, "severity": severity, "serious": serious,
                      "put_on_hold": put_on_hold})
    if hold:
        referral_update(
            referral=referral, status=ReferralStatus.ON_HOLD,
            reason=f"Adverse event: {AdverseEvent.Kind(kind).label.lower()} ({severity})", actor=actor,
        )
    return event


@transaction.atomic
def adverse_event_acknowledge(
    *, adverse_event: AdverseEvent, actor: str, at: dt.datetime | None = None
) -> AdverseEvent:
    """Record the physician's acknowledgment (a note on the referral Task). Acknowledging twice changes nothing
    and leaves no second event (compare-and-set on acknowledged_at). No expected_version: the physician answers an
    alert, not a form of the case, and the acknowledgment does not make the therapist's forms stale."""
    at = at or timezone.now()
    won = AdverseEvent.objects.filter(pk=adverse_event.pk, acknowledged_at__isnull=True).update(
        acknowledged_at=at, acknowledged_by=actor
    )
    if not won:
        adverse_event.refresh_from_db()
        return adverse_event
    adverse_event.acknowledged_at, adverse_event.acknowledged_by = at, actor
    referral = adverse_event.referral
    _recorded(referral=referral, record=adverse_event, kind=ReferralEvent.Kind.ADVERSE_EVENT_ACKNOWLEDGED,
              actor=actor, detail={"adverse_event": adverse_event.pk})
    return adverse_event
