"""The referral and its lifecycle: the truth that the FHIR Task is rendered from; the offers of it to the
network's professionals, and the routing decisions behind them."""

import datetime as dt
import uuid

from django.db import models
from django.db.models import Q


class Clinic(models.Model):
    """A referring practice. Its EHR clients see only its referrals."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.name


class ReferralStatus(models.TextChoices):
    """The PA Task Fulfillment Status value set: FHIR task-status without `received` and `ready`."""

    DRAFT = "draft"  # not yet released by the clinic; rarely used
    REQUESTED = "requested"  # released; waiting for a professional to take it
    ACCEPTED = "accepted"  # a professional agreed to deliver it
    REJECTED = "rejected"  # declined before any work; terminal, needs a reason
    CANCELLED = "cancelled"  # the clinic withdrew the authorization; terminal, needs a reason
    IN_PROGRESS = "in-progress"  # the first session happened
    ON_HOLD = "on-hold"  # paused (injury, holiday); needs a reason
    FAILED = "failed"  # started but could not be finished; terminal, needs a reason
    COMPLETED = "completed"  # delivered; terminal
    ENTERED_IN_ERROR = "entered-in-error"  # should never have existed; terminal


TERMINAL_STATUSES = frozenset(
    {
        ReferralStatus.REJECTED,
        ReferralStatus.CANCELLED,
        ReferralStatus.FAILED,
        ReferralStatus.COMPLETED,
        ReferralStatus.ENTERED_IN_ERROR,
    }
)
OPEN_STATUSES = frozenset(set(ReferralStatus) - TERMINAL_STATUSES)
# pa-taskrm-1: a statusReason exactly for these.
REASON_REQUIRED_STATUSES = frozenset(
    {ReferralStatus.REJECTED, ReferralStatus.ON_HOLD, ReferralStatus.CANCELLED, ReferralStatus.FAILED}
)

# The PA IG's state machine (task-states diagram), plus requested → in-progress, which its Scenario 3 uses.
# entered-in-error is reachable from anywhere; a terminal status is never left.
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    ReferralStatus.DRAFT: frozenset({ReferralStatus.REQUESTED, ReferralStatus.CANCELLED}),
    ReferralStatus.REQUESTED: frozenset(
        {ReferralStatus.ACCEPTED, ReferralStatus.REJECTED, ReferralStatus.IN_PROGRESS, ReferralStatus.CANCELLED}
    ),
    ReferralStatus.ACCEPTED: frozenset(
        {ReferralStatus.IN_PROGRESS, ReferralStatus.COMPLETED, ReferralStatus.FAILED, ReferralStatus.CANCELLED}
    ),
    ReferralStatus.IN_PROGRESS: frozenset(
        {ReferralStatus.ON_HOLD, ReferralStatus.COMPLETED, ReferralStatus.FAILED, ReferralStatus.CANCELLED}
    ),
    ReferralStatus.ON_HOLD: frozenset({ReferralStatus.IN_PROGRESS, ReferralStatus.FAILED, ReferralStatus.CANCELLED}),
}


class BusinessStatus(models.TextChoices):
    """The hub's finer steps, carried in Task.businessStatus (code system published in the CapabilityStatement)."""

    # Notify and pull: the clinic sent only the Task; the hub fetches the ServiceRequest, Patient, Conditions and
    # PAVS Observations from the clinic's FHIR server before it routes. Nothing is routed while this holds.
    WAITING_FOR_DATA = "waiting-for-data", "Waiting for the referral's data from the clinic's FHIR server"
    RECEIVED = "received", "Referral received"
    ROUTING = "routing", "Finding an exercise professional"
    DIRECTED = "directed", "Sent to the professional the clinic named"
    OFFERED = "offered", "Offered to an exercise professional"
    AWAITING_MANUAL_ROUTING = "awaiting-manual-routing", "Waiting for a coordinator to route it"
    ACCEPTED = "accepted", "Accepted by an exercise professional"
    FIRST_SESSION_SCHEDULED = "first-session-scheduled", "First session scheduled"
    FIRST_SESSION_ATTENDED = "first-session-attended", "First session attended"
    NO_SHOW = "no-show", "Patient did not attend"
    PROGRESS_REPORT_SENT = "progress-report-sent", "Progress report sent"
    DISCHARGE_REPORT_SENT = "discharge-report-sent", "Discharge report sent"
    CANCELLED = "cancelled", "Cancelled by the clinic"
    CLOSED = "closed", "Closed"


