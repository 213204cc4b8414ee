"""The FHIR route table (after medplum's fhir-router) and its handlers. Handlers know nothing of DRF: each takes a
FhirRequest and returns a FhirResponse, or raises FhirError."""

import re
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import parse_qsl, urlencode

from django.db import transaction
from django.utils import timezone
from django.utils.http import http_date


from fhir_bridge import (
    audit_fhir,
    capability,
    intake,
    network_fhir,
    projection,
    provider_fhir,
    records_fhir,
    route_table,
    subscription_routes,
)
from fhir_bridge.codes import LOCATION_DISTANCE_EXTENSION, UCUM_SYSTEM
from fhir_bridge.models import ResourceVersion, StoredResource
from fhir_bridge.outcomes import FhirError, error, information, not_found, operation_outcome
from fhir_bridge.profiles import Issue, domain_resource_issues
from fhir_bridge.search_params import search_param
from fhir_bridge.search import custom_plans, lenient, page_links, search, search_plan, subsetted, visible
from fhir_bridge.smart_scopes import Grant, grant_allows
from fhir_bridge.smart_views import smart_configuration
from referrals.models import Referral
from referrals.reports import report_request
from referrals.offers import referral_update_by_clinic

@dataclass
class FhirRequest:
    method: str
    params: dict[str, str]  # from the path: type, id, vid
    query: list[tuple[str, str]]
    headers: dict[str, str]  # lower-case names
    base_url: str
    token_url: str
    grant: Grant | None = None
    body: object = None
    raw_body: bytes = b""

    @property
    def caller(self) -> intake.Caller:
        return intake.Caller(client=self.grant.client, base_url=self.base_url)

    @property
    def clinic_id(self) -> int:
        return self.grant.client.clinic_id

    @property
    def is_provider(self) -> bool:
        """Whether the client is a provider's own system (provider_fhir.py), not a clinic's EHR."""
        return self.grant.client.is_provider

    def rows(self, resource_type: str):
        """The stored resources of one type this client may read in full."""
        if self.is_provider:
            return provider_fhir.provider_rows(self.grant.client.organization_id, resource_type)
        return visible(self.clinic_id, resource_type)

    def served(self, content: dict) -> dict:
        """A stored resource's content as this client is served it."""
        return provider_fhir.served(content) if self.is_provider else content

    def check_clinic(self, what: str) -> None:
        """Refuse to a provider's system what only a clinic's EHR does (send referrals and their resources)."""
        if self.is_provider:
            raise error(
                403, "forbidden",
                f"{what} is for a clinic's EHR; a provider's system answers offers, moves its cases and posts "
                "their Observations",
            )

    def check_scope(self, resource_type: str, interaction: str, expression: str = "") -> None:
        if not grant_allows(self.grant, resource_type, interaction):
            raise error(
                403, "forbidden",
                f"the access token's scopes do not allow {interaction} on {resource_type} "
                f"(granted: {' '.join(sorted(self.grant.scopes))})",
                expression=expression,
            )


@dataclass
class FhirResponse:
    status: int
    resource: dict | None
    headers: dict[str, str] = field(default_factory=dict)


def _version_headers(row: StoredResource | ResourceVersion, reference: str, version_id: int) -> dict[str, str]:
    return {
        "ETag": f'W/"{version_id}"',
        "Last-Modified": http_date(row.last_updated.timestamp()),
        "Content-Location": f"{reference}/_history/{version_id}",
    }


def prefer_return(headers: dict[str, str]) -> str:
    """What ``Prefer: return=`` asks a write to answer with: "minimal", "representation" (the default) or
    "OperationOutcome" (R4 http.html#ops)."""
    for part in headers.get("prefer", "").replace(";", ",").split(","):
        name, _, value = part.strip().partition("=")
        if name == "return" and value.strip('"') in ("minimal", "representation", "OperationOutcome"):
            return value.strip('"')
    return "representation"


def write_outcome(status: int, row: StoredResource, extra: list[dict] = ()) -> dict:
    """The informational OperationOutcome a write answers with under ``Prefer: return=OperationOutcome``."""
    done = {201: "created", 200: "already stored" if row.version_id == 1 else "updated"}.get(status, "stored")
    issues = [{"severity": "information", "code": "informational",
               "diagnostics": f"{row.reference} {done} (version {row.version_id})"}]
    return {"resourceType": "OperationOutcome", "issue": issues + list(extra)}


