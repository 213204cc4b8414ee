"""Reports to the physician as FHIR: the PA Intervention Report (a DiagnosticReport) and its PDF (a Binary).

On ``referrals.reports.report_sent`` (inside the send's transaction, before the referral moves) the report is
rendered and stored like the referral Task, under the referral's clinic: version 1 when first sent, a new version
when it is sent again (a preliminary report signed later becomes ``final``). The Task projection
(projection.py) then lists every sent report in the referral Task's ``output`` (type resulting-activity).

The DiagnosticReport:
- ``basedOn`` the referral's ServiceRequest, ``subject`` its Patient (both from the referral Task);
- ``status`` final (signed by the therapist) or preliminary (sent unsigned, "not reviewed by the therapist");
- ``category`` PhysicalActivity; ``code`` LOINC 11488-4 Consult note with the hub's report kind beside it
  (``REPORT_KIND_SYSTEM``: progress | discharge | did-not-start | no-update, published in the
  CapabilityStatement), so that an EHR tells progress and discharge apart by code;
- ``effectivePeriod`` the report's period, ``issued`` when it was sent;
- ``result`` the case's Observations the hub serves for the period (for a discharge, the whole program), except
  those entered in error;
- ``conclusion`` the four answers in brief; ``presentedForm`` the PDF: ``url`` Binary/<id>, its size and SHA-1.
"""

import base64
import hashlib

from django.dispatch import receiver
from django.utils import timezone

from fhir_bridge.codes import (
    LOINC_SYSTEM,
    PA_CATEGORY_SYSTEM,
    PA_STRUCTURE_DEFINITION,
    REPORT_KIND_SYSTEM,
    SDOHCC_TEMPORARY_SYSTEM,
)
from fhir_bridge.models import StoredResource
from fhir_bridge.profiles import PDF_CONTENT_TYPE
from fhir_bridge.store import http_date_iso, resource_update, resources_create
from referrals.models import SENT_REPORT_STATUSES, Report, ReportKind, ReportStatus
from referrals.reports import ReportDraft, report_sent

PA_INTERVENTION_REPORT_PROFILE = f"{PA_STRUCTURE_DEFINITION}/pa-diagnosticreport"
CONSULT_NOTE = {"system": LOINC_SYSTEM, "code": "11488-4", "display": "Consult note"}
RESULTING_ACTIVITY = {"coding": [{"system": SDOHCC_TEMPORARY_SYSTEM, "code": "resulting-activity"}]}
# A discharge's report covers the whole program; the others their period.
_WHOLE_PROGRAM = (ReportKind.DISCHARGE, ReportKind.DID_NOT_START)


def diagnostic_report_id(report: Report) -> str:
    return str(report.public_id)


def binary_id(report: Report) -> str:
    return f"{report.public_id}-pdf"


def task_outputs(*, referral_id: int) -> list[dict]:
    """The referral Task's output entries: one per report sent, oldest period first."""
    reports = Report.objects.filter(referral_id=referral_id, status__in=sorted(SENT_REPORT_STATUSES)).order_by(
        "period_start", "id"
    ).only("public_id")
    return [{"type": RESULTING_ACTIVITY, "valueReference": {"reference": f"DiagnosticReport/{r.public_id}"}}
            for r in reports]


def _effective_date(content: dict) -> str:
    value = content.get("effectiveDateTime") or content.get("effectiveInstant") or (
        (content.get("effectivePeriod") or {}).get("start")
    )
    return value[:10] if isinstance(value, str) else ""


def report_results(*, report: Report) -> list[str]:
    """References to the Observations of the report's period (the whole program for a discharge) that the hub
    serves for its referral, oldest first; those entered in error are left out."""
    start = "" if report.kind in _WHOLE_PROGRAM else report.period_start.isoformat()
    end = report.period_end.isoformat()
    rows = StoredResource.objects.filter(
        referral_id=report.referral_id, resource_type="Observation", is_deleted=False
    ).only("fhir_id", "content").order_by("id")
    picked = []
    for row in rows:
        when = _effective_date(row.content)
        if row.content.get("status") != "entered-in-error" and when and start <= when <= end:
            picked.append((when, f"Observation/{row.fhir_id}"))
    return [reference for _, reference in sorted(picked)]


