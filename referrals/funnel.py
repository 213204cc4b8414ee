"""The exercise funnel: where referrals stop, read from the milestones rollup (ReferralMilestones).

Two halves:
- ``milestones_refresh`` derives one ReferralMilestones row per referral from offers, sessions, reports and PAVS
  check-ins (a beat task runs it every few minutes: incremental, from the referrals changed since the last run);
- the selectors (``funnel_compute``, ``referrals_per_week``, ``pavs_grid``) aggregate the rollup for a set of
  referrals narrowed by ``FunnelFilters``, each in one query.

Pure domain: it takes the clinics whose referrals count (the console passes what its user may see) and plain
filter values, and returns dataclasses of counts, seconds and minutes per week.
"""

import datetime as dt
import statistics
from collections.abc import Collection
from dataclasses import dataclass

from django.db.models import (
    Aggregate,
    Count,
    DateTimeField,
    Exists,
    ExpressionWrapper,
    F,
    FloatField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Least
from django.utils import timezone

from referrals.models import (
    SENT_REPORT_STATUSES,
    Attendance,
    Offer,
    OfferStatus,
    PavsCheckIn,
    Referral,
    ReferralMilestones,
    ReferralStatus,
    Report,
    ReportKind,
    RollupRefresh,
    RoutingDecision,
    Session,
)
from referrals.models import pavs_minutes_per_week

ROLLUP_NAME = "milestones"
# "Active at 4 weeks": an attended session in weeks 3-4 after the first one (days 14 to 27).
ACTIVE_FROM, ACTIVE_UNTIL = dt.timedelta(days=14), dt.timedelta(days=28)
PAVS_GAIN_MINUTES = 30  # a gain that matters: the share gaining at least this many minutes per week
PAVS_TARGET_MINUTES = 150  # the guideline's weekly minutes of moderate activity (US PA Guidelines, ACSM)
# An incremental refresh starts this long before the last one did: a change committed late (its updated_at is
# when its transaction began) is still picked up.
REFRESH_MARGIN = dt.timedelta(minutes=10)
REFRESH_CHUNK = 2000


# --- The median, on PostgreSQL and SQLite ----------------------------------------------------------------------


class Median(Aggregate):
    """The median (interpolated, as percentile_cont(0.5)) of a numeric expression; NULLs are left out; None for
    no rows. PostgreSQL's ordered-set aggregate; on SQLite the MEDIAN aggregate that ``sqlite_median_register``
    adds to each connection."""

    function = "MEDIAN"
    name = "Median"
    output_field = FloatField()

    def as_postgresql(self, compiler, connection, **extra_context):
        # A copy with PostgreSQL's template (Aggregate.as_sql wraps self.template in its FILTER clause).
        ordered = self.copy()
        ordered.template = "percentile_cont(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
        return ordered.as_sql(compiler, connection, **extra_context)


class _SqliteMedian:
    def __init__(self):
        self.values = []

    def step(self, value):
        if value is not None:
            self.values.append(value)

    def finalize(self):
        return float(statistics.median(self.values)) if self.values else None


def sqlite_median_register(sender, connection, **kwargs) -> None:
    """``connection_created`` receiver: give a SQLite connection the MEDIAN aggregate (referrals/apps.py)."""
    if connection.vendor == "sqlite":
        connection.connection.create_aggregate("MEDIAN", 1, _SqliteMedian)


# --- The rollup ------------------------------------------------------------------------------------------------


def _milestone_values(referrals: QuerySet[Referral]):
    offers = Offer.objects.filter(referral=OuterRef("pk"))
    accepted = offers.filter(status=OfferStatus.ACCEPTED).order_by("-id")
    attended = Session.objects.filter(referral=OuterRef("pk"), attendance=Attendance.ATTENDED)
    later = Session.objects.filter(
        referral=OuterRef("pk"),
        attendance=Attendance.ATTENDED,
        starts_at__gte=ExpressionWrapper(OuterRef("first_session_at") + ACTIVE_FROM, output_field=DateTimeField()),
        starts_at__lt=ExpressionWrapper(OuterRef("first_session_at") + ACTIVE_UNTIL, output_field=DateTimeField()),
    )
    # The closing report: a discharge, or the discharge that found no attended session ("did not start").
    discharge = Report.objects.filter(
        referral=OuterRef("pk"), kind__in=[ReportKind.DISCHARGE, ReportKind.DID_NOT_START],
        status__in=sorted(SENT_REPORT_STATUSES),
    ).order_by("sent_at")
    return (
        referrals.annotate(
            routed_at=Subquery(offers.order_by("created_at", "id").values("created_at")[:1]),
            accepted_at=Subquery(accepted.values("responded_at")[:1]),
            accepted_organization=Subquery(accepted.values("organization_id")[:1]),
            accepted_professional=Subquery(accepted.values("role__professional_id")[:1]),
            first_session_at=Subquery(attended.order_by("starts_at").values("starts_at")[:1]),
            discharge_sent_at=Subquery(discharge.values("sent_at")[:1]),
            pavs_latest=Subquery(
                PavsCheckIn.objects.filter(referral=OuterRef("pk")).order_by("-date", "-id").values("minutes_per_week")[:1]
            ),
            groups=Subquery(
                RoutingDecision.objects.filter(referral=OuterRef("pk")).order_by("-id").values("condition_groups")[:1]
            ),
        )
        .annotate(active=Exists(later))
        .values(
            "pk", "clinic_id", "created_at", "status", "facts__pavs_baseline", "routed_at", "accepted_at", "accepted_organization",
            "accepted_professional", "first_session_at", "discharge_sent_at", "pavs_latest", "groups", "active",
        )
    )


def _seconds(later: dt.datetime | None, start: dt.datetime) -> int | None:
    return None if later is None else max(0, int((later - start).total_seconds()))


def _milestones_row(values: dict, now: dt.datetime) -> ReferralMilestones:
    received = values["created_at"]
    completed = values["discharge_sent_at"] if values["status"] == ReferralStatus.COMPLETED else None
    baseline = pavs_minutes_per_week(values["facts__pavs_baseline"] or [])
    groups = values["groups"] or []
    return ReferralMilestones(
        referral_id=values["pk"],
        clinic_id=values["clinic_id"],
        received_at=received,
        received_week=(received.astimezone(dt.UTC) - dt.timedelta(days=received.astimezone(dt.UTC).weekday())).date(),
        routed_at=values["routed_at"],
        accepted_at=values["accepted_at"],
        first_session_at=values["first_session_at"],
        active_at_4_weeks=bool(values["active"]),
        completed_at=completed,
        route_seconds=_seconds(values["routed_at"], received),
        accept_seconds=_seconds(values["accepted_at"], received),
        first_session_seconds=_seconds(values["first_session_at"], received),
        condition_groups=f",{','.join(sorted(groups))}," if groups else "",
        organization_id=values["accepted_organization"],
        professional_id=values["accepted_professional"],
        pavs_baseline=None if baseline is None else max(0, round(baseline)),
        pavs_latest=values["pavs_latest"],
        refreshed_at=now,
    )


_UPDATED = [f.name for f in ReferralMilestones._meta.concrete_fields if f.name != "referral"]


def milestones_refresh(*, full: bool = False, now: dt.datetime | None = None) -> int:
    """Bring the milestones rollup up to date; return the rows written.

    Incremental by default: the referrals changed (``updated_at``) since the last refresh began, less
    REFRESH_MARGIN, and any referral without a row yet. ``full`` rewrites every row. Safe to run twice at once
    (rows are upserted, each from one consistent read); each chunk of REFRESH_CHUNK referrals commits alone."""
    now = now or timezone.now()
    last = RollupRefresh.objects.filter(name=ROLLUP_NAME).first()
    referrals = Referral.objects.all()
    if not full and last is not None:
        referrals = referrals.filter(Q(updated_at__gte=last.started_at - REFRESH_MARGIN) | Q(milestones__isnull=True))
    written, after = 0, 0
    while True:
        ids = list(referrals.filter(pk__gt=after).order_by("pk").values_list("pk", flat=True)[:REFRESH_CHUNK])
        if not ids:
            break
        rows = [_milestones_row(v, now) for v in _milestone_values(Referral.objects.filter(pk__in=ids))]
        ReferralMilestones.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["referral"], update_fields=_UPDATED
        )
        written += len(rows)
        after = ids[-1]
    RollupRefresh.objects.update_or_create(
        name=ROLLUP_NAME, defaults={"started_at": now, "finished_at": timezone.now(), "rows": written}
    )
    return written


