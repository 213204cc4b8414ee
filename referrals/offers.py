"""Writes of routing: decisions, offers and their answers.

Every service is atomic and takes the referral's row lock first, then touches its offers, then one role's row:
always in that order, so that two services never wait on each other in a cycle. Every offer status change is a
compare-and-set that leaves an OfferEvent and announces itself on ``offer_changed`` inside the transaction
(the FHIR bridge renders the offer's child Task from it). Referral changes go through
referrals.services.referral_update.

Capacity: a role's active cases (requested offers, and accepted ones whose referral is open) are counted in
the database while holding that role's row lock, and the offer is inserted under the same lock; so two
referrals routed at the same moment can never both take the last slot.
"""

import datetime as dt
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.dispatch import Signal
from django.utils import timezone

from network.models import ProfessionalRole
from referrals.errors import DomainError, ErrorCode
from referrals.models import (
    HUB_ORGANIZATION_REFERENCE,
    LIVE_OFFER_STATUSES,
    BusinessStatus,
    Offer,
    OfferEvent,
    OfferStatus,
    Referral,
    ReferralStatus,
    RoutingDecision,
)
from referrals.routing import (
    Candidate,
    PatientFacts,
    RoutingPlan,
    referral_patient_facts,
    routing_gist,
    routing_plan,
)
from referrals.selectors import (
    offer_live_get,
    role_active_case_count,
    role_for_update,
)
from referrals.services import NoteFacts, referral_update

logger = logging.getLogger(__name__)

HUB_ACTOR = "hub"
# DESIGN.md §6: no answer within 48 h → next candidate.
OFFER_DEADLINE = dt.timedelta(hours=settings.HUB_OFFER_DEADLINE_HOURS)

# Sent inside the transaction of every offer change, creation included (from_status ""). kwargs: offer,
# from_status, actor. The FHIR bridge renders the child Task (partOf the referral Task, owner = the role) from
# it.
offer_changed = Signal()


@dataclass(frozen=True)
class RoutingOutcome:
    decision: RoutingDecision
    offer: Offer | None
    gist: str  # one line for the physician: Task.businessStatus.text and a Task note

    @property
    def awaiting_manual_routing(self) -> bool:
        return self.offer is None


# --- Internals ----------------------------------------------------------------------------------------------


def _referral_lock(referral_id: int) -> Referral:
    # The clinical facts come in the same statement, since routing reads them right after the lock; only the
    # referral's row is locked (``of``: the facts are never written after creation).
    return Referral.objects.select_for_update(of=("self",)).select_related("facts").get(pk=referral_id)


def _actor_of(admin) -> str:
    if isinstance(admin, str):
        return admin if ":" in admin else f"user:{admin}"
    return f"user:{admin.get_username()}"


def _offer_move(
    *, offer: Offer, to_status: str, actor: str, now: dt.datetime, extra_filter: dict | None = None, **changes
) -> Offer:
    """Compare-and-set ``offer`` from requested to ``to_status``; then an OfferEvent and offer_changed."""
    from_status = OfferStatus.REQUESTED
    won = Offer.objects.filter(pk=offer.pk, status=from_status, **(extra_filter or {})).update(
        status=to_status, **changes
    )
    if not won:
        current = Offer.objects.filter(pk=offer.pk).values_list("status", flat=True).first()
        if current is None or current != from_status:
            raise DomainError(ErrorCode.CONFLICT, f"offer {offer.pk} is {current or 'gone'}, no longer {from_status}")
        raise DomainError(ErrorCode.NOT_OPEN, f"offer {offer.pk} cannot become {to_status} now")
    offer.status = to_status
    for name, value in changes.items():
        setattr(offer, name, value)
    OfferEvent.objects.create(
        offer=offer,
        from_status=from_status,
        to_status=to_status,
        actor=actor,
        at=now,
        detail={k: v for k, v in changes.items() if k in ("decline_reason", "cancel_reason")},
    )
    offer_changed.send(sender=Offer, offer=offer, from_status=from_status, actor=actor)
    return offer


class _NoRoom(Exception):
    pass


