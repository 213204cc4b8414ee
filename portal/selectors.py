"""What the portal's pages read, scoped to the signed-in account. Nothing here writes.

Two rules shape every read:
- An account sees only its own: a therapist the offers and cases of the roles of their Professional, a manager
  those of their Organization. Anything else is "not found", never "forbidden", so that ids do not leak.
- Before acceptance, an offer is the least PHI that lets a therapist decide (issue 9): age band, condition
  groups, clearance and precautions, distance, modality, deadline, and why the hub chose them. The patient's
  name, birth date, address, identifiers and contact are never read into an offer card at all, so a template
  cannot show them by mistake.

Each page costs a fixed number of queries, whatever the number of offers or cases (tests/portal count them).
"""

import datetime as dt
import zoneinfo
from dataclasses import dataclass, field

from django.db.models import QuerySet
from django.utils import timezone

from fhir_bridge.models import StoredResource
from fhir_bridge.provider_fhir import age_years
from network.models import Account, ConditionGroup
from referrals import selectors as referral_selectors
from referrals.models import (
    OPEN_STATUSES, Offer, OfferEvent, OfferStatus, Referral, ReferralEvent, Report, ReportStatus,
)

CASES_PER_PAGE = 50


def account_get(*, user) -> Account | None:
    """The portal account of a signed-in user, with what it acts for, or None (staff without one)."""
    if not user.is_authenticated:
        return None
    return (
        Account.objects.select_related("professional", "organization").filter(user_id=user.pk).first()
    )


def _scoped(queryset: QuerySet[Offer], account: Account) -> QuerySet[Offer]:
    if account.role == Account.Role.MANAGER:
        return queryset.filter(organization_id=account.organization_id)
    return queryset.filter(role__professional_id=account.professional_id)


# --- Offers, before acceptance --------------------------------------------------------------------------------


def age_band(birth_date: str, *, today: dt.date) -> str:
    """A ten-year band ("60-69") from a FHIR date that may be partial ("1960", "1960-04"); "90+" above 89 (as
    HIPAA's safe harbour groups them); "unknown" when there is no usable year. Partial dates count from the
    earliest day they allow, so a band is never younger than the patient."""
    age = age_years(birth_date, today)
    if age is None or age < 0:
        return "unknown"
    if age >= 90:
        return "90+"
    if age < 18:
        return "under 18"
    low = age // 10 * 10
    return f"{max(low, 18)}-{low + 9}"


@dataclass(frozen=True)
class OfferCard:
    """One live offer as a therapist may see it before accepting. Deliberately holds no patient identity."""

    id: int
    role_name: str
    age_band: str
    condition_groups: list[str]
    clearance: str
    precautions: list[str]
    distance_km: float | None
    delivery: str
    deadline: dt.datetime
    created_at: dt.datetime
    why: dict = field(default_factory=dict)  # the routing decision's candidate entry for this role: rank, score, parts
    eligible: int | None = None  # how many were eligible in that run
    status: str = OfferStatus.REQUESTED
    time_zone: str = "UTC"  # the offered role's site's (IANA name): the deadline is shown in it


def _group_names() -> dict[str, str]:
    return dict(ConditionGroup.objects.values_list("slug", "name"))


def _card(offer: Offer, *, groups: dict[str, str], today: dt.date) -> OfferCard:
    referral, decision = offer.referral, offer.decision
    facts = getattr(referral, "facts", None)
    entry = next((c for c in decision.candidates if c.get("role_id") == offer.role_id), None) or next(
        (c for c in decision.candidates if c.get("role") == offer.role.fhir_id), {}
    )
    return OfferCard(
        id=offer.pk,
        role_name=str(offer.role.professional) if offer.role.professional_id else offer.role.fhir_id,
        age_band=age_band(referral.patient_birth_date, today=today),
        condition_groups=[groups.get(slug, slug) for slug in decision.condition_groups],
        clearance=(facts.clearance if facts else "") or "light (not stated)",
        precautions=list(facts.precautions) if facts else [],
        distance_km=entry.get("distance_km"),
        delivery=offer.delivery,
        deadline=offer.deadline,
        created_at=offer.created_at,
        why={
            "rank": entry.get("rank"),
            "score": entry.get("score"),
            "components": entry.get("components") or {},
            "directed": entry.get("directed", False),
            "manual": decision.trigger == "manual",
        },
        eligible=decision.summary.get("eligible"),
        status=offer.status,
        time_zone=offer.role.site.time_zone,
    )