def milestones_refreshed_at() -> dt.datetime | None:
    """When the rollup was last brought up to date (the start of that refresh: nothing older is missing)."""
    return RollupRefresh.objects.filter(name=ROLLUP_NAME).values_list("started_at", flat=True).first()


# --- The selectors ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FunnelFilters:
    """What the overview is narrowed to. Dates are inclusive, on the day the referral was received (UTC)."""

    received_from: dt.date | None = None
    received_to: dt.date | None = None
    clinic_id: int | None = None
    condition_group: str = ""  # a network.ConditionGroup slug
    organization_id: int | None = None  # the program (network.Organization) that accepted the case
    professional_id: int | None = None  # the professional (network.Professional) whose role accepted it


def milestones_filtered(clinic_ids: Collection[int] | None, filters: FunnelFilters) -> QuerySet[ReferralMilestones]:
    """The milestones rows of the referrals of ``clinic_ids`` (None: every clinic) that pass ``filters`` (the
    export and the console's list read the same rows). No join: the rollup carries the clinic."""
    rows = ReferralMilestones.objects.all()
    if clinic_ids is not None:
        rows = rows.filter(clinic_id__in=list(clinic_ids))
    if filters.received_from:
        rows = rows.filter(received_at__gte=_day_start(filters.received_from))
    if filters.received_to:
        rows = rows.filter(received_at__lt=_day_start(filters.received_to + dt.timedelta(days=1)))
    if filters.clinic_id:
        rows = rows.filter(clinic_id=filters.clinic_id)
    if filters.condition_group:
        rows = rows.filter(condition_groups__contains=f",{filters.condition_group},")
    if filters.organization_id:
        rows = rows.filter(organization_id=filters.organization_id)
    if filters.professional_id:
        rows = rows.filter(professional_id=filters.professional_id)
    return rows


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class FunnelStep:
    key: str
    label: str
    count: int
    conversion: float | None  # count / the previous step's count; None for the first step or an empty one
    definition: str