def _slot_claim(
    *, role_id: int, today: dt.date, ignore: frozenset[str] = frozenset()
) -> tuple[ProfessionalRole | None, str]:
    """Lock the role's row and check, against the database, that it can still take a case. Returns (the locked
    role, "") when it can: the lock is then held until the transaction ends, and the role comes with its
    professional and organization (the offer's Task names them). Else (None, the constraint that stops it),
    and the lock is released with the savepoint, so that one transaction never holds two role locks. Call
    inside a transaction."""

    # A bare savepoint rather than atomic(): when the role can take the case there is nothing to undo, and the
    # savepoint ends with the transaction instead of costing a round trip of its own to release.
    savepoint = transaction.savepoint()
    try:
        role = role_for_update(role_id=role_id)
        if role is None:
            raise ProfessionalRole.DoesNotExist(f"role {role_id} is gone")
        # The facts on the role row may have changed since the plan was read; the rest cannot break safety.
        if not role.active and "role-inactive" not in ignore:
            raise _NoRoom("role-inactive")
        if not role.accepting and "not-accepting" not in ignore:
            raise _NoRoom("not-accepting")
        if role.is_paused(today) and "paused" not in ignore:
            raise _NoRoom("paused")
        # A statement of its own, after the lock: it sees every offer committed before the lock was granted.
        if "at-capacity" not in ignore and role_active_case_count(role_id=role_id) >= role.max_active_cases:
            raise _NoRoom("at-capacity")
    except _NoRoom as stop:
        transaction.savepoint_rollback(savepoint)
        return None, str(stop)
    except Exception:
        transaction.savepoint_rollback(savepoint)
        raise
    return role, ""


def _offer_create(
    *,
    referral: Referral,
    candidate: Candidate,
    decision: RoutingDecision,
    actor: str,
    now: dt.datetime,
    role: ProfessionalRole,
) -> Offer:
    """Insert the offer. Call while holding the role's row lock; ``role`` is the role _slot_claim locked, so
    that offer_changed's receivers read it without a query."""
    offer = Offer.objects.create(
        referral=referral,
        role=role,
        organization_id=candidate.organization_id,
        decision=decision,
        status=OfferStatus.REQUESTED,
        delivery=candidate.delivery or Offer.Delivery.IN_PERSON,
        created_at=now,
        deadline=now + OFFER_DEADLINE,
    )
    OfferEvent.objects.create(
        offer=offer, from_status="", to_status=OfferStatus.REQUESTED, actor=actor, at=now
    )
    offer_changed.send(sender=Offer, offer=offer, from_status="", actor=actor)
    return offer


def _decision_create(
    *,
    referral: Referral,
    plan: RoutingPlan,
    patient: PatientFacts,
    trigger: str,
    actor: str,
    chosen: Candidate | None,
    gist: str,
    overrides: list | None = None,
    override_reason: str = "",
) -> RoutingDecision:
    if chosen is not None:
        outcome = RoutingDecision.Outcome.OFFERED
    elif "address-not-placed" in plan.flags and not plan.candidates:
        outcome = RoutingDecision.Outcome.UNPLACED
    else:
        outcome = RoutingDecision.Outcome.MANUAL
    return RoutingDecision.objects.create(
        referral=referral,
        trigger=trigger,
        outcome=outcome,
        chosen_role_id=chosen.role_id if chosen else None,
        actor=actor,
        patient_facts=patient.as_dict(),
        location_source=plan.place.source if plan.place else "",
        condition_groups=plan.mapping.group_slugs,
        mapped_codes=plan.mapping.mapped,
        unmapped_codes=plan.mapping.unmapped,
        risk=plan.risk.as_dict(),
        flags=plan.flags,
        candidates=[c.as_dict() for c in plan.candidates],
        summary=plan.summary,
        overrides=[{"constraint": c, "detail": d} for c, d in overrides or []],
        override_reason=override_reason,
        gist=gist,
    )


def _gist_record(
    *, referral: Referral, business_status: str, gist: str, actor: str, now: dt.datetime
) -> None:
    """Show a routing run's gist to the physician: as the business status's text, and in a Task note, so that
    each run (a decline, an expiry) stays readable in the referral's history after businessStatus has moved
    on."""
    note = NoteFacts(
        author_reference=HUB_ORGANIZATION_REFERENCE,
        author_display="Exercise referral hub",
        text=gist,
        time=now,
    )
    referral_update(
        referral=referral,
        status=referral.status,
        business_status=business_status,
        business_status_text=gist,
        notes=[note],
        actor=actor,
    )


