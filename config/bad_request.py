"""A request whose envelope Django refuses to read, answered in the shape of the edge it was sent to.

Django raises a SuspiciousOperation when a request's Host is not in ALLOWED_HOSTS (DisallowedHost, from the
first ``request.get_host()``) or its query string has more than DATA_UPLOAD_MAX_NUMBER_FIELDS parameters
(TooManyFieldsSent, from the first ``request.GET``), wherever that first read happens: inside DRF, before it has
chosen a renderer (a 500), or inside DEBUG's error page, which reads the query again (a 500 under ``make run``),
else Django's HTML page. This middleware reads both first, once, and answers 400 itself:

- ``/fhir``: an OperationOutcome, with the request's audit row (fhir_bridge/drf.py ``refusal_response``);
- ``/auth/token``: an OAuth 2.0 error (RFC 6749 §5.2), as the token endpoint answers every refusal;
- ``/api/``: the coordinators' API's JSON ``{"detail": ...}``;
- any other page: a plain-text 400.

The Host is checked as the request comes in (first in MIDDLEWARE, before SecurityMiddleware and CommonMiddleware
ask for it); the query string once the URL is resolved (``process_view``), so that the audit middleware records the
refusal of an audited page like any other answer. A form body of too many fields is each edge's own to refuse, as it
reads the body (FhirView, the token endpoint, the coordinators' API).
"""

import logging

from django.conf import settings
from django.core.exceptions import DisallowedHost, SuspiciousOperation, TooManyFieldsSent
from django.http import HttpResponse, JsonResponse

from fhir_bridge.drf import refusal_response, suspicious_error
from fhir_bridge.smart_views import TOKEN_PATH, oauth_error


def _text(exc: SuspiciousOperation) -> str:
    if isinstance(exc, DisallowedHost):
        return "the Host header names a host this server does not serve"
    if isinstance(exc, TooManyFieldsSent):
        return f"the query has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} parameters"
    return "the request cannot be read"


def bad_request(request, exc: SuspiciousOperation) -> HttpResponse:
    """The 400 for ``exc`` in the shape of the edge ``request`` was sent to."""
    path = request.path_info
    if path == "/fhir" or path.startswith("/fhir/"):
        return refusal_response(request, suspicious_error(exc))
    text = _text(exc)
    if path == TOKEN_PATH:
        return oauth_error("invalid_request", text)
    if path.startswith("/api/"):
        return JsonResponse({"detail": text}, status=400)
    return HttpResponse(f"Bad request: {text}.\n", status=400, content_type="text/plain; charset=utf-8")


class BadRequestMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            request.get_host()
        except DisallowedHost as exc:
            return self._refuse(request, exc)
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        try:
            request.GET  # noqa: B018 - parsed now, once, so that nothing later meets the error
        except TooManyFieldsSent as exc:
            return self._refuse(request, exc)
        return None

    def _refuse(self, request, exc: SuspiciousOperation) -> HttpResponse:
        # Logged as Django logs it (django.security.<name>, which a deployment may route or silence), without
        # the traceback: the request is refused, nothing failed.
        logging.getLogger(f"django.security.{exc.__class__.__name__}").warning(
            "%s: %s", request.path_info[:200], exc, extra={"status_code": 400, "request": request}
        )
        return bad_request(request, exc)