# (key, label, definition): the funnel's steps in order.
FUNNEL_STEPS = (
    ("received", "Received", "Referrals the hub stored, by the day they arrived."),
    ("routed", "Routed", "An offer went to a professional (the first offer; a directed referral's counts too)."),
    ("accepted", "Accepted", "A professional accepted an offer (in the portal, over FHIR or by a coordinator)."),
    ("first_session", "First session", "The patient attended a first supervised session."),
    ("active_4w", "Active at 4 weeks", "A session attended in weeks 3-4 after the first (days 14 to 27)."),
    ("completed", "Completed", "The discharge report was sent and the referral Task is completed."),
)
ACCEPT_BUCKETS = (  # (label, upper bound in seconds): the time-to-accept histogram
    ("< 1 h", 3600), ("1-4 h", 4 * 3600), ("4-12 h", 12 * 3600), ("12-24 h", 24 * 3600), ("1-2 d", 48 * 3600),
    ("> 2 d", None),
)


@dataclass(frozen=True)
class Funnel:
    """The funnel for one filtered set. Times in seconds, PAVS in minutes per week, shares in 0..1."""

    steps: list[FunnelStep]
    median_route_seconds: float | None
    median_accept_seconds: float | None
    median_first_session_seconds: float | None
    accept_histogram: list[tuple[str, int]]
    pavs_patients: int  # with a PAVS baseline and at least one check-in
    pavs_median_change: float | None
    pavs_share_gaining: float | None  # gaining at least PAVS_GAIN_MINUTES min/wk
    pavs_share_at_target: float | None  # latest at least PAVS_TARGET_MINUTES min/wk


