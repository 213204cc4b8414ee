"""Reports to the referring physician (the PA IG's Intervention Report): drafted by the hub from the case's
record, reviewed and signed by the therapist, or sent unsigned when the wait runs out.

The parts:
- ``ReportDraft``: the report as a plain value, the four questions the PA IG asks of a report (were the
  referral's issues addressed, what remains, the participation, the plan), the measures table, the weekly PAVS
  series for the chart, and the adverse events. ``draft_build`` makes one from plain inputs (``Recorded``);
  ``report_facts`` (a selector) reads them from the record (``report_recorded``: the case records of
  referrals/models.py, values only, a fixed number of queries).
- The schedule: ``report_next_due`` says which report a case owes next and when (progress every few weeks from
  the first session, the discharge at the program's end); notifications' follow-up kinds run it.
- ``Report`` (referrals/models.py): one row per report, draft → signed | sent-unsigned | superseded.
- The services ``report_draft``, ``report_edit``, ``report_sign`` and ``report_send_unsigned``. Sending writes
  the PDF (referrals/report_pdf.py), sends ``report_sent`` (the FHIR bridge stores the DiagnosticReport and its
  Binary on it) and moves the referral through ``referral_update``: businessStatus progress-report-sent or
  discharge-report-sent, a note, and for a discharge the referral's final status. One Task version.

Units: minutes per week (PAVS 82290-8 and supervised minutes), days per week, metres, seconds, stands in 30 s,
mm[Hg], kg/m2. Dates are the site's calendar dates; a period is inclusive at both ends.
"""

import dataclasses
import datetime as dt
import math
import zoneinfo
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from referrals.errors import DomainError, ErrorCode
from referrals.models import (
    PAVS_MINUTES_PER_WEEK,
    HUB_ORGANIZATION_REFERENCE,
    TERMINAL_STATUSES,
    AdverseEvent,
    Attendance,
    BusinessStatus,
    ClinicalFacts,
    Measurement,
    Offer,
    OfferStatus,
    Referral,
    ReferralNote,
    ReferralStatus,
    Report,
    ReportKind,
    ReportStatus,
    SENT_REPORT_STATUSES,
    PavsCheckIn,
    ProgramComponent,
    Session,
)
from referrals.selectors import READABLE, case_time_zone
from referrals.services import referral_update

# Sent inside the transaction that sends a report (preliminary, or final when signed), before the referral moves:
# the FHIR bridge stores the DiagnosticReport and its PDF on it, so that the Task's new version can point at them.
report_sent = Signal()  # kwargs: report
# Sent inside the transaction that drafts a report (report_draft, a new row only): the notifications edge nudges the
# therapist to review and sign it and schedules its preliminary send after the wait.
report_drafted = Signal()  # kwargs: report

# PAVS (LOINC), as ClinicalFacts.pavs_baseline and the goals code them.
PAVS_STRENGTH_DAYS = "82291-6"  # PAVS strength days per week (LOINC)


# --- The report as a value ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasureLine:
    """One row of the measures table. ``baseline`` is the first value known (the referral's, else the first
    recorded), ``latest`` the last one recorded up to the period's end, ``change`` their difference; None where
    there is nothing to say. ``better`` says which way is an improvement ("higher", "lower" or "")."""

    code: str  # "pavs-minutes", "strength-days", or a records Measure code ("six-minute-walk", ...)
    label: str
    unit: str  # as printed: "min/wk", "d/wk", "m", "s", "stands", "mmHg", "kg/m2"
    baseline: float | None = None
    latest: float | None = None
    change: float | None = None
    goal: float | None = None
    better: str = ""
    latest_on: str = ""  # ISO date of the latest value
    # Blood pressure is two numbers: "128/82" (the systolic is in baseline/latest for the change).
    baseline_text: str = ""
    latest_text: str = ""


@dataclass(frozen=True)
class GoalLine:
    """One of the physician's goals, with its measure: where it started, where it is, and whether it is met."""

    text: str
    measure: str  # the measure's label, "" when the goal names none the hub records
    target: str  # "150 min/wk or more", "" without a target
    baseline: float | None
    latest: float | None
    change: float | None
    unit: str
    status: str  # "met" | "progressing" | "not-met" | "not-measured"


@dataclass(frozen=True)
class Participation:
    """Sessions in the period (for a discharge: the whole program) and the dose delivered against the dose
    prescribed (the current program's FITT: the sum of frequency x minutes of its components)."""

    attended: int = 0
    missed: int = 0  # no-shows
    cancelled: int = 0
    supervised_minutes: int = 0
    weeks: int = 0
    prescribed_minutes_per_week: int | None = None
    adherence: float | None = None  # supervised minutes / (prescribed per week x weeks); may exceed 1

    @property
    def scheduled(self) -> int:
        return self.attended + self.missed + self.cancelled


@dataclass(frozen=True)
class WeekPoint:
    """One week of the chart: its first day and the PAVS minutes per week the patient reported in it (the last
    check-in of the week), None for a week without one."""

    starts_on: str  # ISO date
    minutes_per_week: float | None


@dataclass(frozen=True)
class AdverseLine:
    occurred_on: str  # ISO date
    kind: str  # "chest-pain", "syncope", "fall", ...
    severity: str  # "mild" | "moderate" | "severe"
    serious: bool
    action: str
    put_on_hold: bool