def conclusion(report: Report) -> str:
    """The four answers in brief, as the therapist left them (or the hub drafted them)."""
    parts = [
        ("Goals", report.answer_goals),
        ("Issues and barriers", report.answer_barriers),
        ("Participation", report.answer_participation),
        ("Plan", report.answer_plan),
    ]
    text = " ".join(f"{name}: {answer.strip()}" for name, answer in parts if answer.strip())
    if report.status != ReportStatus.SIGNED:
        text = "Not reviewed by the therapist. " + text
    return text


def diagnostic_report_render(*, report: Report, task: dict, results: list[str]) -> dict:
    draft = ReportDraft.from_json(report.draft)
    kind = ReportKind(report.kind)
    pdf = bytes(report.pdf or b"")
    resource = {
        "resourceType": "DiagnosticReport",
        "id": diagnostic_report_id(report),
        "meta": {"profile": [PA_INTERVENTION_REPORT_PROFILE]},
        "basedOn": [{"reference": task["focus"]["reference"]}],
        "status": "final" if report.status == ReportStatus.SIGNED else "preliminary",
        "category": [{"coding": [{"system": PA_CATEGORY_SYSTEM, "code": "PhysicalActivity"}]}],
        "code": {
            "coding": [CONSULT_NOTE, {"system": REPORT_KIND_SYSTEM, "code": kind.value, "display": kind.label}],
            "text": kind.label,
        },
        "subject": {"reference": task["for"]["reference"]},
        "effectivePeriod": {"start": draft.period_start, "end": draft.period_end},
        "issued": http_date_iso(report.sent_at or timezone.now()),
        "conclusion": conclusion(report),
        "presentedForm": [{
            "contentType": PDF_CONTENT_TYPE,
            "language": "en-US",
            "url": f"Binary/{binary_id(report)}",
            "size": len(pdf),
            "hash": base64.b64encode(hashlib.sha1(pdf).digest()).decode(),
            "title": f"{kind.label}, {draft.period_start} to {draft.period_end}",
            "creation": http_date_iso(report.sent_at or timezone.now()),
        }],
    }
    if draft.professional:
        resource["performer"] = [{"display": draft.professional}]
    if results:
        resource["result"] = [{"reference": r} for r in results]
    return resource


def binary_render(report: Report) -> dict:
    return {
        "resourceType": "Binary",
        "id": binary_id(report),
        "contentType": PDF_CONTENT_TYPE,
        "data": base64.b64encode(bytes(report.pdf or b"")).decode(),
    }


def _store(*, referral_id: int, contents: list[dict], clinic_id: int, now) -> None:
    """Store ``contents`` (of one referral): new ones as version 1 together, known ones as their next version."""
    rows = {
        (row.resource_type, row.fhir_id): row
        for row in StoredResource.objects.select_for_update().filter(
            fhir_id__in=[c["id"] for c in contents], referral_id=referral_id
        )
    }
    new = [c for c in contents if (c["resourceType"], c["id"]) not in rows]
    if new:
        resources_create(contents=new, clinic_id=clinic_id, referral_id=referral_id, now=now)
    for content in contents:
        row = rows.get((content["resourceType"], content["id"]))
        if row is not None:
            resource_update(resource=row, content=content, now=now)


@receiver(report_sent, dispatch_uid="fhir_bridge.report_projection")
def report_project(sender, *, report: Report, **kwargs) -> None:
    """Store the report's DiagnosticReport and Binary (new, or their next versions). Runs inside the send's
    transaction."""
    task = StoredResource.objects.only("content", "clinic_id").get(referral_id=report.referral_id,
                                                                   resource_type="Task")
    dr = diagnostic_report_render(report=report, task=task.content, results=report_results(report=report))
    _store(referral_id=report.referral_id, contents=[binary_render(report), dr], clinic_id=task.clinic_id,
           now=timezone.now())