class Referral(models.Model):
    """One exercise referral from one clinic: what was asked, for whom, and where it stands."""

    # Not indexed alone: the (clinic, status) index leads with it. Every index here is written at each intake.
    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="referrals", db_index=False)
    status = models.CharField(max_length=20, choices=ReferralStatus.choices, default=ReferralStatus.REQUESTED)
    status_reason = models.TextField(blank=True)
    business_status = models.CharField(max_length=40, choices=BusinessStatus.choices, default=BusinessStatus.RECEIVED)
    # What the physician reads for the business status (Task.businessStatus.text) when the step says more than its
    # label: while the hub finds someone, the routing decision's gist (who, and why). Empty: the label.
    business_status_text = models.TextField(blank=True)
    priority = models.CharField(max_length=10, default="routine")

    # Who is responsible for it: "Organization/hub" asks the hub to route it; a network member's reference
    # makes it a directed referral.
    # Strings copied from the FHIR referral are TextFields (no index needs a bound): whatever length FHIR allows
    # and intake takes (fhir_bridge/limits.py), the referral is stored, the same on SQLite and PostgreSQL.
    owner_reference = models.TextField()
    owner_display = models.TextField(blank=True)

    patient_name = models.TextField(blank=True)
    patient_birth_date = models.CharField(max_length=10, blank=True)  # FHIR date: may be partial ("1960")
    patient_gender = models.CharField(max_length=10, blank=True)
    patient_postal_code = models.CharField(max_length=10, blank=True)

    service_system = models.TextField(blank=True)
    service_code = models.TextField(blank=True)
    service_display = models.TextField(blank=True)
    requester_reference = models.TextField(blank=True)
    requester_display = models.TextField(blank=True)
    performer_reference = models.TextField(blank=True)

    authored_on = models.DateTimeField(null=True, blank=True)
    occurrence_start = models.DateField(null=True, blank=True)
    occurrence_end = models.DateField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The case's version: one more with every change (referral_update, and each record of referrals/records.py).
    # A form carries the version it was built from, and a write from a stale form is refused (compare-and-set).
    version = models.PositiveIntegerField(default=1)

    class Meta:
        indexes = [models.Index(fields=["clinic", "status"]), models.Index(fields=["business_status"])]
        constraints = [
            models.CheckConstraint(
                name="referral_reason_iff_reason_status",
                # sorted: a frozenset's order changes between processes, and would make a new migration each time
                condition=Q(status__in=sorted(REASON_REQUIRED_STATUSES), status_reason__gt="")
                | (~Q(status__in=sorted(REASON_REQUIRED_STATUSES)) & Q(status_reason="")),
            )
        ]

    def __str__(self):
        return f"Referral {self.pk} ({self.status})"

    @property
    def is_directed(self) -> bool:
        return self.owner_reference != HUB_ORGANIZATION_REFERENCE

    def can_move_to(self, status: str) -> bool:
        if status == ReferralStatus.ENTERED_IN_ERROR:
            return self.status != ReferralStatus.ENTERED_IN_ERROR
        return status in ALLOWED_TRANSITIONS.get(self.status, frozenset())


# PAVS (LOINC): days per week, minutes per day and minutes per week of moderate to vigorous activity.
PAVS_DAYS_PER_WEEK, PAVS_MINUTES_PER_DAY, PAVS_MINUTES_PER_WEEK = "89555-7", "68516-4", "82290-8"


def _pavs_values(pavs_baseline: list[dict]) -> dict:
    return {m.get("code"): m.get("value") for m in pavs_baseline if isinstance(m.get("value"), (int, float))}


def pavs_minutes_per_week(pavs_baseline: list[dict]) -> float | None:
    """Minutes per week of moderate to vigorous activity from a PAVS baseline (ClinicalFacts.pavs_baseline): the
    82290-8 value, else days per week x minutes per day; None when it says neither."""
    values = _pavs_values(pavs_baseline)
    per_week = values.get(PAVS_MINUTES_PER_WEEK)
    days, per_day = values.get(PAVS_DAYS_PER_WEEK), values.get(PAVS_MINUTES_PER_DAY)
    if per_week is None and days is not None and per_day is not None:
        per_week = days * per_day
    return per_week


def currently_active_from_pavs(pavs_baseline: list[dict]) -> bool | None:
    """ACSM's "currently active" (30 min of moderate activity on 3 or more days a week, Riebe et al. 2015) read
    from a PAVS baseline, with 90 min/wk as the weekly floor; None when the baseline says neither days nor
    minutes."""
    days = _pavs_values(pavs_baseline).get(PAVS_DAYS_PER_WEEK)
    per_week = pavs_minutes_per_week(pavs_baseline)
    if days is None and per_week is None:
        return None
    if days is not None and days < 3:
        return False
    return per_week is not None and per_week >= 90


