"""Referral intake: a transaction Bundle, a ServiceRequest alone, or a Task alone. All three are parsed and
validated here, then end in one place, ``_referral_open``, which calls the domain's ``referral_create`` and stores
the resources, in one transaction.
"""

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import orjson
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from config.queue import enqueue_on_commit
from fhir_bridge import limits
from fhir_bridge.clinical_facts import clinical_facts, home_address
from fhir_bridge.fhir import structural_issues
from fhir_bridge.models import ConditionalCreateKey, EhrClient, InboundMessage, ResourceIdentifier, StoredResource
from fhir_bridge.outcomes import FhirError, error
from fhir_bridge.profiles import Issue, check_resource, domain_resource_issues
from fhir_bridge.projection import resources_sent, task_base, task_render
from fhir_bridge.route_table import BUNDLE_TYPES
from fhir_bridge.search import conditional_criteria, filtered, visible
from fhir_bridge.search_params import business_identifiers
from fhir_bridge.store import IDENTIFIED_TYPES, DuplicateResource, new_id, resources_create, rows_insert
from referrals.models import HUB_ORGANIZATION_REFERENCE, Referral
from referrals.services import NoteFacts, ReferralFacts, referral_create
from referrals.tasks import route_referral

log = logging.getLogger(__name__)

HUB_OWNER = {"reference": HUB_ORGANIZATION_REFERENCE, "display": "Exercise referral hub"}



@dataclass
class Caller:
    client: EhrClient
    base_url: str

    @property
    def clinic_id(self) -> int:
        return self.client.clinic_id

    @property
    def actor(self) -> str:
        return f"ehr-client:{self.client.client_id}"


@dataclass
class Outcome:
    """What an intake answers: the HTTP status, the resource to return, and the stored resource it stands for."""

    status: int
    resource: dict
    stored: StoredResource | None = None
    created: list[StoredResource] = field(default_factory=list)


# --- validation ----------------------------------------------------------------------------------------------


def validate(
    resources: list[tuple[str, dict]], *, profiled: list[tuple[str, dict]] | None = None, whole: dict | None = None
) -> None:
    """Raise one FhirError listing every problem of every resource: 400 when a resource cannot be parsed as FHIR
    R4, 422 when it parses but breaks a profile rule. ``profiled`` are the forms to check against the profiles
    when they differ from what was parsed (contained resources lifted out). ``whole`` is the Bundle that holds
    ``resources``: parsed at once first, and entry by entry only when that fails, for the paths."""
    structural, profile = [], []
    whole_issues = structural_issues(whole, path="Bundle") if whole is not None else None
    if whole_issues is None or whole_issues:
        for path, resource in resources:
            structural += structural_issues(resource, path=path)
        structural = structural or whole_issues or []  # what is wrong lies in the Bundle itself, not an entry
    for path, resource in resources:
        profile += domain_resource_issues(resource, path=path)  # on the resource as sent, contained ones in place
    for path, resource in resources if profiled is None else profiled:
        profile += check_resource(resource, path=path)
        identified = isinstance(resource, dict) and resource.get("resourceType") in IDENTIFIED_TYPES
        profile += limits.key_issues(resource, path=path, identified=identified)
    errors = [issue for issue in profile if issue.severity == "error"]
    if structural:
        # A profile issue on an element the parser already reported says the same thing twice.
        seen = {issue.expression for issue in structural}
        raise FhirError(400, structural + [issue for issue in errors if issue.expression not in seen])
    if errors:
        raise FhirError(422, errors)


def _clone(resource: dict) -> dict:
    """A deep copy to rewrite, leaving what came in untouched (it is kept verbatim). orjson is ~10x deepcopy."""
    return orjson.loads(orjson.dumps(resource))