def _offer_rows(account: Account) -> QuerySet[Offer]:
    # Only the columns a card needs: the referral's identity columns stay in the database.
    return _scoped(Offer.objects.all(), account).select_related(
        "referral__facts", "decision", "role__professional", "role__site"
    ).only(
        "id", "status", "delivery", "deadline", "created_at", "role_id", "referral_id", "decision_id",
        "referral__patient_birth_date", "referral__status",
        "referral__facts__clearance", "referral__facts__precautions",
        "decision__candidates", "decision__condition_groups", "decision__summary", "decision__trigger",
        "role__fhir_id", "role__professional__given_name", "role__professional__family_name",
        "role__site__time_zone",
    )


def offers_for_account(*, account: Account) -> list[OfferCard]:
    """The account's live (requested) offers, soonest deadline first. Two queries."""
    rows = list(_offer_rows(account).filter(status=OfferStatus.REQUESTED).order_by("deadline", "id"))
    groups = _group_names() if rows else {}
    today = timezone.localdate()
    return [_card(offer, groups=groups, today=today) for offer in rows]


def offer_for_account(*, account: Account, offer_id: int) -> Offer | None:
    """One offer of the account's, in any status, with its role (what the answer services need) and its site
    (whose time zone an answer is shown in)."""
    return _scoped(Offer.objects.select_related("role__professional", "role__site"), account).filter(pk=offer_id).first()


def offer_card(*, account: Account, offer_id: int) -> OfferCard | None:
    offer = _offer_rows(account).filter(pk=offer_id).first()
    if offer is None:
        return None
    return _card(offer, groups=_group_names(), today=timezone.localdate())


@dataclass(frozen=True)
class OfferAnswer:
    """How an offer ended, for whoever comes second: who answered, when, and with what reason."""

    status: str
    actor: str
    at: dt.datetime | None
    reason: str


def offer_answer_get(*, offer: Offer) -> OfferAnswer:
    event = OfferEvent.objects.filter(offer_id=offer.pk).exclude(from_status="").order_by("-id").first()
    offer.refresh_from_db(fields=["status", "decline_reason", "cancel_reason", "responded_at"])
    return OfferAnswer(
        status=offer.status,
        actor=event.actor if event else "",
        at=event.at if event else offer.responded_at,
        reason=offer.decline_reason or offer.cancel_reason,
    )


# --- Cases, after acceptance ----------------------------------------------------------------------------------


def cases_for_account(*, account: Account, open_only: bool = True) -> QuerySet[Offer]:
    """The account's cases as their accepted offers (the offer ties a referral to a role), newest first, with
    the referral and the therapist: one query per page of the list (plus the paginator's count)."""
    rows = _scoped(Offer.objects.filter(status=OfferStatus.ACCEPTED), account)
    if open_only:
        rows = rows.filter(referral__status__in=sorted(OPEN_STATUSES))
    return (
        rows.select_related("referral", "role__professional")
        .only(
            "id", "responded_at", "delivery", "referral_id", "role_id",
            "referral__patient_name", "referral__patient_birth_date", "referral__status",
            "referral__business_status", "referral__service_display", "referral__updated_at",
            "role__fhir_id", "role__professional__given_name", "role__professional__family_name",
        )
        .order_by("-responded_at", "-id")
    )


