"""The FHIR surface as a provider's own system sees it: the PA IG's Light Service Provider.

A provider client is an EhrClient registered to a network organization (``EhrClient.organization``). It sees:

- the offer Tasks made to its organization (``Offer.organization``: the organization of the offered role when
  the offer was made, so a role that moves on does not take its cases along);
- everything of the cases it accepted: the referral Task and every resource stored with the referral
  (ServiceRequest, Patient, Conditions, Observations, Goal, ...), in full;
- the shared resources (the hub's Organization) and the network.

Before its organization accepts an offer, a provider reads no more than the therapist's web page shows (the
minimum PHI rule, issue 9): the offer Task names the patient by reference only, and that reference (and the
ServiceRequest's) resolves to a redacted Patient (age band and postal area) and a redacted ServiceRequest
(codes, clearance, precautions, delivery), rendered from the domain here and never stored. Both carry
``meta.security`` REDACTED. Nothing else of the referral can be read before acceptance.

It answers an offer and moves its case by updating the offer Task or the referral Task, always with If-Match:

=================  ==================================  ===================================================
Task               status it may set                   domain service
=================  ==================================  ===================================================
offer (requested)  accepted                            referrals.offers.offer_accept
offer (requested)  rejected + statusReason             referrals.offers.offer_decline
referral (case)    in-progress, on-hold + statusReason, referrals.cases: case_start (from accepted),
                   completed, failed + statusReason     case_resume (from on-hold), case_hold, case_complete,
                                                        case_fail, within the PA state machine
                                                        (referrals.models.ALLOWED_TRANSITIONS)
=================  ==================================  ===================================================

Any other move is 409 with an OperationOutcome naming it ("'completed' → 'in-progress'"); a missing or
superfluous statusReason is 422 (pa-taskrm-1, checked by profiles.py before anything else).

It posts the PA Observations of its cases (PAVS and the others): each must name a case it accepted, by
``basedOn`` (the case's ServiceRequest or Task) or ``subject`` (its Patient). A PAVS check-in, an assessment's
measure or a session goes through the case records' services (records_intake.py), the same rows as the web
app's forms; any other is stored with that case as sent. The clinic's EHR reads both.
"""

import datetime as dt
import logging
import re

import orjson
from django.db import transaction
from django.db.models import CharField, Q, QuerySet, Value
from django.db.models.functions import Cast, Concat
from django.utils import timezone

from fhir_bridge import intake
from fhir_bridge.codes import (
    AGE_BAND_EXTENSION,
    CLEARANCE_SYSTEM,
    DELIVERY_SYSTEM,
    OBSERVATION_VALUE_SYSTEM,
    OFFER_IDENTIFIER_SYSTEM,
    PA_CATEGORY_SYSTEM,
    POSTAL_AREA_EXTENSION,
    PRECAUTION_SYSTEM,
    UCUM_SYSTEM,
)
from fhir_bridge.models import EhrClient, StoredResource
from fhir_bridge.outcomes import FhirError, error, not_found
# The offer Task's status as the projection renders it: the provider's answer is read against the same table.
from fhir_bridge.projection import OFFER_TASK_STATUS
from fhir_bridge.profiles import Issue
from fhir_bridge.records_intake import observation_record
from fhir_bridge.search import search
from fhir_bridge.store import new_id, resources_create
from network.models import Organization, ProfessionalRole
from referrals.models import (
    TERMINAL_STATUSES,
    Offer,
    OfferStatus,
    Referral,
    ReferralStatus,
)
from referrals.cases import case_complete, case_fail, case_hold, case_resume, case_start
from referrals.errors import DomainError, ErrorCode
from referrals.offers import offer_accept, offer_decline
from referrals.services import referral_update

log = logging.getLogger(__name__)

REDACTED = {"system": OBSERVATION_VALUE_SYSTEM, "code": "REDACTED", "display": "redacted"}
# What a provider reads before acceptance, by type; each has its renderer below.
REDACTED_TYPES = ("Patient", "ServiceRequest")
# The statuses a provider sets on its case's referral Task. accepted is set on the offer Task; requested,
# cancelled and entered-in-error are not the provider's (the clinic cancels; nothing goes back to requested).
CASE_STATUSES = frozenset(
    {ReferralStatus.IN_PROGRESS, ReferralStatus.ON_HOLD, ReferralStatus.COMPLETED, ReferralStatus.FAILED}
)
# Task elements a provider's update must leave as they are (compared by reference where they are references).
_FIXED_ELEMENTS = (
    "intent", "code", "focus", "for", "requester", "authoredOn", "identifier", "basedOn", "partOf", "owner",
    "restriction",
)
_OFFER_TASK_ID = re.compile(r"offer-(\d+)")


