"""The audit trail at the FHIR edge: recording each request the adapter answers (one row, one INSERT), and
serving the trail as FHIR AuditEvent in the IHE Basic Audit Log Patterns (BALP) shape to a client granted
``system/AuditEvent.rs`` (no client has it by default: route_table marks AuditEvent ``by_default=False``).

References: https://profiles.ihe.net/ITI/BALP/ (RESTful activity: Create, Read, Update, Query),
https://hl7.org/fhir/R4/auditevent.html.
"""

import base64
from urllib.parse import urlencode, urlsplit

from audit.models import Access
from audit.services import access_record, client_ip
from fhir_bridge.outcomes import error, not_found
from fhir_bridge.search import date_filter, page_links, search_plan
from fhir_bridge.store import http_date_iso

_INTERACTIONS = {
    "handle_transaction": "transaction", "handle_search": "search", "handle_create": "create",
    "handle_read": "read", "handle_vread": "vread", "handle_history": "history", "handle_update": "update",
    "handle_delete": "delete",
}
_METHOD_GUESS = {"GET": "read", "POST": "create", "PUT": "update", "DELETE": "delete"}


def _clean(text: str) -> str:
    return text.replace("\x00", "\\u0000")  # PostgreSQL cannot store U+0000; a refused request may carry one


def _created(headers, data) -> tuple[str, str]:
    """Type and id of what a create or transaction made, read from what the response already carries."""
    location = (headers or {}).get("Location", "")
    if location:
        parts = urlsplit(location).path.split("/")
        if "_history" in parts:
            parts = parts[: parts.index("_history")]
        if len(parts) >= 2:
            return parts[-2], parts[-1]
    if isinstance(data, dict) and data.get("type") == "transaction-response":
        for entry in data.get("entry") or []:
            location = (entry.get("response") or {}).get("location", "")
            if location.startswith("Task/"):
                return "Task", location.split("/")[1]
    return "", ""


def fhir_access_record(*, request, status: int, headers, data, route, params: dict, grant,
                       query: list[tuple[str, str]]) -> None:
    """One audit row for one /fhir request (public routes, which carry no PHI, leave none): ``status``,
    ``headers`` and ``data`` are what is answered. ``route`` is None when the path matched no route; ``grant``
    None when the token was refused."""
    if route is not None and route.public:
        return
    interaction = _INTERACTIONS.get(route.handler.__name__, "") if route else ""
    interaction = interaction or _METHOD_GUESS.get(request.method, request.method.lower())
    entity_type, entity_id = params.get("type", ""), params.get("id", "")
    if interaction == "transaction":
        entity_type = "Bundle"
    if interaction in ("create", "transaction") and status < 300:
        made_type, made_id = _created(headers, data)
        entity_type, entity_id = made_type or entity_type, made_id
    if interaction == "vread":
        entity_id = f"{entity_id}/_history/{params.get('vid', '')}"[:64]
    text = urlencode(query) if interaction == "search" else request.META.get("QUERY_STRING", "")
    access_record(
        channel=Access.Channel.FHIR, interaction=interaction, method=request.method, path=_clean(request.path),
        status=status, source_ip=client_ip(request.META),
        agent_client=grant.client.client_id if grant else "", clinic_id=grant.client.clinic_id if grant else None,
        entity_type=_clean(entity_type), entity_id=_clean(entity_id), query=_clean(text),
    )


# --- AuditEvent ------------------------------------------------------------------------------------------------

_BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/"
_PROFILES = {"create": "IHE.BasicAudit.Create", "update": "IHE.BasicAudit.Update", "search": "IHE.BasicAudit.Query",
             "read": "IHE.BasicAudit.Read", "vread": "IHE.BasicAudit.Read", "history": "IHE.BasicAudit.Read"}
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_CLIENT_ID_SYSTEM = "http://exercise-referral-hub.org/fhir/sid/ehr-client-id"
_USER_SYSTEM = "http://exercise-referral-hub.org/fhir/sid/hub-user"


def _outcome(status: int) -> str:
    return "0" if status < 400 else ("4" if status < 500 else "8")  # success, minor failure, serious failure