@dataclass(frozen=True)
class ReportDraft:
    """What a report says, drafted from the record. JSON round-trips through ``as_json``/``from_json`` (it is
    stored on Report.draft, so the PDF and the FHIR always show the figures that were drafted)."""

    kind: str  # ReportKind
    period_start: str  # ISO dates, inclusive
    period_end: str
    referral_id: int
    patient: str
    patient_birth_date: str
    clinic: str
    requester: str  # the referring physician
    professional: str  # who delivers the program ("" before anyone took it)
    status: str  # the referral's status when drafted
    status_reason: str
    goals: tuple[GoalLine, ...] = ()
    barriers: tuple[str, ...] = ()  # facts: missed sessions, adverse events, a hold's reason
    participation: Participation = field(default_factory=Participation)
    measures: tuple[MeasureLine, ...] = ()
    pavs_weeks: tuple[WeekPoint, ...] = ()
    adverse_events: tuple[AdverseLine, ...] = ()
    program: str = ""  # the current program in brief ("aerobic 3x30 min/wk; resistance 2x20 min/wk")
    # The four answers in brief, as the hub words them; the therapist edits copies of them on the Report.
    answer_goals: str = ""
    answer_barriers: str = ""
    answer_participation: str = ""
    answer_plan: str = ""

    def as_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ReportDraft":
        data = dict(data)
        data["goals"] = tuple(GoalLine(**g) for g in data.get("goals", ()))
        data["barriers"] = tuple(data.get("barriers", ()))
        data["participation"] = Participation(**data.get("participation", {}))
        data["measures"] = tuple(MeasureLine(**m) for m in data.get("measures", ()))
        data["pavs_weeks"] = tuple(WeekPoint(**w) for w in data.get("pavs_weeks", ()))
        data["adverse_events"] = tuple(AdverseLine(**a) for a in data.get("adverse_events", ()))
        return cls(**data)

    def measure(self, code: str) -> MeasureLine | None:
        return next((m for m in self.measures if m.code == code), None)


# --- What the record holds, as plain values --------------------------------------------------------------------


@dataclass(frozen=True)
class CheckIn:
    on: dt.date
    minutes_per_week: float
    strength_days: float | None = None


@dataclass(frozen=True)
class Measured:
    code: str  # a records Measure code: "six-minute-walk", "bp-systolic", ...
    value: float
    on: dt.date


@dataclass(frozen=True)
class SessionFact:
    on: dt.date
    attendance: str  # "attended" | "no-show" | "cancelled" | "scheduled"
    minutes: int = 0


@dataclass(frozen=True)
class Recorded:
    """The case's record up to the period's end, as ``draft_build`` reads it (oldest first)."""

    checkins: tuple[CheckIn, ...] = ()
    measured: tuple[Measured, ...] = ()
    sessions: tuple[SessionFact, ...] = ()
    adverse_events: tuple[AdverseLine, ...] = ()
    prescribed_minutes_per_week: int | None = None
    program: str = ""

    @property
    def first_attended(self) -> dt.date | None:
        return next((s.on for s in self.sessions if s.attendance == "attended"), None)


# The assessments the table shows, in its order: (code, label, printed unit, which way is better).
ASSESSMENT_ROWS = (
    ("six-minute-walk", "6-minute walk", "m", "higher"),
    ("chair-stand-30s", "30-s chair stand", "stands", "higher"),
    ("timed-up-and-go", "Timed up-and-go", "s", "lower"),
    ("bp", "Blood pressure", "mmHg", "lower"),
    ("bmi", "BMI", "kg/m2", "lower"),
)
# The records' measures a report reads (the assessments table and blood pressure).
REPORTED_MEASURES = ("six-minute-walk", "chair-stand-30s", "timed-up-and-go", "bp-systolic", "bp-diastolic", "bmi")
# A goal's measure (its LOINC code, or its target's unit) -> the table row it is judged by.
GOAL_MEASURES = {
    PAVS_MINUTES_PER_WEEK: "pavs-minutes",
    "min/wk": "pavs-minutes",
    PAVS_STRENGTH_DAYS: "strength-days",
    "64098-7": "six-minute-walk",
    "89423-8": "timed-up-and-go",
    "39156-5": "bmi",
    "85354-9": "bp",
    "8480-6": "bp",
}


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _change(baseline: float | None, latest: float | None) -> float | None:
    return None if baseline is None or latest is None else round(latest - baseline, 1)


def fmt(value: float | None, unit: str = "") -> str:
    """A figure as the report prints it: no trailing .0, the unit after it; an en dash for none."""
    if value is None:
        return "\u2013"
    text = f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    return f"{text} {unit}".strip()


def fmt_change(value: float | None, unit: str = "") -> str:
    if value is None:
        return "\u2013"
    return ("+" if value > 0 else "") + fmt(value, unit)


