"""Writes to referrals. Every write is a keyword-only function; every status change is a compare-and-set that
leaves a ReferralEvent, and announces itself on ``referral_changed`` inside the same transaction."""

import datetime as dt
from dataclasses import dataclass, field

from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from network.selectors import network_member_get
from referrals.models import (
    HUB_ORGANIZATION_REFERENCE,
    REASON_REQUIRED_STATUSES,
    BusinessStatus,
    Clinic,
    Referral,
    ReferralEvent,
    ReferralNote,
    ReferralStatus,
    TERMINAL_STATUSES,
)

# Sent inside the transaction of every change to an existing referral (not on creation: whoever creates a referral
# renders its first version). fhir_bridge.projection re-renders the referral Task on it, so that the Task's new
# version and its history row commit or roll back with the change itself.
referral_changed = Signal()  # kwargs: referral, events


class ReferralRuleError(Exception):
    """A referral that breaks a business rule. ``field`` names the offending fact (a ReferralFacts field name)."""

    def __init__(self, message: str, *, field: str = "", code: str = "business-rule"):
        super().__init__(message)
        self.field = field
        self.code = code


class ReferralConflict(Exception):
    """Someone else changed the referral first (a compare-and-set found another status)."""


@dataclass(frozen=True)
class NoteFacts:
    author_reference: str
    author_display: str
    text: str
    time: dt.datetime


@dataclass(frozen=True)
class ReferralFacts:
    """What an EHR's referral says, as plain values (fhir_bridge maps FHIR to this)."""

    status: str = ReferralStatus.REQUESTED
    priority: str = "routine"
    owner_reference: str = HUB_ORGANIZATION_REFERENCE
    owner_display: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_gender: str = ""
    patient_postal_code: str = ""
    service_system: str = ""
    service_code: str = ""
    service_display: str = ""
    reason_codes: list[dict] = field(default_factory=list)
    requester_reference: str = ""
    requester_display: str = ""
    performer_reference: str = ""
    authored_on: dt.datetime | None = None
    occurrence_start: dt.date | None = None
    occurrence_end: dt.date | None = None
    notes: list[NoteFacts] = field(default_factory=list)


def check_referral_create(*, facts: ReferralFacts) -> str:
    """Raise ReferralRuleError unless a clinic may open this referral; return the owner's display name."""
    if facts.status not in (ReferralStatus.REQUESTED, ReferralStatus.DRAFT):
        raise ReferralRuleError(
            f"a new referral starts as 'requested' (or 'draft'), not {facts.status!r}; the hub and the exercise "
            "professional move it on from there",
            field="status",
        )
    if facts.owner_reference == HUB_ORGANIZATION_REFERENCE:
        return facts.owner_display or "Exercise referral hub"
    member = network_member_get(reference=facts.owner_reference)
    if member is None:
        raise ReferralRuleError(
            f"owner {facts.owner_reference!r} is neither the hub ({HUB_ORGANIZATION_REFERENCE}, which routes the "
            "referral) nor a member of the hub's network (a directed referral); search Organization, "
            "Practitioner and PractitionerRole to find members",
            field="owner_reference",
        )
    if not member.active:
        raise ReferralRuleError(
            f"owner {facts.owner_reference!r} ({member.display}) is not taking referrals now; send it to "
            f"{HUB_ORGANIZATION_REFERENCE} to have it routed",
            field="owner_reference",
        )
    return member.display


def _notes_add(*, referral: Referral, notes: list[NoteFacts]) -> None:
    if notes:
        ReferralNote.objects.bulk_create(
            ReferralNote(
                referral=referral,
                author_reference=n.author_reference,
                author_display=n.author_display,
                text=n.text,
                time=n.time,
            )
            for n in notes
        )