def walk_references(node, rewrite) -> None:
    """Apply ``rewrite(ref) -> ref`` to every Reference.reference in ``node`` (a resource or part of one), in place,
    wherever it sits: extensions and contained resources too."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            node["reference"] = rewrite(ref)
        for value in node.values():
            if isinstance(value, (dict, list)):
                walk_references(value, rewrite)
    elif isinstance(node, list):
        for item in node:
            walk_references(item, rewrite)


def _relative(ref: str, base_url: str) -> str:
    if ref.startswith(base_url + "/"):
        return ref[len(base_url) + 1 :]
    return ref


def _first(items) -> dict:
    return items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}


def _datetime(value) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    if len(text) == 4:
        text += "-01-01"
    elif len(text) == 7:
        text += "-01"
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _date(value) -> dt.date | None:
    moment = _datetime(value)
    return moment.date() if moment else None


def _codings(concepts) -> list[dict]:
    out = []
    for concept in concepts if isinstance(concepts, list) else [concepts]:
        if not isinstance(concept, dict):
            continue
        for coding in concept.get("coding") or []:
            if isinstance(coding, dict) and coding.get("code"):
                out.append({k: coding[k] for k in ("system", "code", "display") if k in coding})
        if not concept.get("coding") and concept.get("text"):
            out.append({"text": concept["text"]})
    return out


# --- the facts of a referral ------------------------------------------------------------------------------------


def referral_facts(
    *, task: dict | None, service_request: dict, patient: dict, conditions: list[dict],
    observations: list[dict] = (), goal_resources: list[dict] = (),
) -> ReferralFacts:
    """What the referral says, as the domain's plain values: mapped here once, never read back from FHIR."""
    name = next((n for n in patient.get("name") or [] if n.get("use") == "official"), _first(patient.get("name")))
    address = home_address(patient)
    code = _first((service_request.get("code") or {}).get("coding"))
    reasons = _codings(service_request.get("reasonCode"))
    for condition in conditions:
        reasons += _codings(condition.get("code"))
    period = service_request.get("occurrencePeriod") or {}
    task = task or {}
    requester = service_request.get("requester") or {}
    owner = task.get("owner") or {"reference": HUB_ORGANIZATION_REFERENCE}
    notes = note_facts(task.get("note") or [])
    return ReferralFacts(
        status=task.get("status", "requested"),
        priority=task.get("priority") or service_request.get("priority") or "routine",
        owner_reference=owner.get("reference", ""),
        owner_display=owner.get("display", ""),
        patient_name=" ".join([*(name.get("given") or []), name.get("family", "")]).strip() or name.get("text", ""),
        patient_birth_date=patient.get("birthDate", ""),
        patient_gender=patient.get("gender", ""),
        patient_postal_code=(address.get("postalCode") or "")[:10],
        service_system=code.get("system", ""),
        service_code=code.get("code", ""),
        service_display=code.get("display", "") or (service_request.get("code") or {}).get("text", ""),
        condition_codes=reasons,
        **clinical_facts(
            service_request=service_request, patient=patient, observations=list(observations),
            goal_resources=list(goal_resources),
        ),
        requester_reference=requester.get("reference", ""),
        requester_display=requester.get("display", ""),
        performer_reference=_first(service_request.get("performer")).get("reference", ""),
        authored_on=_datetime(task.get("authoredOn") or service_request.get("authoredOn")),
        occurrence_start=_date(period.get("start") or service_request.get("occurrenceDateTime")),
        occurrence_end=_date(period.get("end")),
        notes=notes,
    )


def note_facts(notes: list[dict]) -> list[NoteFacts]:
    return [
        NoteFacts(
            author_reference=(n.get("authorReference") or {}).get("reference", ""),
            author_display=(n.get("authorReference") or {}).get("display", "") or n.get("authorString", ""),
            text=n.get("text", ""),
            time=_datetime(n.get("time")) or timezone.now(),
        )
        for n in notes
    ]


# --- idempotency -----------------------------------------------------------------------------------------------


def _query_key(query: str) -> str:
    """If-None-Exist as a stable key: its parameters sorted, so that the same question is always the same key."""
    return "&".join(f"{k}={v}" for k, v in sorted(parse_qsl(query, keep_blank_values=True)))


def _matches(caller: Caller, resource_type: str, criteria: list[tuple[str, str]]) -> list[StoredResource]:
    """At most two of the clinic's resources that a conditional query finds: enough to tell none, one and several.
    Raises FhirError when the query cannot be applied."""
    criteria = conditional_criteria(resource_type, criteria)
    query = filtered(visible(caller.clinic_id, resource_type), resource_type, criteria, base_url=caller.base_url)
    return list(query[:2])


def conditional_match(caller: Caller, resource_type: str, query: str, *, expression: str) -> StoredResource | None:
    """The one resource an If-None-Exist query finds, None when it finds none; 412 when it finds several."""
    criteria = parse_qsl(query, keep_blank_values=True)
    limits.check_conditional_query(query, _query_key(query), expression=expression)
    if not criteria:
        raise error(400, "invalid", "If-None-Exist names no search parameter", expression=expression)
    try:
        found = _matches(caller, resource_type, criteria)
    except FhirError as exc:
        raise FhirError(400, [Issue(i.severity, i.code, expression, i.diagnostics) for i in exc.issues]) from None
    if len(found) > 1:
        raise error(412, "multiple-matches", f"If-None-Exist '{query}' matches more than one {resource_type}", expression)
    return found[0] if found else None


