"""Reads of the referral workflow: capacity (the live offers of a role), offers, the stored routing decisions,
and the cases (a case's record and its dose). Nothing here writes."""

import datetime as dt
import zoneinfo
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet, Subquery

from network.models import Organization, Professional, ProfessionalRole
from referrals.models import (
    LIVE_OFFER_STATUSES,
    OPEN_STATUSES,
    AdverseEvent,
    Assessment,
    Attendance,
    ClinicalFacts,
    ComponentKind,
    ExerciseProgram,
    Measurement,
    Offer,
    OfferStatus,
    PavsCheckIn,
    Referral,
    RoutingDecision,
    Session,
    SessionComponent,
)


# --- Capacity -----------------------------------------------------------------------------------------------


def active_cases_sql(role: str) -> str:
    """SQL for the number of active cases of the role whose id is the SQL expression ``role``: its requested
    offers (each holds a slot until answered) and its accepted ones whose referral is still open. The one
    definition of capacity use: the locked count below and the routing pool query both read it."""
    open_statuses = ", ".join(f"'{s}'" for s in sorted(OPEN_STATUSES))  # our own constants, not input
    return (
        f"SELECT COUNT(*) FROM {Offer._meta.db_table} c"
        f" JOIN {Referral._meta.db_table} rr ON rr.id = c.referral_id"
        f" WHERE c.role_id = {role} AND (c.status = '{OfferStatus.REQUESTED}'"
        f" OR (c.status = '{OfferStatus.ACCEPTED}' AND rr.status IN ({open_statuses})))"
    )


def role_for_update(*, role_id: int) -> ProfessionalRole | None:
    """Lock the role's row until the transaction ends (call inside one) and return the role with its
    professional and organization, or None when it is gone. One plain query: it runs for every offer, and the
    ORM's select_for_update().select_related() cost several times more to build than to run."""
    tables = {ProfessionalRole: "r", Professional: "p", Organization: "o"}
    columns = [(model, column) for model in tables for column in model._meta.concrete_fields]
    lock = ""
    if connection.features.has_select_for_update:
        lock = " FOR UPDATE OF r" if connection.features.has_select_for_update_of else " FOR UPDATE"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(f'{tables[model]}.{column.column}' for model, column in columns)}"
            f" FROM {ProfessionalRole._meta.db_table} r"
            f" JOIN {Professional._meta.db_table} p ON p.id = r.professional_id"
            f" JOIN {Organization._meta.db_table} o ON o.id = r.organization_id"
            f" WHERE r.id = %s{lock}",
            [role_id],
        )
        values = cursor.fetchone()
    if values is None:
        return None
    made = {}
    for model in tables:
        names, row = [], []
        for (owner, column), value in zip(columns, values):
            if owner is model:
                names.append(column.attname)
                # What the ORM does with the raw value (a JSON column comes back as text).
                if hasattr(column, "from_db_value"):
                    value = column.from_db_value(value, None, connection)
                row.append(value)
        made[model] = model.from_db(ProfessionalRole.objects.db, names, row)
    role = made[ProfessionalRole]
    role.professional, role.organization = made[Professional], made[Organization]
    return role


def role_active_case_counts(*, role_ids: list[int]) -> dict[int, int]:
    """Active cases of many roles (by role id; a role with none is absent), counted as active_cases_sql counts
    them, in one grouped query: for a page of roles, where a correlated count per role can lead the planner to
    hash the whole referral table once per role. Reads only; no lock."""
    rows = (
        Offer.objects.filter(role_id__in=role_ids)
        .filter(Q(status=OfferStatus.REQUESTED) | Q(status=OfferStatus.ACCEPTED, referral__status__in=sorted(OPEN_STATUSES)))
        .order_by()
        .values("role_id")
        .annotate(n=Count("id"))
    )
    return {row["role_id"]: row["n"] for row in rows}


def role_active_case_count(*, role_id: int) -> int:
    """Active cases of one role, counted in the database. Hold the role's row lock to act on the count."""
    with connection.cursor() as cursor:
        cursor.execute(active_cases_sql("%s"), [role_id])
        return cursor.fetchone()[0]


