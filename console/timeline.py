"""A referral's timeline for the console: everything that happened to it, in order, from every app's rows.

At the edge on purpose: it reads the domain (events, routing decisions, offers and their events, notes, reports),
the FHIR bridge's Task versions and the notifications' follow-ups and deliveries, which the domain may not import.
A fixed number of queries whatever the referral's history (one per source)."""

import datetime as dt
from dataclasses import dataclass

from django.db.models import BooleanField, ExpressionWrapper, Q

from fhir_bridge.models import ResourceVersion, StoredResource
from notifications.models import Delivery, FollowUp
from referrals.models import Offer, OfferEvent, Referral, ReferralEvent, ReferralNote, Report, RoutingDecision


@dataclass(frozen=True)
class TimelineEntry:
    at: dt.datetime
    source: str  # "task", "event", "routing", "offer", "follow-up", "delivery", "note", "report"
    title: str
    detail: str = ""
    actor: str = ""
    report: Report | None = None  # a report entry links its PDF


def _task_summary(content: dict) -> str:
    business = (content.get("businessStatus") or {}).get("text") or ""
    return f"{content.get('status', '')}{f' · {business}' if business else ''}"


def referral_timeline(referral: Referral) -> list[TimelineEntry]:
    """Every entry of ``referral``'s history, oldest first (ties in the order of the list above)."""
    entries: list[TimelineEntry] = []
    tasks = list(StoredResource.objects.filter(referral=referral, resource_type="Task").only(
        "fhir_id", "version_id", "last_updated", "content"
    ))
    names = {t.pk: ("Offer Task" if t.fhir_id.startswith("offer-") else "Referral Task") for t in tasks}
    for task in tasks:
        entries.append(TimelineEntry(
            at=task.last_updated, source="task",
            title=f"{names[task.pk]} version {task.version_id}", detail=_task_summary(task.content),
        ))
    for version in ResourceVersion.objects.filter(resource__in=[t.pk for t in tasks]).only(
        "resource_id", "version_id", "last_updated", "content"
    ):
        entries.append(TimelineEntry(
            at=version.last_updated, source="task",
            title=f"{names[version.resource_id]} version {version.version_id}", detail=_task_summary(version.content),
        ))
    for event in ReferralEvent.objects.filter(referral=referral):
        moved = f"{event.from_status or '—'} → {event.to_status}" if event.to_status else ""
        entries.append(TimelineEntry(
            at=event.at, source="event", title=event.get_kind_display().capitalize(), detail=moved, actor=event.actor
        ))
    for decision in RoutingDecision.objects.filter(referral=referral).only(
        "trigger", "outcome", "gist", "actor", "created_at"
    ):
        entries.append(TimelineEntry(
            at=decision.created_at, source="routing",
            title=f"Routing ({decision.get_trigger_display()}): {decision.get_outcome_display()}",
            detail=decision.gist, actor=decision.actor,
        ))
    offers = {
        o.pk: o for o in Offer.objects.filter(referral=referral).select_related("role__professional", "organization")
    }
    for offer in offers.values():
        who = f"{offer.role.professional.given_name} {offer.role.professional.family_name}".strip()
        entries.append(TimelineEntry(
            at=offer.created_at, source="offer", title=f"Offer {offer.pk} to {who} ({offer.organization.name})",
            detail=f"deadline {offer.deadline:%Y-%m-%d %H:%M} UTC · {offer.delivery}",
        ))
    for event in OfferEvent.objects.filter(offer__referral=referral):
        reason = event.detail.get("reason", "") if isinstance(event.detail, dict) else ""
        entries.append(TimelineEntry(
            at=event.at, source="offer", title=f"Offer {event.offer_id}: {event.from_status or '—'} → {event.to_status}",
            detail=reason, actor=event.actor,
        ))
    for followup in FollowUp.objects.filter(
        Q(referral_id=referral.pk) | Q(offer_id__in=list(offers))
    ).only("kind", "due_at", "state", "outcome", "done_at"):
        entries.append(TimelineEntry(
            at=followup.due_at, source="follow-up", title=f"Follow-up {followup.kind} ({followup.state})",
            detail=followup.outcome,
        ))
    task_ids = [t.fhir_id for t in tasks]
    for delivery in Delivery.objects.filter(task_id__in=task_ids).only(
        "channel", "notification_type", "event_number", "endpoint", "state", "created_at", "delivered_at",
        "last_error",
    ) if task_ids else []:
        number = f" #{delivery.event_number}" if delivery.event_number else ""
        entries.append(TimelineEntry(
            at=delivery.created_at, source="delivery",
            title=f"{delivery.get_channel_display()} {delivery.notification_type}{number} to {delivery.endpoint}",
            detail=delivery.state + (f": {delivery.last_error}" if delivery.last_error else ""),
        ))
    for note in ReferralNote.objects.filter(referral=referral):
        entries.append(TimelineEntry(
            at=note.time, source="note", title="Note", detail=note.text, actor=note.author_display or note.author_reference
        ))
    has_pdf = ExpressionWrapper(Q(pdf__isnull=False), output_field=BooleanField())
    for report in Report.objects.filter(referral=referral).defer("pdf", "draft").annotate(has_pdf=has_pdf):
        entries.append(TimelineEntry(
            at=report.sent_at or report.created_at, source="report",
            title=f"{report.get_kind_display()} {report.period_start}..{report.period_end} ({report.status})",
            actor=report.signed_by, report=report,
        ))
    order = {s: n for n, s in enumerate(("event", "task", "routing", "offer", "follow-up", "delivery", "note", "report"))}
    entries.sort(key=lambda e: (e.at, order[e.source]))
    return entries
