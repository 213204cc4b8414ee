"""The referral Task, rendered from the domain.

The EHR's Task is kept as it came; what the hub owns (status, statusReason, businessStatus, notes, lastModified) is
laid over it from the Referral on every change, as a new version written in the same transaction.

A referral that did not come in over FHIR (created through the domain services: a web form, an import, a test
factory) gets its Patient, ServiceRequest and Task rendered here from the domain's facts when it is created, so
that the Task's focus and for resolve like an EHR's.
"""

import contextlib
import contextvars
import datetime as dt

from django.db import connection
from django.dispatch import receiver
from django.utils import timezone

from config.sql import rows_select, select_columns
from fhir_bridge.codes import (
    BUSINESS_STATUS_SYSTEM,
    CLEARANCE_SYSTEM,
    DELIVERY_SYSTEM,
    GEOLOCATION_EXTENSION,
    OFFER_IDENTIFIER_SYSTEM,
    PA_CATEGORY_SYSTEM,
    PRECAUTION_SYSTEM,
    SNOMED_SYSTEM,
    TASK_CODE_SYSTEM,
)
from fhir_bridge.models import StoredResource
from fhir_bridge.profiles import TASK_CODE_FULFILL
from fhir_bridge.reports_fhir import task_outputs
from fhir_bridge.store import http_date_iso, new_id, resource_update, resources_create
from referrals.models import BusinessStatus, Offer, OfferStatus, Referral, ReferralNote
from referrals.offers import offer_changed
from referrals.services import referral_changed, referral_created

HUB_OWNED_ELEMENTS = ("status", "statusReason", "businessStatus", "note", "lastModified")
# The steps on which the Task's output gains the report just sent.
REPORT_SENT_STEPS = frozenset({BusinessStatus.PROGRESS_REPORT_SENT, BusinessStatus.DISCHARGE_REPORT_SENT})


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


# The statusReason an EHR sent with its update (status_reason_sent), so that its coding is served back as sent.
_status_reason_sent = contextvars.ContextVar("status_reason_sent", default=None)


@contextlib.contextmanager
def status_reason_sent(concept):
    """Within this block, a re-render whose reason is this CodeableConcept's (concept_text) keeps it whole."""
    token = _status_reason_sent.set(concept)
    try:
        yield
    finally:
        _status_reason_sent.reset(token)


def concept_text(concept) -> str:
    """The words of a CodeableConcept: its text, else its first coding's display, else that coding's code."""
    if not isinstance(concept, dict):
        return ""
    if isinstance(concept.get("text"), str) and concept["text"]:
        return concept["text"]
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict):
            return coding.get("display") or coding.get("code") or ""
    return ""


def _status_reason(reason: str, base: dict) -> dict:
    # The domain keeps the reason's words; the concept the EHR sent (now, or in the version before) is served as
    # it was sent, codings included, as long as it still says the same.
    for concept in (_status_reason_sent.get(), base.get("statusReason")):
        if concept_text(concept) == reason:
            return concept
    return {"text": reason}


def task_render(*, referral: Referral, base: dict, notes=None) -> dict:
    """``base`` with the hub-owned elements taken from ``referral``. ``notes`` defaults to the referral's notes."""
    task = {key: value for key, value in base.items() if key not in HUB_OWNED_ELEMENTS}
    task["status"] = referral.status
    if referral.status_reason:
        task["statusReason"] = _status_reason(referral.status_reason, base)
    task["businessStatus"] = business_status_concept(referral.business_status)
    if referral.business_status_text:  # while the hub finds someone: the routing gist (who, and why)
        task["businessStatus"]["text"] = referral.business_status_text
    notes = list(referral.notes.all()) if notes is None else notes
    if notes:
        task["note"] = [_note(n) for n in notes]
    if referral.business_status in REPORT_SENT_STEPS:
        # A report was just sent: list it (and every earlier one) in output. Other versions keep the outputs
        # they had, as part of the base.
        outputs = task.get("output") or []
        known = {(o.get("valueReference") or {}).get("reference") for o in outputs}
        outputs += [o for o in task_outputs(referral_id=referral.pk) if o["valueReference"]["reference"] not in known]
        task["output"] = outputs
    task["lastModified"] = http_date_iso(referral.updated_at or timezone.now())
    return task