# --- Offers and decisions -----------------------------------------------------------------------------------


def offer_live_get(*, referral_id: int) -> Offer | None:
    """The referral's requested or accepted offer, if any (there is at most one)."""
    return (
        Offer.objects.filter(referral_id=referral_id, status__in=sorted(LIVE_OFFER_STATUSES))
        .select_related("role")
        .first()
    )


def referrals_with_routing() -> QuerySet[Referral]:
    """Referrals with their clinic, each annotated with its latest routing decision's ``routing_gist`` and
    ``routing_flags`` (None before the first): a list of them costs one query, not one per referral."""
    latest = RoutingDecision.objects.filter(referral_id=OuterRef("pk")).order_by("-id")
    return Referral.objects.select_related("clinic").annotate(
        routing_gist=Subquery(latest.values("gist")[:1]), routing_flags=Subquery(latest.values("flags")[:1])
    )


def routing_decision_explain(*, decision: RoutingDecision) -> dict:
    """One decision as plain JSON for the admin API."""
    return {
        "id": decision.pk,
        "referral": decision.referral_id,
        "at": decision.created_at.isoformat() if decision.created_at else None,
        "trigger": decision.trigger,
        "outcome": decision.outcome,
        "actor": decision.actor,
        "chosen_role": decision.candidates
        and next((c["role"] for c in decision.candidates if c.get("chosen")), None),
        "gist": decision.gist,
        "location_source": decision.location_source,
        "condition_groups": decision.condition_groups,
        "mapped_codes": decision.mapped_codes,
        "unmapped_codes": decision.unmapped_codes,
        "risk": decision.risk,
        "flags": decision.flags,
        "summary": decision.summary,
        "candidates": decision.candidates,
        "overrides": decision.overrides,
        "override_reason": decision.override_reason,
    }


def routing_explain(*, referral_id: int) -> list[dict]:
    """Every routing run of a referral, oldest first, each with its candidates, exclusions and scores."""
    return [
        routing_decision_explain(decision=d)
        for d in RoutingDecision.objects.filter(referral_id=referral_id).order_by("id")
    ]



# --- Cases and offers of a professional or a practice ----------------------------------------------------------

# After acceptance a referral is a case of the professional whose offer it accepted.
CASE_STATUSES = ("accepted", "in-progress", "on-hold", "completed", "failed", "cancelled")


def cases_for_professional(professional: Professional) -> QuerySet[Referral]:
    """The referrals whose accepted offer went to one of ``professional``'s roles, newest change first."""
    return (
        Referral.objects.filter(
            offers__status=OfferStatus.ACCEPTED, offers__role__professional=professional, status__in=CASE_STATUSES
        )
        .select_related("clinic")
        .order_by("-updated_at", "-id")
    )


def cases_for_organization(org: Organization) -> QuerySet[Referral]:
    """The referrals whose accepted offer went to ``org`` (as it was when offered), newest change first."""
    return (
        Referral.objects.filter(offers__status=OfferStatus.ACCEPTED, offers__organization=org, status__in=CASE_STATUSES)
        .select_related("clinic")
        .order_by("-updated_at", "-id")
    )


def offers_for_professional(professional: Professional) -> QuerySet[Offer]:
    """The live (requested) offers to ``professional``'s roles, soonest deadline first."""
    return (
        Offer.objects.filter(status=OfferStatus.REQUESTED, role__professional=professional)
        .select_related("referral", "referral__facts", "role", "role__site", "decision")
        .order_by("deadline", "id")
    )


def offers_for_organization(org: Organization) -> QuerySet[Offer]:
    """The live (requested) offers to ``org``'s roles, soonest deadline first."""
    return (
        Offer.objects.filter(status=OfferStatus.REQUESTED, organization=org)
        .select_related("referral", "referral__facts", "role", "role__professional", "role__site", "decision")
        .order_by("deadline", "id")
    )