def actor(client: EhrClient) -> str:
    """The ReferralEvent/OfferEvent actor of a provider client's changes."""
    return f"provider-client:{client.client_id}"


# --- What a provider may see -------------------------------------------------------------------------------


def accepted_referral_ids(organization_id: int) -> QuerySet:
    """The referrals whose offer ``organization_id`` accepted (its cases), as a subquery of ids."""
    return Offer.objects.filter(organization_id=organization_id, status=OfferStatus.ACCEPTED).values("referral_id")


def _offer_task_ids(organization_id: int) -> QuerySet:
    # The offer Task's id is "offer-<pk>" (projection.offer_task_id), built in SQL so that this stays a subquery.
    return (
        Offer.objects.filter(organization_id=organization_id)
        .annotate(task_id=Concat(Value("offer-"), Cast("pk", CharField())))
        .values("task_id")
    )


def provider_rows(organization_id: int, resource_type: str) -> QuerySet:
    """Stored resources of one type that a provider of ``organization_id`` may read in full: the shared ones,
    everything stored with its cases, and (Tasks) the offer Tasks made to it."""
    mine = Q(clinic_id__isnull=True, referral_id__isnull=True) | Q(referral_id__in=accepted_referral_ids(organization_id))
    if resource_type == "Task":
        mine |= Q(referral_id__isnull=True, fhir_id__in=_offer_task_ids(organization_id))
    return StoredResource.objects.filter(resource_type=resource_type, is_deleted=False).filter(mine)


def _offer_of_task(fhir_id: str) -> Offer | None:
    match = _OFFER_TASK_ID.fullmatch(fhir_id)
    if match is None:
        return None
    return Offer.objects.select_related("role").filter(pk=int(match.group(1))).first()


def task_view(content: dict) -> dict:
    """A Task as a provider is served it: an offer Task names its patient and request by reference only (its
    older versions, rendered before that rule, may carry a display)."""
    if not any(i.get("system") == OFFER_IDENTIFIER_SYSTEM for i in content.get("identifier") or [] if isinstance(i, dict)):
        return content
    viewed = dict(content)
    for element in ("for", "focus"):
        reference = (content.get(element) or {}).get("reference") if isinstance(content.get(element), dict) else None
        if reference:
            viewed[element] = {"reference": reference}
        else:
            viewed.pop(element, None)
    return viewed


def served(row_or_content) -> dict:
    """The content of a stored resource (or a version's) as a provider is served it."""
    content = row_or_content if isinstance(row_or_content, dict) else row_or_content.content
    return task_view(content) if content.get("resourceType") == "Task" else content


# --- The redacted Patient and ServiceRequest ----------------------------------------------------------------


def age_years(birth_date: str, today: dt.date) -> int | None:
    """Whole years from a FHIR date (``1960``, ``1960-04`` or ``1960-04-12``); a partial date counts from its
    first day, so the age may come out a year high; a band is what is served, and that is good enough."""
    parts = birth_date.split("-") if birth_date else []
    try:
        year = int(parts[0])
        month = int(parts[1]) if len(parts) > 1 else 1
        day = int(parts[2]) if len(parts) > 2 else 1
        born = dt.date(year, month, day)
    except (ValueError, IndexError):
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def age_band(birth_date: str, today: dt.date) -> tuple[int, int | None] | None:
    """The decade of life (60, 69), or (90, None) from 90 on: HIPAA's Safe Harbor groups every age over 89."""
    age = age_years(birth_date, today)
    if age is None or age < 0:
        return None
    if age >= 90:
        return 90, None
    low = age // 10 * 10
    return low, low + 9


def postal_area(postal_code: str) -> str:
    """The first three digits of a US ZIP code (Safe Harbor's geographic unit); "" for anything else."""
    digits = (postal_code or "").strip()[:3]
    return digits if len(digits) == 3 and digits.isdigit() else ""