class ClinicalFacts(models.Model):
    """What the referral says of the patient's health, goals and place, as the domain keeps it.

    Mapped from FHIR once, at intake, by the bridge (fhir_bridge/clinical_facts.py says where each fact sits in
    a PA referral), or given by whoever creates a referral through ``referrals.services.referral_create``.
    Routing, rerouting, manual routing and every later reader (the therapist's case, the reports) read this
    record; the stored FHIR is the verbatim copy for serving and provenance, never the source of a fact.

    Codes only: free text is never parsed into a fact. Condition codes are kept as sent; their condition groups
    are resolved from the editable code map (network.ConditionCodeMap) each time routing reads them, so that a
    code mapped later frees a referral that waited on it.
    """

    class Clearance(models.TextChoices):
        """The physician's medical clearance: the highest intensity the patient may exercise at (ACSM)."""

        LIGHT = "light"  # < 3 METs, < 40 % heart-rate reserve
        MODERATE = "moderate"  # 3-6 METs, 40-59 % HRR
        VIGOROUS = "vigorous"  # >= 6 METs, >= 60 % HRR

    class LocationSource(models.TextChoices):
        GEOLOCATION = "geolocation"  # the coordinates the EHR sent (FHIR geolocation extension)
        POSTAL_CODE = "postal-code"  # the centroid of the patient's US ZIP code
        NONE = "", "Not placed"  # neither: routing hands the referral to a coordinator

    referral = models.OneToOneField(Referral, on_delete=models.CASCADE, primary_key=True, related_name="facts")
    # [{"system", "code", "display"}] (or [{"text"}] for a concept sent without codes): the ServiceRequest's
    # reasonCode and the code of each Condition it gives as reason, in that order.
    condition_codes = models.JSONField(default=list, blank=True)
    # As sent; "" when the referral states none (routing then assumes light). A value outside Clearance is kept
    # so that routing can flag it rather than guess.
    clearance = models.TextField(blank=True)
    precautions = models.JSONField(default=list, blank=True)  # codes: "hr-cap", "no-valsalva", "supervised-only"
    # ACSM pre-participation screening (Riebe et al., MSSE 2015): None where the referral does not say.
    currently_active = models.BooleanField(null=True, blank=True)  # 30 min moderate, 3 d/wk, for 3 months
    known_disease = models.BooleanField(null=True, blank=True)  # known cardiovascular, metabolic or renal disease
    symptoms = models.BooleanField(null=True, blank=True)  # signs or symptoms suggestive of such disease
    delivery_modes = models.JSONField(default=list, blank=True)  # "in-person", "virtual", "group", "virtual-ok"
    # Where the patient is, in WGS84 degrees, and how it was found; both null when not placed.
    latitude = models.FloatField(null=True, blank=True)
    longitude = models.FloatField(null=True, blank=True)
    location_source = models.CharField(max_length=20, choices=LocationSource.choices, blank=True)
    state = models.CharField(max_length=2, blank=True)  # USPS code: virtual delivery stays within it (licensure)
    required_language = models.TextField(blank=True)  # BCP 47; a professional must speak it
    preferred_languages = models.JSONField(default=list, blank=True)  # BCP 47 tags; they only count in the score
    payer = models.CharField(max_length=64, blank=True)  # the hub's payer identifier ("medicare"); scored only
    # The PAVS baseline (Physical Activity Vital Sign, LOINC 89555-7 d/wk, 68516-4 min/d, 82290-8 min/wk,
    # 82291-6 strength d/wk): [{"code", "value", "unit" (UCUM), "date" (FHIR date or dateTime, "" if none)}].
    pavs_baseline = models.JSONField(default=list, blank=True)
    # The physician's goals (PA Goal): [{"text", "measure": {"system", "code", "display"} | None,
    # "target": {"value", "unit", "comparator"} | None, "due": FHIR date | ""}].
    goals = models.JSONField(default=list, blank=True)

    class Meta:
        verbose_name_plural = "clinical facts"

    def __str__(self):
        return f"Clinical facts of referral {self.referral_id}"

    def pavs_value(self, code: str) -> float | None:
        """The baseline's value for one PAVS LOINC code, or None."""
        return next((m["value"] for m in self.pavs_baseline if m.get("code") == code), None)

    def pavs_minutes_per_week(self) -> float | None:
        """The baseline's minutes per week (pavs_minutes_per_week): as sent, else days x minutes per day."""
        return pavs_minutes_per_week(self.pavs_baseline)

    def goal_minutes_per_week(self) -> float | None:
        """The target of the first goal measured in PAVS minutes per week (LOINC 82290-8, or a target in
        min/wk), or None: the goal the dose and the reports' PAVS line are held against."""
        for g in self.goals:
            target, measure = g.get("target") or {}, g.get("measure") or {}
            if target.get("unit") == "min/wk" or measure.get("code") == "82290-8":
                value = target.get("value")
                return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        return None


class ReportKind(models.TextChoices):
    """What a report to the physician is (the PA Intervention Report), and so what it tells."""

    PROGRESS = "progress", "Progress report"  # every few weeks while the case runs
    DISCHARGE = "discharge", "Discharge report"  # the last one: the period ended or the case was closed
    DID_NOT_START = "did-not-start", "Did not start"  # accepted, but no session was ever attended
    NO_UPDATE = "no-update", "No update"  # a progress report was due and nothing was recorded in its period


class ReportStatus(models.TextChoices):
    """Where one report stands. Only signed and sent-unsigned have gone to the physician."""

    DRAFT = "draft"  # drafted by the hub from the record; the therapist reviews, edits and signs it
    SIGNED = "signed"  # signed by the therapist and sent (DiagnosticReport final); final
    SENT_UNSIGNED = "sent-unsigned"  # past due unsigned: sent as preliminary, "not reviewed by the therapist"
    SUPERSEDED = "superseded"  # replaced by a fresher draft of the same period before it was signed; final


