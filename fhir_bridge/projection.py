"""The referral Task, rendered from the domain.

The EHR's Task is kept as it came; what the hub owns (status, statusReason, businessStatus, notes, lastModified) is
laid over it from the Referral on every change, as a new version written in the same transaction.
"""

from django.dispatch import receiver
from django.utils import timezone

from fhir_bridge.models import StoredResource
from fhir_bridge.store import http_date_iso, resource_update
from referrals.models import BusinessStatus, Referral
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
