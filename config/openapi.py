"""The OpenAPI 3.0 description the hub publishes at ``/openapi.json``: the FHIR surface (built from the route
table, so it lists exactly what the router answers) and the coordinators' JSON API. It describes requests
closely enough for a fuzzer (schemathesis, ``make assure``) to reach every operation; FHIR bodies are left as
JSON objects, since the FHIR specification, not this document, defines them.
"""

from django.http import HttpRequest, JsonResponse

from fhir_bridge.route_table import TABLE
from fhir_bridge.routes import ROUTES

_FHIR = "application/fhir+json"
_OUTCOME = {"description": "an OperationOutcome", "content": {_FHIR: {"schema": {"type": "object"}}}}
_RESOURCE = {"description": "a FHIR resource or Bundle", "content": {_FHIR: {"schema": {"type": "object"}}}}
_ERRORS = {str(code): _OUTCOME for code in (400, 401, 403, 404, 405, 409, 410, 411, 412, 413, 415, 422)}
_ID = {"name": "id", "in": "path", "required": True,
       "schema": {"type": "string", "pattern": r"^[A-Za-z0-9\-\.]{1,64}$"}}
_BODY = {"required": True, "content": {_FHIR: {"schema": {"type": "object"}}}}


def _op(summary: str, *, ok: str = "200", parameters: list | None = None, body: dict | None = None,
        security: bool = True) -> dict:
    operation = {"summary": summary, "responses": {ok: _RESOURCE, **_ERRORS}}
    if parameters:
        operation["parameters"] = parameters
    if body:
        operation["requestBody"] = body
    if not security:
        operation["security"] = []
    return operation


def _search_params(served) -> list[dict]:
    params = [{"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
              for name in served.search_names]
    return params + [
        {"name": "_count", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
        {"name": "_offset", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
    ]


def _fhir_paths() -> dict:
    paths = {
        "/fhir/metadata": {"get": _op("the CapabilityStatement", security=False)},
        "/fhir": {"post": _op("a transaction Bundle (a referral)", body=_BODY)},
    }
    for served in TABLE:
        base, instance = f"/fhir/{served.name}", f"/fhir/{served.name}/{{id}}"
        if "search" in served.interactions:
            paths.setdefault(base, {})["get"] = _op(f"search {served.name}", parameters=_search_params(served))
            form = {name: {"type": "string"} for name in served.search_names}
            paths[f"{base}/_search"] = {"post": _op(f"search {served.name} (form)", body={
                "required": False,
                "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": form}}},
            })}
        if "create" in served.interactions:
            paths.setdefault(base, {})["post"] = _op(f"create a {served.name}", ok="201", body=_BODY)
        if "read" in served.interactions:
            paths.setdefault(instance, {"parameters": [_ID]})["get"] = _op(f"read a {served.name}")
        if "update" in served.interactions:
            paths.setdefault(instance, {"parameters": [_ID]})["put"] = _op(f"update a {served.name}", body=_BODY)
        if "delete" in served.interactions:
            paths.setdefault(instance, {"parameters": [_ID]})["delete"] = _op(f"delete a {served.name}")
        if "history" in served.interactions:
            paths[f"{instance}/_history"] = {"parameters": [_ID], "get": _op(f"history of a {served.name}")}
        if "vread" in served.interactions:
            paths[f"{instance}/_history/{{vid}}"] = {
                "parameters": [_ID, {"name": "vid", "in": "path", "required": True,
                                     "schema": {"type": "string", "pattern": "^[0-9]{1,9}$"}}],
                "get": _op(f"a version of a {served.name}"),
            }
    for served in TABLE:
        for name, _, _ in served.operations:
            for path, method, level_parameters in _operation_routes(name):
                path = f"/fhir/{served.name}{path}"
                paths.setdefault(path, {"parameters": level_parameters} if level_parameters else {})
                paths[path][method] = _op(
                    f"${name} on {served.name}", parameters=_OPERATION_QUERY.get(name) if method == "get" else None,
                    body={"required": False, "content": {_FHIR: {"schema": {"type": "object"}}}}
                    if method == "post" else None,
                )
    return paths