def _resource_response(request: FhirRequest, status: int, row: StoredResource, outcome: dict | None = None) -> FhirResponse:
    """A write's or a read's answer: version headers, Location on a write, and the body ``Prefer: return=`` asks
    for. ``outcome`` is an OperationOutcome whose issues join the one return=OperationOutcome gives."""
    headers = _version_headers(row, row.reference, row.version_id)
    if status == 201 or request.method in ("POST", "PUT"):
        headers["Location"] = f"{request.base_url}/{row.reference}/_history/{row.version_id}"
    if request.method in ("POST", "PUT"):
        answer = prefer_return(request.headers)
        if answer == "minimal":
            return FhirResponse(status, None, headers)
        if answer == "OperationOutcome":
            return FhirResponse(status, write_outcome(status, row, (outcome or {}).get("issue", [])), headers)
    return FhirResponse(status, request.served(row.content), headers)


def _supported(resource_type: str, interaction: str) -> None:
    """404 for a type the route table does not list, 405 for an interaction it does not list for the type."""
    if not route_table.answers(resource_type, interaction):
        if resource_type not in route_table.SERVED:
            raise error(404, "not-supported", f"{resource_type!r} is not a resource type this server serves")
        raise error(405, "not-supported", f"{interaction} is not supported for {resource_type}")


def _get(request: FhirRequest, *, lock: bool = False) -> StoredResource:
    """The resource the request names, if its client may see it (else 404); ``lock`` takes its row lock (call
    inside a transaction)."""
    resource_type, fhir_id = request.params["type"], request.params["id"]
    rows = request.rows(resource_type).filter(fhir_id=fhir_id)
    row = (rows.select_for_update() if lock else rows).first()
    if row is None:
        raise not_found(resource_type, fhir_id)
    return row


# --- handlers ----------------------------------------------------------------------------------------------------


def handle_metadata(request: FhirRequest) -> FhirResponse:
    return FhirResponse(200, capability.capability_statement(base_url=request.base_url, token_url=request.token_url))


def handle_smart_configuration(request: FhirRequest) -> FhirResponse:
    return FhirResponse(200, smart_configuration(token_url=request.token_url))


def _method(entry) -> str | None:
    return entry["request"].get("method") if isinstance(entry, dict) and isinstance(entry.get("request"), dict) else None


def _entry_paths_renumbered(exc: FhirError, numbers: list[int]) -> FhirError:
    """``exc`` with each ``Bundle.entry[k]`` of the Bundle intake saw renamed to the entry's place in the Bundle
    sent."""

    def renumber(expression: str) -> str:
        return re.sub(r"^Bundle\.entry\[(\d+)\]", lambda m: f"Bundle.entry[{numbers[int(m.group(1))]}]", expression)

    issues = [Issue(i.severity, i.code, renumber(i.expression), i.diagnostics) for i in exc.issues]
    return FhirError(exc.status, issues, exc.headers)


def _transaction_routed(request: FhirRequest, entry: dict, number: int) -> dict:
    """A PUT (an update, with request.ifMatch as If-Match) or GET (a read, vread, history or search) entry of a
    transaction, answered as its own request would be; a failure fails the transaction, naming the entry."""
    method, url = entry["request"].get("method"), entry["request"].get("url")
    if not isinstance(url, str) or not url or url.startswith(("http://", "https://")) and not url.startswith(request.base_url + "/"):
        raise error(400, "invalid", "request.url must be a relative URL on this server",
                    expression=f"Bundle.entry[{number}].request.url")
    path, _, query = url.removeprefix(request.base_url + "/").partition("?")
    headers = dict(request.headers)
    headers.pop("if-match", None)
    if method == "PUT" and isinstance(entry["request"].get("ifMatch"), str):
        headers["if-match"] = entry["request"]["ifMatch"]
    try:
        route, params = resolve(method, path)
        if route.public:
            raise error(400, "not-supported", f"{path} is not a read or search")
        response = route.handler(FhirRequest(
            method=method, params=params, query=parse_qsl(query, keep_blank_values=True), headers=headers,
            base_url=request.base_url, token_url=request.token_url, grant=request.grant, body=entry.get("resource"),
        ))
    except FhirError as exc:
        raise FhirError(exc.status, [
            Issue(i.severity, i.code, f"Bundle.entry[{number}].request", f"{method} {url}: {i.diagnostics}")
            for i in exc.issues
        ]) from None
    answer = {"response": {"status": f"{response.status} OK"}}
    if response.resource is not None and response.resource.get("resourceType") == "OperationOutcome":
        answer["response"]["outcome"] = response.resource  # Prefer: return=OperationOutcome on an update
    elif response.resource is not None:
        answer["resource"] = response.resource
    if response.headers.get("ETag"):
        answer["response"]["etag"] = response.headers["ETag"]
    if method == "PUT" and "Location" in response.headers:
        answer["response"]["location"] = response.headers["Location"].removeprefix(request.base_url + "/")
    return answer