def _measure_lines(facts: ClinicalFacts | None, recorded: Recorded) -> list[MeasureLine]:
    baseline_pavs = facts.pavs_minutes_per_week() if facts else None
    baseline_strength = facts.pavs_value(PAVS_STRENGTH_DAYS) if facts else None
    checkins = recorded.checkins
    latest = checkins[-1] if checkins else None
    strength = [c for c in checkins if c.strength_days is not None]
    lines = [
        MeasureLine(
            "pavs-minutes", "Activity (PAVS)", "min/wk", _number(baseline_pavs),
            latest.minutes_per_week if latest else None,
            _change(_number(baseline_pavs), latest.minutes_per_week if latest else None),
            facts.goal_minutes_per_week() if facts else None, "higher", latest.on.isoformat() if latest else "",
        ),
        MeasureLine(
            "strength-days", "Strength days", "d/wk", _number(baseline_strength),
            strength[-1].strength_days if strength else None,
            _change(_number(baseline_strength), strength[-1].strength_days if strength else None),
            None, "higher", strength[-1].on.isoformat() if strength else "",
        ),
    ]
    by_code: dict[str, list[Measured]] = {}
    for m in recorded.measured:
        by_code.setdefault(m.code, []).append(m)
    for code, label, unit, better in ASSESSMENT_ROWS:
        if code == "bp":
            systolic, diastolic = by_code.get("bp-systolic", []), by_code.get("bp-diastolic", [])
            if not systolic:
                lines.append(MeasureLine(code, label, unit, better=better))
                continue
            first_d = next((d for d in diastolic if d.on == systolic[0].on), None)
            last_d = next((d for d in reversed(diastolic) if d.on == systolic[-1].on), None)
            lines.append(MeasureLine(
                code, label, unit, systolic[0].value, systolic[-1].value,
                _change(systolic[0].value, systolic[-1].value), None, better, systolic[-1].on.isoformat(),
                baseline_text=f"{fmt(systolic[0].value)}/{fmt(first_d.value) if first_d else '?'}",
                latest_text=f"{fmt(systolic[-1].value)}/{fmt(last_d.value) if last_d else '?'}",
            ))
            continue
        values = by_code.get(code, [])
        first, last = (values[0], values[-1]) if values else (None, None)
        lines.append(MeasureLine(
            code, label, unit, first.value if first else None, last.value if last else None,
            _change(first.value if first else None, last.value if last else None), None, better,
            last.on.isoformat() if last else "",
        ))
    return lines


def _goal_lines(goals: list[dict], lines: list[MeasureLine]) -> list[GoalLine]:
    out = []
    by_code = {line.code: line for line in lines}
    for g in goals:
        target, measure = g.get("target") or {}, g.get("measure") or {}
        row = by_code.get(GOAL_MEASURES.get(measure.get("code", ""), "")) or by_code.get(
            GOAL_MEASURES.get(target.get("unit", ""), "")
        )
        value = _number(target.get("value"))
        comparator = target.get("comparator") or (">=" if not row or row.better != "lower" else "<=")
        unit = row.unit if row else (target.get("unit") or "")
        wording = {">=": "or more", ">": "or more", "<=": "or less", "<": "or less"}.get(comparator, "")
        target_text = f"{fmt(value, unit)} {wording}".strip() if value is not None else ""
        if row is None or row.latest is None:
            status = "not-measured"
        elif value is not None and (row.latest >= value if comparator in (">=", ">") else row.latest <= value):
            status = "met"
        elif row.change is not None and row.change != 0 and (row.change > 0) == (row.better != "lower"):
            status = "progressing"
        else:
            status = "not-met"
        text = g.get("text") or (measure.get("display") or "Goal")
        out.append(GoalLine(text, row.label if row else "", target_text,
                            row.baseline if row else None, row.latest if row else None,
                            row.change if row else None, unit, status))
    return out


def _weeks(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=7 * i) for i in range(max(1, math.ceil(((end - start).days + 1) / 7)))]


def _pavs_series(recorded: Recorded, start: dt.date, end: dt.date) -> list[WeekPoint]:
    points = []
    for week in _weeks(start, end):
        inside = [c for c in recorded.checkins if week <= c.on < week + dt.timedelta(days=7) and c.on <= end]
        points.append(WeekPoint(week.isoformat(), inside[-1].minutes_per_week if inside else None))
    return points


def _participation(recorded: Recorded, start: dt.date, end: dt.date, prescribed: int | None) -> Participation:
    sessions = [s for s in recorded.sessions if start <= s.on <= end]
    attended = [s for s in sessions if s.attendance == "attended"]
    minutes = sum(s.minutes or 0 for s in attended)
    weeks = len(_weeks(start, end))
    return Participation(
        attended=len(attended),
        missed=sum(1 for s in sessions if s.attendance == "no-show"),
        cancelled=sum(1 for s in sessions if s.attendance == "cancelled"),
        supervised_minutes=minutes,
        weeks=weeks,
        prescribed_minutes_per_week=prescribed,
        adherence=round(minutes / (prescribed * weeks), 3) if prescribed else None,
    )


_GOAL_STATUS_WORDS = {
    "met": "met", "progressing": "improving", "not-met": "not yet met", "not-measured": "not measured yet",
}