def _years(value: int) -> dict:
    return {"value": value, "unit": "a", "system": UCUM_SYSTEM, "code": "a"}


def patient_redacted(*, referral: Referral, fhir_id: str, today: dt.date) -> dict:
    """The Patient a provider reads before acceptance: no name, birth date, address, identifier or contact;
    the age band and the postal area as extensions."""
    extensions = []
    band = age_band(referral.patient_birth_date, today)
    if band is not None:
        low, high = band
        extensions.append(
            {"url": AGE_BAND_EXTENSION, "valueRange": {"low": _years(low), **({"high": _years(high)} if high else {})}}
        )
    area = postal_area(referral.patient_postal_code)
    if area:
        extensions.append({"url": POSTAL_AREA_EXTENSION, "valueString": area})
    patient = {"resourceType": "Patient", "id": fhir_id, "meta": {"security": [REDACTED]}}
    if extensions:
        patient["extension"] = extensions
    return patient


def _coded(concept: dict) -> dict | None:
    # Codes only: a concept sent as text alone may say anything, the patient's name included.
    if not concept.get("code"):
        return None
    return {"coding": [{k: concept[k] for k in ("system", "code", "display") if concept.get(k)}]}


def service_request_redacted(*, referral: Referral, fhir_id: str, patient_id: str) -> dict:
    """The ServiceRequest a provider reads before acceptance, from the referral's clinical facts: the service
    and condition codes, clearance, precautions and delivery; no free text, requester or supporting data."""
    facts = referral.facts
    details = [
        *([{"system": CLEARANCE_SYSTEM, "code": facts.clearance}] if facts.clearance else []),
        *({"system": PRECAUTION_SYSTEM, "code": c} for c in facts.precautions),
        *({"system": DELIVERY_SYSTEM, "code": c} for c in facts.delivery_modes),
    ]
    service_request = {
        "resourceType": "ServiceRequest",
        "id": fhir_id,
        "meta": {"security": [REDACTED]},
        "status": "active",
        "intent": "order",
        "category": [{"coding": [{"system": PA_CATEGORY_SYSTEM, "code": "PhysicalActivity"}]}],
        "priority": referral.priority,
    }
    code = _coded({"system": referral.service_system, "code": referral.service_code, "display": referral.service_display})
    if code:
        service_request["code"] = code
    if patient_id:
        service_request["subject"] = {"reference": f"Patient/{patient_id}"}
    reasons = [c for c in (_coded(concept) for concept in facts.condition_codes) if c]
    if reasons:
        service_request["reasonCode"] = reasons
    if details:
        service_request["orderDetail"] = [{"coding": [d]} for d in details]
    return service_request


def _reference_id(content: dict, element: str, resource_type: str) -> str:
    reference = (content.get(element) or {}).get("reference", "") if isinstance(content.get(element), dict) else ""
    target, _, fhir_id = reference.rpartition("/")
    return fhir_id if target.endswith(resource_type) else ""


def redacted_for_offer_tasks(organization_id: int, tasks: list[StoredResource], wanted: set[str]) -> list[dict]:
    """The redacted resources that ``tasks``' references resolve to, for the offer Tasks among them whose case
    the organization has not accepted. ``wanted`` holds "Task:patient" and/or "Task:focus"."""
    offers = {}
    for task in tasks:
        match = _OFFER_TASK_ID.fullmatch(task.fhir_id)
        if match and task.referral_id is None:
            offers[int(match.group(1))] = task
    if not offers:
        return []
    accepted = set(accepted_referral_ids(organization_id).values_list("referral_id", flat=True))
    found = (
        Offer.objects.filter(pk__in=offers, organization_id=organization_id)
        .exclude(referral_id__in=accepted)
        .select_related("referral__facts")
    )
    today = timezone.now().date()
    out: dict[str, dict] = {}
    for offer in found:
        content = offers[offer.pk].content
        patient_id = _reference_id(content, "for", "Patient")
        if "Task:patient" in wanted and patient_id:
            out.setdefault(
                f"Patient/{patient_id}", patient_redacted(referral=offer.referral, fhir_id=patient_id, today=today)
            )
        request_id = _reference_id(content, "focus", "ServiceRequest")
        if "Task:focus" in wanted and request_id:
            out.setdefault(
                f"ServiceRequest/{request_id}",
                service_request_redacted(referral=offer.referral, fhir_id=request_id, patient_id=patient_id),
            )
    return list(out.values())