def handle_transaction(request: FhirRequest) -> FhirResponse:
    request.check_clinic("a transaction (a referral Bundle)")
    if not isinstance(request.body, dict):
        raise error(400, "structure", "the body must be a FHIR Bundle (a JSON object)")
    sent = request.body.get("entry") if isinstance(request.body.get("entry"), list) else []
    # Processed after the POSTs that intake takes, in R4's order (http.html#trules): updates, then reads.
    routed = [i for i, entry in enumerate(sent) if _method(entry) == "PUT"]
    routed += [i for i, entry in enumerate(sent) if _method(entry) == "GET"]
    if not routed or request.body.get("type") != "transaction":
        outcome = intake.transaction_intake(
            request.caller, request.body, raw=request.raw_body, check_scope=request.check_scope
        )
        status, entries = outcome.status, outcome.resource["entry"]
    else:
        # R4 http.html#trules processes a transaction in order DELETE, POST, PUT/PATCH, then GET, all or nothing:
        # the reads see what the writes made, and any entry that fails undoes them all.
        writes = [i for i in range(len(sent)) if i not in routed]
        answers: dict[int, dict] = {}
        status = 200
        with transaction.atomic():
            if writes:
                try:
                    outcome = intake.transaction_intake(
                        request.caller, dict(request.body, entry=[sent[i] for i in writes]), raw=request.raw_body,
                        check_scope=request.check_scope,
                    )
                except FhirError as exc:
                    raise _entry_paths_renumbered(exc, writes) from None
                status = outcome.status
                answers.update(zip(writes, outcome.resource["entry"]))
            for i in routed:
                answers[i] = _transaction_routed(request, sent[i], i)
        entries = [answers[i] for i in range(len(sent))]
    answer = prefer_return(request.headers)
    for i, entry in enumerate(entries if answer != "representation" else ()):
        # Each entry answers as Prefer asks (R4 http.html#transaction-response): without its resource, or with an
        # OperationOutcome in response.outcome.
        if i in routed:
            continue  # answered by its own handler, which read Prefer already
        resource = entry.pop("resource", None)
        if answer == "OperationOutcome" and resource is not None:
            response = entry["response"]
            done = "created" if response["status"].startswith("201") else "already stored"
            issue = {"severity": "information", "code": "informational",
                     "diagnostics": f"{resource['resourceType']}/{resource['id']} {done} (version {resource['meta']['versionId']})"}
            warned = _warnings_outcome((sent[i] if i < len(sent) else {}).get("resource"), f"Bundle.entry[{i}].resource")
            response["outcome"] = {"resourceType": "OperationOutcome",
                                   "issue": [issue, *(response.get("outcome") or {}).get("issue", []), *warned["issue"]]}
    return FhirResponse(status, {"resourceType": "Bundle", "type": "transaction-response", "entry": entries})


def _warnings_outcome(resource: dict, path: str) -> dict:
    """The warnings (dom-6, best practice) of what was sent, as issues for return=OperationOutcome: reported,
    never refused for."""
    warnings = [i for i in domain_resource_issues(resource, path=path) if i.severity == "warning"]
    return operation_outcome(warnings)