SENT_REPORT_STATUSES = frozenset({ReportStatus.SIGNED, ReportStatus.SENT_UNSIGNED})
# draft -> signed | sent-unsigned | superseded; sent-unsigned -> signed (sent again, as final) | superseded.
REPORT_TRANSITIONS: dict[str, frozenset[str]] = {
    ReportStatus.DRAFT: frozenset({ReportStatus.SIGNED, ReportStatus.SENT_UNSIGNED, ReportStatus.SUPERSEDED}),
    ReportStatus.SENT_UNSIGNED: frozenset({ReportStatus.SIGNED, ReportStatus.SUPERSEDED}),
}


class Report(models.Model):
    """One report to the referring physician for one period of the case (referrals/reports.py drafts it).

    ``draft`` holds the figures as drafted from the record (referrals.reports.ReportDraft.as_json()); the four
    ``answer_*`` texts start as the hub's wording and are what the therapist edits. ``pdf`` is the document as it
    was last sent, kept byte for byte. ``version`` rises with every change: an edit or a signature made from an
    older version is refused (DomainError STALE)."""

    referral = models.ForeignKey(Referral, on_delete=models.CASCADE, related_name="reports")
    # Stable and opaque: the FHIR bridge names the DiagnosticReport and its PDF's Binary after it.
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=20, choices=ReportKind.choices)
    status = models.CharField(max_length=20, choices=ReportStatus.choices, default=ReportStatus.DRAFT)
    period_start = models.DateField()
    period_end = models.DateField()  # inclusive
    due_at = models.DateTimeField()
    draft = models.JSONField(default=dict)
    # The four questions of the PA IG, in brief: addressed? what remains? participation? plan and next steps?
    answer_goals = models.TextField(blank=True)
    answer_barriers = models.TextField(blank=True)
    answer_participation = models.TextField(blank=True)
    answer_plan = models.TextField(blank=True)
    # For a discharge: what the referral becomes when it is sent (completed | failed, with the reason).
    outcome_status = models.CharField(max_length=20, choices=ReferralStatus.choices, blank=True)
    outcome_reason = models.CharField(max_length=500, blank=True)
    signed_by = models.CharField(max_length=200, blank=True)  # an actor string ("user:<username>")
    signed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)  # last sent (preliminary, then again when signed)
    pdf = models.BinaryField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["period_start", "id"]
        constraints = [
            # One live report per period and kind: the schedule may ask twice (a redelivered task).
            models.UniqueConstraint(
                fields=["referral", "kind", "period_start"],
                condition=~Q(status="superseded"),
                name="report_one_live_per_period",
            ),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.period_start}..{self.period_end} of referral {self.referral_id}"

    @property
    def is_sent(self) -> bool:
        return self.status in SENT_REPORT_STATUSES

    def can_move_to(self, status: str) -> bool:
        return status in REPORT_TRANSITIONS.get(self.status, frozenset())


HUB_ORGANIZATION_ID = "hub"
HUB_ORGANIZATION_REFERENCE = f"Organization/{HUB_ORGANIZATION_ID}"


class ReferralEvent(models.Model):
    """One change to a referral. Written in the same transaction as the change; the audit trail and, later, the
    follow-up engine read it."""

    class Kind(models.TextChoices):
        CREATED = "created"
        STATUS_CHANGED = "status-changed"
        NOTE_ADDED = "note-added"
        # The case records (referrals/records.py); detail names the record ({"session": id}, ...).
        SESSION_SCHEDULED = "session-scheduled"
        SESSION_RECORDED = "session-recorded"
        ASSESSMENT_RECORDED = "assessment-recorded"
        CHECKIN_RECORDED = "checkin-recorded"
        PROGRAM_SET = "program-set"
        # Consumer: the follow-up engine (notifications/) tells the physician at once.
        ADVERSE_EVENT = "adverse-event"
        ADVERSE_EVENT_ACKNOWLEDGED = "adverse-event-acknowledged"

    referral = models.ForeignKey(Referral, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=40, choices=Kind.choices)
    from_status = models.CharField(max_length=20, blank=True)
    to_status = models.CharField(max_length=20, blank=True)
    actor = models.CharField(max_length=200)  # "ehr-client:<client_id>", "hub", "user:<username>"
    detail = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(auto_now_add=True)
    # When the follow-up engine matched it to subscriptions (the outbox's fan-out); null until then.
    notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # Consumer: notifications.outbox.events_fan_out (Celery tasks notifications.fan_out and .sweep). Only
            # the events not yet fanned out are indexed: a handful at any time.
            models.Index(fields=["id"], condition=Q(notified_at__isnull=True), name="referral_event_unnotified"),
        ]


class ReferralNote(models.Model):
    """A note on the referral (Task.note): from the clinic, the hub or the professional."""

    referral = models.ForeignKey(Referral, on_delete=models.CASCADE, related_name="notes")
    author_reference = models.TextField()
    author_display = models.TextField(blank=True)
    text = models.TextField()
    time = models.DateTimeField()

    class Meta:
        ordering = ["time", "id"]