def redacted_read(organization_id: int, resource_type: str, fhir_id: str) -> dict | None:
    """The redacted Patient or ServiceRequest that one of the organization's offer Tasks refers to, or None."""
    if resource_type not in REDACTED_TYPES:
        return None
    param, reference = ("patient", f"Patient/{fhir_id}") if resource_type == "Patient" else (
        "focus", f"ServiceRequest/{fhir_id}"
    )
    tasks = list(
        provider_rows(organization_id, "Task")
        .filter(referral_id__isnull=True, search_tokens__param=param, search_tokens__value=reference)
        .order_by("-id")[:1]
    )
    include = "Task:patient" if resource_type == "Patient" else "Task:focus"
    found = redacted_for_offer_tasks(organization_id, tasks, {include})
    return found[0] if found else None


# --- Reads and searches --------------------------------------------------------------------------------------


def search_page(*, organization_id: int, plan, base_url: str):
    """search.search over what the provider may see, with the redacted Patient and ServiceRequest of its open
    offers added for _include=Task:patient / Task:focus. Returns (page, matches, included), the last two as
    (reference, content served) pairs."""
    page = search(
        clinic_id=None, plan=plan, base_url=base_url, rows=lambda type_name: provider_rows(organization_id, type_name)
    )
    included = [(r.reference, served(r)) for r in page.included]
    wanted = set(plan.includes)
    if plan.resource_type == "Task" and wanted & {"Task:patient", "Task:focus"}:
        have = {reference for reference, _ in included}
        for resource in redacted_for_offer_tasks(organization_id, page.matches, wanted):
            reference = f"{resource['resourceType']}/{resource['id']}"
            if reference not in have:  # the full one is there already: the organization has the case
                included.append((reference, resource))
    matches = [(r.reference, served(r)) for r in page.matches]
    return page, matches, included