def _answers(kind: str, goals: list[GoalLine], barriers: list[str], p: Participation, lines: list[MeasureLine],
             status_reason: str) -> tuple[str, str, str, str]:
    if goals:
        answer_goals = " ".join(
            f"{g.text}: {_GOAL_STATUS_WORDS[g.status]}"
            + (f" ({fmt(g.baseline, g.unit)} to {fmt(g.latest, g.unit)})" if g.latest is not None else "")
            + "." for g in goals
        )
    else:
        answer_goals = "The referral states no measurable goal; the measures below show the change."
    answer_barriers = " ".join(barriers) if barriers else "None recorded."
    if p.scheduled == 0:
        answer_participation = "No session was recorded in this period."
    else:
        answer_participation = f"Attended {p.attended} of {p.scheduled} scheduled sessions"
        answer_participation += f" ({p.missed} missed)." if p.missed else "."
        if p.adherence is not None:
            answer_participation += (
                f" {round(p.adherence * 100)}% of the prescribed {p.prescribed_minutes_per_week} supervised "
                f"min/wk over {p.weeks} weeks."
            )
    pavs = next(line for line in lines if line.code == "pavs-minutes")
    if kind == ReportKind.PROGRESS:
        answer_plan = ("Continue the program and progress it as tolerated. Physician: no action needed now; "
                       "please reinforce the activity goal at the next visit.")
    elif kind == ReportKind.DISCHARGE:
        keep = f" at {fmt(pavs.latest, 'min/wk')}" if pavs.latest is not None else ""
        answer_plan = (f"Program ended{f' ({status_reason})' if status_reason else ''}. The patient continues "
                       f"independently{keep}. Physician: review at the next visit and re-refer if needed.")
    elif kind == ReportKind.DID_NOT_START:
        answer_plan = ("The patient attended no session. Physician: please discuss the referral with the "
                       "patient and re-refer if still appropriate.")
    else:
        answer_plan = ("Nothing was recorded in this period; the hub has asked the therapist and told the "
                       "network's coordinators. Physician: no action needed now.")
    return answer_goals, answer_barriers, answer_participation, answer_plan


def draft_build(*, referral: Referral, facts: ClinicalFacts | None, recorded: Recorded, kind: str,
                period_start: dt.date, period_end: dt.date, professional: str = "") -> ReportDraft:
    """The report for ``period_start``..``period_end`` (inclusive) from plain inputs. A progress report with
    nothing recorded in its period becomes "no update"; a discharge without any attended session becomes
    "did not start". Participation counts the period for a progress report and the whole program (from
    the first recorded session) for a discharge; the PAVS chart always runs from the program's start."""
    recorded_in_period = any(period_start <= c.on <= period_end for c in recorded.checkins) or any(
        period_start <= s.on <= period_end and s.attendance != "scheduled" for s in recorded.sessions
    ) or any(period_start <= m.on <= period_end for m in recorded.measured)
    if kind == ReportKind.PROGRESS and not recorded_in_period:
        kind = ReportKind.NO_UPDATE
    if kind == ReportKind.DISCHARGE and recorded.first_attended is None:
        kind = ReportKind.DID_NOT_START
    goals_json = list(facts.goals) if facts else []
    lines = _measure_lines(facts, recorded)
    goals = _goal_lines(goals_json, lines)
    program_start = min([period_start] + [s.on for s in recorded.sessions])
    start = period_start if kind in (ReportKind.PROGRESS, ReportKind.NO_UPDATE) else program_start
    participation = _participation(recorded, start, period_end, recorded.prescribed_minutes_per_week)
    adverse = tuple(a for a in recorded.adverse_events if a.occurred_on <= period_end.isoformat()
                    and (kind not in (ReportKind.PROGRESS, ReportKind.NO_UPDATE)
                         or a.occurred_on >= period_start.isoformat()))
    barriers = []
    if participation.missed:
        barriers.append(f"{participation.missed} session{'s' if participation.missed != 1 else ''} missed.")
    for a in adverse:
        barriers.append(f"Adverse event on {a.occurred_on}: {a.kind} ({a.severity}"
                        f"{', serious' if a.serious else ''}){'; program put on hold' if a.put_on_hold else ''}.")
    if referral.status == ReferralStatus.ON_HOLD and referral.status_reason:
        barriers.append(f"On hold: {referral.status_reason}.")
    if kind == ReportKind.DID_NOT_START:
        barriers.append("No session attended.")
    answers = _answers(kind, goals, barriers, participation, lines, referral.status_reason)
    return ReportDraft(
        kind=str(kind),
        period_start=period_start.isoformat(),
        period_end=period_end.isoformat(),
        referral_id=referral.pk,
        patient=referral.patient_name,
        patient_birth_date=referral.patient_birth_date,
        clinic=referral.clinic.name,
        requester=referral.requester_display,
        professional=professional,
        status=referral.status,
        status_reason=referral.status_reason,
        goals=tuple(goals),
        barriers=tuple(barriers),
        participation=participation,
        measures=tuple(lines),
        pavs_weeks=tuple(_pavs_series(recorded, program_start, period_end)),
        adverse_events=adverse,
        program=recorded.program,
        answer_goals=answers[0],
        answer_barriers=answers[1],
        answer_participation=answers[2],
        answer_plan=answers[3],
    )


# --- Selectors -------------------------------------------------------------------------------------------------


def _program_text(components: list[tuple[str, int, int, str]]) -> str:
    """("aerobic", 3, 40, "treadmill walk") ... -> "aerobic 3 x 40 min/wk (treadmill walk); ..." """
    return "; ".join(f"{kind} {frequency} x {minutes} min/wk" + (f" ({kind_type})" if kind_type else "")
                     for kind, frequency, minutes, kind_type in components)


