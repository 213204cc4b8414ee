"""The console's work queues (reads only): what is stuck, each one query, whatever the number of items.

Every queue reads referrals through ``referrals_visible`` (a clinic admin sees their clinic's, a network admin
all). Each returns at most ``QUEUE_LIMIT`` items, oldest first, plus whether there are more: a queue is a to-do
list, not a report.

| queue | what is in it |
|---|---|
| manual routing | referrals waiting for a coordinator (business status awaiting-manual-routing), with their latest routing decision |
| near deadline | requested offers whose deadline is within ``DEADLINE_SOON`` |
| no first session | accepted referrals (not yet in progress) whose offer was accepted ``NO_FIRST_SESSION_AFTER`` ago or more |
| reports | drafts past their due time (overdue), and reports sent unsigned (preliminary, waiting for the signature) |
| adverse events | adverse events the physician has not acknowledged |
| dead letters | deliveries that failed every attempt (state dead): a clinic admin sees their clinic's subscriptions' |
"""

import datetime as dt
from dataclasses import dataclass

from django.db.models import JSONField, OuterRef, Q, QuerySet, Subquery

from console.access import referrals_visible
from console.models import ConsoleRole
from notifications.models import Delivery
from referrals.models import (
    AdverseEvent,
    BusinessStatus,
    Offer,
    OfferStatus,
    Report,
    ReportStatus,
    ReferralStatus,
    RoutingDecision,
)

QUEUE_LIMIT = 50
DEADLINE_SOON = dt.timedelta(hours=12)
# The follow-up engine nudges the therapist at 7 days and the coordinators at 14 (notifications/kinds.py); the
# console lists the case from the first nudge on.
NO_FIRST_SESSION_AFTER = dt.timedelta(days=7)


@dataclass
class Queue:
    name: str  # the URL fragment and the section's id
    title: str
    definition: str  # shown under the title
    items: list
    more: bool  # more than QUEUE_LIMIT are waiting


def _take(queryset: QuerySet) -> tuple[list, bool]:
    items = list(queryset[: QUEUE_LIMIT + 1])
    return items[:QUEUE_LIMIT], len(items) > QUEUE_LIMIT


def manual_routing_queue(role: ConsoleRole) -> Queue:
    """Referrals waiting for a coordinator, each with its latest decision's gist, flags, summary and candidates
    (annotated from the decision in the same query)."""
    latest = RoutingDecision.objects.filter(referral_id=OuterRef("pk")).order_by("-id")
    waiting = (
        referrals_visible(role)
        .filter(business_status=BusinessStatus.AWAITING_MANUAL_ROUTING, status=ReferralStatus.REQUESTED)
        .select_related("clinic")
        .annotate(
            routing_gist=Subquery(latest.values("gist")[:1]),
            routing_flags=Subquery(latest.values("flags")[:1], output_field=JSONField()),
            routing_candidates=Subquery(latest.values("candidates")[:1], output_field=JSONField()),
        )
        .order_by("created_at", "id")
    )
    items, more = _take(waiting)
    return Queue("manual-routing", "Awaiting manual routing",
                 "Nobody eligible was left, or the address could not be placed. Route by hand: the hard constraints "
                 "still hold unless you record why you override them.", items, more)


def near_deadline_queue(role: ConsoleRole, *, now: dt.datetime) -> Queue:
    offers = (
        Offer.objects.filter(status=OfferStatus.REQUESTED, deadline__lte=now + DEADLINE_SOON,
                             referral__in=referrals_visible(role))
        .select_related("referral__clinic", "role__professional", "role__organization")
        .order_by("deadline", "id")
    )
    items, more = _take(offers)
    hours = int(DEADLINE_SOON.total_seconds() // 3600)
    return Queue("near-deadline", "Offers near their deadline",
                 f"Requested offers due within {hours} hours. At the deadline the referral goes to the next "
                 "candidate; an answer the professional gave by phone can be recorded here.", items, more)


def no_first_session_queue(role: ConsoleRole, *, now: dt.datetime) -> Queue:
    offers = (
        Offer.objects.filter(status=OfferStatus.ACCEPTED, responded_at__lte=now - NO_FIRST_SESSION_AFTER,
                             referral__status=ReferralStatus.ACCEPTED, referral__in=referrals_visible(role))
        .select_related("referral__clinic", "role__professional", "role__organization")
        .order_by("responded_at", "id")
    )
    items, more = _take(offers)
    return Queue("no-first-session", "Accepted, no first session",
                 f"Accepted {NO_FIRST_SESSION_AFTER.days} days ago or more and no session attended yet.", items, more)


def reports_queue(role: ConsoleRole, *, now: dt.datetime) -> Queue:
    reports = (
        Report.objects.filter(Q(status=ReportStatus.DRAFT, due_at__lte=now) | Q(status=ReportStatus.SENT_UNSIGNED),
                              referral__in=referrals_visible(role))
        .select_related("referral__clinic")
        .defer("pdf", "draft")
        .order_by("due_at", "id")
    )
    items, more = _take(reports)
    return Queue("reports", "Overdue or unsigned reports",
                 "Drafts past their due time (send them now, unsigned, as preliminary) and reports sent unsigned "
                 "that still wait for the therapist's signature.", items, more)


def adverse_events_queue(role: ConsoleRole) -> Queue:
    events = (
        AdverseEvent.objects.filter(acknowledged_at__isnull=True, referral__in=referrals_visible(role))
        .select_related("referral__clinic")
        .order_by("occurred_at", "id")
    )
    items, more = _take(events)
    return Queue("adverse-events", "Adverse events not acknowledged",
                 "The physician was told at once; acknowledging records that the clinic has seen it.", items, more)


def dead_letters_queue(role: ConsoleRole) -> Queue:
    deliveries = Delivery.objects.filter(state=Delivery.State.DEAD).select_related("subscription__clinic")
    if not role.is_network_admin:
        deliveries = deliveries.filter(subscription__clinic_id=role.clinic_id)
    items, more = _take(deliveries.defer("content").order_by("created_at", "id"))
    return Queue("dead-letters", "Dead-lettered deliveries",
                 "Messages that failed every attempt. Replay sends the same message again, with its number.",
                 items, more)


def work_queues(role: ConsoleRole, *, now: dt.datetime) -> list[Queue]:
    """The six queues, in the order the page shows them (six queries)."""
    return [
        manual_routing_queue(role),
        near_deadline_queue(role, now=now),
        no_first_session_queue(role, now=now),
        reports_queue(role, now=now),
        adverse_events_queue(role),
        dead_letters_queue(role),
    ]