@dataclass
class CaseView:
    """Everything a case page shows, read in a fixed number of queries."""

    offer: Offer
    referral: Referral
    facts: object | None
    condition_groups: list[str]
    contact: dict  # from the EHR's Patient: {"phone": [...], "email": [...], "address": [...]}
    task_version: int | None
    events: list[ReferralEvent]
    time_zone: zoneinfo.ZoneInfo = zoneinfo.ZoneInfo("UTC")
    # The records (referrals.selectors.case_record and case_dose).
    record: object | None = None
    dose: object | None = None
    reports: list = field(default_factory=list)  # the case's reports to the physician, but the superseded

    @property
    def program(self):
        return getattr(self.record, "program", None)

    @property
    def recent_sessions(self) -> list:
        return list(reversed(self.record.sessions[-10:])) if self.record else []

    @property
    def recent_checkins(self) -> list:
        return list(reversed(self.record.checkins[-5:])) if self.record else []

    @property
    def recent_weeks(self) -> list:
        return list(reversed(self.dose.weeks[-6:])) if self.dose else []


def case_for_account(*, account: Account, referral_id: int) -> Offer | None:
    """The accepted offer through which the account holds this referral, or None (not theirs, or not accepted)."""
    return (
        _scoped(Offer.objects.filter(status=OfferStatus.ACCEPTED), account)
        # What the case page and the case's record show (referrals.selectors.case_record takes them from here).
        .select_related("referral__facts", "referral__clinic", "role__professional", "role__organization",
                        "role__site", "decision")
        .filter(referral_id=referral_id)
        .first()
    )


def _contact(patient: dict | None) -> dict:
    if not patient:
        return {"phone": [], "email": [], "address": []}
    telecom = patient.get("telecom") or []
    lines = []
    for address in patient.get("address") or []:
        parts = [*address.get("line", []), address.get("city", ""), address.get("state", ""), address.get("postalCode", "")]
        lines.append(", ".join(p for p in parts if p))
    return {
        "phone": [t.get("value", "") for t in telecom if t.get("system") in ("phone", "sms")],
        "email": [t.get("value", "") for t in telecom if t.get("system") == "email"],
        "address": lines,
    }


def case_view(*, offer: Offer) -> CaseView:
    """The case behind an accepted offer (from case_for_account, whose reads of the referral, its facts and the
    offer's role and site are used, not repeated): a fixed number of queries, whatever its history."""
    referral = offer.referral
    resources = {
        r.resource_type: r
        for r in StoredResource.objects.filter(referral_id=referral.pk, resource_type__in=["Task", "Patient"]).only(
            "resource_type", "version_id", "content"
        )
    }
    patient = resources.get("Patient")
    task = resources.get("Task")
    groups = _group_names()
    time_zone = case_time_zone(referral=referral, offer=offer)
    record = referral_selectors.case_record(referral, offer=offer)
    return CaseView(
        offer=offer,
        referral=referral,
        facts=getattr(referral, "facts", None),
        condition_groups=[groups.get(slug, slug) for slug in offer.decision.condition_groups],
        contact=_contact(patient.content if patient else None),
        task_version=task.version_id if task else None,
        events=list(ReferralEvent.objects.filter(referral_id=referral.pk).order_by("-id")[:20]),
        time_zone=time_zone,
        record=record,
        dose=referral_selectors.case_dose(referral, time_zone, record=record),
        reports=list(
            Report.objects.filter(referral_id=referral.pk).exclude(status=ReportStatus.SUPERSEDED)
            .defer("pdf", "draft").order_by("period_start", "id")
        ),
    )


def case_program(*, referral: Referral):
    """The case's current exercise program with its components (two queries), or None."""
    return referral_selectors.program_current(referral)


def report_for_case(*, offer: Offer, report_id: int) -> Report | None:
    """One of the case's reports (from case_for_account's offer), or None."""
    return Report.objects.filter(pk=report_id, referral_id=offer.referral_id).first()


def case_time_zone(*, referral: Referral, offer: Offer | None = None) -> zoneinfo.ZoneInfo:
    """The zone a case's times are read and shown in: its site's, else the hub's default. ``offer``: the case's
    offer from case_for_account, whose role's site is read already."""
    return referral_selectors.case_time_zone(referral, offer=offer)
