"""The referral Task, rendered from the domain.

The EHR's Task is kept as it came; what the hub owns (status, statusReason, businessStatus, notes, lastModified) is
laid over it from the Referral on every change, as a new version written in the same transaction.
"""

from django.dispatch import receiver
from django.utils import timezone

from fhir_bridge.models import StoredResource
from fhir_bridge.store import http_date_iso, resource_update, resources_create
from referrals.models import BusinessStatus, Offer, OfferStatus, Referral
from referrals.offers import offer_changed
from referrals.services import referral_changed

BUSINESS_STATUS_SYSTEM = "http://exercise-referral-hub.org/fhir/CodeSystem/referral-business-status"
HUB_OWNED_ELEMENTS = ("status", "statusReason", "businessStatus", "note", "lastModified")


def business_status_concept(code: str) -> dict:
    label = BusinessStatus(code).label
    return {"coding": [{"system": BUSINESS_STATUS_SYSTEM, "code": code, "display": label}], "text": label}


def _note(note) -> dict:
    rendered = {"time": http_date_iso(note.time), "text": note.text}
    if note.author_reference:
        rendered["authorReference"] = {"reference": note.author_reference}
        if note.author_display:
            rendered["authorReference"]["display"] = note.author_display
    else:
        rendered["authorString"] = note.author_display or "unknown"
    return rendered


def task_render(*, referral: Referral, base: dict, notes=None) -> dict:
    """``base`` with the hub-owned elements taken from ``referral``. ``notes`` defaults to the referral's notes."""
    task = {key: value for key, value in base.items() if key not in HUB_OWNED_ELEMENTS}
    task["status"] = referral.status
    if referral.status_reason:
        task["statusReason"] = {"text": referral.status_reason}
    task["businessStatus"] = business_status_concept(referral.business_status)
    if referral.business_status_text:  # while the hub finds someone: the routing gist (who, and why)
        task["businessStatus"]["text"] = referral.business_status_text
    notes = list(referral.notes.all()) if notes is None else notes
    if notes:
        task["note"] = [_note(n) for n in notes]
    task["lastModified"] = http_date_iso(referral.updated_at or timezone.now())
    return task


@receiver(referral_changed, dispatch_uid="fhir_bridge.task_projection")
def task_project(sender, *, referral: Referral, **kwargs) -> None:
    """Write the referral Task's next version. Runs inside the transaction of the change."""
    task = StoredResource.objects.select_for_update().get(referral=referral, resource_type="Task")
    resource_update(resource=task, content=task_render(referral=referral, base=task.content), now=timezone.now())


# --- offers: each one a child Task of the referral Task --------------------------------------------------------

OFFER_IDENTIFIER_SYSTEM = "http://exercise-referral-hub.org/fhir/sid/offer"
# An offer's status as a Task status, and the statusReason the hub gives where the Task needs one (pa-taskrm-1).
_OFFER_TASK_STATUS = {
    OfferStatus.REQUESTED: "requested",
    OfferStatus.ACCEPTED: "accepted",
    OfferStatus.REJECTED: "rejected",
    OfferStatus.EXPIRED: "cancelled",
    OfferStatus.CANCELLED: "cancelled",
}


def offer_task_id(offer: Offer) -> str:
    return f"offer-{offer.pk}"


def offer_task_render(*, offer: Offer, referral_task: dict, now) -> dict:
    status = _OFFER_TASK_STATUS[offer.status]
    role = offer.role
    task = {
        "resourceType": "Task",
        "id": offer_task_id(offer),
        "identifier": [{"system": OFFER_IDENTIFIER_SYSTEM, "value": str(offer.pk)}],
        "partOf": [{"reference": f"Task/{referral_task['id']}"}],
        "status": status,
        "intent": "order",
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
        "authoredOn": http_date_iso(offer.created_at),
        "lastModified": http_date_iso(offer.responded_at or now),
        "requester": {"reference": "Organization/hub", "display": "Exercise referral hub"},
        "owner": {"reference": f"PractitionerRole/{role.fhir_id}", "display": str(role)},
        "restriction": {"period": {"end": http_date_iso(offer.deadline)}},
    }
    for element in ("focus", "for"):  # the same request and patient as the referral Task
        if element in referral_task:
            task[element] = referral_task[element]
    reason = {
        OfferStatus.REJECTED: offer.decline_reason or "Declined",
        OfferStatus.EXPIRED: f"No answer by {http_date_iso(offer.deadline)}; offered to the next professional",
        OfferStatus.CANCELLED: offer.cancel_reason or "Withdrawn by the hub",
    }.get(offer.status)
    if reason:
        task["statusReason"] = {"text": reason}
    return task


@receiver(offer_changed, dispatch_uid="fhir_bridge.offer_projection")
def offer_task_project(sender, *, offer: Offer, from_status: str, **kwargs) -> None:
    """Write the offer's child Task (its first version when the offer is new). Runs inside the offer's
    transaction."""
    now = timezone.now()
    referral_task = StoredResource.objects.get(referral_id=offer.referral_id, resource_type="Task")
    content = offer_task_render(offer=offer, referral_task=referral_task.content, now=now)
    # A new offer has no Task yet: no need to look for one.
    existing = (
        StoredResource.objects.select_for_update().filter(resource_type="Task", fhir_id=content["id"]).first()
        if from_status
        else None
    )
    if existing is None:
        resources_create(contents=[content], clinic_id=referral_task.clinic_id, now=now)
    else:
        resource_update(resource=existing, content=content, now=now)
