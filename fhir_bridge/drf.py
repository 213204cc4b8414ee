"""DRF as the adapter around the FHIR router: a parser and a renderer for application/fhir+json, one view, and an
exception handler that always answers with an OperationOutcome."""

import logging

import orjson
from django.conf import settings
from django.core.exceptions import DisallowedHost, RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent
from django.db import DatabaseError, DataError, IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.http import HttpResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser, FormParser
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from config import database_errors
from fhir_bridge import limits, routes
from fhir_bridge.audit_fhir import fhir_access_record
from fhir_bridge.fhir import FHIR_VERSION
from fhir_bridge.outcomes import FhirError, domain_error, error, operation_outcome
from fhir_bridge.profiles import Issue
from fhir_bridge.smart_tokens import AuthError, authenticate_bearer
from referrals.errors import DomainError

log = logging.getLogger(__name__)


class FhirJsonParser(BaseParser):
    media_type = "application/fhir+json"

    def parse(self, stream, media_type=None, parser_context=None):
        # Depth, string length, NUL and Bundle size are checked here, before fhir.resources ever sees the body.
        return limits.parse_json(stream.read())


class PlainJsonParser(FhirJsonParser):
    media_type = "application/json"


class FhirJsonRenderer(BaseRenderer):
    media_type = "application/fhir+json"
    format = "json"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        return orjson.dumps(data)


class PlainJsonRenderer(FhirJsonRenderer):
    media_type = "application/json"


# What this server speaks, as _format values and media types (R4 http.html#mime-type): FHIR JSON only.
_FORMATS = {"json": "application/fhir+json", "application/fhir+json": "application/fhir+json",
            "application/json": "application/json", "application/json+fhir": "application/fhir+json"}
# The fhirVersion MIME parameter values that name R4 (http.html#version-parameter).
FHIR_VERSIONS = ("4.0", FHIR_VERSION)


def _media_type(value: str) -> tuple[str, dict[str, str]]:
    """A media type and its parameters, lower-cased names; ``json;fhirVersion=4.0`` too."""
    kind, *rest = value.split(";")
    params = {}
    for item in rest:
        name, _, param_value = item.partition("=")
        params[name.strip().lower()] = param_value.strip().strip('"')
    return kind.strip().lower(), params


FORM = "application/x-www-form-urlencoded"


def _dev_server(request) -> bool:
    """Whether the request came through Django's development server (``make run``), whose wsgiref handler reports
    a request that sent no Content-Type as text/plain."""
    return request.META.get("SERVER_SOFTWARE", "").startswith("WSGIServer/")


def fhir_version_refused(params: dict[str, str]) -> bool:
    return "fhirversion" in params and params["fhirversion"] not in FHIR_VERSIONS


class FhirContentNegotiation(BaseContentNegotiation):
    """_format overrides Accept (R4 http.html#mime-type); a fhirVersion parameter other than R4's is not
    acceptable; the SMART configuration is application/json whatever the Accept header (SMART App Launch 2.x
    conformance). Anything else this server cannot speak is a 406."""

    def select_parser(self, request, parsers):
        kind, _ = _media_type(request.content_type or "")
        return next((parser for parser in parsers if parser.media_type == kind), None)

    def select_renderer(self, request, renderers, format_suffix=None):
        by_type = {renderer.media_type: renderer for renderer in renderers}
        if request.path.rstrip("/").endswith(".well-known/smart-configuration"):
            return by_type["application/json"], "application/json"
        requested = request.query_params.get("_format")
        if requested is not None:
            kind, params = _media_type(requested)
            if kind in _FORMATS and not fhir_version_refused(params):
                return by_type[_FORMATS[kind]], _FORMATS[kind]
            raise drf_exceptions.NotAcceptable()
        for item in (request.META.get("HTTP_ACCEPT") or "*/*").split(","):
            kind, params = _media_type(item)
            if params.get("q") in ("0", "0.0", "0.00", "0.000") or fhir_version_refused(params):
                continue
            if kind in ("*/*", "application/*") or kind in _FORMATS:
                media_type = _FORMATS.get(kind, "application/fhir+json")
                return by_type[media_type], media_type
        raise drf_exceptions.NotAcceptable()