# --- One case ----------------------------------------------------------------------------------------------------

# The moments a case's page (and its reports) can read and show: Python's datetime holds years 1 to 9999, and a
# time is shown in the site's zone (UTC-12 to UTC+14), so a day is kept clear at each end. PostgreSQL stores
# timestamps far beyond (to year 294276), and a row out there, stored before referrals.records checked the
# records' dates (RecordWindow), cannot be read into Python (psycopg's DataError) or shown in a zone
# (OverflowError): the readers of a case leave such a row out rather than fail the page for everyone.
READABLE = (dt.datetime(1, 1, 2, tzinfo=dt.UTC), dt.datetime(9999, 12, 30, tzinfo=dt.UTC))


@dataclass
class CaseRecord:
    """Everything a case page shows. Lists are oldest first."""

    referral: Referral  # with .facts and .clinic loaded
    offer: Offer | None  # the accepted offer, with its role, professional, organization and site
    assessments: list[Assessment]  # each with .measurements prefetched
    program: ExerciseProgram | None  # the current version, with .components prefetched
    sessions: list[Session]  # each with .components prefetched
    checkins: list[PavsCheckIn]
    adverse_events: list[AdverseEvent]
    notes: list


def case_record(referral: Referral, *, offer: Offer | None = None) -> CaseRecord:
    """The case's whole record in a fixed number of queries (eleven), whatever its size. ``offer``: the case's
    accepted offer, read already with its referral (and the referral's facts and clinic) and its role's
    professional, organization and site: the two queries that read them are then saved. A record timed outside
    READABLE is left out."""
    if offer is None:
        referral = Referral.objects.select_related("facts", "clinic").get(pk=referral.pk)
        offer = (
            Offer.objects.filter(referral=referral, status=OfferStatus.ACCEPTED)
            .select_related("role", "role__professional", "role__organization", "role__site")
            .first()
        )
    else:
        referral = offer.referral
    assessments = list(
        Assessment.objects.filter(referral=referral, assessed_at__range=READABLE)
        .prefetch_related(Prefetch("measurements", Measurement.objects.filter(measured_at__range=READABLE)))
    )
    program = program_current(referral)
    sessions = list(
        Session.objects.filter(referral=referral, starts_at__range=READABLE).prefetch_related("components")
    )
    return CaseRecord(
        referral=referral,
        offer=offer,
        assessments=assessments,
        program=program,
        sessions=sessions,
        checkins=list(PavsCheckIn.objects.filter(referral=referral)),
        adverse_events=list(AdverseEvent.objects.filter(referral=referral, occurred_at__range=READABLE)),
        notes=list(referral.notes.all()),
    )


def program_current(referral: Referral) -> ExerciseProgram | None:
    """The case's current exercise program, its components prefetched (two queries), or None."""
    return ExerciseProgram.objects.filter(referral=referral, is_current=True).prefetch_related("components").first()


def case_time_zone(referral: Referral, *, offer: Offer | None = None) -> zoneinfo.ZoneInfo:
    """The time zone of the site that delivers the case (its accepted offer's role's site), else the default.
    ``offer``: that offer, read with its role's site (no query then)."""
    if offer is not None:
        name = offer.role.site.time_zone
    else:
        name = (
            Offer.objects.filter(referral=referral, status=OfferStatus.ACCEPTED)
            .values_list("role__site__time_zone", flat=True)
            .first()
        )
    return zoneinfo.ZoneInfo(name or settings.HUB_DEFAULT_TIME_ZONE)


@dataclass(frozen=True)
class WeekDose:
    """One week of the case (Monday to Sunday in the site's time zone)."""

    starts_on: dt.date  # the Monday
    supervised_minutes: int  # sum of the attended sessions' durations
    strength_sessions: int  # attended sessions with resistance work
    attended: int
    missed: int  # no-shows
    adherence: float | None  # supervised minutes / prescribed minutes; None without a program