def referral_create(*, clinic: Clinic, facts: ReferralFacts, actor: str) -> Referral:
    owner_display = check_referral_create(facts=facts)
    referral = Referral.objects.create(
        clinic=clinic,
        status=facts.status,
        business_status=BusinessStatus.RECEIVED if facts.owner_reference == HUB_ORGANIZATION_REFERENCE
        else BusinessStatus.DIRECTED,
        priority=facts.priority,
        owner_reference=facts.owner_reference,
        owner_display=owner_display,
        patient_name=facts.patient_name,
        patient_birth_date=facts.patient_birth_date,
        patient_gender=facts.patient_gender,
        patient_postal_code=facts.patient_postal_code,
        service_system=facts.service_system,
        service_code=facts.service_code,
        service_display=facts.service_display[:500],
        reason_codes=facts.reason_codes,
        requester_reference=facts.requester_reference,
        requester_display=facts.requester_display,
        performer_reference=facts.performer_reference,
        authored_on=facts.authored_on,
        occurrence_start=facts.occurrence_start,
        occurrence_end=facts.occurrence_end,
    )
    _notes_add(referral=referral, notes=facts.notes)
    ReferralEvent.objects.create(referral=referral, kind=ReferralEvent.Kind.CREATED, to_status=referral.status, actor=actor)
    return referral


def check_referral_transition(*, referral: Referral, to_status: str, reason: str) -> None:
    if to_status != referral.status and not referral.can_move_to(to_status):
        final = "; it is final, so a new referral is needed" if referral.status in TERMINAL_STATUSES else ""
        raise ReferralRuleError(
            f"a referral that is {referral.status!r} cannot become {to_status!r}{final}", field="status"
        )
    if to_status in REASON_REQUIRED_STATUSES and not reason:
        raise ReferralRuleError(f"a reason is required to make a referral {to_status!r}", field="status_reason")
    if to_status not in REASON_REQUIRED_STATUSES and reason:
        raise ReferralRuleError(f"a {to_status!r} referral carries no status reason", field="status_reason")


@transaction.atomic
def referral_update(
    *,
    referral: Referral,
    status: str,
    reason: str = "",
    notes: list[NoteFacts] = (),
    business_status: str | None = None,
    business_status_text: str | None = None,
    actor: str,
) -> Referral:
    """Move a referral to ``status`` and add ``notes``, as one change: one Task version, one event per fact.

    ``business_status_text`` is what the physician reads for the business status ("" for its label); None
    keeps the current text while the business status stays, and clears it when the status moves.

    Raises ReferralRuleError for a move the state machine forbids, and ReferralConflict when someone else moved
    the referral first.
    """
    check_referral_transition(referral=referral, to_status=status, reason=reason)
    if status == ReferralStatus.CANCELLED and business_status is None:
        business_status = BusinessStatus.CANCELLED
    status_changes = status != referral.status or reason != referral.status_reason
    business_moves = business_status is not None and business_status != referral.business_status
    if business_status_text is None:
        business_status_text = "" if business_moves else referral.business_status_text
    business_changes = business_moves or business_status_text != referral.business_status_text
    if not (status_changes or business_changes or notes):
        return referral

    now = timezone.now()
    changes = {"status": status, "status_reason": reason, "updated_at": now}
    if business_status is not None:
        changes["business_status"] = business_status
    if business_changes:
        changes["business_status_text"] = business_status_text
    from_status = referral.status
    won = Referral.objects.filter(pk=referral.pk, status=from_status).update(**changes)
    if not won:
        raise ReferralConflict(f"referral {referral.pk} changed while this request was being handled")
    for name, value in changes.items():
        setattr(referral, name, value)

    events = []
    if status_changes or business_changes:
        events.append(
            ReferralEvent(
                referral=referral,
                kind=ReferralEvent.Kind.STATUS_CHANGED,
                from_status=from_status,
                to_status=status,
                actor=actor,
                detail={k: v for k, v in (("reason", reason), ("business_status", business_status)) if v},
            )
        )
    if notes:
        _notes_add(referral=referral, notes=notes)
        events.append(
            ReferralEvent(referral=referral, kind=ReferralEvent.Kind.NOTE_ADDED, actor=actor, detail={"count": len(notes)})
        )
    ReferralEvent.objects.bulk_create(events)
    referral_changed.send(sender=Referral, referral=referral, events=events)
    return referral