def handle_create(request: FhirRequest) -> FhirResponse:
    resource_type = request.params["type"]
    _supported(resource_type, "create")
    request.check_scope(resource_type, "create")
    body = request.body
    if not isinstance(body, dict):
        raise error(400, "structure", f"the body must be a {resource_type} (a JSON object)")
    if body.get("resourceType") != resource_type:
        sent = body.get("resourceType")
        raise error(
            400, "structure",
            f"the body is a {sent!r}, not a {resource_type}" if isinstance(sent, str) and sent
            else f"the body has no resourceType: send a {resource_type}",
            expression=f"{resource_type}.resourceType",
        )
    if request.is_provider:
        if resource_type != "Observation":
            request.check_clinic(f"create {resource_type}")
        return _resource_response(request, 201, provider_fhir.observation_create(client=request.grant.client, body=body))
    if resource_type == "Subscription":
        return _own_write_response(request, *subscription_routes.subscription_post(request))
    if_none_exist = request.headers.get("if-none-exist")
    if request.query:
        # POST [type]?[search] is a conditional create as fhir-py and Aidbox send it (R4 itself has only
        # If-None-Exist): the same query, never silently ignored.
        query = urlencode(request.query)
        if if_none_exist is not None and sorted(parse_qsl(if_none_exist)) != sorted(request.query):
            raise error(400, "invalid", "If-None-Exist and the URL's search parameters differ: send one of them")
        if_none_exist = query
    if resource_type == "Task":
        outcome = intake.task_intake(request.caller, body, raw=request.raw_body, if_none_exist=if_none_exist)
    elif resource_type == "ServiceRequest":
        outcome = intake.service_request_intake(request.caller, body, raw=request.raw_body, if_none_exist=if_none_exist)
    else:
        outcome = intake.supporting_create(request.caller, body, resource_type, if_none_exist=if_none_exist)
    row, told = outcome.stored, _warnings_outcome(body, resource_type)
    if resource_type == "ServiceRequest" and row.referral_id is not None:
        # Location names the ServiceRequest, as a create must; the Task the hub opened for it is a Link
        # (rel=related, README) and, under return=OperationOutcome, an informational issue.
        task_row = StoredResource.objects.filter(referral_id=row.referral_id, resource_type="Task").first()
        if task_row is not None:
            told = {"issue": intake.task_opened_outcome(request.caller, task_row)["issue"] + told["issue"]}
            response = _resource_response(request, outcome.status, row, told)
            response.headers["Link"] = f'<{request.base_url}/{task_row.reference}>; rel="related"'
            return response
    return _resource_response(request, outcome.status, row, told)  # a POST: it carries Location


def _network_response(request: FhirRequest, row) -> FhirResponse:
    resource_type = request.params["type"]
    resource = network_fhir.RENDER[resource_type](row)
    version = resource["meta"]["versionId"]
    headers = {
        "ETag": f'W/"{version}"',
        "Last-Modified": http_date(network_fhir.last_modified(row).timestamp()),
    }
    return FhirResponse(200, resource, headers)


def handle_read(request: FhirRequest) -> FhirResponse:
    resource_type = request.params["type"]
    _supported(resource_type, "read")
    request.check_scope(resource_type, "read")
    if resource_type in ("AuditEvent", "Subscription"):
        request.check_clinic(f"read {resource_type}")  # a provider's trail and subscriptions are not a clinic's
    if resource_type == "AuditEvent":
        return FhirResponse(200, audit_fhir.audit_read(clinic_id=request.clinic_id, fhir_id=request.params["id"]))
    if resource_type == "Subscription":
        resource, headers = subscription_routes.subscription_read(request)
        etag = request.headers.get("if-none-match")
        if etag and etag.strip() in (headers["ETag"], headers["ETag"].removeprefix("W/")):
            return FhirResponse(304, None, headers)
        return FhirResponse(200, resource, headers)
    if resource_type in network_fhir.NETWORK_TYPES:
        member = network_fhir.network_read(resource_type, request.params["id"])
        if member is not None:
            return _network_response(request, member)
    if request.is_provider and not request.rows(resource_type).filter(fhir_id=request.params["id"]).exists():
        # Before acceptance: what the offer Task refers to, redacted (never stored, so no version headers).
        redacted = provider_fhir.redacted_read(request.grant.client.organization_id, resource_type, request.params["id"])
        if redacted is not None:
            return FhirResponse(200, redacted)
    row = _get(request)
    etag = request.headers.get("if-none-match")
    if etag and etag.strip() in (f'W/"{row.version_id}"', f'"{row.version_id}"'):
        return FhirResponse(304, None, _version_headers(row, row.reference, row.version_id))
    return _resource_response(request, 200, row)


def _network_member(request: FhirRequest):
    """The network row the request names, if its type is the network's and such a member exists."""
    if request.params["type"] not in network_fhir.NETWORK_TYPES:
        return None
    return network_fhir.network_read(request.params["type"], request.params["id"])


def handle_vread(request: FhirRequest) -> FhirResponse:
    _supported(request.params["type"], "vread")
    request.check_scope(request.params["type"], "vread")
    if (member := _network_member(request)) is not None:
        # The network keeps no history (network_fhir.py): its current version is the only one there is.
        response = _network_response(request, member)
        if request.params["vid"] != response.resource["meta"]["versionId"]:
            raise error(404, "not-found", f"{request.params['type']}/{request.params['id']} has no version "
                        f"{request.params['vid']!r}; the network keeps its current version only")
        return response
    row = _get(request)
    vid = int(request.params["vid"])  # the route matches digits only
    if vid == row.version_id:
        return FhirResponse(200, request.served(row.content), _version_headers(row, row.reference, row.version_id))
    try:
        version = row.versions.get(version_id=vid)
    except ResourceVersion.DoesNotExist:
        raise error(404, "not-found", f"{row.reference} has no version {request.params['vid']!r}") from None
    return FhirResponse(200, request.served(version.content), _version_headers(version, row.reference, version.version_id))