@dataclass(frozen=True)
class CaseDose:
    """The dose delivered against the dose prescribed. Minutes per week; None where there is nothing to say."""

    weeks: list[WeekDose]  # from the first session's week to the last's, gaps included
    prescribed_minutes_per_week: int | None  # the current program: sum of frequency x minutes of its components
    prescribed_strength_per_week: int | None  # the current program's resistance frequency
    mean_supervised_minutes: float | None  # over the weeks above
    adherence: float | None  # all supervised minutes / (prescribed minutes x weeks)
    baseline_minutes_per_week: float | None  # PAVS 82290-8 in the referral
    latest_checkin: PavsCheckIn | None
    goal_minutes_per_week: float | None  # the first goal measured in min/wk


def _monday(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


def case_dose(referral: Referral, tz: zoneinfo.ZoneInfo | str, *, record: CaseRecord | None = None) -> CaseDose:
    """Supervised minutes and strength sessions per week, and adherence against the current program's FITT dose,
    with weeks counted in ``tz`` (the site's: case_time_zone). Five queries, whatever the number of sessions;
    none when ``record`` (the case's case_record, which has read all of it) is given."""
    tz = zoneinfo.ZoneInfo(tz) if isinstance(tz, str) else tz
    if record is not None:
        sessions = [s for s in record.sessions if s.attendance in (Attendance.ATTENDED, Attendance.NO_SHOW)]
        for s in sessions:
            s.strength = any(c.kind == ComponentKind.RESISTANCE for c in s.components.all())
        program = record.program
    else:
        sessions = list(
            Session.objects.filter(referral=referral, attendance__in=[Attendance.ATTENDED, Attendance.NO_SHOW],
                                   starts_at__range=READABLE)
            .annotate(
                strength=Exists(SessionComponent.objects.filter(session=OuterRef("pk"), kind=ComponentKind.RESISTANCE))
            )
            .only("starts_at", "attendance", "duration_minutes")
        )
        program = program_current(referral)
    prescribed = strength_prescribed = None
    if program is not None:
        components = list(program.components.all())
        prescribed = sum(c.frequency_per_week * c.minutes for c in components)
        strength_prescribed = sum(c.frequency_per_week for c in components if c.kind == ComponentKind.RESISTANCE)
    weeks: dict[dt.date, dict] = {}
    for s in sessions:
        week = weeks.setdefault(_monday(s.starts_at.astimezone(tz).date()),
                                {"minutes": 0, "strength": 0, "attended": 0, "missed": 0})
        if s.attendance == Attendance.ATTENDED:
            week["minutes"] += s.duration_minutes or 0
            week["attended"] += 1
            week["strength"] += 1 if s.strength else 0
        else:
            week["missed"] += 1
    rows = []
    if weeks:
        monday, last = min(weeks), max(weeks)
        while monday <= last:
            w = weeks.get(monday, {"minutes": 0, "strength": 0, "attended": 0, "missed": 0})
            rows.append(WeekDose(monday, w["minutes"], w["strength"], w["attended"], w["missed"],
                                 round(w["minutes"] / prescribed, 3) if prescribed else None))
            monday += dt.timedelta(days=7)
    total = sum(r.supervised_minutes for r in rows)
    if record is not None:
        facts = getattr(record.referral, "facts", None)
        latest = max(record.checkins, key=lambda c: (c.date, c.id), default=None)
    else:
        facts = ClinicalFacts.objects.filter(referral=referral).only("pavs_baseline", "goals").first()
        latest = PavsCheckIn.objects.filter(referral=referral).order_by("-date", "-id").first()
    return CaseDose(
        weeks=rows,
        prescribed_minutes_per_week=prescribed,
        prescribed_strength_per_week=strength_prescribed,
        mean_supervised_minutes=round(total / len(rows), 1) if rows else None,
        adherence=round(total / (prescribed * len(rows)), 3) if rows and prescribed else None,
        baseline_minutes_per_week=facts.pavs_minutes_per_week() if facts else None,
        latest_checkin=latest,
        goal_minutes_per_week=facts.goal_minutes_per_week() if facts else None,
    )