def _route(
    *, referral: Referral, patient: PatientFacts, trigger: str, actor: str, now: dt.datetime
) -> RoutingOutcome:
    """Plan, claim the first eligible role with room, store the decision and the offer. Call holding the
    referral lock, with no live offer on it."""
    plan = routing_plan(referral=referral, patient=patient, now=now)
    chosen = role = None
    today = now.date()
    for candidate in plan.eligible:
        role, stopped = _slot_claim(role_id=candidate.role_id, today=today)
        if not stopped:
            chosen = candidate
            break
        # Taken between the plan and the lock (another referral got there first): excluded, and said so.
        candidate.excluded.append((stopped, "changed while this referral was being routed"))
        candidate.score = candidate.rank = None
        plan.summary["excluded"][stopped] = plan.summary["excluded"].get(stopped, 0) + 1
        plan.summary["eligible"] -= 1
    if chosen is not None:
        chosen.chosen = True
    gist = routing_gist(plan=plan, chosen=chosen)
    decision = _decision_create(
        referral=referral, plan=plan, patient=patient, trigger=trigger, actor=actor, chosen=chosen, gist=gist
    )
    offer = None
    if chosen is not None:
        offer = _offer_create(
            referral=referral, candidate=chosen, decision=decision, actor=actor, now=now, role=role
        )
        business_status = BusinessStatus.OFFERED
    else:
        business_status = BusinessStatus.AWAITING_MANUAL_ROUTING
    _gist_record(referral=referral, business_status=business_status, gist=gist, actor=actor, now=now)
    return RoutingOutcome(decision=decision, offer=offer, gist=gist)


def _offer_answer(*, offer: Offer, to_status: str, actor: str, now: dt.datetime, **changes) -> Offer:
    """_offer_move for the professional's answer, which records when it came and how long it took (routing
    scores responsiveness on it). Call holding the referral lock."""
    return _offer_move(
        offer=offer,
        to_status=to_status,
        actor=actor,
        now=now,
        responded_at=now,
        response_seconds=max(0, int((now - offer.created_at).total_seconds())),
        **changes,
    )


def _sync(target: Referral, source: Referral) -> None:
    """Give the caller's referral object the state the service left the locked copy in."""
    for name in ("status", "status_reason", "business_status", "business_status_text", "updated_at"):
        setattr(target, name, getattr(source, name))


# --- Services -----------------------------------------------------------------------------------------------


def _check_requested(referral: Referral) -> None:
    if referral.status != ReferralStatus.REQUESTED:
        raise DomainError(
            ErrorCode.NOT_ROUTABLE, f"only a requested referral is routed; this one is {referral.status!r}", field="status"
        )


def check_referral_routable(*, referral: Referral) -> None:
    """Raise DomainError (NOT_ROUTABLE) unless the hub may route ``referral`` now: requested, its data here (not
    waiting for it from the clinic's FHIR server), and no live offer."""
    _check_requested(referral)
    if referral.business_status == BusinessStatus.WAITING_FOR_DATA:
        raise DomainError(
            ErrorCode.NOT_ROUTABLE, "the referral's data has not come from the clinic's FHIR server yet"
        )
    live = offer_live_get(referral_id=referral.pk)
    if live is not None:
        raise DomainError(
            ErrorCode.NOT_ROUTABLE, f"the referral is already {live.status} by {live.role.fhir_id} (offer {live.pk})"
        )


@transaction.atomic
def referral_route(
    *, referral: Referral, patient: PatientFacts, actor: str = HUB_ACTOR, first_only: bool = False
) -> RoutingOutcome:
    """Route a requested referral: store the decision and make the first offer, or hand it to manual routing.

    The first run for a referral is trigger "initial"; a later call (an admin asking again) is "retry".
    ``first_only`` refuses a referral routed before (DomainError ALREADY_ROUTED), decided under the
    lock: two deliveries of intake's route task never both route."""
    locked = _referral_lock(referral.pk)
    # One read, after the lock, for both facts; the full check (with its message) only when it will refuse.
    live, routed = (
        Referral.objects.filter(pk=locked.pk)
        .annotate(
            live=Exists(
                Offer.objects.filter(referral_id=OuterRef("pk"), status__in=list(LIVE_OFFER_STATUSES))
            ),
            routed=Exists(RoutingDecision.objects.filter(referral_id=OuterRef("pk"))),
        )
        .values_list("live", "routed")
        .get()
    )
    if live or locked.status != ReferralStatus.REQUESTED or locked.business_status == BusinessStatus.WAITING_FOR_DATA:
        check_referral_routable(referral=locked)
    if routed and first_only:
        raise DomainError(ErrorCode.ALREADY_ROUTED, f"referral {locked.pk} was routed already")
    trigger = RoutingDecision.Trigger.RETRY if routed else RoutingDecision.Trigger.INITIAL
    outcome = _route(referral=locked, patient=patient, trigger=trigger, actor=actor, now=timezone.now())
    _sync(referral, locked)
    return outcome