def report_recorded(*, referral: Referral, until: dt.date, tz: zoneinfo.ZoneInfo | None = None) -> Recorded:
    """What the case's record holds up to ``until`` (inclusive, a calendar date in ``tz``, by default the site's:
    selectors.case_time_zone), as plain values, oldest first: the sessions (attended minutes), the PAVS
    check-ins, the measures of the assessments, the adverse events, and the program in force on ``until`` (the
    latest version started by then, else the current one) with its prescribed supervised minutes per week
    (the sum of frequency x minutes of its components).

    Six queries (five with ``tz``), whatever the size of the record: one per kind of record, values only. A
    record timed before selectors.READABLE is left out."""
    tz = tz or case_time_zone(referral)
    before = dt.datetime.combine(until + dt.timedelta(days=1), dt.time.min, tzinfo=tz)  # exclusive
    sessions = tuple(
        SessionFact(starts_at.astimezone(tz).date(), attendance, minutes or 0)
        for starts_at, attendance, minutes in Session.objects.filter(
            referral=referral, starts_at__gte=READABLE[0], starts_at__lt=before
        )
        .order_by("starts_at", "id").values_list("starts_at", "attendance", "duration_minutes")
    )
    checkins = tuple(
        CheckIn(on, minutes, strength)
        for on, minutes, strength in PavsCheckIn.objects.filter(referral=referral, date__lte=until)
        .order_by("date", "id").values_list("date", "minutes_per_week", "strength_days_per_week")
    )
    measured = tuple(
        Measured(code, value, measured_at.astimezone(tz).date())
        for code, value, measured_at in Measurement.objects.filter(
            referral=referral, measured_at__gte=READABLE[0], measured_at__lt=before, code__in=REPORTED_MEASURES
        ).order_by("measured_at", "id").values_list("code", "value", "measured_at")
    )
    adverse = tuple(
        AdverseLine(occurred_at.astimezone(tz).date().isoformat(), kind, severity, serious, action, hold)
        for occurred_at, kind, severity, serious, action, hold in AdverseEvent.objects.filter(
            referral=referral, occurred_at__gte=READABLE[0], occurred_at__lt=before
        ).order_by("occurred_at", "id").values_list("occurred_at", "kind", "severity", "serious", "action_taken",
                                                    "put_on_hold")
    )
    versions: dict[int, list] = {}
    in_force = current = None
    for version, starts_on, is_current, *component in ProgramComponent.objects.filter(
        program__referral=referral
    ).order_by("program__version", "id").values_list(
        "program__version", "program__starts_on", "program__is_current", "kind", "frequency_per_week", "minutes",
        "type",
    ):
        versions.setdefault(version, []).append(tuple(component))
        if starts_on <= until:
            in_force = version
        if is_current:
            current = version
    components = versions.get(in_force if in_force is not None else current, [])
    return Recorded(
        checkins=checkins, measured=measured, sessions=sessions, adverse_events=adverse,
        prescribed_minutes_per_week=sum(f * m for _, f, m, _ in components) if components else None,
        program=_program_text(components),
    )


def report_professional(*, referral: Referral) -> tuple[str, zoneinfo.ZoneInfo]:
    """Who delivers the case: the professional of its accepted offer, with the organization ("" for nobody);
    and the time zone of their site (selectors.case_time_zone's), from the same row."""
    offer = (
        Offer.objects.filter(referral=referral, status=OfferStatus.ACCEPTED)
        .select_related("role__professional", "role__organization", "role__site")
        .first()
    )
    if offer is None:
        who = "" if referral.owner_reference == HUB_ORGANIZATION_REFERENCE else referral.owner_display
        return who, zoneinfo.ZoneInfo(settings.HUB_DEFAULT_TIME_ZONE)
    tz = zoneinfo.ZoneInfo(offer.role.site.time_zone or settings.HUB_DEFAULT_TIME_ZONE)
    return f"{offer.role.professional.display_name}, {offer.role.organization.name}", tz


def report_facts(*, referral: Referral, period_start: dt.date, period_end: dt.date, kind: str) -> ReportDraft:
    """The draft of a ``kind`` report for the period, read from the record (see ``draft_build``)."""
    facts = ClinicalFacts.objects.filter(referral=referral).first()
    professional, tz = report_professional(referral=referral)
    return draft_build(
        referral=referral, facts=facts, recorded=report_recorded(referral=referral, until=period_end, tz=tz),
        kind=kind, period_start=period_start, period_end=period_end, professional=professional,
    )


def report_first_session(*, referral: Referral, tz: zoneinfo.ZoneInfo) -> dt.date | None:
    """The day (in ``tz``) of the case's first attended session, None before it."""
    first = (
        Session.objects.filter(referral=referral, attendance=Attendance.ATTENDED, starts_at__range=READABLE)
        .order_by("starts_at")
        .values_list("starts_at", flat=True).first()
    )
    return first.astimezone(tz).date() if first else None


def report_case_start(*, referral: Referral) -> dt.date:
    """The day the case's reporting starts: its first attended session, else the day a professional accepted
    it, else the day the referral came in (the site's calendar days)."""
    tz = case_time_zone(referral)
    first = report_first_session(referral=referral, tz=tz)
    if first is not None:
        return first
    accepted = (
        Offer.objects.filter(referral=referral, status=OfferStatus.ACCEPTED).values_list("responded_at", flat=True)
        .first()
    )
    return timezone.localdate(accepted or referral.created_at, tz)