TASK_CODE = {"system": TASK_CODE_SYSTEM, "code": TASK_CODE_FULFILL}
PA_CATEGORY = {"system": PA_CATEGORY_SYSTEM, "code": "PhysicalActivity"}
# SNOMED CT 390893007 |Referral to physical activity program|: the PA IG's intervention value set.
PA_REFERRAL_CODE = {"system": SNOMED_SYSTEM, "code": "390893007", "display": "Referral to physical activity program"}
BCP47 = "urn:ietf:bcp:47"


def task_base(*, service_request: dict, owner: dict, now: dt.datetime) -> dict:
    """The referral Task the hub writes for a ServiceRequest that came without one: PA Task for Referral
    Management, focus the ServiceRequest, for its subject."""
    task = {
        "resourceType": "Task",
        "id": new_id(),
        "status": "requested",
        "intent": "order",
        "code": {"coding": [TASK_CODE]},
        "focus": {"reference": f"ServiceRequest/{service_request['id']}"},
        "for": {k: v for k, v in service_request["subject"].items() if k in ("reference", "display")},
        "authoredOn": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "owner": owner,
    }
    if service_request.get("requester"):
        task["requester"] = service_request["requester"]
    if service_request.get("priority"):
        task["priority"] = service_request["priority"]
    return task


def patient_render(*, referral: Referral) -> dict:
    """The Patient of a referral created through the domain, from its demographics and clinical facts."""
    facts = referral.facts
    patient: dict = {"resourceType": "Patient", "id": new_id()}
    if referral.patient_name:
        patient["name"] = [{"text": referral.patient_name}]
    if referral.patient_gender:
        patient["gender"] = referral.patient_gender
    if referral.patient_birth_date:
        patient["birthDate"] = referral.patient_birth_date
    address = {k: v for k, v in (("postalCode", referral.patient_postal_code), ("state", facts.state)) if v}
    if facts.location_source == facts.LocationSource.GEOLOCATION:
        address["extension"] = [{"url": GEOLOCATION_EXTENSION, "extension": [
            {"url": "latitude", "valueDecimal": facts.latitude}, {"url": "longitude", "valueDecimal": facts.longitude}
        ]}]
    if address:
        patient["address"] = [{"use": "home", **address}]
    languages = list(dict.fromkeys([*facts.preferred_languages, *([facts.required_language] if facts.required_language else [])]))
    if languages:
        patient["communication"] = [
            {"language": {"coding": [{"system": BCP47, "code": tag}]}, **({"preferred": True} if tag == facts.required_language else {})}
            for tag in languages
        ]
    return patient


def _concept(coding: dict) -> dict:
    if "code" not in coding:
        return {"text": coding.get("text", "")}
    return {"coding": [{k: coding[k] for k in ("system", "code", "display") if coding.get(k)}]}