def audit_event(row: Access) -> dict:
    """One audit row as a FHIR R4 AuditEvent, in the BALP RESTful shape."""
    if row.agent_client:
        who = {"identifier": {"system": _CLIENT_ID_SYSTEM, "value": row.agent_client}}
    elif row.agent_user:
        who = {"identifier": {"system": _USER_SYSTEM, "value": row.agent_user}}
    else:
        who = {"display": "unauthenticated caller"}
    client = {
        "type": {"coding": [{"system": _DCM, "code": "110153", "display": "Source Role ID"}]},
        "who": who,
        "requestor": True,
    }
    if row.source_ip:
        client["network"] = {"address": row.source_ip, "type": "2"}  # 2: IP address
    server = {
        "type": {"coding": [{"system": _DCM, "code": "110152", "display": "Destination Role ID"}]},
        "who": {"display": "Exercise-referral hub"},
        "requestor": False,
    }
    entities = []
    if row.entity_type and row.entity_id:
        entities.append({
            "what": {"reference": f"{row.entity_type}/{row.entity_id}"},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2",
                     "display": "System Object"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "4",
                     "display": "Domain Resource"},
        })
    if row.interaction == "search" or (row.query and not entities):
        entities.append({
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2",
                     "display": "System Object"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24", "display": "Query"},
            "description": f"{row.method} {row.path}",
            "query": base64.b64encode(f"{row.path}?{row.query}".encode()).decode(),
        })
    event = {
        "resourceType": "AuditEvent",
        "id": str(row.pk),
        "meta": {"versionId": "1", "lastUpdated": http_date_iso(row.recorded_at)},
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
                 "display": "Restful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": row.interaction}],
        "action": row.action,
        "recorded": http_date_iso(row.recorded_at),
        "outcome": _outcome(row.status),
        "outcomeDesc": f"HTTP {row.status}",
        "agent": [client, server],
        "source": {
            "observer": {"display": "Exercise-referral hub"},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
                      "display": "Application Server"}],
        },
    }
    if row.interaction in _PROFILES:
        event["meta"]["profile"] = [_BALP + _PROFILES[row.interaction]]
    if entities:
        event["entity"] = entities
    return event


def _row_id(text: str) -> bool:
    """Whether ``text`` can be a row id: digits within a 64-bit key (SQLite cannot even compare a larger one)."""
    return text.isdigit() and len(text) <= 18


def _visible(clinic_id: int):
    """An EHR auditor reads its own clinic's trail."""
    return Access.objects.filter(clinic_id=clinic_id)


def audit_read(*, clinic_id: int, fhir_id: str) -> dict:
    row = _visible(clinic_id).filter(pk=int(fhir_id)).first() if _row_id(fhir_id) else None
    if row is None:
        raise not_found("AuditEvent", fhir_id)
    return audit_event(row)


def audit_search(*, clinic_id: int, base_url: str, params: list[tuple[str, str]]) -> dict:
    """Search the trail: ``_id``, ``date`` (ge/le/gt/lt/eq prefixes), ``agent`` (a client_id), ``entity-type``,
    ``action``, ``outcome`` (0, 4, 8), paged by ``_count``/``_offset``; newest first."""
    # The route table's parameters, checked as every search's are (unknown ones refused); the rows are this
    # app's own table, so the filters are applied here.
    plan = search_plan("AuditEvent", params)
    rows = _visible(clinic_id)
    for name, raw in plan.applied:
        if name.startswith("_") and name != "_id":
            continue
        if name == "_id":
            rows = rows.filter(pk__in=[int(v) for v in raw.split(",") if _row_id(v)])
        elif name == "date":
            rows = rows.filter(date_filter("recorded_at", name, raw))
        elif name == "agent":
            rows = rows.filter(agent_client__in=raw.split(","))
        elif name == "entity-type":
            rows = rows.filter(entity_type__in=raw.split(","))
        elif name == "action":
            rows = rows.filter(action__in=raw.split(","))
        elif name == "outcome":
            statuses = {"0": (0, 399), "4": (400, 499), "8": (500, 599)}
            if raw not in statuses:
                raise error(400, "invalid", "outcome is 0, 4 or 8", expression="outcome")
            rows = rows.filter(status__range=statuses[raw])
        else:
            raise error(400, "not-supported", f"search parameter {name!r} is not supported for AuditEvent",
                        expression=name)
    total = rows.count()
    window = list(rows.order_by("-recorded_at", "-id")[plan.offset: plan.offset + plan.count]) if plan.count else []
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": page_links(base_url, "AuditEvent", plan, plan.offset + plan.count < total),
        "entry": [{"fullUrl": f"{base_url}/AuditEvent/{row.pk}", "resource": audit_event(row),
                   "search": {"mode": "match"}} for row in window],
    }