def handle_history(request: FhirRequest) -> FhirResponse:
    _supported(request.params["type"], "history")
    request.check_scope(request.params["type"], "history")
    if (member := _network_member(request)) is not None:
        resource = _network_response(request, member).resource
        entry = {
            "fullUrl": f"{request.base_url}/{request.params['type']}/{member.fhir_id}",
            "resource": resource,
            "request": {"method": "PUT", "url": f"{request.params['type']}/{member.fhir_id}"},
            "response": {"status": "200 OK", "etag": f'W/"{resource["meta"]["versionId"]}"',
                         "lastModified": resource["meta"]["lastUpdated"]},
        }
        return FhirResponse(200, {"resourceType": "Bundle", "type": "history", "total": 1, "entry": [entry]})
    row = _get(request)
    current = ResourceVersion(
        version_id=row.version_id, last_updated=row.last_updated, content=row.content,
        method="POST" if row.version_id == 1 else "PUT",
    )
    versions = [current, *row.versions.order_by("-version_id")]
    entries = [
        {
            "fullUrl": f"{request.base_url}/{row.reference}",
            "resource": request.served(v.content),
            "request": {"method": v.method, "url": row.resource_type if v.method == "POST" else row.reference},
            "response": {
                "status": "201 Created" if v.method == "POST" else "200 OK",
                "etag": f'W/"{v.version_id}"',
                "lastModified": v.content["meta"]["lastUpdated"],
            },
        }
        for v in versions
    ]
    return FhirResponse(200, {"resourceType": "Bundle", "type": "history", "total": len(entries), "entry": entries})


def handle_search(request: FhirRequest) -> FhirResponse:
    resource_type = request.params["type"]
    _supported(resource_type, "search")
    request.check_scope(resource_type, "search")
    params = list(request.query)
    if request.method == "POST" and isinstance(request.body, list):
        params += request.body  # form-encoded _search
    if resource_type in ("AuditEvent", "Subscription"):
        request.check_clinic(f"search {resource_type}")
    if resource_type == "AuditEvent":
        return FhirResponse(200, audit_fhir.audit_search(clinic_id=request.clinic_id, base_url=request.base_url,
                                                         params=params))
    if resource_type == "Subscription":
        # The clinic's own rows, searched and paged as every other search is (the same plan, links and Bundle).
        plan = search_plan(resource_type, params, lenient=lenient(request.headers))
        total, window, more = _page(plan, subscription_routes.subscriptions_found(request.clinic_id, plan.criteria))
        entries = [
            {"fullUrl": f"{request.base_url}/Subscription/{row.fhir_id}",
             "resource": subsetted(subscription_routes.subscription_render(row), plan), "search": {"mode": "match"}}
            for row in window
        ]
        return FhirResponse(200, _searchset(request, plan, total, entries, more))
    if request.is_provider:  # owner=Organization/<its own id> stands for all of its roles
        params = provider_fhir.owner_as_roles(request.grant.client.organization_id, resource_type, params)
    plan = search_plan(resource_type, params, lenient=lenient(request.headers))
    # _include and _revinclude bring in resources of other types: the token must allow reading them too.
    for value in plan.includes:
        request.check_scope(search_param(*value.split(":")).target, "read", expression="_include")
    for value in plan.revincludes:
        request.check_scope(value.split(":")[0], "read", expression="_revinclude")
    with custom_plans():
        if resource_type in network_fhir.NETWORK_TYPES:
            return _network_search(request, plan)
        if request.is_provider:
            page, matches, included = provider_fhir.search_page(
                organization_id=request.grant.client.organization_id, plan=plan, base_url=request.base_url
            )
        else:
            page = search(clinic_id=request.clinic_id, plan=plan, base_url=request.base_url)
            matches = [(r.reference, r.content) for r in page.matches]
            included = [(r.reference, r.content) for r in page.included]
    entries = [
        {"fullUrl": f"{request.base_url}/{reference}", "resource": subsetted(content, plan), "search": {"mode": "match"}}
        for reference, content in matches
    ] + [
        {"fullUrl": f"{request.base_url}/{reference}", "resource": subsetted(content, plan), "search": {"mode": "include"}}
        for reference, content in included
    ]
    more = len(page.matches) == plan.count if page.total is None else plan.offset + plan.count < page.total
    return FhirResponse(200, _searchset(request, plan, page.total, entries, more))