def suspicious_error(exc: SuspiciousOperation) -> FhirError:
    """What the FHIR edge answers when Django refuses to read a request (django.core.exceptions): too many query
    or form parameters, a body over Django's own cap, a Host not in ALLOWED_HOSTS."""
    if isinstance(exc, TooManyFieldsSent):
        return error(400, "too-costly", f"the request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} query "
                                        "or form parameters; this server takes at most "
                                        f"{settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} (DATA_UPLOAD_MAX_NUMBER_FIELDS)")
    if isinstance(exc, RequestDataTooBig):
        return error(413, "too-costly", f"the body is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes")
    if isinstance(exc, DisallowedHost):
        return error(400, "invalid", "the Host header names a host this server does not serve")
    return error(400, "invalid", "the request cannot be read")


def refusal_response(request, refused: FhirError) -> HttpResponse:
    """An OperationOutcome answer, with the request's one audit row (none for a public route), for a request
    refused before FhirView runs (config/bad_request.py): the Host or the query string cannot be read."""
    path = request.path_info.removeprefix("/fhir").lstrip("/")
    try:
        route, params = routes.resolve("GET" if request.method == "HEAD" else request.method, path)
    except FhirError:
        route, params = None, {}
    data = operation_outcome(refused.issues)
    fhir_access_record(request=request, status=refused.status, headers=refused.headers, data=data, route=route,
                       params=params, grant=None, query=[])
    response = HttpResponse(orjson.dumps(data), status=refused.status, content_type="application/fhir+json")
    for name, value in refused.headers.items():
        response[name] = value
    return response


def fhir_exception_handler(exc, context):
    if isinstance(exc, DomainError):
        exc = domain_error(exc)
    if isinstance(exc, SuspiciousOperation):  # a form body of too many fields (the query is checked before)
        exc = suspicious_error(exc)
    if isinstance(exc, FhirError):
        return Response(operation_outcome(exc.issues), status=exc.status, headers=exc.headers)
    if isinstance(exc, drf_exceptions.UnsupportedMediaType):
        issue = Issue("error", "not-supported", "", f"{exc.detail} Send application/fhir+json.")
        return Response(operation_outcome([issue]), status=415)
    if isinstance(exc, drf_exceptions.NotAcceptable):
        issue = Issue("error", "not-supported", "", "this server answers in application/fhir+json only")
        return Response(operation_outcome([issue]), status=406, content_type="application/fhir+json")
    if isinstance(exc, drf_exceptions.APIException):
        issue = Issue("error", "processing", "", str(exc.detail))
        return Response(operation_outcome([issue]), status=exc.status_code)
    if isinstance(exc, DataError):
        # A value the database cannot keep that the limits (limits.py) did not catch first: permanent, so never
        # "send it again". Nothing was written (the transaction rolled back).
        log.exception("data error while handling a FHIR request")
        issue = Issue("error", "invalid", "", "a value in the request cannot be stored by this server; nothing was stored")
        return Response(operation_outcome([issue]), status=422)
    if isinstance(exc, IntegrityError):
        log.exception("integrity error while handling a FHIR request")
        issue = Issue("error", "conflict", "", "the request clashes with what is stored; nothing was stored")
        return Response(operation_outcome([issue]), status=409)
    if database_errors.too_large(exc):
        # A search the limits (limits.py) should have kept small enough: permanent, never "send it again".
        log.exception("a statement too large for the database while handling a FHIR request")
        issue = Issue("error", "too-costly", "", "the request is more than this server's database will evaluate; "
                                                 "ask for less at once; nothing was stored")
        return Response(operation_outcome([issue]), status=400)
    if database_errors.transient(exc):
        # Only after FhirView's own retry failed too (a lost connection, a serialization failure, a lock timeout).
        log.exception("transient database error while handling a FHIR request")
        issue = Issue("error", "transient", "", "the server is busy; nothing was stored, send the request again")
        return Response(operation_outcome([issue]), status=503, headers={"Retry-After": "1"})
    if isinstance(exc, DatabaseError):
        log.exception("database error while handling a FHIR request")
        issue = Issue("fatal", "exception", "", "the server failed to handle the request; nothing was stored")
        return Response(operation_outcome([issue]), status=500)
    return None