def service_request_render(*, referral: Referral, patient_id: str, now: dt.datetime) -> dict:
    """The PA ServiceRequest of a referral created through the domain, from its facts."""
    facts = referral.facts
    code = {k: v for k, v in (("system", referral.service_system), ("code", referral.service_code),
                              ("display", referral.service_display)) if v}
    details = [
        *([{"system": CLEARANCE_SYSTEM, "code": facts.clearance}] if facts.clearance else []),
        *({"system": PRECAUTION_SYSTEM, "code": c} for c in facts.precautions),
        *({"system": DELIVERY_SYSTEM, "code": c} for c in facts.delivery_modes),
    ]
    service_request = {
        "resourceType": "ServiceRequest",
        "id": new_id(),
        "status": "active",
        "intent": "order",
        "category": [{"coding": [PA_CATEGORY]}],
        "priority": referral.priority,
        "code": {"coding": [code if code.get("code") else PA_REFERRAL_CODE]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": http_date_iso(referral.authored_on or now),
        "reasonCode": [_concept(c) for c in facts.condition_codes] or [{"text": "Exercise referral"}],
    }
    if referral.requester_reference:
        service_request["requester"] = {"reference": referral.requester_reference}
        if referral.requester_display:
            service_request["requester"]["display"] = referral.requester_display
    if referral.performer_reference:
        service_request["performer"] = [{"reference": referral.performer_reference}]
    if details:
        service_request["orderDetail"] = [{"coding": [d]} for d in details]
    period = {k: v.isoformat() for k, v in (("start", referral.occurrence_start), ("end", referral.occurrence_end)) if v}
    if period:
        service_request["occurrencePeriod"] = period
    return service_request


# Set while intake creates a referral from the EHR's own resources: it stores them itself.
_intake_renders = contextvars.ContextVar("intake_renders", default=False)


@contextlib.contextmanager
def resources_sent():
    """Within this block a new referral's FHIR resources come from the sender (intake), not from the domain."""
    token = _intake_renders.set(True)
    try:
        yield
    finally:
        _intake_renders.reset(token)


@receiver(referral_created, dispatch_uid="fhir_bridge.referral_resources_projection")
def referral_resources_project(sender, *, referral: Referral, **kwargs) -> None:
    """Store version 1 of the Patient, ServiceRequest and Task of a referral created through the domain. Runs
    inside the creation's transaction; intake (resources_sent) stores the EHR's own instead."""
    if _intake_renders.get():
        return
    now = timezone.now()
    patient = patient_render(referral=referral)
    service_request = service_request_render(referral=referral, patient_id=patient["id"], now=now)
    owner = {"reference": referral.owner_reference, "display": referral.owner_display}
    task = task_render(referral=referral, base=task_base(service_request=service_request, owner=owner, now=now))
    resources_create(
        contents=[patient, service_request, task], clinic_id=referral.clinic_id, referral_id=referral.pk, now=now
    )


@receiver(referral_changed, dispatch_uid="fhir_bridge.task_projection")
def task_project(sender, *, referral: Referral, **kwargs) -> None:
    """Write the referral Task's next version. Runs inside the transaction of the change.

    Raises StoredResource.DoesNotExist for a referral without a Task (none is created here), and
    MultipleObjectsReturned for one with several."""
    task = _referral_task_for_update(referral.pk)
    content = task_render(referral=referral, base=task.content, notes=_notes(referral.pk))
    resource_update(resource=task, content=content, now=timezone.now())


# Every status change of every referral reads these two, so they are written out as statements read by
# config.sql.rows_select: building them as querysets cost about 0.3 ms of Python each, twice what running them does
# (bench/README.md, "A referral change"), and Manager.raw maps the columns to the fields again on every run.


def _referral_task_for_update(referral_id: int) -> StoredResource:
    """The referral's Task row, locked until the transaction ends (where the database can lock a row)."""
    quote = connection.ops.quote_name
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    sql = (
        f"SELECT {select_columns(StoredResource)} FROM {quote(StoredResource._meta.db_table)} "
        f"WHERE {quote('referral_id')} = %s AND {quote('resource_type')} = %s{lock}"
    )
    rows = rows_select(StoredResource, sql, [referral_id, "Task"])
    if len(rows) != 1:  # as QuerySet.get would
        if rows:
            raise StoredResource.MultipleObjectsReturned(f"referral {referral_id} has {len(rows)} Tasks")
        raise StoredResource.DoesNotExist(f"referral {referral_id} has no Task")
    return rows[0]


def _notes(referral_id: int) -> list[ReferralNote]:
    """The referral's notes in their order (ReferralNote.Meta.ordering: time, then id)."""
    quote = connection.ops.quote_name
    sql = (
        f"SELECT {select_columns(ReferralNote)} FROM {quote(ReferralNote._meta.db_table)} "
        f"WHERE {quote('referral_id')} = %s ORDER BY {quote('time')}, {quote('id')}"
    )
    return rows_select(ReferralNote, sql, [referral_id])


# --- offers: each one a child Task of the referral Task --------------------------------------------------------

# An offer's status as a Task status, and the statusReason the hub gives where the Task needs one (pa-taskrm-1).
OFFER_TASK_STATUS = {
    OfferStatus.REQUESTED: "requested",
    OfferStatus.ACCEPTED: "accepted",
    OfferStatus.REJECTED: "rejected",
    OfferStatus.EXPIRED: "cancelled",
    OfferStatus.CANCELLED: "cancelled",
}


def offer_task_id(offer: Offer) -> str:
    return f"offer-{offer.pk}"


def offer_task_render(*, offer: Offer, referral_task: dict, now, copies: dict[str, str] | None = None) -> dict:
    """The offer's child Task. ``copies`` maps the URLs of another server's resources that the referral Task
    names (a pulled referral's focus and for, on the EHR) to the hub's copies of them (``hub_copies``)."""
    status = OFFER_TASK_STATUS[offer.status]
    role = offer.role
    task = {
        "resourceType": "Task",
        "id": offer_task_id(offer),
        "identifier": [{"system": OFFER_IDENTIFIER_SYSTEM, "value": str(offer.pk)}],
        "partOf": [{"reference": f"Task/{referral_task['id']}"}],
        "status": status,
        "intent": "order",
        "code": {"coding": [TASK_CODE]},
        "authoredOn": http_date_iso(offer.created_at),
        "lastModified": http_date_iso(offer.responded_at or now),
        "requester": {"reference": "Organization/hub", "display": "Exercise referral hub"},
        "owner": {"reference": f"PractitionerRole/{role.fhir_id}", "display": str(role)},
        "restriction": {"period": {"end": http_date_iso(offer.deadline)}},
    }
    # The same request and patient as the referral Task, by reference only: the professional reads this Task
    # before accepting, and the referral's `for` may name the patient in its display (the minimum PHI rule). A
    # pulled referral's Task names the EHR's own resources, which the professional cannot read, and whose URL
    # carries the clinic's record id for the patient: its offers name the hub's copies instead.
    for element in ("focus", "for"):
        reference = (referral_task.get(element) or {}).get("reference")
        if reference:
            task[element] = {"reference": (copies or {}).get(reference, reference)}
    reason = {
        OfferStatus.REJECTED: offer.decline_reason or "Declined",
        OfferStatus.EXPIRED: f"No answer by {http_date_iso(offer.deadline)}; offered to the next professional",
        OfferStatus.CANCELLED: offer.cancel_reason or "Withdrawn by the hub",
    }.get(offer.status)
    if reason:
        task["statusReason"] = {"text": reason}
    return task


def hub_copies(referral_task: StoredResource) -> dict[str, str]:
    """{URL: "Type/id"}: for each of the referral Task's focus and for that is an absolute URL (a pulled
    referral's, on the EHR), the hub's copy of that resource, stored with the referral and naming the URL in its
    meta.source (fhir_bridge/pull.py). Empty, with no query, for a Task whose references are the hub's."""
    urls = {
        ref for element in ("focus", "for")
        if isinstance(ref := (referral_task.content.get(element) or {}).get("reference"), str)
        and ref.startswith(("http://", "https://"))
    }
    if not urls:
        return {}
    copies = {}
    for row in StoredResource.objects.filter(
        referral_id=referral_task.referral_id, resource_type__in=("ServiceRequest", "Patient")
    ).only("resource_type", "fhir_id", "content"):
        source = (row.content.get("meta") or {}).get("source")
        if source in urls:
            copies[source] = row.reference
    return copies


@receiver(offer_changed, dispatch_uid="fhir_bridge.offer_projection")
def offer_task_project(sender, *, offer: Offer, from_status: str, **kwargs) -> None:
    """Write the offer's child Task (its first version when the offer is new). Runs inside the offer's
    transaction."""
    now = timezone.now()
    referral_task = StoredResource.objects.get(referral_id=offer.referral_id, resource_type="Task")
    content = offer_task_render(
        offer=offer, referral_task=referral_task.content, now=now, copies=hub_copies(referral_task)
    )
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