class OfferStatus(models.TextChoices):
    """An offer of one referral to one role (rendered as a child Task of the referral Task)."""

    REQUESTED = "requested"  # sent; waiting for the professional to answer before the deadline
    ACCEPTED = "accepted"  # the professional took the case; final
    REJECTED = "rejected"  # the professional declined; final, carries a reason
    EXPIRED = "expired"  # no answer before the deadline; final
    CANCELLED = "cancelled"  # withdrawn by the hub (the referral was routed by hand, or withdrawn); final


# An offer that holds a slot of its role's capacity (an accepted one only while its referral is open).
LIVE_OFFER_STATUSES = frozenset({OfferStatus.REQUESTED, OfferStatus.ACCEPTED})
FINAL_OFFER_STATUSES = frozenset(set(OfferStatus) - {OfferStatus.REQUESTED})


class RoutingDecision(models.Model):
    """One routing run for one referral: who was considered, who was excluded by what, and the scores.

    Written in the same transaction as the offer it led to (or the hand-over to manual routing)."""

    class Trigger(models.TextChoices):
        INITIAL = "initial"  # the referral came in
        DECLINED = "declined"  # the previous offer was declined
        EXPIRED = "expired"  # the previous offer timed out
        MANUAL = "manual"  # an admin chose the role
        RETRY = "retry"  # an admin asked for a new automatic run

    class Outcome(models.TextChoices):
        OFFERED = "offered"  # an offer went to the chosen role
        MANUAL = "manual"  # nobody eligible is left: waiting for a coordinator
        UNPLACED = "unplaced"  # the patient's address could not be placed: waiting for a coordinator

    referral = models.ForeignKey(
        Referral, on_delete=models.CASCADE, related_name="routing_decisions"
    )
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    chosen_role = models.ForeignKey(
        "network.ProfessionalRole", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor = models.CharField(max_length=200, default="hub")
    # The plain facts the run used (referrals.routing.PatientFacts), so that a re-run after a decline uses them
    # again.
    patient_facts = models.JSONField(default=dict)
    location_source = models.CharField(max_length=20, blank=True)  # "geolocation", "postal-code" or ""
    condition_groups = models.JSONField(default=list)  # slugs
    mapped_codes = models.JSONField(default=list)  # [{system, code, display, groups: [slug]}]
    unmapped_codes = models.JSONField(default=list)  # [{system, code, display}]: kept, shown, flagged
    risk = models.JSONField(default=dict)  # referrals.risk.RiskProfile.as_dict()
    flags = models.JSONField(default=list)  # ["unmapped-condition-code", "address-not-placed", ...]
    # [{role, name, directed, delivery, distance_km, excluded: [{constraint, detail}], score, components,
    # rank}]
    candidates = models.JSONField(default=list)
    summary = models.JSONField(
        default=dict
    )  # counts: considered, eligible, excluded by constraint, pool bounds
    overrides = models.JSONField(default=list)  # manual routing: the hard constraints an admin overrode
    override_reason = models.TextField(blank=True)
    gist = models.CharField(
        max_length=500
    )  # one line for the physician (Task.businessStatus.text, a Task note)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["referral", "-id"], name="routing_decision_latest")]

    def __str__(self):
        return f"Routing of referral {self.referral_id} ({self.trigger} → {self.outcome})"


class Offer(models.Model):
    """A referral offered to one role, with a deadline. At most one live offer per referral."""

    class Delivery(models.TextChoices):
        IN_PERSON = "in-person"
        VIRTUAL = "virtual"

    referral = models.ForeignKey(Referral, on_delete=models.PROTECT, related_name="offers")
    role = models.ForeignKey("network.ProfessionalRole", on_delete=models.PROTECT, related_name="offers")
    # The role's organization when the offer was made (a role may move on; the practice that took the case
    # stays). Routing's continuity reads it: "this clinic's patients went to this practice before".
    organization = models.ForeignKey("network.Organization", on_delete=models.PROTECT, related_name="+")
    decision = models.ForeignKey(RoutingDecision, on_delete=models.PROTECT, related_name="offers")
    status = models.CharField(max_length=10, choices=OfferStatus.choices, default=OfferStatus.REQUESTED)
    delivery = models.CharField(max_length=10, choices=Delivery.choices, default=Delivery.IN_PERSON)
    created_at = models.DateTimeField()
    deadline = models.DateTimeField()
    responded_at = models.DateTimeField(null=True, blank=True)
    # responded_at - created_at, kept as a number so that routing can average it in plain SQL on any database.
    response_seconds = models.PositiveIntegerField(null=True, blank=True)
    decline_reason = models.CharField(max_length=500, blank=True)
    cancel_reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # The last line of defence against routing one referral twice at once.
            models.UniqueConstraint(
                fields=["referral"],
                condition=Q(status__in=["requested", "accepted"]),
                name="offer_one_live_per_referral",
            ),
            models.CheckConstraint(
                name="offer_decline_reason_iff_rejected",
                condition=Q(status="rejected", decline_reason__gt="")
                | (~Q(status="rejected") & Q(decline_reason="")),
            ),
        ]
        indexes = [
            # Capacity: the live offers of one role (referrals/selectors.py::active_cases_sql).
            models.Index(fields=["role", "status"], name="offer_role_status"),
            # Continuity: the accepted offers of a practice (referrals/routing.py::_history).
            models.Index(fields=["organization", "status"], name="offer_organization_status"),
            # The console's "accepted, no first session" queue: accepted offers, oldest answer first
            # (console/queues.py::no_first_session_queue walks it and stops at the page's end).
            models.Index(fields=["responded_at", "id"], condition=Q(status="accepted"),
                         name="offer_accepted_responded"),
        ]

    def __str__(self):
        return f"Offer {self.pk} of referral {self.referral_id} to {self.role_id} ({self.status})"

    def can_answer(self) -> bool:
        return self.status == OfferStatus.REQUESTED

    def is_due(self, now: dt.datetime) -> bool:
        return self.status == OfferStatus.REQUESTED and self.deadline <= now