def _contact(role: ProfessionalRole) -> str:
    """How to reach a role, as " (e-mail, phone)": its e-mail, else its organization's, and that one's phone."""
    found = [c for c in (role.email or role.organization.email, role.organization.phone) if c]
    return f" ({', '.join(found)})" if found else ""


@transaction.atomic
def offer_accept(*, offer: Offer, actor: str = "") -> Offer:
    """The professional takes the case: the offer is accepted and the referral with it.

    The offer-deadline follow-up, not the clock, ends an offer: an answer that beats it to the row wins."""
    referral = _referral_lock(offer.referral_id)
    actor = actor or f"practitioner-role:{offer.role.fhir_id}"
    if referral.status != ReferralStatus.REQUESTED:
        raise DomainError(ErrorCode.NOT_OPEN, f"offer {offer.pk} cannot be accepted: the referral is {referral.status}")
    _offer_answer(offer=offer, to_status=OfferStatus.ACCEPTED, actor=actor, now=timezone.now())
    referral_update(
        referral=referral,
        status=ReferralStatus.ACCEPTED,
        business_status=BusinessStatus.ACCEPTED,
        # Who will see the patient, and how to reach them, for the physician.
        business_status_text=f"Accepted by {offer.role}{_contact(offer.role)}",
        actor=actor,
    )
    offer.referral = referral
    return offer


@transaction.atomic
def offer_decline(*, offer: Offer, reason: str, actor: str = "") -> RoutingOutcome | None:
    """The professional declines: the offer ends with the reason and the next candidate gets an offer (a
    re-run that leaves out every role already offered this referral). None when the referral is no longer
    routed."""
    reason = (reason or "").strip()
    if not reason:
        raise DomainError(ErrorCode.REASON_REQUIRED, "a decline needs a reason", field="decline_reason")
    referral = _referral_lock(offer.referral_id)
    actor = actor or f"practitioner-role:{offer.role.fhir_id}"
    now = timezone.now()
    _offer_answer(
        offer=offer, to_status=OfferStatus.REJECTED, actor=actor, now=now, decline_reason=reason[:500]
    )
    return _route_next(referral=referral, trigger=RoutingDecision.Trigger.DECLINED, now=now)


@transaction.atomic
def offer_expire(
    *, offer: Offer, now: dt.datetime | None = None, actor: str = HUB_ACTOR
) -> RoutingOutcome | None:
    """The deadline passed without an answer: the offer expires and the next candidate gets an offer.

    Raises DomainError: NOT_OPEN when the offer is not yet due, CONFLICT when it was answered first."""
    now = now or timezone.now()
    referral = _referral_lock(offer.referral_id)
    _offer_move(
        offer=offer, to_status=OfferStatus.EXPIRED, actor=actor, now=now, extra_filter={"deadline__lte": now}
    )
    return _route_next(referral=referral, trigger=RoutingDecision.Trigger.EXPIRED, now=now)


def _route_next(*, referral: Referral, trigger: str, now: dt.datetime) -> RoutingOutcome | None:
    """Route on after the referral's requested offer ended. Call holding the referral lock, right after
    _offer_move: that offer was the referral's one live offer (offer_one_live_per_referral), and offers only
    change under the referral lock, so none is live now and there is no need to look."""
    if referral.status != ReferralStatus.REQUESTED:
        return None  # cancelled or answered meanwhile: nothing to route
    patient = referral_patient_facts(referral=referral)
    return _route(referral=referral, patient=patient, trigger=trigger, actor=HUB_ACTOR, now=now)


@transaction.atomic
def offer_cancel(*, offer: Offer, reason: str, actor: str) -> Offer:
    """The hub withdraws a requested offer (the referral was cancelled, or routed by hand)."""
    return _offer_move(
        offer=offer,
        to_status=OfferStatus.CANCELLED,
        actor=actor,
        now=timezone.now(),
        cancel_reason=reason[:500],
    )


@transaction.atomic
def referral_offers_cancel(*, referral: Referral, reason: str, actor: str) -> int:
    """Withdraw the referral's requested offer, if any (call when the clinic cancels the referral)."""
    _referral_lock(referral.pk)
    live = offer_live_get(referral_id=referral.pk)
    if live is None or live.status != OfferStatus.REQUESTED:
        return 0
    offer_cancel(offer=live, reason=reason, actor=actor)
    return 1