def _page(plan, rows) -> tuple[int | None, list, bool]:
    """One page of a queryset as ``plan`` asks: the total (None when _total=none), the page's rows (none for
    _count=0 or _summary=count) and whether more follow it."""
    total = rows.count() if plan.wants_total else None
    window = list(rows[plan.offset : plan.offset + plan.count]) if plan.wants_entries else []
    more = len(window) == plan.count if total is None else plan.offset + plan.count < total
    return total, window, more


def _searchset(request: FhirRequest, plan, total: int | None, entries: list[dict], more: bool) -> dict:
    bundle = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = page_links(request.base_url, plan.resource_type, plan, more)
    if plan.wants_entries:
        bundle["entry"] = entries
    return bundle


def _network_search(request: FhirRequest, plan) -> FhirResponse:
    resource_type = plan.resource_type
    total, window, more = _page(plan, network_fhir.network_search(resource_type, plan.criteria))
    window = network_fhir.rows_ready(resource_type, window) if window else []
    entries = []
    for row in window:
        entry = {
            "fullUrl": f"{request.base_url}/{resource_type}/{row.fhir_id}",
            "resource": subsetted(network_fhir.RENDER[resource_type](row), plan),
            "search": {"mode": "match"},
        }
        distance_km = getattr(row, "distance_km", None)
        if distance_km is not None:  # a Location found by near
            # The distance in metres, as FHIR's location-distance extension carries it.
            entry["search"]["extension"] = [{
                "url": LOCATION_DISTANCE_EXTENSION,
                "valueDistance": {
                    "value": round(distance_km * 1000), "unit": "m", "system": UCUM_SYSTEM,
                    "code": "m",
                },
            }]
        entries.append(entry)
    return FhirResponse(200, _searchset(request, plan, total, entries, more))


def _if_match_version(request: FhirRequest) -> int | None:
    raw = request.headers.get("if-match")
    if raw is None:
        return None
    match = re.fullmatch(r'\s*(?:W/)?"(\d+)"\s*', raw)
    if not match:
        raise error(400, "invalid", f"If-Match {raw!r} is not an ETag such as W/\"3\"")
    return int(match.group(1))


# Task elements an EHR may change on its referral Task: its status (cancelled, entered-in-error), the reason for
# it, and notes. The rest is fixed at creation or belongs to the hub.
_TASK_FIXED_ELEMENTS = ("intent", "code", "focus", "for", "requester", "authoredOn", "identifier", "basedOn", "partOf")
_CLINIC_STATUSES = frozenset({"cancelled", "entered-in-error"})


def handle_update(request: FhirRequest) -> FhirResponse:
    resource_type, fhir_id = request.params["type"], request.params["id"]
    _supported(resource_type, "update")
    request.check_scope(resource_type, "update")
    body = request.body
    if not isinstance(body, dict) or body.get("resourceType") != resource_type:
        raise error(400, "structure", f"the body must be a {resource_type}", expression=f"{resource_type}.resourceType")
    if body.get("id") != fhir_id:
        raise error(400, "invalid", f"the body's id must be {fhir_id!r}, as in the URL", expression=f"{resource_type}.id")
    if resource_type == "Subscription":
        request.check_clinic("update Subscription")
        return _own_write_response(request, *subscription_routes.subscription_put(
            request, expected_version=_if_match_version(request)))
    intake.validate([(resource_type, body)])
    expected = _if_match_version(request)
    if request.is_provider:
        row = provider_fhir.task_update(
            client=request.grant.client, fhir_id=fhir_id, body=body, expected_version=expected
        )
        return _resource_response(request, 200, row)
    with transaction.atomic():
        # The referral's lock before the Task's, the order the domain's services take them in (referrals/offers.py),
        # so that a clinic's cancel and a provider's answer never wait on each other in a cycle.
        referral_id = _get(request).referral_id
        if referral_id is not None:
            Referral.objects.select_for_update().filter(pk=referral_id).first()
        row = _get(request, lock=True)
        if expected is not None and expected != row.version_id:
            raise error(
                412, "conflict",
                f"{row.reference} is at version {row.version_id}, not {expected}: read it again and re-apply the change",
            )
        if row.referral_id is None:
            raise error(405, "not-supported", f"{row.reference} is not a referral Task this server owns")
        referral = Referral.objects.get(pk=row.referral_id)
        issues = [
            Issue("error", "business-rule", f"Task.{name}", f"Task.{name} is fixed when the referral is made")
            for name in _TASK_FIXED_ELEMENTS
            if body.get(name) != row.content.get(name)
        ]
        status = body["status"]
        if status != referral.status and status not in _CLINIC_STATUSES:
            issues.append(Issue(
                "error", "business-rule", "Task.status",
                f"the clinic may cancel a referral or mark it entered-in-error; {status!r} is set by the exercise "
                "professional through the hub",
            ))
        if issues:
            raise FhirError(422, issues)
        known = {(n.get("time"), n.get("text")) for n in row.content.get("note") or []}
        new_notes = intake.note_facts([n for n in body.get("note") or [] if (n.get("time"), n.get("text")) not in known])
        with projection.status_reason_sent(body.get("statusReason")):
            referral_update_by_clinic(
                referral=referral,
                status=status,
                reason=projection.concept_text(body.get("statusReason")),
                notes=new_notes,
                actor=request.caller.actor,
            )
        # The physician acknowledges an adverse event with a note on the Task.
        records_fhir.adverse_events_acknowledge_by_notes(referral=referral, notes=new_notes, actor=request.caller.actor)
        row.refresh_from_db()
    return _resource_response(request, 200, row)