def _existing_by_identifier(caller: Caller, resources: list[dict]) -> StoredResource | None:
    """The stored resource that already carries one of these business identifiers (one query)."""
    match = Q(pk__in=[])
    for resource in resources:
        if resource["resourceType"] in IDENTIFIED_TYPES:
            for system, value in business_identifiers(resource):
                match |= Q(resource_type=resource["resourceType"], system=system, value=value)
    hit = ResourceIdentifier.objects.filter(match, client=caller.client).select_related("resource").first()
    return hit.resource if hit else None


def _existing_by_key(caller: Caller, keyed: dict[int, str], contents: list[dict]) -> StoredResource | None:
    for index, query in keyed.items():
        hit = (
            ConditionalCreateKey.objects.filter(
                client=caller.client, resource_type=contents[index]["resourceType"], query=query
            )
            .select_related("resource")
            .first()
        )
        if hit:
            return hit.resource
    return None


# --- the one way in ----------------------------------------------------------------------------------------------


@dataclass
class ReferralParts:
    """A referral ready to store: every new resource has its final id and its references rewritten."""

    task: dict | None
    service_request: dict
    patient: dict
    conditions: list[dict]
    new_resources: list[dict]  # everything to store, task excluded (it is rendered after the referral exists)
    conditional_keys: dict[int, str] = field(default_factory=dict)  # index in new_resources (+ task last) -> query
    interaction: str = ""
    raw: bytes = b""  # the request body as sent, kept verbatim
    observations: list[dict] = field(default_factory=list)  # the ServiceRequest's supporting Observations (PAVS)
    goals: list[dict] = field(default_factory=list)  # its supporting Goals, and the Goals sent with it
    # Notify and pull: only the Task came; service_request and patient are empty, and the referral waits for them
    # (fhir_bridge/pull.py fetches them) instead of being routed.
    waiting_for_data: bool = False


def _referral_open(caller: Caller, parts: ReferralParts) -> tuple[Referral, StoredResource, list[StoredResource]]:
    """Create the referral and store its resources in one transaction. Raises DuplicateResource when the
    referral is already here, and DomainError when it breaks a rule (either way the transaction is rolled back)."""
    now = timezone.now()
    task = parts.task or task_base(service_request=parts.service_request, owner=HUB_OWNER, now=now)
    facts = referral_facts(
        task=task, service_request=parts.service_request, patient=parts.patient, conditions=parts.conditions,
        observations=parts.observations, goal_resources=parts.goals,
    )
    with transaction.atomic():
        with resources_sent():
            referral = referral_create(
                clinic=caller.client.clinic, facts=facts, actor=caller.actor, waiting_for_data=parts.waiting_for_data
            )
        task_content = task_render(referral=referral, base=task, notes=facts.notes)
        rows = resources_create(
            contents=[*parts.new_resources, task_content],
            clinic_id=caller.clinic_id,
            referral_id=referral.pk,
            client=caller.client,
            conditional_keys=parts.conditional_keys,
            now=now,
        )
        rows_insert(  # the body whole: a plain INSERT, not the ORM's save (bench/README.md)
            InboundMessage,
            ("client_id", "interaction", "body", "received_at", "referral_id"),
            [(caller.client.pk, parts.interaction, _text(parts.raw),
              connection.ops.adapt_datetimefield_value(timezone.now()), referral.pk)],
        )
        if not parts.waiting_for_data:  # a pulled referral is routed once its data is here (pull.py)
            enqueue_on_commit(route_referral, referral.pk)
    return referral, rows[-1], rows


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _duplicate_of(caller: Caller, parts: ReferralParts) -> StoredResource:
    """The stored Task of the referral that ``parts`` duplicates (found by business identifier or by
    If-None-Exist key); 409 if the clash was on something else."""
    candidates = [*parts.new_resources, *([parts.task] if parts.task else [])]
    existing = _existing_by_identifier(caller, candidates) or _existing_by_key(
        caller, parts.conditional_keys, candidates
    )
    if existing is None:
        raise error(409, "conflict", "the referral clashes with one being stored at the same moment; send it again")
    return _referral_task(existing)


def _referral_task(resource: StoredResource) -> StoredResource:
    if resource.resource_type == "Task" or resource.referral_id is None:
        return resource
    return StoredResource.objects.get(referral_id=resource.referral_id, resource_type="Task")


# --- 1. a transaction Bundle ---------------------------------------------------------------------------------------


