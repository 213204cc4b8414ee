"""Writes to referrals. Every write is a keyword-only function; every status change is a compare-and-set that
leaves a ReferralEvent, and announces itself on ``referral_changed`` inside the same transaction."""

import datetime as dt
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.db.models import F
from django.dispatch import Signal
from django.utils import timezone

from config.sql import instance_insert
from network.geo import patient_place
from network.selectors import network_member_get
from referrals.errors import DomainError, ErrorCode
from referrals.models import (
    HUB_ORGANIZATION_REFERENCE,
    REASON_REQUIRED_STATUSES,
    BusinessStatus,
    ClinicalFacts,
    Clinic,
    Referral,
    ReferralEvent,
    ReferralNote,
    ReferralStatus,
    TERMINAL_STATUSES,
    currently_active_from_pavs,
)

# Sent inside the transaction of every change to an existing referral (not on creation: whoever creates a referral
# renders its first version). fhir_bridge.projection re-renders the referral Task on it, so that the Task's new
# version and its history row commit or roll back with the change itself.
referral_changed = Signal()  # kwargs: referral, events
# Sent inside the transaction that creates a referral, after its facts and its first event are written. The FHIR
# bridge stores the referral's resources on it when they did not come from an EHR.
referral_created = Signal()  # kwargs: referral


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
    # The clinical facts (ClinicalFacts says what each one is): the condition codes as sent, clearance,
    # precautions, ACSM screening answers, delivery modes, the coordinates the EHR sent (None: place the patient
    # from the postal code), language, payer, the PAVS baseline and the goals.
    condition_codes: list[dict] = field(default_factory=list)
    clearance: str = ""
    precautions: tuple[str, ...] = ()
    currently_active: bool | None = None
    known_disease: bool | None = None
    symptoms: bool | None = None
    delivery_modes: tuple[str, ...] = ()
    latitude: float | None = None
    longitude: float | None = None
    state: str = ""
    required_language: str = ""
    preferred_languages: tuple[str, ...] = ()
    payer: str = ""
    pavs_baseline: list[dict] = field(default_factory=list)
    goals: list[dict] = field(default_factory=list)
    requester_reference: str = ""
    requester_display: str = ""
    performer_reference: str = ""
    authored_on: dt.datetime | None = None
    occurrence_start: dt.date | None = None
    occurrence_end: dt.date | None = None
    notes: list[NoteFacts] = field(default_factory=list)