# --- The schedule --------------------------------------------------------------------------------------------

DISCHARGE_KINDS = frozenset({ReportKind.DISCHARGE, ReportKind.DID_NOT_START})


@dataclass(frozen=True)
class ReportDue:
    """The next report the schedule owes the physician: its ``kind`` (progress, or discharge for the program's
    last period), its period (site calendar dates, inclusive) and the moment it falls due, the start of the day
    after the period (``due_at``, aware)."""

    kind: str
    period_start: dt.date
    period_end: dt.date
    due_at: dt.datetime


def report_every_weeks(*, referral: Referral) -> int:
    """Weeks between progress reports: the delivering organization's own (network.Organization
    .report_every_weeks), else settings.HUB_REPORT_EVERY_WEEKS."""
    own = (
        Offer.objects.filter(referral=referral, status=OfferStatus.ACCEPTED)
        .values_list("organization__report_every_weeks", flat=True).first()
    )
    return own or settings.HUB_REPORT_EVERY_WEEKS


def report_next_due(*, referral: Referral) -> ReportDue | None:
    """The next scheduled report of an open case, None once its discharge (or did-not-start) report exists.

    From the first attended session a progress report every ``report_every_weeks`` (the periods' ends are fixed
    at 4, 8, ... weeks from it; a report asked for in between, $report, only moves the next period's start); the
    program ends at the referral's requested end (ServiceRequest occurrencePeriod.end), else
    HUB_REPORT_PROGRAM_WEEKS after the first session, and its last period is the discharge report's. A case that
    never started is owed one report, a discharge ("did not start" when drafted) at the requested end, else
    HUB_REPORT_PROGRAM_WEEKS after its acceptance. A requested end that was over before the case started (or
    before it was accepted) cannot end it: the default length applies. Dates are the site's
    (selectors.case_time_zone)."""
    live = list(
        Report.objects.filter(referral=referral).exclude(status=ReportStatus.SUPERSEDED)
        .values_list("kind", "period_end")
    )
    if any(kind in DISCHARGE_KINDS for kind, _ in live):
        return None
    tz = case_time_zone(referral)
    program_days = dt.timedelta(days=7 * settings.HUB_REPORT_PROGRAM_WEEKS)
    covered = max((end for _, end in live), default=None)
    first = report_first_session(referral=referral, tz=tz)
    requested = referral.occurrence_end
    if first is None:
        start = report_case_start(referral=referral)
        period_start = max(start, covered + dt.timedelta(days=1)) if covered else start
        end = requested if requested and requested >= start else start + program_days - dt.timedelta(days=1)
        end = max(end, period_start)
        return ReportDue(ReportKind.DISCHARGE, period_start, end, _due_at(end, tz))
    period_start = covered + dt.timedelta(days=1) if covered else first
    program_end = requested if requested and requested >= first else first + program_days - dt.timedelta(days=1)
    program_end = max(program_end, period_start)
    every = dt.timedelta(days=7 * report_every_weeks(referral=referral))
    end = first + every - dt.timedelta(days=1)
    while end < period_start:
        end += every
    end = min(end, program_end)
    kind = ReportKind.DISCHARGE if end >= program_end else ReportKind.PROGRESS
    return ReportDue(kind, period_start, end, _due_at(end, tz))