def _bundle_entries(bundle: dict) -> list[dict]:
    issues = []
    if bundle.get("resourceType") != "Bundle":
        raise error(400, "structure", "POST to the base URL takes a transaction Bundle", expression="Bundle.resourceType")
    if bundle.get("type") != "transaction":
        raise error(
            422, "not-supported", f"Bundle.type must be 'transaction', not {bundle.get('type')!r}", expression="Bundle.type"
        )
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        raise error(422, "required", "a transaction Bundle needs at least one entry", expression="Bundle.entry")
    full_urls = set()
    for i, entry in enumerate(entries):
        path = f"Bundle.entry[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            issues.append(Issue("error", "required", f"{path}.resource", "every entry carries a resource"))
            continue
        request = entry.get("request") if isinstance(entry.get("request"), dict) else {}
        resource_type = entry["resource"].get("resourceType")
        if request.get("method") != "POST":
            issues.append(
                Issue("error", "not-supported", f"{path}.request.method", "entries are created with method POST")
            )
        if request.get("url") != resource_type:
            issues.append(
                Issue("error", "value", f"{path}.request.url", f"request.url must be the resource type {resource_type!r}")
            )
        if not isinstance(resource_type, str) or resource_type not in BUNDLE_TYPES:  # a list is not hashable
            issues.append(
                Issue("error", "not-supported", f"{path}.resource.resourceType", f"{resource_type!r} is not taken here")
            )
        full_url = entry.get("fullUrl")
        if full_url is not None and not isinstance(full_url, str):
            issues.append(Issue("error", "structure", f"{path}.fullUrl", "fullUrl must be a string (a URI)"))
        elif full_url is not None:
            if full_url in full_urls:
                issues.append(Issue("error", "duplicate", f"{path}.fullUrl", f"fullUrl {full_url!r} is used twice"))
            full_urls.add(full_url)
    if issues:
        raise FhirError(400 if any(i.code in ("required", "structure") for i in issues) else 422, issues)
    return entries


def _only(items: list[tuple[int, dict]], resource_type: str, *, required: bool) -> tuple[int, dict] | None:
    if len(items) > 1:
        raise error(
            422, "business-rule", f"a referral Bundle carries one {resource_type}, not {len(items)}",
            expression=f"Bundle.entry[{items[1][0]}]",
        )
    if not items and required:
        raise error(422, "required", f"a referral Bundle needs a {resource_type}", expression="Bundle.entry")
    return items[0] if items else None