class OfferEvent(models.Model):
    """One change to an offer, written in the same transaction as the change."""

    offer = models.ForeignKey(Offer, on_delete=models.CASCADE, related_name="events")
    from_status = models.CharField(max_length=10, blank=True)
    to_status = models.CharField(max_length=10)
    actor = models.CharField(max_length=200)
    detail = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField()

    class Meta:
        ordering = ["id"]


# --- The case records: what the exercise professional records once the case is theirs ------------------------
#
# One row per fact, each linked to its referral, with who recorded it (an actor string, as ReferralEvent.actor:
# "user:<username>", "provider-client:<client_id>") and when. Written only through referrals/records.py.


class Measure(models.TextChoices):
    """The measures the hub records (Measurement.code). MEASURE_UNITS gives each one's UCUM unit."""

    RESTING_HEART_RATE = "resting-heart-rate", "Resting heart rate"
    BP_SYSTOLIC = "bp-systolic", "Systolic blood pressure"
    BP_DIASTOLIC = "bp-diastolic", "Diastolic blood pressure"
    HEIGHT = "height", "Height"
    WEIGHT = "weight", "Body weight"
    BMI = "bmi", "Body mass index"
    WAIST = "waist", "Waist circumference"
    SIX_MINUTE_WALK = "six-minute-walk", "6-minute walk distance"
    CHAIR_STAND_30S = "chair-stand-30s", "30-second chair stand"
    TIMED_UP_AND_GO = "timed-up-and-go", "Timed up-and-go"
    SINGLE_LEG_STANCE = "single-leg-stance", "Single-leg stance"
    GRIP_STRENGTH = "grip-strength", "Grip strength"
    PROMIS_PF = "promis-pf", "PROMIS physical function (T-score)"
    PHQ2 = "phq2", "PHQ-2 total score"


# The one UCUM unit each measure is recorded in (a value in another unit is refused, never converted).
MEASURE_UNITS: dict[str, str] = {
    Measure.RESTING_HEART_RATE: "/min",
    Measure.BP_SYSTOLIC: "mm[Hg]",
    Measure.BP_DIASTOLIC: "mm[Hg]",
    Measure.HEIGHT: "cm",
    Measure.WEIGHT: "kg",
    Measure.BMI: "kg/m2",
    Measure.WAIST: "cm",
    Measure.SIX_MINUTE_WALK: "m",
    Measure.CHAIR_STAND_30S: "{#}",  # stands in 30 s
    Measure.TIMED_UP_AND_GO: "s",
    Measure.SINGLE_LEG_STANCE: "s",
    Measure.GRIP_STRENGTH: "kg",
    Measure.PROMIS_PF: "{T-score}",
    Measure.PHQ2: "{score}",
}
# Plausible ranges: outside them the value is a typo (a height in metres, a weight in pounds), refused.
MEASURE_RANGES: dict[str, tuple[float, float]] = {
    Measure.RESTING_HEART_RATE: (20, 250),
    Measure.BP_SYSTOLIC: (50, 300),
    Measure.BP_DIASTOLIC: (20, 200),
    Measure.HEIGHT: (50, 250),
    Measure.WEIGHT: (20, 400),
    Measure.BMI: (8, 100),
    Measure.WAIST: (30, 250),
    Measure.SIX_MINUTE_WALK: (0, 1200),
    Measure.CHAIR_STAND_30S: (0, 60),
    Measure.TIMED_UP_AND_GO: (1, 300),
    Measure.SINGLE_LEG_STANCE: (0, 300),
    Measure.GRIP_STRENGTH: (0, 120),
    Measure.PROMIS_PF: (10, 90),
    Measure.PHQ2: (0, 6),
}