@transaction.atomic
def referral_route_manually(
    *, referral: Referral, role: ProfessionalRole, admin, override_reason: str = ""
) -> RoutingOutcome:
    """An admin offers the referral to ``role``. Every hard constraint is checked as in automatic routing; any
    that fails stops it (DomainError CONSTRAINT, with the constraints in ``detail``) unless ``override_reason`` records why it is overridden. A
    live requested offer to someone else is withdrawn. An admin may offer again to a role that declined
    before."""
    actor = _actor_of(admin)
    override_reason = (override_reason or "").strip()
    locked = _referral_lock(referral.pk)
    _check_requested(locked)
    now = timezone.now()
    patient = referral_patient_facts(referral=locked)
    plan = routing_plan(referral=locked, patient=patient, now=now, only_role_ids=[role.pk], manual=True)
    candidate = plan.candidates[0]
    failures = list(candidate.excluded)
    if failures and not override_reason:
        raise DomainError(
            ErrorCode.CONSTRAINT,
            f"{role.fhir_id} fails hard constraints: "
            + "; ".join(f"{c} ({d})" for c, d in failures)
            + ". Record a reason to override them.",
            field="override_reason",
            detail={"constraints": [{"constraint": c, "detail": d} for c, d in failures]},
        )

    live = offer_live_get(referral_id=locked.pk)
    if live is not None and live.role_id == role.pk:
        raise DomainError(ErrorCode.NOT_ROUTABLE, f"the referral is already offered to {role.fhir_id} (offer {live.pk})")
    if live is not None:
        offer_cancel(offer=live, reason=f"routed by hand to {role.fhir_id} by {actor}", actor=actor)

    overridden = frozenset(c for c, _ in failures)
    claimed, stopped = _slot_claim(role_id=role.pk, today=now.date(), ignore=overridden)
    if stopped:
        raise DomainError(
            ErrorCode.CONSTRAINT,
            f"{role.fhir_id} is {stopped} now. Record a reason to override it.",
            field="override_reason",
            detail={"constraints": [{"constraint": stopped, "detail": "now"}]},
        )
    candidate.excluded = []  # offered despite them: the overrides are stored beside
    candidate.chosen = True
    candidate.delivery = candidate.delivery or Offer.Delivery.IN_PERSON
    gist = f"Offered to {candidate.name} ({candidate.organization}), chosen by a coordinator."
    decision = _decision_create(
        referral=locked,
        plan=plan,
        patient=patient,
        trigger=RoutingDecision.Trigger.MANUAL,
        actor=actor,
        chosen=candidate,
        gist=gist,
        overrides=failures,
        override_reason=override_reason if failures else "",
    )
    offer = _offer_create(
        referral=locked, candidate=candidate, decision=decision, actor=actor, now=now, role=claimed
    )
    _gist_record(referral=locked, business_status=BusinessStatus.OFFERED, gist=gist, actor=actor, now=now)
    _sync(referral, locked)
    return RoutingOutcome(decision=decision, offer=offer, gist=gist)


def referral_route_first(*, referral_id: int) -> RoutingOutcome | None:
    """Route a new referral once, with its clinical facts. Safe to call again: a referral already routed, or no
    longer requested, is left alone (the decline, expiry and manual-routing services move it on from there).
    Returns None when it was left alone."""
    referral = Referral.objects.filter(pk=referral_id).select_related("facts").first()
    if referral is None or referral.status != ReferralStatus.REQUESTED:
        logger.info("referral %s is gone or no longer requested; not routed", referral_id)
        return None
    try:
        outcome = referral_route(referral=referral, patient=referral_patient_facts(referral=referral), first_only=True)
    except DomainError as exc:  # routed already (a redelivery), or answered or cancelled meanwhile
        logger.info("referral %s not routed: %s", referral_id, exc)
        return None
    logger.info("referral %s routed: %s", referral_id, outcome.gist)
    return outcome


CLINIC_WITHDRAWN = frozenset({ReferralStatus.CANCELLED, ReferralStatus.ENTERED_IN_ERROR})


@transaction.atomic
def referral_update_by_clinic(*, referral: Referral, status: str, reason: str, notes, actor: str) -> Referral:
    """What the referring clinic may do to its referral (cancel it, mark it entered in error, add notes). A
    withdrawn referral's open offer is withdrawn with it, so that no professional takes a case that is gone."""
    referral_update(referral=referral, status=status, reason=reason, notes=notes, actor=actor)
    if status in CLINIC_WITHDRAWN:
        why = "entered in error" if status == ReferralStatus.ENTERED_IN_ERROR else "cancelled"
        referral_offers_cancel(
            referral=referral, reason=f"The clinic {why} the referral: {reason}".rstrip(": "), actor=actor
        )
    return referral