def transaction_intake(caller: Caller, bundle: dict, *, raw: bytes, check_scope) -> Outcome:
    entries = _bundle_entries(bundle)
    # The Bundle is judged whole: profile issues, unresolved references and business rules go out in one
    # OperationOutcome. Only a resource that cannot be parsed (400) stops the reading at once.
    found: list[FhirError] = []
    try:
        validate([(f"Bundle.entry[{i}].resource", e["resource"]) for i, e in enumerate(entries)], whole=bundle)
    except FhirError as exc:
        if exc.status == 400:
            raise
        found.append(exc)
    for i, entry in enumerate(entries):
        check_scope(entry["resource"]["resourceType"], "create", expression=f"Bundle.entry[{i}]")

    # Give every entry its id, and resolve references between entries (urn:uuid fullUrls, absolute fullUrls, and
    # the ids the sender gave).
    resources = [_clone(e["resource"]) for e in entries]
    ref_map: dict[str, str] = {}
    for entry, resource in zip(entries, resources):
        resource_type = resource["resourceType"]
        sender_id = resource.get("id")
        resource["id"] = new_id()
        local = f"{resource_type}/{resource['id']}"
        full_url = entry.get("fullUrl")
        if full_url:
            ref_map[full_url] = local
            if full_url.startswith(("http://", "https://")):
                ref_map["/".join(full_url.rstrip("/").split("/")[-2:])] = local
        if sender_id:
            ref_map[f"{resource_type}/{sender_id}"] = local

    # Conditional creates inside the Bundle: an entry that already exists is not stored again.
    reused: dict[int, StoredResource] = {}
    keys: dict[int, str] = {}
    for i, entry in enumerate(entries):
        query = (entry.get("request") or {}).get("ifNoneExist")
        if not query:
            continue
        resource_type = resources[i]["resourceType"]
        match = conditional_match(caller, resource_type, query, expression=f"Bundle.entry[{i}].request.ifNoneExist")
        if match is not None and resource_type in ("Task", "ServiceRequest"):
            return _duplicate_answer(caller, entries, _referral_task(match))
        if match is not None:
            reused[i] = match
            for alias, target in list(ref_map.items()):
                if target == f"{resource_type}/{resources[i]['id']}":
                    ref_map[alias] = match.reference
        else:
            keys[i] = _query_key(query)

    # Every reference, wherever it is (extensions and contained resources too): an entry's fullUrl becomes its new
    # id, a conditional reference the one resource it finds. What cannot be resolved is reported for all entries
    # at once.
    issues: list[Issue] = []
    conditional: dict[str, StoredResource | Issue] = {}

    def rewriter(path: str):
        def rewrite(ref: str) -> str:
            if _CONDITIONAL_REFERENCE.fullmatch(ref):
                if ref not in conditional:
                    conditional[ref] = _conditional_reference(caller, ref)
                found = conditional[ref]
                if isinstance(found, Issue):
                    issues.append(Issue(found.severity, found.code, path, found.diagnostics))
                    return ref
                return found.reference
            ref = ref_map.get(ref, _relative(ref, caller.base_url))
            if ref.startswith("urn:"):
                issues.append(Issue("error", "not-found", path, f"reference {ref!r} matches no entry of the Bundle"))
            return ref

        return rewrite

    for i, resource in enumerate(resources):
        walk_references(resource, rewriter(f"Bundle.entry[{i}].resource"))
    if issues:
        multiple = any(issue.code == "multiple-matches" for issue in issues)
        found.append(FhirError(412 if multiple else 422, issues))
    else:
        # The business rules read the references, so they are judged only once every reference resolved.
        by_type: dict[str, list[tuple[int, dict]]] = {}
        for i, resource in enumerate(resources):
            if i not in reused:
                by_type.setdefault(resource["resourceType"], []).append((i, resource))
        try:
            task_entry = _only(by_type.get("Task", []), "Task", required=False)
            sr_index, service_request = _only(by_type.get("ServiceRequest", []), "ServiceRequest", required=True)
            patient = _resolve_patient(
                caller, service_request, resources, reused, path=f"Bundle.entry[{sr_index}].resource"
            )
            task = task_entry[1] if task_entry else None
            if task is not None:
                _check_task_points_at(task, service_request, patient, path=f"Bundle.entry[{task_entry[0]}].resource")
        except FhirError as exc:
            found.append(exc)
    if found:
        status = 412 if any(exc.status == 412 for exc in found) else max(exc.status for exc in found)
        raise FhirError(status, [issue for exc in found for issue in exc.issues])

    new_indexes = [i for i, r in enumerate(resources) if i not in reused and r is not task]
    position = {i: n for n, i in enumerate(new_indexes)}
    parts = ReferralParts(
        task=task,
        service_request=service_request,
        patient=patient,
        **_supporting(caller, service_request, resources),
        new_resources=[resources[i] for i in new_indexes],
        conditional_keys={
            (position[i] if i in position else len(new_indexes)): q for i, q in keys.items()
        },
        interaction="transaction",
        raw=raw,
    )
    # No look-up first: a resend is rare, and the unique keys catch it (the transaction then rolls back).
    try:
        referral, task_row, rows = _referral_open(caller, parts)
    except DuplicateResource:
        return _duplicate_answer(caller, entries, _duplicate_of(caller, parts))

    stored_by_index = {i: rows[position[i]] for i in new_indexes}
    if task_entry is not None:
        stored_by_index[task_entry[0]] = task_row
    stored_by_index.update(reused)
    response_entries = []
    for i in range(len(entries)):
        row = stored_by_index[i]
        created = i not in reused
        response_entries.append(_response_entry(caller, row, "201 Created" if created else "200 OK"))
    if task_entry is None:
        # The Task the hub opened is not an entry of the request, so it is no entry of the response (R4
        # http.html#transaction-response: one per request entry, in order); the ServiceRequest's entry names it.
        response_entries[sr_index]["response"]["outcome"] = task_opened_outcome(caller, task_row)
    log.info("referral %s opened from a Bundle by %s", referral.pk, caller.actor)
    return Outcome(200, {"resourceType": "Bundle", "type": "transaction-response", "entry": response_entries},
                   created=rows)


# Patient?identifier=system|value: a conditional reference (R4 http.html#trules).
_CONDITIONAL_REFERENCE = re.compile(r"[A-Z][A-Za-z]+\?[^#\s]+")


def _conditional_reference(caller: Caller, ref: str) -> "StoredResource | Issue":
    """The one stored resource a conditional reference finds, or the Issue that fails the transaction: none
    found, several found, or a query that cannot be applied."""
    resource_type, _, query = ref.partition("?")
    if resource_type not in BUNDLE_TYPES:
        return Issue("error", "not-supported", "", f"conditional reference {ref!r}: {resource_type} is not served here")
    try:
        found = _matches(caller, resource_type, parse_qsl(query, keep_blank_values=True))
    except FhirError as exc:
        return Issue("error", "invalid", "", f"conditional reference {ref!r}: {exc}")
    if not found:
        return Issue("error", "not-found", "", f"conditional reference {ref!r} matches no {resource_type} stored here")
    if len(found) > 1:
        return Issue("error", "multiple-matches", "", f"conditional reference {ref!r} matches more than one {resource_type}")
    return found[0]