def check_referral_create(*, facts: ReferralFacts) -> str:
    """Raise DomainError unless a clinic may open this referral; return the owner's display name."""
    if facts.status not in (ReferralStatus.REQUESTED, ReferralStatus.DRAFT):
        raise DomainError(
            ErrorCode.TRANSITION,
            f"a new referral starts as 'requested' (or 'draft'), not {facts.status!r}; the hub and the exercise "
            "professional move it on from there",
            field="status",
        )
    if facts.owner_reference == HUB_ORGANIZATION_REFERENCE:
        return facts.owner_display or "Exercise referral hub"
    member = network_member_get(reference=facts.owner_reference)
    if member is None:
        raise DomainError(
            ErrorCode.OWNER,
            f"owner {facts.owner_reference!r} is neither the hub ({HUB_ORGANIZATION_REFERENCE}, which routes the "
            "referral) nor a member of the hub's network (a directed referral); search Organization, "
            "Practitioner and PractitionerRole to find members",
            field="owner_reference",
        )
    if not member.active:
        raise DomainError(
            ErrorCode.OWNER,
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


# No savepoint of its own inside a caller's transaction (intake's): a refusal there rolls the whole request back
# anyway, and two round trips per referral are a tenth of intake's statements.
@transaction.atomic(savepoint=False)
def referral_create(*, clinic: Clinic, facts: ReferralFacts, actor: str, waiting_for_data: bool = False) -> Referral:
    """Open a referral for ``clinic``: the Referral, its ClinicalFacts, its notes and a CREATED event, then
    ``referral_created``. Raises DomainError when ``facts`` break a rule (check_referral_create).

    ``waiting_for_data``: the clinic sent only the Task (notify and pull); ``facts`` hold what the Task says, the
    referral waits in BusinessStatus.WAITING_FOR_DATA and is neither routed nor routable until
    ``referral_facts_complete`` gives it the rest."""
    owner_display = check_referral_create(facts=facts)
    referral = Referral(
        clinic=clinic,
        status=facts.status,
        business_status=BusinessStatus.WAITING_FOR_DATA if waiting_for_data
        else BusinessStatus.RECEIVED if facts.owner_reference == HUB_ORGANIZATION_REFERENCE
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
        service_display=facts.service_display,
        requester_reference=facts.requester_reference,
        requester_display=facts.requester_display,
        performer_reference=facts.performer_reference,
        authored_on=facts.authored_on,
        occurrence_start=facts.occurrence_start,
        occurrence_end=facts.occurrence_end,
    )
    # Written out (config.sql.instance_insert), not Model.save: py-spy put the creation's three saves at a fifth
    # of intake's wall time in the hub's workers (bench/README.md).
    instance_insert(referral)
    clinical_facts_create(referral=referral, facts=facts)
    _notes_add(referral=referral, notes=facts.notes)
    instance_insert(ReferralEvent(referral=referral, kind=ReferralEvent.Kind.CREATED, to_status=referral.status,
                                  actor=actor))
    referral_created.send(sender=Referral, referral=referral)
    return referral


_PULLED_FIELDS = (
    "patient_name", "patient_birth_date", "patient_gender", "patient_postal_code", "service_system", "service_code",
    "service_display", "requester_reference", "requester_display", "performer_reference", "occurrence_start",
    "occurrence_end",
)


@transaction.atomic
def referral_facts_complete(*, referral: Referral, facts: ReferralFacts, actor: str) -> Referral:
    """Give a referral that waits for its data (notify and pull) the facts fetched from the clinic's FHIR
    server: the patient, the service, the requester, the occurrence period and the ClinicalFacts (replaced
    whole). One compare-and-set on the business status moves it from WAITING_FOR_DATA to its first step
    (RECEIVED, or DIRECTED for a directed referral), with one STATUS_CHANGED event (detail
    ``{"business_status": ..., "facts": "completed"}``) and ``referral_changed``; it is routable from then on.
    A field the Task already gave (requester, authoredOn) is kept when the fetched facts leave it empty.

    Raises DomainError CONFLICT when the referral no longer waits (completed by another worker, or cancelled)."""
    step = BusinessStatus.RECEIVED if referral.owner_reference == HUB_ORGANIZATION_REFERENCE else BusinessStatus.DIRECTED
    now = timezone.now()
    changes = {name: getattr(facts, name) for name in _PULLED_FIELDS if getattr(facts, name) or not getattr(referral, name)}
    if referral.authored_on is None and facts.authored_on is not None:
        changes["authored_on"] = facts.authored_on
    won = Referral.objects.filter(
        pk=referral.pk, status=ReferralStatus.REQUESTED, business_status=BusinessStatus.WAITING_FOR_DATA
    ).update(business_status=step, business_status_text="", updated_at=now, version=F("version") + 1, **changes)
    if not won:
        raise DomainError(ErrorCode.CONFLICT, f"referral {referral.pk} no longer waits for its data")
    for name, value in changes.items():
        setattr(referral, name, value)
    referral.business_status, referral.business_status_text, referral.updated_at = step, "", now
    referral.version += 1
    ClinicalFacts.objects.filter(referral=referral).delete()
    clinical_facts_create(referral=referral, facts=facts)
    event = ReferralEvent.objects.create(
        referral=referral, kind=ReferralEvent.Kind.STATUS_CHANGED, from_status=referral.status,
        to_status=referral.status, actor=actor, detail={"business_status": step, "facts": "completed"},
    )
    referral_changed.send(sender=Referral, referral=referral, events=[event])
    return referral


def clinical_facts_create(*, referral: Referral, facts: ReferralFacts) -> ClinicalFacts:
    """The referral's ClinicalFacts row, with the patient placed: the coordinates sent when they are sane, else
    the centroid of the postal code (network.geo), else not placed (routing then waits for a coordinator).
    ``currently_active`` not given is read from the PAVS baseline."""
    place = patient_place(
        latitude=facts.latitude, longitude=facts.longitude, postal_code=facts.patient_postal_code, state=facts.state
    )
    currently_active = facts.currently_active
    if currently_active is None:
        currently_active = currently_active_from_pavs(facts.pavs_baseline)
    clinical = ClinicalFacts(
        referral=referral,
        condition_codes=facts.condition_codes,
        clearance=facts.clearance,
        precautions=list(facts.precautions),
        currently_active=currently_active,
        known_disease=facts.known_disease,
        symptoms=facts.symptoms,
        delivery_modes=list(facts.delivery_modes),
        latitude=place.latitude if place else None,
        longitude=place.longitude if place else None,
        location_source=place.source if place else ClinicalFacts.LocationSource.NONE,
        state=(place.state if place else facts.state.upper())[:2],
        required_language=facts.required_language,
        preferred_languages=list(facts.preferred_languages),
        payer=facts.payer,
        pavs_baseline=facts.pavs_baseline,
        goals=facts.goals,
    )
    instance_insert(clinical)
    return clinical


def check_referral_transition(*, referral: Referral, to_status: str, reason: str) -> None:
    if to_status != referral.status and not referral.can_move_to(to_status):
        final = "; it is final, so a new referral is needed" if referral.status in TERMINAL_STATUSES else ""
        raise DomainError(
            ErrorCode.TRANSITION, f"a referral that is {referral.status!r} cannot become {to_status!r}{final}",
            field="status",
        )
    if to_status in REASON_REQUIRED_STATUSES and not reason:
        raise DomainError(
            ErrorCode.REASON_REQUIRED, f"a reason is required to make a referral {to_status!r}", field="status_reason"
        )
    if to_status not in REASON_REQUIRED_STATUSES and reason:
        raise DomainError(
            ErrorCode.REASON_NOT_ALLOWED, f"a {to_status!r} referral carries no status reason", field="status_reason"
        )


def referral_update(
    *,
    referral: Referral,
    status: str,
    reason: str = "",
    notes: list[NoteFacts] = (),
    business_status: str | None = None,
    business_status_text: str | None = None,
    actor: str,
    expected_version: int | None = None,
    detail: dict | None = None,
) -> Referral:
    """Move a referral to ``status`` and add ``notes``, as one change: one Task version, one event per fact.

    ``business_status_text`` is what the physician reads for the business status ("" for its label); None
    keeps the current text while the business status stays, and clears it when the status moves.

    ``expected_version``: the case's version (Referral.version) the caller's form was built from; the change is
    refused with DomainError STALE when the case has moved on since. ``detail`` is added to the status event's
    detail (what the change was: {"case": "first-contact"}).

    Raises DomainError: TRANSITION, REASON_REQUIRED or REASON_NOT_ALLOWED for a move the state machine forbids,
    and CONFLICT when someone else moved
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
    # No savepoint of its own inside a caller's transaction (two round trips of a change's ten): every refusal is
    # raised before the first write or after the block, so a refused change leaves the caller's transaction
    # usable, and an error in between spoils it (Django then rolls the caller back), so nothing half-written
    # stays.
    with transaction.atomic(savepoint=False):
        moved = _referral_compare_and_set(referral.pk, from_status, expected_version, changes)
        if moved:
            for name, value in changes.items():
                setattr(referral, name, value)
            referral.version = (referral.version if expected_version is None else expected_version) + 1
            events = []
            if status_changes or business_changes:
                events.append(
                    ReferralEvent(
                        referral=referral,
                        kind=ReferralEvent.Kind.STATUS_CHANGED,
                        from_status=from_status,
                        to_status=status,
                        actor=actor,
                        detail={k: v for k, v in (("reason", reason), ("business_status", business_status)) if v}
                        | (detail or {}),
                    )
                )
            if notes:
                _notes_add(referral=referral, notes=notes)
                events.append(
                    ReferralEvent(referral=referral, kind=ReferralEvent.Kind.NOTE_ADDED, actor=actor,
                                  detail={"count": len(notes)})
                )
            for event in events:
                instance_insert(event)
            referral_changed.send(sender=Referral, referral=referral, events=events)
    if not moved:
        if expected_version is not None:
            raise DomainError(
                ErrorCode.STALE,
                f"the case changed since version {expected_version} was read (someone else recorded or moved it); "
                "reload it and apply the change again",
                field="expected_version",
            )
        raise DomainError(ErrorCode.CONFLICT, f"referral {referral.pk} changed while this request was being handled")
    return referral


def _referral_compare_and_set(referral_id: int, from_status: str, expected_version: int | None, changes: dict) -> bool:
    """Write ``changes`` (field name to value) to the referral and count one more version, if it is still
    ``from_status`` (and at ``expected_version`` when given). Returns whether it was.

    The one UPDATE of every status change, written out: as a queryset (filter, then update with
    F("version") + 1) its compiling cost about 0.3 ms of Python, four times what sending it does
    (bench/README.md, "A referral change")."""
    quote = connection.ops.quote_name
    fields = [Referral._meta.get_field(name) for name in changes]
    guard = [("id", referral_id), ("status", from_status)]
    if expected_version is not None:
        guard.append(("version", expected_version))
    sql = (
        f"UPDATE {quote(Referral._meta.db_table)} SET {quote('version')} = {quote('version')} + 1, "
        + ", ".join(f"{quote(f.column)} = %s" for f in fields)
        + " WHERE "
        + " AND ".join(f"{quote(column)} = %s" for column, _ in guard)
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [f.get_db_prep_save(changes[f.name], connection) for f in fields] + [value for _, value in guard],
        )
        return cursor.rowcount == 1