def base_urls(request) -> tuple[str, str]:
    root = settings.HUB_PUBLIC_BASE_URL or request.build_absolute_uri("/").rstrip("/")
    return f"{root.rstrip('/')}/fhir", f"{root.rstrip('/')}/auth/token"


class FhirView(APIView):
    """Every /fhir URL: match a route, authenticate, call its handler, render what it returns."""

    parser_classes = [FhirJsonParser, PlainJsonParser, FormParser]
    renderer_classes = [FhirJsonRenderer, PlainJsonRenderer]
    content_negotiation_class = FhirContentNegotiation
    authentication_classes = []
    permission_classes = []

    # What the audit row needs, filled in as handle_fhir learns it (a request refused early has less of it).
    _route = None
    _params: dict = {}
    _grant = None
    _query: list = []

    def handle_fhir(self, request, path: str = ""):
        # HEAD is GET without the body (RFC 9110 9.3.2): the same route, status and headers (finalize_response
        # drops the body).
        method = "GET" if request.method == "HEAD" else request.method
        route, params = routes.resolve(method, path)
        self._route, self._params = route, params
        base_url, token_url = base_urls(request)
        query = [(k, v) for k, values in request.query_params.lists() for v in values if k != "_format"]
        limits.check_query(query)
        self._query = query
        fhir_request = routes.FhirRequest(
            method=method,
            params=params,
            query=query,
            headers={k.lower(): v for k, v in request.headers.items()},
            base_url=base_url,
            token_url=token_url,
        )
        if not route.public:
            try:
                fhir_request.grant = self._grant = authenticate_bearer(request.headers.get("Authorization"))
            except AuthError as exc:
                raise error(401, "login", str(exc), headers={"WWW-Authenticate": 'Bearer realm="fhir"'}) from None
        allowed = routes.allowed_methods(path)
        if not allowed:  # no method at all at this URL (GET Subscription/<id>/_history): no such interaction
            raise error(404, "not-supported", f"there is no interaction at /{path} on this server (the "
                                              "CapabilityStatement lists each type's interactions)")
        if method not in allowed:  # PUT on a read-only type: a 405 before its body is looked at (415)
            raise error(405, "not-supported", f"{request.method} is not supported here (allowed: {', '.join(allowed)})",
                        headers={"Allow": ", ".join(allowed)})
        if request.method in ("POST", "PUT"):
            self._check_body_envelope(request, search=route.handler is routes.handle_search)
            limits.check_body_size(request.META.get("CONTENT_LENGTH"))
            if fhir_version_refused(_media_type(request.content_type)[1]):
                raise error(415, "not-supported", f"this server takes FHIR R4 ({FHIR_VERSION}) only")
            fhir_request.raw_body = request.body  # read before DRF parses it, to keep it verbatim
            data = request.data
            if hasattr(data, "lists"):  # a form (POST [type]/_search): (name, value) pairs, as a query string gives
                fhir_request.body = [(k, v) for k, values in data.lists() for v in values]
                limits.check_query(query + fhir_request.body)  # the limits are on the whole request
            else:
                fhir_request.body = data
        if isinstance(fhir_request.body, list):
            self._query = query + fhir_request.body
        response = self._run(request, route.handler, fhir_request)
        return Response(response.resource, status=response.status, headers=response.headers)

    @staticmethod
    def _check_body_envelope(request, *, search: bool) -> None:
        """415 for a body in a media type the route does not take (a search's is a form, R4 http.html#search;
        anything else's FHIR JSON), or with no Content-Type; 411 for a chunked body without Content-Length, which
        Django (WSGI) would read as empty."""
        kind = _media_type(request.content_type or "")[0]
        wanted = FORM if search else "application/fhir+json"
        chunked = "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
        if search and not kind and request.META.get("CONTENT_LENGTH") in (None, "", "0") and not chunked:
            return  # a search with no body needs no media type
        if not kind:
            raise error(415, "not-supported", f"the request has no Content-Type; send the body as {wanted}")
        if kind == "text/plain" and _dev_server(request):  # the development server reports a missing one so
            raise error(415, "not-supported", f"the request has no Content-Type, or text/plain; send the body as "
                                              f"{wanted}")
        if search and kind != FORM:
            raise error(415, "not-supported", f"a search's body is {FORM} (R4 http.html#search), not {kind}")
        if kind == FORM and not search:
            raise error(415, "not-supported", f"send the body as {wanted}, not {kind}")
        if chunked and not request.META.get("CONTENT_LENGTH"):
            raise error(411, "structure", "send the body with a Content-Length: this server does not read a chunked "
                                          "body")

    def finalize_response(self, request, response, *args, **kwargs):
        # Every answer, a refusal included, leaves its one audit row: after the handler's transaction has ended.
        response = super().finalize_response(request, response, *args, **kwargs)
        if request.method == "HEAD":
            length = len(response.render().content)
            response.content = b""
            response["Content-Length"] = str(length)  # the GET's, as RFC 9110 allows
        if response.status_code == 405:  # a type the route table does not give this interaction, too
            allowed = routes.allowed_methods(self.kwargs.get("path", ""))
            if allowed:
                response["Allow"] = ", ".join(allowed)
        if not self._audited:  # a refusal: its own row, after the handler's transaction rolled back
            fhir_access_record(request=request, status=response.status_code, headers=response.headers,
                               data=getattr(response, "data", None), route=self._route, params=self._params,
                               grant=self._grant, query=self._query)
        return response

    _audited = False

    def _run(self, request, handler, fhir_request):
        """Call the handler in one transaction with its audit row, so that an answered request costs one commit
        (the handler's own atomic blocks become savepoints). Once more after a transient database error, which
        rolled it all back, so a second run starts from nothing; not inside an outer transaction (a test's),
        where the first run's work is not undone."""
        for attempt in (1, 2):
            try:
                with transaction.atomic():
                    response = handler(fhir_request)
                    fhir_access_record(request=request, status=response.status, headers=response.headers,
                                       data=response.resource, route=self._route, params=self._params,
                                       grant=self._grant, query=self._query)
                    self._audited = True
                return response
            except (OperationalError, InterfaceError) as exc:
                self._audited = False
                # What a second try may cure (config/database_errors.py): a lost connection, a serialization
                # failure or deadlock, a lock that did not come free in time; never "Expression tree is too large".
                if attempt == 2 or connection.in_atomic_block or not database_errors.transient(exc):
                    raise
                log.warning("transient database error; trying the request once more", exc_info=True)
                connection.close_if_unusable_or_obsolete()
            except BaseException:
                self._audited = False
                raise

    # DELETE, PATCH and OPTIONS too, so that the route table answers them (405 with this URL's Allow, or 404),
    # not DRF (whose OPTIONS answers 200 with every method of this class).
    get = head = post = put = delete = patch = options = handle_fhir

    @property
    def default_response_headers(self):
        # DRF puts every method of this class in an Allow header on every answer; a FHIR URL's Allow is what its
        # routes answer, sent with a 405 (finalize_response).
        headers = super().default_response_headers
        headers.pop("Allow", None)
        return headers