def owner_as_roles(organization_id: int, resource_type: str, params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``Task?owner=Organization/<its own id>`` asks for the Tasks of any of its roles: an offer Task's owner is
    the PractitionerRole it was made to, and a provider's system works for the whole organization."""
    if resource_type != "Task" or not any(name == "owner" for name, _ in params):
        return params
    organization = Organization.objects.filter(pk=organization_id).values_list("fhir_id", flat=True).first()
    own = {f"Organization/{organization}", organization}
    roles = [f"PractitionerRole/{fhir_id}" for fhir_id in
             ProfessionalRole.objects.filter(organization_id=organization_id).values_list("fhir_id", flat=True)]
    rewritten = []
    for name, raw in params:
        if name == "owner" and any(value.rsplit("/", 2)[-2:] == ["Organization", organization] or value in own
                                   for value in raw.split(",")):
            raw = ",".join([raw, *roles])
        rewritten.append((name, raw))
    return rewritten


# --- Updates of the offer and referral Tasks -----------------------------------------------------------------


def _transition_refused(task_kind: str, from_status: str, to_status: str, why: str) -> FhirError:
    return error(
        409, "business-rule", f"{task_kind} Task: {from_status!r} → {to_status!r} is not allowed: {why}",
        expression="Task.status",
    )


def _fixed_issues(body: dict, stored: dict) -> list[Issue]:
    def comparable(value):
        if isinstance(value, dict) and "reference" in value:
            return value["reference"]
        if isinstance(value, list):
            return [comparable(v) for v in value]
        return value

    return [
        Issue("error", "business-rule", f"Task.{name}", f"Task.{name} is not the provider's to change")
        for name in _FIXED_ELEMENTS
        if comparable(body.get(name)) != comparable(stored.get(name))
    ]


def _new_notes(body: dict, stored: dict) -> list[dict]:
    known = {(n.get("time"), n.get("text")) for n in stored.get("note") or [] if isinstance(n, dict)}
    return [n for n in body.get("note") or [] if isinstance(n, dict) and (n.get("time"), n.get("text")) not in known]


def task_update(*, client: EhrClient, fhir_id: str, body: dict, expected_version: int | None) -> StoredResource:
    """A provider's PUT of an offer Task or its case's referral Task (validated against the profiles already).
    Returns the Task row as it is after the change (unchanged when nothing changed); raises FhirError."""
    if expected_version is None:
        raise error(
            428, "required",
            "send If-Match with the Task's ETag (W/\"<versionId>\"): a provider's change must be made against the "
            "version it read",
        )
    organization_id = client.organization_id
    row = provider_rows(organization_id, "Task").filter(fhir_id=fhir_id).first()
    if row is None:
        raise not_found("Task", fhir_id)
    offer = _offer_of_task(fhir_id) if row.referral_id is None else None
    if row.referral_id is None and offer is None:
        raise error(405, "not-supported", f"{row.reference} is not a Task a provider updates")
    referral_id = offer.referral_id if offer else row.referral_id
    who = actor(client)
    with transaction.atomic():
        # The referral first, then the Task: the order the domain's services lock in (referrals/offers.py).
        referral = Referral.objects.select_for_update().get(pk=referral_id)
        row = StoredResource.objects.select_for_update().get(pk=row.pk)
        if expected_version != row.version_id:
            raise error(
                412, "conflict",
                f"{row.reference} is at version {row.version_id}, not {expected_version}: read it again and "
                "re-apply the change",
            )
        issues = _fixed_issues(body, row.content)
        if issues:
            raise FhirError(422, issues)
        status = body["status"]
        reason = ((body.get("statusReason") or {}).get("text") or "").strip()
        notes = _new_notes(body, row.content)
        if offer is not None:
            if notes:
                raise error(
                    422, "not-supported", "notes are not taken on an offer Task; add them to the case's referral "
                    "Task once the offer is accepted", expression="Task.note",
                )
            _offer_answer(offer=offer, referral=referral, status=status, reason=reason, actor=who)
        else:
            _case_move(referral=referral, status=status, reason=reason, notes=notes, actor=who)
        row.refresh_from_db()
    return row


def _offer_answer(*, offer: Offer, referral: Referral, status: str, reason: str, actor: str) -> None:
    offer.refresh_from_db()
    current = OFFER_TASK_STATUS[offer.status]
    if status == current:
        return  # nothing to answer (a resend of what it reads)
    if offer.status != OfferStatus.REQUESTED:
        why = "the offer is final"
        if offer.status == OfferStatus.ACCEPTED:
            why += "; the case is run on the referral Task (the offer Task's partOf)"
        raise _transition_refused("offer", current, status, why)
    try:
        if status == ReferralStatus.ACCEPTED:
            offer_accept(offer=offer, actor=actor)
        elif status == ReferralStatus.REJECTED:
            offer_decline(offer=offer, reason=reason, actor=actor)
        else:
            raise _transition_refused(
                "offer", current, status, "an offer is answered with accepted, or rejected with a statusReason"
            )
    except DomainError as exc:
        if exc.code not in (ErrorCode.CONFLICT, ErrorCode.NOT_OPEN, ErrorCode.STALE):
            raise  # the adapter maps it (outcomes.domain_error)
        # Someone answered or withdrew the offer, or the referral moved on, while this request was on its way.
        raise error(409, "conflict", f"offer Task: {current!r} → {status!r} was not made: {exc}",
                    expression="Task.status") from None
    log.info("offer %s %s by %s", offer.pk, status, actor)


def _case_move(*, referral: Referral, status: str, reason: str, notes: list[dict], actor: str) -> None:
    current = referral.status
    if status == current and reason == referral.status_reason:
        if notes:
            referral_update(
                referral=referral, status=current, reason=referral.status_reason, notes=intake.note_facts(notes),
                actor=actor,
            )
        return
    if notes:
        raise error(422, "not-supported", "send new notes in an update of their own, not with a status change",
                    expression="Task.note")
    if current in TERMINAL_STATUSES:
        raise _transition_refused("referral", current, status, "the Task is final; a new referral is needed")
    if status == ReferralStatus.REQUESTED:
        raise _transition_refused("referral", current, status, "a case never goes back to requested")
    if status not in CASE_STATUSES:
        raise _transition_refused(
            "referral", current, status,
            "a provider moves its case to in-progress, on-hold, completed or failed (the clinic cancels)",
        )
    if not referral.can_move_to(status):
        raise _transition_refused("referral", current, status, "the PA Task state machine has no such step")
    # The web app's case services, so that a move is the same change (and the same event) whichever edge makes it.
    # The provider's If-Match was checked against the Task under the referral's lock: the case's version now is
    # the one it read. A DomainError from here on (a race lost, a reason the profile let through) is mapped by
    # the adapter.
    version = referral.version
    if status == ReferralStatus.IN_PROGRESS:
        step = case_resume if current == ReferralStatus.ON_HOLD else case_start
        step(referral=referral, actor=actor, expected_version=version)
    elif status == ReferralStatus.ON_HOLD:
        case_hold(referral=referral, reason=reason, actor=actor, expected_version=version)
    elif status == ReferralStatus.COMPLETED:
        case_complete(referral=referral, actor=actor, expected_version=version)
    else:
        case_fail(referral=referral, reason=reason, actor=actor, expected_version=version)
    log.info("referral %s %s → %s by %s", referral.pk, current, status, actor)


# --- Observations of a case ----------------------------------------------------------------------------------


def _case_of_observation(organization_id: int, body: dict) -> tuple[Referral, str]:
    """The accepted case an Observation names (by basedOn, else subject), and its Patient's reference."""
    candidates = [("Observation.basedOn", b) for b in body.get("basedOn") or [] if isinstance(b, dict)]
    if isinstance(body.get("subject"), dict):
        candidates.append(("Observation.subject", body["subject"]))
    referral_ids = set()
    for _, reference in candidates:
        target_type, _, fhir_id = (reference.get("reference") or "").rstrip("/").rpartition("/")
        target_type = target_type.rpartition("/")[2]
        if target_type not in ("ServiceRequest", "Task", "Patient") or not fhir_id:
            continue
        row = provider_rows(organization_id, target_type).filter(fhir_id=fhir_id, referral_id__isnull=False).first()
        if row is not None:
            referral_ids.add(row.referral_id)
    if len(referral_ids) != 1:
        why = "names no case" if not referral_ids else "names more than one case"
        raise error(
            422, "business-rule",
            f"the Observation {why} your organization accepted: give basedOn the case's ServiceRequest (or Task) "
            "and subject its Patient",
            expression="Observation.basedOn",
        )
    referral = Referral.objects.get(pk=referral_ids.pop())
    patient = StoredResource.objects.filter(referral=referral, resource_type="Patient").values_list("fhir_id", flat=True).first()
    subject = (body.get("subject") or {}).get("reference", "") if isinstance(body.get("subject"), dict) else ""
    if patient and subject and subject.rstrip("/").split("/")[-2:] != ["Patient", patient]:
        raise error(
            422, "business-rule", f"Observation.subject must be the case's patient, Patient/{patient}",
            expression="Observation.subject",
        )
    return referral, patient or ""


def observation_create(*, client: EhrClient, body: dict) -> StoredResource:
    """Record a PA Observation a provider posts for one of its cases. Returns the Observation served for it.

    Validated like any Observation (profiles.py: the PAVS/EVS profiles for their four codes), then, when it is
    one of the case records (a PAVS check-in, an assessment's measure, a session: records_intake.py), recorded
    through the case records' service, as the therapist's web form records it; the hub serves the Observation
    it renders from that record. Any other Observation is stored with the case as sent, where the clinic reads
    it too."""
    intake.validate([("Observation", body)])
    referral, _ = _case_of_observation(client.organization_id, body)
    recorded = observation_record(referral=referral, body=body, actor=actor(client))
    if recorded is not None:
        log.info("observation %s recorded for referral %s by %s", recorded.fhir_id, referral.pk, actor(client))
        return recorded
    resource = orjson.loads(orjson.dumps(body))  # a copy to rewrite; what came in stays as sent
    resource["id"] = new_id()
    with transaction.atomic():
        [row] = resources_create(
            contents=[resource], clinic_id=referral.clinic_id, referral_id=referral.pk, client=client,
            now=timezone.now(),
        )
    log.info("observation %s stored as sent for referral %s by %s", row.fhir_id, referral.pk, actor(client))
    return row