class Assessment(models.Model):
    """A visit's header: when, and which kind of assessment. Its Measurements hang off it."""

    class Kind(models.TextChoices):
        STATIC = "static"  # resting heart rate, blood pressure, height, weight, BMI, waist
        DYNAMIC = "dynamic"  # 6-minute walk, chair stand, timed up-and-go, single-leg stance, grip strength
        PROM = "prom"  # patient-reported outcomes: PROMIS physical function, PHQ-2

    referral = models.ForeignKey(Referral, on_delete=models.CASCADE, related_name="assessments")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    assessed_at = models.DateTimeField()
    notes = models.TextField(blank=True)
    recorded_by = models.CharField(max_length=200)
    recorded_at = models.DateTimeField()

    class Meta:
        ordering = ["assessed_at", "id"]


class Measurement(models.Model):
    """One measure of one assessment (or of a session)."""

    referral = models.ForeignKey(Referral, on_delete=models.CASCADE, related_name="measurements")
    assessment = models.ForeignKey(
        Assessment, on_delete=models.CASCADE, null=True, blank=True, related_name="measurements"
    )
    session = models.ForeignKey("Session", on_delete=models.CASCADE, null=True, blank=True, related_name="measurements")
    code = models.CharField(max_length=30, choices=Measure.choices)
    value = models.FloatField()
    unit = models.CharField(max_length=20)  # UCUM, MEASURE_UNITS[code]
    measured_at = models.DateTimeField()
    recorded_by = models.CharField(max_length=200)
    recorded_at = models.DateTimeField()

    class Meta:
        ordering = ["measured_at", "id"]
        indexes = [models.Index(fields=["referral", "code"], name="measurement_referral_code")]


class ComponentKind(models.TextChoices):
    """The FITT components of an exercise program (ACSM)."""

    AEROBIC = "aerobic"
    RESISTANCE = "resistance"
    FLEXIBILITY = "flexibility"
    BALANCE = "balance"


class ExerciseProgram(models.Model):
    """One version of a case's exercise program. Setting a program writes a new version and marks it current;
    the old ones stay, so that what was prescribed when is kept."""

    referral = models.ForeignKey(Referral, on_delete=models.CASCADE, related_name="programs")
    version = models.PositiveIntegerField()
    is_current = models.BooleanField(default=True)
    starts_on = models.DateField()
    ends_on = models.DateField(null=True, blank=True)
    notes = models.TextField(blank=True)
    recorded_by = models.CharField(max_length=200)
    recorded_at = models.DateTimeField()

    class Meta:
        ordering = ["version"]
        constraints = [
            models.UniqueConstraint(fields=["referral", "version"], name="program_version_unique"),
            models.UniqueConstraint(fields=["referral"], condition=Q(is_current=True), name="program_one_current"),
        ]


class ProgramComponent(models.Model):
    """FITT for one component of a program: frequency, intensity, time, type; and its progressions."""

    class Intensity(models.TextChoices):
        HR_RANGE = "hr-range"  # beats per minute, low-high
        RPE = "rpe"  # Borg CR10 (0-10), low-high
        PCT_1RM = "pct-1rm"  # percent of one-repetition maximum, low-high

    program = models.ForeignKey(ExerciseProgram, on_delete=models.CASCADE, related_name="components")
    kind = models.CharField(max_length=12, choices=ComponentKind.choices)
    frequency_per_week = models.PositiveSmallIntegerField()
    intensity_kind = models.CharField(max_length=10, choices=Intensity.choices, blank=True)
    intensity_low = models.FloatField(null=True, blank=True)
    intensity_high = models.FloatField(null=True, blank=True)
    minutes = models.PositiveSmallIntegerField()  # per occasion
    type = models.CharField(max_length=200, blank=True)  # "treadmill walk", "leg press", ...
    progressions = models.JSONField(default=list, blank=True)  # [{"date": ISO date, "note": str}]

    class Meta:
        ordering = ["id"]


class Attendance(models.TextChoices):
    SCHEDULED = "scheduled"  # booked, not yet happened
    ATTENDED = "attended"
    NO_SHOW = "no-show"  # the patient did not come, without notice
    CANCELLED = "cancelled"  # called off beforehand (by either side)


class Session(models.Model):
    """One supervised session, scheduled and/or as it happened."""

    referral = models.ForeignKey(Referral, on_delete=models.CASCADE, related_name="sessions")
    starts_at = models.DateTimeField()
    attendance = models.CharField(max_length=10, choices=Attendance.choices, default=Attendance.SCHEDULED)
    duration_minutes = models.PositiveSmallIntegerField(null=True, blank=True)
    hr_average = models.PositiveSmallIntegerField(null=True, blank=True)  # beats per minute
    hr_peak = models.PositiveSmallIntegerField(null=True, blank=True)
    rpe = models.PositiveSmallIntegerField(null=True, blank=True)  # Borg CR10, 0-10
    notes = models.TextField(blank=True)
    recorded_by = models.CharField(max_length=200)
    recorded_at = models.DateTimeField()

    class Meta:
        ordering = ["starts_at", "id"]
        indexes = [models.Index(fields=["referral", "starts_at"], name="session_referral_starts")]