def handle_delete(request: FhirRequest) -> FhirResponse:
    """``DELETE [type]/<id>``, where the route table lists delete (a clinic's Subscription only)."""
    resource_type = request.params["type"]
    _supported(resource_type, "delete")
    request.check_scope(resource_type, "delete")
    request.check_clinic(f"delete {resource_type}")
    status, outcome, headers = subscription_routes.subscription_remove(request)
    return FhirResponse(status, outcome, headers)


def _own_write_response(request: FhirRequest, status: int, resource: dict, headers: dict[str, str]) -> FhirResponse:
    """A write's answer for a type served from its own table (Subscription), with the body ``Prefer: return=``
    asks for, as _resource_response gives it for stored resources."""
    answer = prefer_return(request.headers)
    if answer == "minimal":
        return FhirResponse(status, None, headers)
    if answer == "OperationOutcome":
        done = "created" if status == 201 else "updated"
        return FhirResponse(status, information(
            f"{resource['resourceType']}/{resource['id']} {done} (version {resource['meta']['versionId']})"), headers)
    return FhirResponse(status, resource, headers)


def _send_now(body) -> bool:
    """The $report operation's one parameter: send-now (boolean, default false), in a Parameters body."""
    if body in (None, {}, b"", ""):
        return False
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise error(400, "structure", "the body of $report is a Parameters resource (or empty)",
                    expression="Parameters")
    send_now = False
    for i, parameter in enumerate(body.get("parameter") or []):
        if not isinstance(parameter, dict) or parameter.get("name") != "send-now" or not isinstance(
            parameter.get("valueBoolean"), bool
        ):
            raise error(400, "invalid", "$report takes one parameter: send-now, a valueBoolean",
                        expression=f"Parameters.parameter[{i}]")
        send_now = parameter["valueBoolean"]
    return send_now


def handle_task_report(request: FhirRequest) -> FhirResponse:
    """``POST Task/<id>/$report``: the referral's progress report now, for the period since the last one. Drafted
    for the therapist to sign: 202 with an OperationOutcome saying so; with ``send-now``, sent at once as
    preliminary: 200 with the DiagnosticReport (also in the Task's output). Needs Task update."""
    if request.params["type"] != "Task":
        raise error(404, "not-supported", f"$report is not an operation on {request.params['type']}")
    request.check_scope("Task", "update")
    send_now = _send_now(request.body)
    # A primitive in parameter may also come in the URL (FHIR operations: "Parameters in the URL").
    in_url = [value for name, value in request.query if name == "send-now"]
    if in_url:
        if set(in_url) - {"true", "false"} or len(set(in_url)) > 1:
            raise error(400, "invalid", "send-now in the URL must be true or false, once", expression="send-now")
        send_now = send_now or in_url[0] == "true"
    with transaction.atomic():
        row = _get(request)
        if row.referral_id is None or row.content.get("partOf"):
            raise error(422, "business-rule", "$report works on a referral Task, not on an offer's Task",
                        expression="Task")
        referral = Referral.objects.get(pk=row.referral_id)
        report = report_request(referral=referral, actor=request.caller.actor, send_now=send_now)
    period = f"{report.period_start.isoformat()} to {report.period_end.isoformat()}"
    if not report.is_sent:
        return FhirResponse(202, information(
            f"A progress report for {period} is drafted; the therapist is asked to review and sign it, and it "
            "appears in this Task's output when sent. Ask with send-now=true (in a Parameters body, or in the "
            "URL) to have it sent at once, unreviewed."))
    dr = StoredResource.objects.get(resource_type="DiagnosticReport", fhir_id=str(report.public_id))
    return _resource_response(request, 200, dr)
