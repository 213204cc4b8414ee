"""DRF as the adapter around the FHIR router: a parser and a renderer for application/fhir+json, one view, and an
exception handler that always answers with an OperationOutcome."""

import logging

import orjson
from django.conf import settings
from django.db import DatabaseError
from rest_framework import exceptions as drf_exceptions
from rest_framework.parsers import BaseParser, FormParser
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from fhir_bridge import routes
from fhir_bridge.outcomes import FhirError, domain_error, error, operation_outcome
from fhir_bridge.profiles import Issue
from fhir_bridge.smart_tokens import AuthError, authenticate_bearer
from referrals.errors import DomainError

log = logging.getLogger(__name__)


class FhirJsonParser(BaseParser):
    media_type = "application/fhir+json"

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return orjson.loads(stream.read())
        except orjson.JSONDecodeError as exc:
            raise error(400, "structure", f"the body is not valid JSON: {exc}") from None


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


def fhir_exception_handler(exc, context):
    if isinstance(exc, DomainError):
        exc = domain_error(exc)
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
    if isinstance(exc, DatabaseError):
        # Nothing was written (the request's transaction rolled back); tell the client to retry, never a 500.
        log.exception("database error while handling a FHIR request")
        issue = Issue("error", "transient", "", "the server is busy; nothing was stored, send the request again")
        return Response(operation_outcome([issue]), status=503, headers={"Retry-After": "1"})
    return None


def base_urls(request) -> tuple[str, str]:
    root = settings.HUB_PUBLIC_BASE_URL or request.build_absolute_uri("/").rstrip("/")
    return f"{root.rstrip('/')}/fhir", f"{root.rstrip('/')}/auth/token"


class FhirView(APIView):
    """Every /fhir URL: match a route, authenticate, call its handler, render what it returns."""

    parser_classes = [FhirJsonParser, PlainJsonParser, FormParser]
    renderer_classes = [FhirJsonRenderer, PlainJsonRenderer]
    authentication_classes = []
    permission_classes = []

    def handle_fhir(self, request, path: str = ""):
        route, params = routes.resolve(request.method, path)
        base_url, token_url = base_urls(request)
        fhir_request = routes.FhirRequest(
            method=request.method,
            params=params,
            query=[(k, v) for k, values in request.query_params.lists() for v in values if k != "_format"],
            headers={k.lower(): v for k, v in request.headers.items()},
            base_url=base_url,
            token_url=token_url,
        )
        if not route.public:
            try:
                fhir_request.grant = authenticate_bearer(request.headers.get("Authorization"))
            except AuthError as exc:
                raise error(401, "login", str(exc), headers={"WWW-Authenticate": 'Bearer realm="fhir"'}) from None
        if request.method in ("POST", "PUT"):
            if not request.content_type.split(";")[0].strip():
                raise error(415, "not-supported", "send the body as application/fhir+json")
            fhir_request.raw_body = request.body  # read before DRF parses it, to keep it verbatim
            data = request.data
            fhir_request.body = list(data.lists()) if hasattr(data, "lists") else data
            if request.content_type.startswith("application/x-www-form-urlencoded") and route.handler is not routes.handle_search:
                raise error(415, "not-supported", "send the body as application/fhir+json")
        response = route.handler(fhir_request)
        return Response(response.resource, status=response.status, headers=response.headers)

    get = post = put = handle_fhir