class SessionComponent(models.Model):
    """The work done on one component in one session."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="components")
    kind = models.CharField(max_length=12, choices=ComponentKind.choices)
    minutes = models.PositiveSmallIntegerField(null=True, blank=True)
    sets = models.PositiveSmallIntegerField(null=True, blank=True)
    reps = models.PositiveSmallIntegerField(null=True, blank=True)
    load_kg = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["id"]


class PavsCheckIn(models.Model):
    """The patient's own report, as the Physical Activity Vital Sign asks it. minutes_per_week is always
    days_per_week x minutes_per_day (the service computes it)."""

    referral = models.ForeignKey(Referral, on_delete=models.CASCADE, related_name="checkins")
    date = models.DateField()
    days_per_week = models.PositiveSmallIntegerField()
    minutes_per_day = models.PositiveSmallIntegerField()
    minutes_per_week = models.PositiveIntegerField()
    strength_days_per_week = models.PositiveSmallIntegerField(null=True, blank=True)
    recorded_by = models.CharField(max_length=200)
    recorded_at = models.DateTimeField()

    class Meta:
        ordering = ["date", "id"]


class AdverseEvent(models.Model):
    """An adverse event or red flag during the program. The physician is told at once (the ADVERSE_EVENT
    ReferralEvent), and acknowledges it with a note on the referral Task."""

    class Kind(models.TextChoices):
        CHEST_PAIN = "chest-pain"
        SYNCOPE = "syncope"
        FALL = "fall"
        ABNORMAL_BP = "abnormal-bp"
        ABNORMAL_HR = "abnormal-hr"
        OTHER = "other"

    class Severity(models.TextChoices):
        MILD = "mild"
        MODERATE = "moderate"
        SEVERE = "severe"

    referral = models.ForeignKey(Referral, on_delete=models.CASCADE, related_name="adverse_events")
    occurred_at = models.DateTimeField()
    kind = models.CharField(max_length=12, choices=Kind.choices)
    description = models.TextField(blank=True)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    serious = models.BooleanField(default=False)  # FHIR AdverseEvent.seriousness: serious | non-serious
    action_taken = models.TextField(blank=True)
    put_on_hold = models.BooleanField(default=False)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=200, blank=True)
    recorded_by = models.CharField(max_length=200)
    recorded_at = models.DateTimeField()

    class Meta:
        ordering = ["occurred_at", "id"]


# --- The console's rollup: one row of milestones per referral ------------------------------------------------------


class ReferralMilestones(models.Model):
    """When one referral reached each step of the exercise funnel, derived from the rows above by
    ``referrals.funnel.milestones_refresh`` (a beat task, at most a few minutes behind; never written elsewhere).

    A rollup, not a truth: deleting every row and refreshing gives the same table. The console's overview
    aggregates it in one query instead of joining offers, sessions, reports and check-ins per referral."""

    referral = models.OneToOneField(Referral, on_delete=models.CASCADE, primary_key=True, related_name="milestones")
    # Copied from the referral, so that the console's aggregates scope and group without a join.
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="+", db_index=False)
    received_at = models.DateTimeField()  # Referral.created_at
    received_week = models.DateField()  # the Monday (UTC) of received_at's week
    routed_at = models.DateTimeField(null=True)  # the first offer made
    accepted_at = models.DateTimeField(null=True)  # the accepted offer's answer
    first_session_at = models.DateTimeField(null=True)  # the first attended session's start
    # An attended session 14 to 28 days (weeks 3-4) after the first one.
    active_at_4_weeks = models.BooleanField(default=False)
    completed_at = models.DateTimeField(null=True)  # the discharge report sent, with the referral completed
    # Seconds from received_at, kept as numbers so that a median is plain SQL on any database.
    route_seconds = models.PositiveIntegerField(null=True)
    accept_seconds = models.PositiveIntegerField(null=True)
    first_session_seconds = models.PositiveIntegerField(null=True)
    # The condition groups of the latest routing decision, as ",slug,slug," (a portable LIKE finds one).
    condition_groups = models.TextField(blank=True)
    # Who took the case: the accepted offer's organization (the program) and professional.
    organization = models.ForeignKey("network.Organization", on_delete=models.SET_NULL, null=True, related_name="+")
    professional = models.ForeignKey("network.Professional", on_delete=models.SET_NULL, null=True, related_name="+")
    # PAVS minutes per week (LOINC 82290-8): the referral's baseline, and the latest check-in.
    pavs_baseline = models.PositiveIntegerField(null=True)
    pavs_latest = models.PositiveIntegerField(null=True)
    refreshed_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "referral milestones"
        indexes = [
            # The console's list, newest first (read backwards), for everybody and for one clinic.
            models.Index(fields=["received_at", "referral"], name="milestones_received"),
            models.Index(fields=["clinic", "received_at", "referral"], name="milestones_clinic_received"),
        ]

    def __str__(self):
        return f"Milestones of referral {self.referral_id}"


class RollupRefresh(models.Model):
    """When a rollup was last refreshed (its name: "milestones"); the console shows its age."""

    name = models.CharField(max_length=40, primary_key=True)
    started_at = models.DateTimeField()  # the next incremental refresh starts from here (less a margin)
    finished_at = models.DateTimeField()
    rows = models.PositiveIntegerField(default=0)  # rows written by the last refresh