def task_opened_outcome(caller: Caller, task_row: StoredResource) -> dict:
    """An informational OperationOutcome naming the referral Task the hub opened for a ServiceRequest."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": "information", "code": "informational",
            "diagnostics": f"the hub opened the referral Task {caller.base_url}/{task_row.reference} for this ServiceRequest",
            "expression": ["ServiceRequest"],
        }],
    }


def _response_entry(caller: Caller, row: StoredResource, status: str) -> dict:
    return {
        "fullUrl": f"{caller.base_url}/{row.reference}",
        "resource": row.content,
        "response": {
            "status": status,
            "location": f"{row.reference}/_history/{row.version_id}",
            "etag": f'W/"{row.version_id}"',
            "lastModified": row.content["meta"]["lastUpdated"],
        },
    }


def _duplicate_answer(caller: Caller, entries: list[dict], task: StoredResource) -> Outcome:
    """The referral is already here: answer each entry with what was stored for it the first time."""
    stored = list(
        StoredResource.objects.filter(referral_id=task.referral_id).order_by("id")
    ) if task.referral_id else [task]
    pools: dict[str, list[StoredResource]] = {}
    for row in stored:
        pools.setdefault(row.resource_type, []).append(row)
    response_entries = []
    for entry in entries:
        pool = pools.get(entry["resource"]["resourceType"]) or []
        if pool:
            response_entries.append(_response_entry(caller, pool.pop(0), "200 OK"))
        else:
            response_entries.append({"response": {"status": "200 OK"}})
    return Outcome(200, {"resourceType": "Bundle", "type": "transaction-response", "entry": response_entries},
                   stored=task)


def _stored(caller: Caller, ref: str, resource_type: str) -> StoredResource | None:
    if not isinstance(ref, str):
        return None
    kind, _, fhir_id = ref.partition("/")
    if kind != resource_type or not fhir_id:
        return None
    return visible(caller.clinic_id, resource_type).filter(fhir_id=fhir_id).first()


def _resolve_patient(caller: Caller, service_request: dict, resources: list[dict], reused, *, path: str) -> dict:
    # `"reference": null` passes the structural check (a null primitive reads as absent): "" then, never None.
    ref = (service_request.get("subject") or {}).get("reference") or ""
    for resource in resources:
        if resource["resourceType"] == "Patient" and ref == f"Patient/{resource['id']}":
            return resource
    for row in reused.values():
        if row.reference == ref:
            return row.content
    row = _stored(caller, ref, "Patient")
    if row is None:
        raise error(
            422, "not-found", f"subject {ref!r} is neither a Patient in the Bundle nor one stored here",
            expression=f"{path}.subject",
        )
    return row.content


def _check_task_points_at(task: dict, service_request: dict, patient: dict, *, path: str) -> None:
    issues = []
    if (task.get("focus") or {}).get("reference") != f"ServiceRequest/{service_request['id']}":
        issues.append(Issue("error", "business-rule", f"{path}.focus", "Task.focus must reference the Bundle's ServiceRequest"))
    if (task.get("for") or {}).get("reference") != f"Patient/{patient['id']}":
        issues.append(Issue("error", "business-rule", f"{path}.for", "Task.for must reference the ServiceRequest's subject"))
    if issues:
        raise FhirError(422, issues)


def _referenced(caller: Caller, references, resource_type: str, resources: list[dict]) -> list[dict]:
    """The ``resource_type`` resources that ``references`` point at: among ``resources`` (sent with the
    referral), else stored here for the clinic (sent before it)."""
    refs = {r.get("reference") for r in references or [] if isinstance(r, dict) and isinstance(r.get("reference"), str)}
    found = [r for r in resources if r["resourceType"] == resource_type and f"{resource_type}/{r['id']}" in refs]
    missing = {
        ref.partition("/")[2] for ref in refs - {f"{resource_type}/{r['id']}" for r in found}
        if ref.startswith(f"{resource_type}/")
    }
    if missing:
        found += [row.content for row in visible(caller.clinic_id, resource_type).filter(fhir_id__in=missing)]
    return found


def _supporting(caller: Caller, service_request: dict, resources: list[dict]) -> dict:
    """ReferralParts' conditions, observations and goals for this ServiceRequest."""
    goals = _referenced(caller, service_request.get("supportingInfo"), "Goal", resources)
    goals += [r for r in resources if r["resourceType"] == "Goal" and r not in goals]
    return {
        "conditions": _referenced(caller, service_request.get("reasonReference"), "Condition", resources),
        "observations": _referenced(caller, service_request.get("supportingInfo"), "Observation", resources),
        "goals": goals,
    }


