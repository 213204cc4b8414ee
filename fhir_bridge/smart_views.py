"""SMART Backend Services over HTTP: the token endpoint (``POST /auth/token``) and the body of
``/fhir/.well-known/smart-configuration``.

References: https://hl7.org/fhir/smart-app-launch/backend-services.html, RFC 6749 §5.2, RFC 7523.
"""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from fhir_bridge.smart_keys import CLIENT_ASSERTION_TYPE
from fhir_bridge.smart_scopes import scopes_supported
from fhir_bridge.smart_tokens import ASSERTION_ALGORITHMS, TokenError, access_token_issue

TOKEN_PATH = "/auth/token"  # noqa: S105 - a URL path, not a secret


def token_url_for(request: HttpRequest) -> str:
    """The token endpoint's absolute URL: the ``aud`` client assertions must carry."""
    if settings.HUB_PUBLIC_BASE_URL:
        return settings.HUB_PUBLIC_BASE_URL.rstrip("/") + TOKEN_PATH
    return request.build_absolute_uri(TOKEN_PATH)


def _no_store(response: JsonResponse) -> JsonResponse:
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


def oauth_error(error: str, description: str, status: int = 400) -> JsonResponse:
    return _no_store(JsonResponse({"error": error, "error_description": description}, status=status))


@csrf_exempt
def token_view(request: HttpRequest) -> JsonResponse:
    """POST /auth/token: client_credentials with a private_key_jwt client assertion (form-encoded)."""
    if request.method != "POST":
        response = oauth_error("invalid_request", "the token endpoint takes POST only", status=405)
        response["Allow"] = "POST"
        return response
    if request.content_type != "application/x-www-form-urlencoded":
        return oauth_error("invalid_request", "send the parameters as application/x-www-form-urlencoded")
    try:
        form = request.POST
    except TooManyFieldsSent:
        return oauth_error("invalid_request", f"the body has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} "
                                              "parameters")
    except RequestDataTooBig:
        return oauth_error("invalid_request", f"the body is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes",
                           status=413)
    repeated = sorted(name for name in form if len(form.getlist(name)) > 1)
    if repeated:
        return oauth_error("invalid_request", f"parameters must not be repeated: {', '.join(repeated)}")

    grant_type = form.get("grant_type")
    if not grant_type:
        return oauth_error("invalid_request", "grant_type is required (client_credentials)")
    if grant_type != "client_credentials":
        return oauth_error(
            "unsupported_grant_type", f"grant_type {grant_type!r} is not supported; use client_credentials"
        )
    # A missing or wrong parameter is a malformed request (RFC 6749 §5.2: 400 invalid_request), which Inferno's
    # backend-services kit checks; only an assertion that fails to authenticate the client is invalid_client (401).
    if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
        return oauth_error("invalid_request", f"client_assertion_type must be {CLIENT_ASSERTION_TYPE}")
    if not form.get("client_assertion"):
        return oauth_error("invalid_request", "client_assertion is required: a JWT signed with the client's key")

    try:
        issued = access_token_issue(
            client_assertion=form["client_assertion"],
            scope=form.get("scope", ""),
            token_url=token_url_for(request),
            client_id=form.get("client_id") or None,
        )
    except TokenError as exc:
        return oauth_error(exc.error, exc.description, exc.status)
    body = {
        "access_token": issued.access_token,
        "token_type": "bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    }
    return _no_store(JsonResponse(body))



# --- Discovery ----------------------------------------------------------------------------------------------


def smart_configuration(*, token_url: str) -> dict:
    """The body of ``/fhir/.well-known/smart-configuration`` for a Backend Services server. Its scopes are the
    route table's types (smart_scopes.scopes_supported): it advertises nothing the FHIR endpoint does not serve."""
    return {
        "token_endpoint": token_url,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "scopes_supported": scopes_supported(),
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
        # SMART 2.x requires this field of every server, with S256 and without plain. The hub has no
        # authorization endpoint, so no flow here uses PKCE; the field says which method one would take.
        "code_challenge_methods_supported": ["S256"],
    }
