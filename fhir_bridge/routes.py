"""The FHIR route table (after medplum's fhir-router) and its handlers. Handlers know nothing of DRF: each takes a
FhirRequest and returns a FhirResponse, or raises FhirError."""

import re
from dataclasses import dataclass, field
from typing import Callable

from django.db import transaction
from django.utils import timezone
from django.utils.http import http_date

from fhir_bridge import capability, intake, network_fhir, provider_fhir, route_table
from fhir_bridge.codes import LOCATION_DISTANCE_EXTENSION, UCUM_SYSTEM
from fhir_bridge.models import ResourceVersion, StoredResource
from fhir_bridge.outcomes import FhirError, error, not_found
from fhir_bridge.profiles import Issue
from fhir_bridge.search import page_links, search, search_page_params, visible
from fhir_bridge.smart_scopes import Grant, grant_allows
from fhir_bridge.smart_views import smart_configuration
from referrals.models import Referral
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


def _resource_response(request: FhirRequest, status: int, row: StoredResource) -> FhirResponse:
    headers = _version_headers(row, row.reference, row.version_id)
    if status == 201 or request.method in ("POST", "PUT"):
        headers["Location"] = f"{request.base_url}/{row.reference}/_history/{row.version_id}"
    prefer = request.headers.get("prefer", "")
    if "return=minimal" in prefer:
        return FhirResponse(status, None, headers)
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


def handle_transaction(request: FhirRequest) -> FhirResponse:
    request.check_clinic("a transaction (a referral Bundle)")
    if not isinstance(request.body, dict):
        raise error(400, "structure", "the body must be a FHIR Bundle (a JSON object)")
    outcome = intake.transaction_intake(
        request.caller, request.body, raw=request.raw_body, check_scope=request.check_scope
    )
    if "return=minimal" in request.headers.get("prefer", ""):
        for entry in outcome.resource["entry"]:
            entry.pop("resource", None)
    return FhirResponse(outcome.status, outcome.resource)


def handle_create(request: FhirRequest) -> FhirResponse:
    resource_type = request.params["type"]
    _supported(resource_type, "create")
    request.check_scope(resource_type, "create")
    body = request.body
    if not isinstance(body, dict):
        raise error(400, "structure", f"the body must be a {resource_type} (a JSON object)")
    if body.get("resourceType") != resource_type:
        raise error(
            400, "structure", f"the body is a {body.get('resourceType')!r}, not a {resource_type}",
            expression=f"{resource_type}.resourceType",
        )
    if request.is_provider:
        if resource_type != "Observation":
            request.check_clinic(f"create {resource_type}")
        return _resource_response(request, 201, provider_fhir.observation_create(client=request.grant.client, body=body))
    if_none_exist = request.headers.get("if-none-exist")
    if resource_type == "Task":
        outcome = intake.task_intake(request.caller, body, raw=request.raw_body, if_none_exist=if_none_exist)
    elif resource_type == "ServiceRequest":
        outcome = intake.service_request_intake(request.caller, body, raw=request.raw_body, if_none_exist=if_none_exist)
    else:
        outcome = intake.supporting_create(request.caller, body, resource_type, if_none_exist=if_none_exist)
    return _resource_response(request, outcome.status, outcome.stored)  # a POST: it carries Location


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


def handle_vread(request: FhirRequest) -> FhirResponse:
    _supported(request.params["type"], "vread")
    request.check_scope(request.params["type"], "vread")
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
    if resource_type in network_fhir.NETWORK_TYPES:
        return _network_search(request, resource_type, params)
    if request.is_provider:
        page, matches, included = provider_fhir.search_bundle(
            organization_id=request.grant.client.organization_id, resource_type=resource_type, params=params
        )
    else:
        page = search(clinic_id=request.clinic_id, resource_type=resource_type, params=params)
        matches = [(r.reference, r.content) for r in page.matches]
        included = [(r.reference, r.content) for r in page.included]
    entries = [
        {"fullUrl": f"{request.base_url}/{reference}", "resource": content, "search": {"mode": "match"}}
        for reference, content in matches
    ] + [
        {"fullUrl": f"{request.base_url}/{reference}", "resource": content, "search": {"mode": "include"}}
        for reference, content in included
    ]
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": page.total,
        "link": page_links(request.base_url, resource_type, params, page),
        "entry": entries,
    }
    return FhirResponse(200, bundle)


def _network_search(request: FhirRequest, resource_type: str, params: list[tuple[str, str]]) -> FhirResponse:
    page = search_page_params(params)
    rows, distances = network_fhir.network_search(resource_type, params)
    window = rows[page.offset : page.offset + page.count]
    entries = []
    for row in window:
        entry = {
            "fullUrl": f"{request.base_url}/{resource_type}/{row.fhir_id}",
            "resource": network_fhir.RENDER[resource_type](row),
            "search": {"mode": "match"},
        }
        if row.pk in distances:  # a Location found by near
            # The distance in metres, as FHIR's location-distance extension carries it.
            entry["search"]["extension"] = [{
                "url": LOCATION_DISTANCE_EXTENSION,
                "valueDistance": {
                    "value": round(distances[row.pk] * 1000), "unit": "m", "system": UCUM_SYSTEM,
                    "code": "m",
                },
            }]
        entries.append(entry)
    page.total = len(rows)
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": page.total,
        "link": page_links(request.base_url, resource_type, params, page),
        "entry": entries,
    }
    return FhirResponse(200, bundle)


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
        referral_update_by_clinic(
            referral=referral,
            status=status,
            reason=(body.get("statusReason") or {}).get("text") or "",
            notes=new_notes,
            actor=request.caller.actor,
        )
        row.refresh_from_db()
    return _resource_response(request, 200, row)


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
    _route("GET", r"\.well-known/smart-configuration", handle_smart_configuration, public=True),
    _route("POST", "", handle_transaction),
    _route("GET", _TYPE, handle_search),
    _route("POST", f"{_TYPE}/_search", handle_search),
    _route("POST", _TYPE, handle_create),
    _route("GET", f"{_TYPE}/{_ID}", handle_read),
    _route("PUT", f"{_TYPE}/{_ID}", handle_update),
    _route("GET", f"{_TYPE}/{_ID}/_history", handle_history),
    _route("GET", rf"{_TYPE}/{_ID}/_history/(?P<vid>[0-9]+)", handle_vread),
)


def resolve(method: str, path: str) -> tuple[Route, dict[str, str]]:
    allowed = []
    for route in ROUTES:
        match = route.pattern.match(path)
        if match:
            if route.method == method:
                return route, match.groupdict()
            allowed.append(route.method)
    if allowed:
        raise error(405, "not-supported", f"{method} is not supported here (allowed: {', '.join(sorted(set(allowed)))})",
                    headers={"Allow": ", ".join(sorted(set(allowed)))})
    raise error(404, "not-found", f"no FHIR interaction at /{path}")