# --- 2. a ServiceRequest alone, and 3. a Task alone --------------------------------------------------------------


def _extract_contained(resource: dict) -> list[dict]:
    """Lift contained resources out as resources of their own, with new ids, and point '#id' references at them."""
    contained = resource.pop("contained", None) or []
    mapping, lifted = {}, []
    for item in contained:
        mapping[f"#{item.get('id')}"] = f"{item['resourceType']}/{(new := new_id())}"
        item["id"] = new
        lifted.append(item)
    rewrite = lambda ref: mapping.get(ref, ref)  # noqa: E731
    walk_references(resource, rewrite)
    for item in lifted:
        walk_references(item, rewrite)
    return lifted


def _single_with_contained(caller: Caller, body: dict) -> tuple[dict, list[dict]]:
    """A copy of ``body`` with its new id, and its contained resources lifted out (a contained Patient stored on
    its own is what makes the stored resource meet PA's reference-rest rule); references to this server made
    relative in all of them."""
    resource = _clone(body)
    resource["id"] = new_id()
    lifted = _extract_contained(resource)
    for item in (resource, *lifted):
        walk_references(item, lambda ref: _relative(ref, caller.base_url))
    return resource, lifted


def service_request_intake(caller: Caller, body: dict, *, raw: bytes, if_none_exist: str | None) -> Outcome:
    service_request, lifted = _single_with_contained(caller, body)
    validate(
        [("ServiceRequest", body)],
        profiled=[("ServiceRequest", service_request), *((f"ServiceRequest.contained[{i}]", r) for i, r in enumerate(lifted))],
    )
    keys = {}
    if if_none_exist:
        match = conditional_match(caller, "ServiceRequest", if_none_exist, expression="If-None-Exist")
        if match is not None:
            return _existing_answer(match)
        keys[len(lifted)] = _query_key(if_none_exist)
    patient = _resolve_patient(caller, service_request, lifted, {}, path="ServiceRequest")
    parts = ReferralParts(
        task=None,
        service_request=service_request,
        patient=patient,
        **_supporting(caller, service_request, lifted),
        new_resources=[*lifted, service_request],
        conditional_keys=keys,
        interaction="create ServiceRequest",
        raw=raw,
    )
    return _open_single(caller, parts, answer_type="ServiceRequest")


def task_intake(caller: Caller, body: dict, *, raw: bytes, if_none_exist: str | None) -> Outcome:
    task, lifted = _single_with_contained(caller, body)
    validate([("Task", body)], profiled=[("Task", task), *((f"Task.contained[{i}]", r) for i, r in enumerate(lifted))])
    keys = {}
    if if_none_exist:
        match = conditional_match(caller, "Task", if_none_exist, expression="If-None-Exist")
        if match is not None:
            return _existing_answer(match)
        keys[len(lifted)] = _query_key(if_none_exist)

    focus = (task.get("focus") or {}).get("reference", "")
    service_request = next((r for r in lifted if f"ServiceRequest/{r['id']}" == focus), None)
    if service_request is None and focus.startswith(("http://", "https://")):
        return _open_single(caller, _pull_parts(caller, task, lifted, keys, raw), answer_type="Task")
    if service_request is None:
        row = _stored(caller, focus, "ServiceRequest")
        if row is None:
            raise error(
                422, "not-found",
                f"focus {focus!r} is neither a contained ServiceRequest nor one stored here; send the ServiceRequest "
                "first, contain it in the Task, or send both in a transaction Bundle",
                expression="Task.focus",
            )
        if row.referral_id is not None:
            # This ServiceRequest is already a referral (sent in a Bundle, alone, or with an earlier Task): the
            # Task is a duplicate of that referral's Task, answered with it, never a second referral.
            log.info("Task for %s answered with the referral it already has", row.reference)
            return _existing_answer(_referral_task(row))
        service_request = row.content
    for_ref = (task.get("for") or {}).get("reference", "")
    patient = next((r for r in lifted if r["resourceType"] == "Patient" and f"Patient/{r['id']}" == for_ref), None)
    if patient is None:
        row = _stored(caller, for_ref, "Patient")
        if row is None:
            raise error(422, "not-found", f"for {for_ref!r} is neither a contained Patient nor one stored here",
                        expression="Task.for")
        patient = row.content
    if (service_request.get("subject") or {}).get("reference") != f"Patient/{patient['id']}":
        raise error(422, "business-rule", "Task.for and the ServiceRequest's subject name different patients",
                    expression="Task.for")
    parts = ReferralParts(
        task=task,
        service_request=service_request,
        patient=patient,
        **_supporting(caller, service_request, lifted),
        new_resources=lifted,
        conditional_keys=keys,
        interaction="create Task",
        raw=raw,
    )
    return _open_single(caller, parts, answer_type="Task")