def _due_at(period_end: dt.date, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(period_end + dt.timedelta(days=1), dt.time.min, tzinfo=tz)


def report_period_next(*, referral: Referral, until: dt.date) -> tuple[dt.date, dt.date]:
    """The period a report asked for now covers: from the day after the last report sent, else from the case's
    start, to ``until``. Raises DomainError NOT_OPEN when a report sent already covers ``until``."""
    last = (
        Report.objects.filter(referral=referral, status__in=sorted(SENT_REPORT_STATUSES))
        .order_by("-period_end").values_list("period_end", flat=True).first()
    )
    start = last + dt.timedelta(days=1) if last else report_case_start(referral=referral)
    if start > until:
        raise DomainError(
            ErrorCode.NOT_OPEN,
            f"the last report already covers the case up to {last.isoformat()}; read it as the referral Task's "
            "latest output", field="period_start",
        )
    return start, until


def report_period_discharge(*, referral: Referral) -> tuple[dt.date, dt.date]:
    """The period of a discharge report drafted today (the case closed): from the day after the last report sent
    (else the case's start) to today; today alone when a report sent covers today already."""
    today = timezone.localdate(timezone.now(), case_time_zone(referral))
    try:
        return report_period_next(referral=referral, until=today)
    except DomainError:
        return today, today


# --- Services --------------------------------------------------------------------------------------------------

# A report's kind -> the kinds a second request for the same period finds (a redelivered schedule task).
_SAME_REQUEST = {
    ReportKind.PROGRESS: (ReportKind.PROGRESS, ReportKind.NO_UPDATE),
    ReportKind.NO_UPDATE: (ReportKind.PROGRESS, ReportKind.NO_UPDATE),
    ReportKind.DISCHARGE: (ReportKind.DISCHARGE, ReportKind.DID_NOT_START),
    ReportKind.DID_NOT_START: (ReportKind.DISCHARGE, ReportKind.DID_NOT_START),
}


def _discharge_outcome(referral: Referral, kind: str) -> tuple[str, str]:
    """What the referral becomes when a discharge (or did-not-start) report goes out; ("", "") for a progress
    report. A case already closed keeps its status and reason."""
    if kind not in (ReportKind.DISCHARGE, ReportKind.DID_NOT_START):
        return "", ""
    if referral.status in TERMINAL_STATUSES:
        return referral.status, referral.status_reason
    if kind == ReportKind.DID_NOT_START:
        return ReferralStatus.FAILED, "No session attended"
    if referral.status == ReferralStatus.ON_HOLD:
        return ReferralStatus.FAILED, referral.status_reason or "On hold when the program period ended"
    return ReferralStatus.COMPLETED, ""


@transaction.atomic
def report_draft(*, referral: Referral, period_start: dt.date, period_end: dt.date, kind: str,
                 due_at: dt.datetime | None = None, redraft: bool = False) -> Report:
    """Draft the ``kind`` report of the period from the record (report_facts), as a Report in ``draft``.

    Asking again for the same period returns the report already there (the schedule may ask twice); with
    ``redraft`` a report not yet signed is drafted afresh from the record and the old one is superseded.
    Raises DomainError INVALID for an unknown kind or a period that ends before it starts, NOT_OPEN for a
    referral that never reached a professional."""
    if kind not in ReportKind.values:
        raise DomainError(ErrorCode.INVALID, f"{kind!r} is not a report kind ({', '.join(ReportKind.values)})",
                          field="kind")
    if period_end < period_start:
        raise DomainError(ErrorCode.INVALID, "the report's period ends before it starts", field="period_end")
    referral = Referral.objects.select_for_update().select_related("clinic").get(pk=referral.pk)
    if referral.status in (ReferralStatus.DRAFT, ReferralStatus.REQUESTED, ReferralStatus.REJECTED,
                           ReferralStatus.CANCELLED, ReferralStatus.ENTERED_IN_ERROR):
        raise DomainError(ErrorCode.NOT_OPEN, f"a referral that is {referral.status!r} has no case to report on",
                          field="status")
    existing = (
        Report.objects.filter(referral=referral, period_start=period_start, kind__in=_SAME_REQUEST[kind])
        .exclude(status=ReportStatus.SUPERSEDED)
        .first()
    )
    if existing is not None:
        if not redraft or existing.status == ReportStatus.SIGNED:
            return existing
        Report.objects.filter(pk=existing.pk, status=existing.status).update(
            status=ReportStatus.SUPERSEDED, version=existing.version + 1
        )
    draft = report_facts(referral=referral, period_start=period_start, period_end=period_end, kind=kind)
    outcome_status, outcome_reason = _discharge_outcome(referral, draft.kind)
    # No race with another draft of the period: the referral's row lock above serialises them, and the second
    # finds the first. The unique constraint stays as the last line of defence.
    report = Report.objects.create(
        referral=referral,
        kind=draft.kind,
        period_start=period_start,
        period_end=period_end,
        due_at=due_at or timezone.now(),
        draft=draft.as_json(),
        answer_goals=draft.answer_goals,
        answer_barriers=draft.answer_barriers,
        answer_participation=draft.answer_participation,
        answer_plan=draft.answer_plan,
        outcome_status=outcome_status,
        outcome_reason=outcome_reason,
    )
    report_drafted.send(sender=Report, report=report)
    return report


ANSWER_FIELDS = ("answer_goals", "answer_barriers", "answer_participation", "answer_plan")
ANSWER_MAX_CHARS = 2000  # a brief answer: the page holds about this much per answer


def _checked_answers(answers: dict | None) -> dict:
    out = {}
    for name, value in (answers or {}).items():
        if name not in ANSWER_FIELDS:
            raise DomainError(ErrorCode.INVALID, f"{name!r} is not one of the report's answers", field=name)
        if not isinstance(value, str) or not value.strip():
            raise DomainError(ErrorCode.INVALID, "an answer cannot be empty", field=name)
        if len(value) > ANSWER_MAX_CHARS:
            raise DomainError(ErrorCode.INVALID, f"keep the answer under {ANSWER_MAX_CHARS} characters", field=name)
        out[name] = value.strip()
    return out


def _claim(report: Report, *, to_status: str | None, expected_version: int | None, changes: dict,
           sending: bool = False) -> Report:
    """Compare-and-set on the report's status and version: raises STALE (a form from an older version) or
    CONFLICT (someone else moved it), and TRANSITION for a move the report's states forbid. ``sending``: the
    PDF is rendered from the report as it becomes and written with the same update."""
    current = Report.objects.select_for_update().get(pk=report.pk)
    if expected_version is not None and current.version != expected_version:
        raise DomainError(
            ErrorCode.STALE,
            f"the report changed since version {expected_version} was read (now {current.version}); reload it "
            "and apply the change again", field="expected_version",
        )
    if to_status is not None and not current.can_move_to(to_status):
        raise DomainError(ErrorCode.TRANSITION, f"a report that is {current.status!r} cannot become {to_status!r}",
                          field="status")
    if to_status is None and current.status not in (ReportStatus.DRAFT, ReportStatus.SENT_UNSIGNED):
        raise DomainError(ErrorCode.NOT_OPEN, f"a {current.status!r} report can no longer be edited",
                          field="status")
    old_version, old_status = current.version, current.status
    values = dict(changes, version=current.version + 1)
    if to_status is not None:
        values["status"] = to_status
    if sending:
        from referrals.report_pdf import report_pdf  # ReportLab loads only where reports are sent

        for name, value in values.items():
            setattr(current, name, value)
        values["pdf"] = report_pdf(report=current)
    won = Report.objects.filter(pk=current.pk, version=old_version, status=old_status).update(**values)
    if not won:
        raise DomainError(ErrorCode.CONFLICT, f"report {report.pk} changed while this request was being handled")
    for name, value in values.items():
        setattr(current, name, value)
    return current


@transaction.atomic
def report_edit(*, report: Report, answers: dict, actor: str, expected_version: int) -> Report:
    """Replace some of the four answers (``answer_goals`` ... ``answer_plan``) with the therapist's text.
    Raises DomainError STALE, NOT_OPEN (signed or superseded) or INVALID (an unknown or empty answer)."""
    return _claim(report, to_status=None, expected_version=expected_version, changes=_checked_answers(answers))


def _send(report: Report, *, actor: str) -> Report:
    """Call with ``report`` just claimed as sent (its PDF written): the FHIR, then the referral."""
    report_sent.send(sender=Report, report=report)
    referral = Referral.objects.select_for_update().get(pk=report.referral_id)
    discharge = report.kind in (ReportKind.DISCHARGE, ReportKind.DID_NOT_START)
    status, reason = (report.outcome_status, report.outcome_reason) if discharge else (
        referral.status, referral.status_reason)
    if referral.status in TERMINAL_STATUSES:  # closed meanwhile (or this is a signature after a preliminary)
        status, reason = referral.status, referral.status_reason
    label = ReportKind(report.kind).label
    state = "signed by the therapist" if report.status == ReportStatus.SIGNED else "not reviewed by the therapist"
    text = f"{label} for {report.period_start.isoformat()} to {report.period_end.isoformat()} sent ({state})."
    business_status = BusinessStatus.DISCHARGE_REPORT_SENT if discharge else BusinessStatus.PROGRESS_REPORT_SENT
    if not discharge and referral.business_status == BusinessStatus.DISCHARGE_REPORT_SENT:
        business_status = None  # a progress report signed after the discharge: the Task still says discharged
    # The note is written here rather than handed to referral_update, which would record it as an event of its
    # own: one report sent is one change of the Task and one event (the business status text names the report),
    # so the physician is notified once. The note is on the Task version that change renders.
    ReferralNote.objects.create(referral=referral, author_reference=HUB_ORGANIZATION_REFERENCE,
                                author_display="Exercise referral hub", text=text, time=report.sent_at)
    referral_update(
        referral=referral,
        status=status,
        reason=reason,
        business_status=business_status,
        business_status_text=text,
        actor=actor,
    )
    return report


@transaction.atomic
def report_sign(*, report: Report, actor: str, expected_version: int, answers: dict | None = None) -> Report:
    """The therapist signs the report (with last edits to its answers): it is sent as final. A report that went
    out unsigned is sent again, signed. Raises DomainError STALE, TRANSITION (signed or superseded already) or
    INVALID (answers)."""
    now = timezone.now()
    report = _claim(report, to_status=ReportStatus.SIGNED, expected_version=expected_version,
                    changes=_checked_answers(answers) | {"signed_by": actor, "signed_at": now, "sent_at": now},
                    sending=True)
    return _send(report, actor=actor)


@transaction.atomic
def report_request(*, referral: Referral, actor: str, send_now: bool = False) -> Report:
    """A progress report asked for now (an EHR before a visit): the period since the last report, to today (the
    site's date, selectors.case_time_zone).
    Drafted for the therapist to review and sign; with ``send_now``, sent at once as preliminary ("not reviewed
    by the therapist"); the therapist's signature later sends it again as final. A referral already closed gets
    no progress report (its discharge report says it all): DomainError NOT_OPEN."""
    if referral.status in TERMINAL_STATUSES:
        raise DomainError(ErrorCode.NOT_OPEN, f"the referral is {referral.status}; its discharge report is its last",
                          field="status")
    # Today in the site's time zone, as the schedule counts its periods: an EHR asking on Sunday evening in Chicago
    # is asking up to Sunday, though it is Monday in UTC already.
    today = timezone.localdate(timezone.now(), case_time_zone(referral))
    start, end = report_period_next(referral=referral, until=today)
    # A draft of the same start still waiting for the therapist is drafted afresh up to today (and superseded).
    report = report_draft(referral=referral, period_start=start, period_end=end, kind=ReportKind.PROGRESS,
                          redraft=True)
    if send_now and report.status == ReportStatus.DRAFT:
        report = report_send_unsigned(report=report, actor=actor)
    return report


@transaction.atomic
def report_send_unsigned(*, report: Report, actor: str = "hub") -> Report:
    """Send a draft nobody signed in time as preliminary ("not reviewed by the therapist"). Raises DomainError
    TRANSITION unless it is a draft (a redelivered task finds it sent, and the caller logs that)."""
    report = _claim(report, to_status=ReportStatus.SENT_UNSIGNED, expected_version=None,
                    changes={"sent_at": timezone.now()}, sending=True)
    return _send(report, actor=actor)