def funnel_compute(clinic_ids: Collection[int] | None, filters: FunnelFilters) -> Funnel:
    """The funnel's counts, conversions, median times, time-to-accept histogram and PAVS change, in one query."""
    rows = milestones_filtered(clinic_ids, filters)
    paired = Q(pavs_baseline__isnull=False, pavs_latest__isnull=False)
    buckets, lower = {}, 0
    for n, (_, upper) in enumerate(ACCEPT_BUCKETS):
        bound = Q(accept_seconds__gte=lower) & (Q(accept_seconds__lt=upper) if upper else Q())
        buckets[f"bucket_{n}"] = Count("pk", filter=bound)
        lower = upper
    figures = rows.aggregate(
        received=Count("pk"),
        routed=Count("routed_at"),
        accepted=Count("accepted_at"),
        first_session=Count("first_session_at"),
        active_4w=Count("pk", filter=Q(active_at_4_weeks=True)),
        completed=Count("completed_at"),
        route=Median("route_seconds"),
        accept=Median("accept_seconds"),
        first=Median("first_session_seconds"),
        pavs_patients=Count("pk", filter=paired),
        change_median=Median(F("pavs_latest") - F("pavs_baseline")),
        pavs_gaining=Count("pk", filter=paired & Q(pavs_latest__gte=F("pavs_baseline") + PAVS_GAIN_MINUTES)),
        pavs_target=Count("pk", filter=paired & Q(pavs_latest__gte=PAVS_TARGET_MINUTES)),
        **buckets,
    )
    steps, previous = [], None
    for key, label, definition in FUNNEL_STEPS:
        count = figures[key]
        conversion = None if not previous else count / previous
        steps.append(FunnelStep(key=key, label=label, count=count, conversion=conversion, definition=definition))
        previous = count
    patients = figures["pavs_patients"]
    return Funnel(
        steps=steps,
        median_route_seconds=figures["route"],
        median_accept_seconds=figures["accept"],
        median_first_session_seconds=figures["first"],
        accept_histogram=[(label, figures[f"bucket_{n}"]) for n, (label, _) in enumerate(ACCEPT_BUCKETS)],
        pavs_patients=patients,
        pavs_median_change=figures["change_median"],
        pavs_share_gaining=figures["pavs_gaining"] / patients if patients else None,
        pavs_share_at_target=figures["pavs_target"] / patients if patients else None,
    )


def referrals_per_week(clinic_ids: Collection[int] | None, filters: FunnelFilters) -> list[tuple[dt.date, int]]:
    """[(Monday of the week (UTC), referrals received that week)], oldest first; weeks without any left out."""
    weeks = (
        milestones_filtered(clinic_ids, filters).values("received_week").annotate(n=Count("pk")).order_by("received_week")
    )
    return [(w["received_week"], w["n"]) for w in weeks]


PAVS_BIN_MINUTES, PAVS_BINS = 30, 10  # 0-29, 30-59, ... 270-299, and 300+ min/wk


def pavs_grid(clinic_ids: Collection[int] | None, filters: FunnelFilters) -> dict[tuple[int, int], int]:
    """PAVS baseline against latest, binned: {(baseline bin, latest bin): patients}, each bin PAVS_BIN_MINUTES
    wide and the last (PAVS_BINS) open-ended."""
    cells = (
        milestones_filtered(clinic_ids, filters)
        .filter(pavs_baseline__isnull=False, pavs_latest__isnull=False)
        .annotate(
            b=Least(F("pavs_baseline") / PAVS_BIN_MINUTES, PAVS_BINS), l=Least(F("pavs_latest") / PAVS_BIN_MINUTES, PAVS_BINS)
        )
        .values("b", "l")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return {(int(c["b"]), int(c["l"])): c["n"] for c in cells}