def _pull_parts(caller: Caller, task: dict, lifted: list[dict], keys: dict[int, str], raw: bytes) -> ReferralParts:
    """Notify and pull (issue 8 §5): a Task whose focus is an absolute URL on the EHR's own FHIR server. The
    referral opens now from what the Task says and waits for the rest, which fhir_bridge/pull.py fetches from that
    server. 422 unless the client is registered for it and both the focus and ``for`` lie under its FHIR base."""
    client = caller.client
    if not client.can_be_pulled_from:
        raise error(
            422, "not-supported",
            "focus is an absolute URL, but this client has no FHIR server registered with the hub to fetch it from "
            "(register_ehr_client --fhir-base --token-url); send the ServiceRequest instead",
            expression="Task.focus",
        )
    for element in ("focus", "for"):
        ref = (task.get(element) or {}).get("reference", "")
        kind = "ServiceRequest" if element == "focus" else "Patient"
        if not under_base(ref, client.fhir_base_url, kind):
            raise error(
                422, "business-rule",
                f"{element} {ref!r} must be a {kind} on the FHIR server registered for this client "
                f"({client.fhir_base_url}/{kind}/<id>): the hub fetches nothing elsewhere",
                expression=f"Task.{element}",
            )
    return ReferralParts(
        task=task, service_request={}, patient={}, conditions=[], new_resources=lifted, conditional_keys=keys,
        interaction="create Task", raw=raw, waiting_for_data=True,
    )


def under_base(url: str, base: str, resource_type: str) -> bool:
    """Whether ``url`` is ``base/resource_type/id`` (optionally ``/_history/n``): a read on that server only,
    with no query, fragment or path step out of it."""
    prefix = f"{base.rstrip('/')}/{resource_type}/"
    if not url.startswith(prefix) or any(c in url for c in "?#\\") or "/../" in url or "%" in url:
        return False
    rest = url[len(prefix):].split("/")
    ids_ok = all(_FHIR_ID.fullmatch(part) and part.strip(".") for part in rest[::2])  # never "." or ".."
    return ids_ok and (len(rest) == 1 or (len(rest) == 3 and rest[1] == "_history"))


_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def _existing_answer(row: StoredResource) -> Outcome:
    return Outcome(200, row.content, stored=row)


def _open_single(caller: Caller, parts: ReferralParts, *, answer_type: str) -> Outcome:
    try:
        referral, task_row, rows = _referral_open(caller, parts)
    except DuplicateResource:
        existing = _duplicate_of(caller, parts)
    else:
        answer = task_row if answer_type == "Task" else next(r for r in rows if r.resource_type == answer_type)
        log.info("referral %s opened from a %s by %s", referral.pk, answer_type, caller.actor)
        return Outcome(201, answer.content, stored=answer, created=rows)
    if answer_type != "Task" and existing.resource_type == "Task":
        existing = StoredResource.objects.filter(referral_id=existing.referral_id, resource_type=answer_type).first() or existing
    return _existing_answer(existing)


def supporting_create(caller: Caller, body: dict, resource_type: str, *, if_none_exist: str | None) -> Outcome:
    """A Patient, Condition, Observation, ... on its own, for a referral to come."""
    validate([(resource_type, body)])
    resource = _clone(body)
    resource["id"] = new_id()
    walk_references(resource, lambda ref: _relative(ref, caller.base_url))
    keys = {}
    if if_none_exist:
        match = conditional_match(caller, resource_type, if_none_exist, expression="If-None-Exist")
        if match is not None:
            return _existing_answer(match)
        keys[0] = _query_key(if_none_exist)
    try:
        with transaction.atomic():
            rows = resources_create(
                contents=[resource], clinic_id=caller.clinic_id, client=caller.client, conditional_keys=keys,
                now=timezone.now(),
            )
    except DuplicateResource:
        match = conditional_match(caller, resource_type, if_none_exist or "", expression="If-None-Exist")
        if match is None:
            raise error(409, "conflict", "a resource like this one is being stored at the same moment; send it again")
        return _existing_answer(match)
    return Outcome(201, rows[0].content, stored=rows[0], created=rows)