def _operation(name: str, handler: Callable[[FhirRequest], dict]) -> Callable[[FhirRequest], FhirResponse]:
    """A route table operation (route_table.ServedType.operations) on the request's type, behind its scope."""

    def handle(request: FhirRequest) -> FhirResponse:
        resource_type = request.params["type"]
        served = route_table.SERVED.get(resource_type)
        found = [op for op in (served.operations if served else ()) if op[0] == name]
        if not found:
            raise error(404, "not-supported", f"${name} is not an operation on {resource_type}")
        request.check_scope(resource_type, found[0][2])
        return FhirResponse(200, handler(request))

    return handle


# --- the table -----------------------------------------------------------------------------------------------------

_TYPE = r"(?P<type>[A-Z][A-Za-z]+)"
_ID = r"(?P<id>[A-Za-z0-9\-\.]{1,64})"


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern
    handler: Callable[[FhirRequest], FhirResponse]
    public: bool = False


def _route(method: str, path: str, handler, public: bool = False) -> Route:
    return Route(method, re.compile(f"^{path}$"), handler, public)


ROUTES: tuple[Route, ...] = (
    _route("GET", "metadata", handle_metadata, public=True),
    _route("POST", rf"{_TYPE}/{_ID}/\$report", handle_task_report),  # answers 202 or 200 itself
    # Operations first: "$" is not an id character, but a type-level operation would otherwise read as a search.
    *(
        _route(method, path, _operation(name, handler))
        for name, handler, paths in (
            ("status", subscription_routes.subscription_status, (rf"{_TYPE}/\$status", rf"{_TYPE}/{_ID}/\$status")),
            ("events", subscription_routes.subscription_events_operation, (rf"{_TYPE}/{_ID}/\$events",)),
        )
        for path in paths
        for method in ("GET", "POST")
    ),
    _route("GET", r"\.well-known/smart-configuration", handle_smart_configuration, public=True),
    _route("POST", "", handle_transaction),
    _route("GET", _TYPE, handle_search),
    _route("POST", f"{_TYPE}/_search", handle_search),
    _route("POST", _TYPE, handle_create),
    _route("GET", f"{_TYPE}/{_ID}", handle_read),
    _route("PUT", f"{_TYPE}/{_ID}", handle_update),
    _route("DELETE", f"{_TYPE}/{_ID}", handle_delete),
    _route("GET", f"{_TYPE}/{_ID}/_history", handle_history),
    _route("GET", rf"{_TYPE}/{_ID}/_history/(?P<vid>[0-9]+)", handle_vread),
)


# The type-level interaction each generic route serves, for the route table's say on a type.
_TYPE_INTERACTIONS = {
    handle_search: "search", handle_create: "create", handle_read: "read", handle_update: "update",
    handle_history: "history", handle_vread: "vread", handle_delete: "delete",
}


def _refused_for_type(route: Route, match: re.Match) -> bool:
    """Whether the route table refuses ``route``'s interaction for a type it serves (PUT on a read-only type).
    A type it does not serve is the handler's 404, not a 405."""
    interaction, resource_type = _TYPE_INTERACTIONS.get(route.handler), match.groupdict().get("type")
    return bool(interaction and resource_type in route_table.SERVED
                and not route_table.answers(resource_type, interaction))


def allowed_methods(path: str) -> list[str]:
    """The methods answered at ``path`` (relative to /fhir), sorted: an ``Allow`` header's list."""
    allowed = set()
    for route in ROUTES:
        match = route.pattern.fullmatch(path)
        if match and not _refused_for_type(route, match):
            allowed.add(route.method)
    return sorted(allowed)


def resolve(method: str, path: str) -> tuple[Route, dict[str, str]]:
    allowed = []
    for route in ROUTES:
        match = route.pattern.fullmatch(path)
        if match:
            if route.method == method:
                return route, match.groupdict()
            allowed.append(route.method)
    if allowed:
        allowed = allowed_methods(path) or sorted(set(allowed))
        raise error(405, "not-supported", f"{method} is not supported here (allowed: {', '.join(allowed)})",
                    headers={"Allow": ", ".join(allowed)})
    raise error(404, "not-found", f"no FHIR interaction at /{path}")