# The query parameters an operation takes on GET (on POST, a Parameters body); what its handler reads.
_OPERATION_QUERY = {
    "status": [{"name": name, "in": "query", "required": False, "schema": {"type": "string"}} for name in ("id", "status")],
    "events": [{"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
               for name in ("eventsSinceNumber", "eventsUntilNumber")],
}


def _operation_routes(name: str) -> list[tuple[str, str, list]]:
    """Where the router answers ``$name``: (path after the type, method, path parameters), from its patterns, so
    that the description lists an operation exactly where the router serves it."""
    found = []
    for route in ROUTES:
        pattern = route.pattern.pattern
        if not pattern.endswith(rf"\${name}$"):
            continue
        instance = "(?P<id>" in pattern
        found.append((f"/{{id}}/${name}" if instance else f"/${name}", route.method.lower(), [_ID] if instance else []))
    return found


_JSON_OBJECT = {"description": "JSON", "content": {"application/json": {"schema": {"type": "object"}}}}
_API_ERRORS = {str(code): _JSON_OBJECT for code in (400, 401, 403, 404, 409, 422)}


def _api_op(summary: str, *, ok: str = "200", id_name: str | None = None, body: dict | None = None) -> dict:
    operation = {"summary": summary, "security": [{"session": []}, {"token": []}],
                 "responses": {ok: _JSON_OBJECT, **_API_ERRORS}}
    if id_name:
        operation["parameters"] = [{"name": id_name, "in": "path", "required": True,
                                    "schema": {"type": "integer", "format": "int64", "minimum": 1}}]
    if body:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return operation


def _api_paths() -> dict:
    route = {"type": "object", "required": ["role"],
             "properties": {"role": {"type": "string"}, "override_reason": {"type": "string"}}}
    answer = {"type": "object", "required": ["answer"],
              "properties": {"answer": {"type": "string", "enum": ["accept", "decline"]},
                             "reason": {"type": "string"}}}
    return {
        "/api/admin/routing/queue": {"get": _api_op("referrals waiting for manual routing")},
        "/api/admin/referrals/{referral_id}/routing": {
            "get": _api_op("every routing decision for a referral", id_name="referral_id")},
        "/api/admin/referrals/{referral_id}/route": {
            "post": _api_op("route by hand", ok="201", id_name="referral_id", body=route)},
        "/api/admin/referrals/{referral_id}/reroute": {
            "post": _api_op("ask the routing engine again", ok="201", id_name="referral_id", body={"type": "object"})},
        "/api/admin/offers/{offer_id}/answer": {
            "post": _api_op("record a professional's answer", id_name="offer_id", body=answer)},
    }


def openapi_document() -> dict:
    return {
        "openapi": "3.0.3",
        "info": {"title": "Exercise-referral hub", "version": "0.1.0",
                 "description": "The FHIR R4 endpoint (SMART Backend Services bearer tokens from /auth/token) and "
                                "the coordinators' JSON API under /api/admin/ (staff only). Signing in to the "
                                "coordinators' API, either way: (1) a browser's or script's session: POST the "
                                "Django admin's login form (/admin/login/, with its csrftoken cookie) and send the "
                                "sessionid cookie it sets; a write (POST) also sends that csrftoken as the "
                                "X-CSRFToken header (the README shows it with curl). (2) a token for scripts: an "
                                "operator runs `manage.py drf_create_token <staff username>` (`-r` replaces it) and "
                                "the script sends `Authorization: Token <key>` on every request, with no cookie and "
                                "no CSRF header. Either way the user must be staff (is_staff), else 403; without "
                                "credentials, or with a token that is not one, 401 (WWW-Authenticate: Token)."},
        "paths": {**_fhir_paths(), **_api_paths()},
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "session": {"type": "apiKey", "in": "cookie", "name": "sessionid",
                        "description": "The Django admin's session: sign in at /admin/login/ as a staff user; "
                                       "writes also send the csrftoken cookie's value as X-CSRFToken."},
            "token": {"type": "apiKey", "in": "header", "name": "Authorization",
                      "description": "For scripts: 'Token <key>', the key made for a staff user by "
                                     "`manage.py drf_create_token <username>`. No CSRF header needed."},
        }},
        "security": [{"bearer": []}],
    }


def openapi_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(openapi_document())
