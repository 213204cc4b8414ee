"""SMART Backend Services: how an EHR client gets an access token, and what that token lets it do.

An EHR client signs a short-lived JWT (the client assertion) with a private key whose public half is
registered in the hub (``EhrClient.jwks``), posts it to ``/auth/token`` with grant_type=client_credentials,
and gets back a short-lived bearer token for the subset of the requested system scopes it is registered for.
Every FHIR request then carries that token; ``authenticate_bearer`` turns it into a ``Grant``, and
``grant_allows`` answers, per interaction, whether the grant covers it.

Scopes are SMART's system scopes in both forms: v1 ``system/Task.read`` / ``.write`` / ``.*`` and v2
``system/Task.cruds`` (any subset of c, r, u, d, s in that order); v1 read is v2 ``rs``, write is ``cud``.
v2 scopes with a query part (``system/Task.rs?status=requested``) are never granted: the hub does not enforce
per-query restrictions, and granting the unrestricted scope instead would give more than was asked for.

References: https://hl7.org/fhir/smart-app-launch/backend-services.html, RFC 6749 §5, RFC 7523, RFC 7521.
"""

import functools
import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import jwt
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from fhir_bridge.models import EhrClient, SpentAssertion
from fhir_bridge.smart_keys import CLIENT_ASSERTION_TYPE, RSA_KEY_BITS

logger = logging.getLogger(__name__)

TOKEN_PATH = "/auth/token"  # noqa: S105 - a URL path, not a secret
# Seconds. SMART: an assertion expires no more than five minutes after it is made.
ASSERTION_MAX_LIFETIME = 300
CLOCK_SKEW_LEEWAY = 30  # seconds of disagreement between the EHR's clock and ours, for time claims only
ASSERTION_ALGORITHMS = ("RS384", "ES384")  # SMART's two; HS* and none are never accepted

ACCESS_TOKEN_ISSUER = "exercise-referral-hub"  # noqa: S105 - a name, not a secret
# RFC 9068's header typ, so that no other JWT the hub might sign passes for an access token.
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type, not a secret
# The access-token key is derived from SECRET_KEY under this label, so the raw SECRET_KEY never signs anything
# clients see, and no other HMAC the project makes with SECRET_KEY can pass for a token signature.
_ACCESS_TOKEN_KEY_LABEL = b"fhir_bridge.smart.access-token.v1"

# The resource types the hub serves, in the order the SMART configuration lists them.
RESOURCE_TYPES = (
    "Task",
    "ServiceRequest",
    "Patient",
    "Condition",
    "Observation",
    "Goal",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
    "HealthcareService",
    "Consent",
    "Subscription",
    "DiagnosticReport",
)
_KNOWN_TYPES = frozenset(RESOURCE_TYPES) | {"*"}

# What ``register_ehr_client`` grants when no --scope is given, and what ``ehr_client_token`` asks for.
DEFAULT_SCOPES = (
    "system/Task.cruds",
    "system/ServiceRequest.cruds",
    "system/Patient.cruds",
    "system/Condition.cruds",
    "system/Observation.cruds",
    "system/Goal.cruds",
    "system/Practitioner.rs",
    "system/PractitionerRole.rs",
    "system/Organization.rs",
    "system/Location.rs",
    "system/HealthcareService.rs",
    "system/Consent.cruds",
    "system/Subscription.cruds",
    "system/DiagnosticReport.rs",
)

# v1 permissions in v2 letters.
_V1_LETTERS = {"read": frozenset("rs"), "write": frozenset("cud"), "*": frozenset("cruds")}
_V2_LETTERS = re.compile(r"c?r?u?d?s?")  # SMART v2 requires the letters in this order
_SCOPE = re.compile(r"system/(?P<type>\*|[A-Z][A-Za-z]*)\.(?P<permission>[^?]+)(?P<query>\?.*)?")

# The FHIR interaction each v2 letter stands for.
_INTERACTION_LETTER = {
    "create": "c",
    "read": "r",
    "vread": "r",
    "history": "r",
    "update": "u",
    "patch": "u",
    "delete": "d",
    "search": "s",
}


# --- Scopes -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SystemScope:
    resource_type: str  # a resource type or "*"
    letters: frozenset[str]  # a non-empty subset of "cruds"


def scope_parse(scope: str) -> SystemScope:
    """Parse one system scope, or raise ValueError saying why the hub does not understand it."""
    match = _SCOPE.fullmatch(scope)
    if match is None:
        raise ValueError(
            f"{scope!r} is not a system scope: write system/<ResourceType>.<permission>, for example "
            "system/Task.read (SMART v1) or system/Task.rs (SMART v2)"
        )
    if match["query"]:
        raise ValueError(
            f"{scope!r} has a query part; the hub grants only whole-type scopes such as system/Task.rs"
        )
    resource_type, permission = match["type"], match["permission"]
    if resource_type not in _KNOWN_TYPES:
        raise ValueError(
            f"{scope!r}: the hub serves no {resource_type}; use one of {', '.join(RESOURCE_TYPES)} or *"
        )
    if permission in _V1_LETTERS:
        return SystemScope(resource_type, _V1_LETTERS[permission])
    if permission and _V2_LETTERS.fullmatch(permission):
        return SystemScope(resource_type, frozenset(permission))
    raise ValueError(
        f"{scope!r}: the permission must be read, write or * (SMART v1), or letters of cruds in that order "
        "(SMART v2, e.g. rs or cud)"
    )


@functools.lru_cache(maxsize=2048)
def _scope_or_none(scope: str) -> SystemScope | None:
    try:
        return scope_parse(scope)
    except ValueError:
        return None


def _permissions(scopes: Iterable[str]) -> dict[str, frozenset[str]]:
    """Resource type (or "*") → the v2 letters the scopes give on it. Scopes not understood give nothing."""
    letters: dict[str, set[str]] = {}
    for scope in scopes:
        parsed = _scope_or_none(scope)
        if parsed is not None:
            letters.setdefault(parsed.resource_type, set()).update(parsed.letters)
    return {resource_type: frozenset(found) for resource_type, found in letters.items()}


def scopes_grantable(*, requested: Iterable[str], allowed: Iterable[str]) -> list[str]:
    """The requested scopes that the allowed ones cover, in the order asked, without repeats.

    Coverage is by the union of the allowed scopes (``system/Task.read`` plus ``system/Task.write`` covers
    ``system/Task.*`` and ``system/Task.cruds``), and ``system/*.x`` covers every type. A request for
    ``system/*.x`` is covered only by allowed ``system/*`` scopes.
    """
    have = _permissions(allowed)
    everywhere = have.get("*", frozenset())
    granted: list[str] = []
    for scope in requested:
        parsed = _scope_or_none(scope)
        if parsed is None or scope in granted:
            continue
        covered = (
            everywhere
            if parsed.resource_type == "*"
            else everywhere | have.get(parsed.resource_type, frozenset())
        )
        if parsed.letters <= covered:
            granted.append(scope)
    return granted


# --- Grants: what a bearer token lets its client do ---------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    client: EhrClient
    scopes: frozenset[str]
    # Parsed once here, because grant_allows runs on every request.
    _permissions: dict[str, frozenset[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_permissions", _permissions(self.scopes))


class AuthError(Exception):
    """The request's bearer token is missing or not acceptable. The message says why, for the client."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def grant_allows(grant: Grant, resource_type: str, interaction: str) -> bool:
    """Whether ``grant`` covers ``interaction`` on ``resource_type``.

    ``interaction`` is one of read, vread, history, search, create, update, patch, delete; anything else is a
    programming error (ValueError).
    """
    try:
        letter = _INTERACTION_LETTER[interaction]
    except KeyError:
        raise ValueError(f"unknown interaction {interaction!r}") from None
    permissions = grant._permissions
    return letter in permissions.get(resource_type, ()) or letter in permissions.get("*", ())


def _access_token_key() -> bytes:
    return hmac.new(settings.SECRET_KEY.encode(), _ACCESS_TOKEN_KEY_LABEL, hashlib.sha256).digest()


def access_token_encode(*, client: EhrClient, scopes: list[str], now: float | None = None) -> tuple[str, int]:
    """A signed access token for ``client`` and ``scopes``, and its lifetime in seconds."""
    issued_at = int(time.time() if now is None else now)
    lifetime = settings.HUB_ACCESS_TOKEN_SECONDS
    claims = {
        "iss": ACCESS_TOKEN_ISSUER,
        "sub": client.client_id,
        "scope": " ".join(scopes),
        "iat": issued_at,
        "exp": issued_at + lifetime,
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(claims, _access_token_key(), algorithm="HS256", headers={"typ": ACCESS_TOKEN_TYPE})
    return token, lifetime


# client_id -> (monotonic time read, the client or None). Per process: every request would otherwise read the
# client again, for a fact that changes a few times a year.
_recent_clients: dict[str, tuple[float, EhrClient | None]] = {}


def _active_client(client_id: str) -> EhrClient | None:
    """The active client, as read at most HUB_CLIENT_RECHECK_SECONDS ago in this process."""
    ttl = settings.HUB_CLIENT_RECHECK_SECONDS
    now = time.monotonic()
    cached = _recent_clients.get(client_id)
    if cached is not None and now - cached[0] < ttl:
        return cached[1]
    client = EhrClient.objects.select_related("clinic").filter(client_id=client_id, is_active=True).first()
    if ttl > 0:
        if len(_recent_clients) > 10_000:
            _recent_clients.clear()
        _recent_clients[client_id] = (now, client)
    return client


def authenticate_bearer(authorization: str | None) -> Grant:
    """The Grant of an ``Authorization: Bearer <token>`` header value, or AuthError. At most one query.

    The token's scopes are intersected with what the client is registered for now, so deactivating a client or
    narrowing its scopes takes effect within HUB_CLIENT_RECHECK_SECONDS (5 s by default) rather than when its
    tokens expire.
    """
    if not authorization:
        raise AuthError(
            "Authorization is missing: send 'Authorization: Bearer <access token>' (see /auth/token)"
        )
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("Authorization must be 'Bearer <access token>'")
    try:
        decoded = jwt.decode_complete(
            token,
            _access_token_key(),
            algorithms=["HS256"],
            issuer=ACCESS_TOKEN_ISSUER,
            options={"require": ["iss", "sub", "scope", "iat", "exp", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("the access token has expired: get a new one from /auth/token") from None
    except jwt.PyJWTError:
        raise AuthError("the access token is not one this hub issued, or it has been altered") from None
    claims = decoded["payload"]
    if decoded["header"].get("typ") != ACCESS_TOKEN_TYPE or not isinstance(claims["sub"], str):
        raise AuthError("the access token is not one this hub issued, or it has been altered")
    if not isinstance(claims["scope"], str):
        raise AuthError("the access token is not one this hub issued, or it has been altered")

    client = _active_client(claims["sub"])
    if client is None:
        raise AuthError("the client this access token was issued to is unknown or deactivated")
    scopes = scopes_grantable(requested=claims["scope"].split(), allowed=client.allowed_scopes)
    if not scopes:
        raise AuthError("this client is no longer allowed any of the access token's scopes")
    return Grant(client=client, scopes=frozenset(scopes))


# --- The token endpoint -------------------------------------------------------------------------------------


class TokenError(Exception):
    """An RFC 6749 §5.2 error: ``error`` is the code, ``description`` is for the client's developers."""

    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


def _invalid_client(description: str) -> TokenError:
    return TokenError("invalid_client", description, status=401)


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str


def _jwk_by_kid(jwks, kid: str) -> dict | None:
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    for jwk in keys if isinstance(keys, list) else ():
        if isinstance(jwk, dict) and jwk.get("kid") == kid:
            return jwk
    return None


def _public_key(jwk: dict, alg: str):
    """The public key of ``jwk`` for ``alg``, or None when the key is not of the type ``alg`` needs.

    Only the public members are read, so a JWK that (wrongly) holds private material still yields a public
    key. This check is what prevents algorithm confusion: an RSA key is only ever used with RS384 and an EC
    P-384 key only with ES384, and never as an HMAC secret.
    """
    if jwk.get("alg") not in (None, alg):
        return None
    try:
        if alg == "RS384" and jwk.get("kty") == "RSA":
            return RSAAlgorithm.from_jwk({"kty": "RSA", "n": jwk["n"], "e": jwk["e"]})
        if alg == "ES384" and jwk.get("kty") == "EC" and jwk.get("crv") == "P-384":
            return ECAlgorithm.from_jwk({"kty": "EC", "crv": "P-384", "x": jwk["x"], "y": jwk["y"]})
    except (KeyError, TypeError, ValueError, jwt.PyJWTError):
        return None
    return None


def access_token_issue(
    *,
    client_assertion: str,
    scope: str,
    token_url: str,
    client_id: str | None = None,
    now: float | None = None,
) -> IssuedToken:
    """Check a client assertion (RFC 7523, SMART Backend Services) and issue an access token, or TokenError.

    ``token_url`` is the audience the assertion must name. ``client_id`` is the optional form parameter; when
    given it must agree with the assertion. The assertion's jti is spent only when a token is issued.
    """
    now = time.time() if now is None else now
    try:
        header = jwt.get_unverified_header(client_assertion)
        unverified = jwt.decode(client_assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise _invalid_client("client_assertion is not a signed JWT") from None

    alg = header.get("alg")
    if alg not in ASSERTION_ALGORITHMS:
        raise _invalid_client(f"the client assertion is signed with {alg!r}; sign it with RS384 or ES384")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _invalid_client(
            "the client assertion's header has no kid naming one of the client's registered keys"
        )
    # Keys named in the header (jku, jwk, x5u, x5c) are ignored on purpose: only the registered JWKS counts.

    issuer = unverified.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise _invalid_client("the client assertion has no iss (it must be the client_id)")
    if client_id is not None and client_id != issuer:
        raise _invalid_client("the client_id parameter and the assertion's iss differ")
    client = EhrClient.objects.filter(client_id=issuer, is_active=True).first()
    if client is None:
        raise _invalid_client(f"no active client has client_id {issuer!r}")

    jwk = _jwk_by_kid(client.jwks, kid)
    if jwk is None:
        raise _invalid_client(f"kid {kid!r} is not in the JWKS registered for this client")
    public_key = _public_key(jwk, alg)
    if public_key is None:
        key_type = (
            " ".join(str(jwk[member]) for member in ("kty", "crv") if member in jwk) or "of unknown type"
        )
        raise _invalid_client(
            f"the key {kid!r} ({key_type}) cannot verify {alg}; RS384 needs RSA, ES384 EC P-384"
        )

    try:
        claims = jwt.decode(
            client_assertion,
            public_key,
            algorithms=[alg],
            audience=token_url,
            issuer=client.client_id,
            leeway=CLOCK_SKEW_LEEWAY,
            options={"require": ["iss", "sub", "aud", "exp", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        raise _invalid_client("the client assertion has expired") from None
    except jwt.InvalidAudienceError:
        raise _invalid_client(f"the client assertion's aud must be the token URL, {token_url}") from None
    except jwt.MissingRequiredClaimError as exc:
        raise _invalid_client(f"the client assertion has no {exc.claim} claim") from None
    except jwt.InvalidSignatureError:
        raise _invalid_client(f"the client assertion's signature does not verify with key {kid!r}") from None
    except jwt.PyJWTError as exc:
        raise _invalid_client(f"the client assertion is not valid: {exc}") from None

    if claims["sub"] != client.client_id:
        raise _invalid_client("the client assertion's iss and sub must both be the client_id")
    exp = int(claims["exp"])  # PyJWT has checked that this works ("300" would pass it, so convert)
    if exp > now + ASSERTION_MAX_LIFETIME + CLOCK_SKEW_LEEWAY:
        raise _invalid_client(f"the client assertion must expire within {ASSERTION_MAX_LIFETIME} seconds")
    jti = claims["jti"]
    if not isinstance(jti, str) or not 0 < len(jti) <= SpentAssertion._meta.get_field("jti").max_length:
        raise _invalid_client("the client assertion's jti must be a string of 1 to 255 characters")

    requested = scope.split()
    if not requested:
        raise TokenError("invalid_scope", "scope is required: the system scopes wanted, separated by spaces")
    granted = scopes_grantable(requested=requested, allowed=client.allowed_scopes)
    if not granted:
        raise TokenError(
            "invalid_scope",
            f"none of the requested scopes is allowed for this client; it may ask for: {client.scopes}",
        )

    # The unique constraint decides, even between two requests racing with the same assertion. The row lives
    # until the assertion could no longer be accepted (exp plus leeway); purge_spent_assertions removes it.
    expires_at = datetime.fromtimestamp(exp + CLOCK_SKEW_LEEWAY, tz=UTC)
    try:
        with transaction.atomic():
            SpentAssertion.objects.create(client=client, jti=jti, expires_at=expires_at)
    except IntegrityError:
        logger.warning("replayed client assertion: client=%s jti=%s", client.client_id, jti)
        raise _invalid_client(
            "this client assertion was already used; sign a new one (new jti) per request"
        ) from None

    access_token, expires_in = access_token_encode(client=client, scopes=granted, now=now)
    return IssuedToken(access_token=access_token, expires_in=expires_in, scope=" ".join(granted))


def token_url_for(request: HttpRequest) -> str:
    """The token endpoint's absolute URL: the ``aud`` client assertions must carry."""
    if settings.HUB_PUBLIC_BASE_URL:
        return settings.HUB_PUBLIC_BASE_URL.rstrip("/") + TOKEN_PATH
    return request.build_absolute_uri(TOKEN_PATH)


def _no_store(response: JsonResponse) -> JsonResponse:
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


def _oauth_error(error: str, description: str, status: int = 400) -> JsonResponse:
    return _no_store(JsonResponse({"error": error, "error_description": description}, status=status))


@csrf_exempt
def token_view(request: HttpRequest) -> JsonResponse:
    """POST /auth/token: client_credentials with a private_key_jwt client assertion (form-encoded)."""
    if request.method != "POST":
        response = _oauth_error("invalid_request", "the token endpoint takes POST only", status=405)
        response["Allow"] = "POST"
        return response
    if request.content_type != "application/x-www-form-urlencoded":
        return _oauth_error("invalid_request", "send the parameters as application/x-www-form-urlencoded")
    form = request.POST
    repeated = sorted(name for name in form if len(form.getlist(name)) > 1)
    if repeated:
        return _oauth_error("invalid_request", f"parameters must not be repeated: {', '.join(repeated)}")

    grant_type = form.get("grant_type")
    if not grant_type:
        return _oauth_error("invalid_request", "grant_type is required (client_credentials)")
    if grant_type != "client_credentials":
        return _oauth_error(
            "unsupported_grant_type", f"grant_type {grant_type!r} is not supported; use client_credentials"
        )
    if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
        return _oauth_error(
            "invalid_client", f"client_assertion_type must be {CLIENT_ASSERTION_TYPE}", status=401
        )
    if not form.get("client_assertion"):
        return _oauth_error(
            "invalid_client", "client_assertion is required: a JWT signed with the client's key", 401
        )

    try:
        issued = access_token_issue(
            client_assertion=form["client_assertion"],
            scope=form.get("scope", ""),
            token_url=token_url_for(request),
            client_id=form.get("client_id") or None,
        )
    except TokenError as exc:
        return _oauth_error(exc.error, exc.description, exc.status)
    body = {
        "access_token": issued.access_token,
        "token_type": "bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    }
    return _no_store(JsonResponse(body))


# --- Discovery ----------------------------------------------------------------------------------------------


def smart_configuration(*, token_url: str) -> dict:
    """The body of ``/fhir/.well-known/smart-configuration`` for a Backend Services server."""
    scopes = [
        f"system/{resource_type}.{permission}"
        for resource_type in (*RESOURCE_TYPES, "*")
        for permission in ("read", "write", "rs", "cud", "cruds")
    ]
    return {
        "token_endpoint": token_url,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "scopes_supported": scopes,
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
    }


# --- Services -----------------------------------------------------------------------------------------------

_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


def _jwks_check(jwks) -> None:
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise ValidationError(
            'The JWKS must be a JSON object with a non-empty "keys" list: {"keys": [{...}]}.'
        )
    seen: set[str] = set()
    for number, jwk in enumerate(jwks["keys"], start=1):
        if not isinstance(jwk, dict):
            raise ValidationError(f"Key {number} of the JWKS is not a JSON object.")
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid.strip():
            raise ValidationError(f"Key {number} of the JWKS has no kid; every key needs one.")
        if kid in seen:
            raise ValidationError(f"The JWKS has two keys with kid {kid!r}; each kid must name one key.")
        seen.add(kid)
        private = [member for member in _PRIVATE_MEMBERS if member in jwk]
        if private:
            raise ValidationError(
                f"Key {kid!r} holds private key material ({', '.join(private)}). "
                "Register only the public key, and keep the private key with the EHR."
            )
        kty, crv = jwk.get("kty"), jwk.get("crv")
        if kty == "RSA":
            alg = "RS384"
        elif kty == "EC" and crv == "P-384":
            alg = "ES384"
        elif kty == "EC":
            raise ValidationError(
                f"Key {kid!r} is on curve {crv!r}; the hub accepts EC keys on P-384 only (ES384)."
            )
        else:
            raise ValidationError(
                f"Key {kid!r} has kty {kty!r}; register an RSA key (RS384) or an EC P-384 key (ES384)."
            )
        if jwk.get("alg") not in (None, alg):
            raise ValidationError(
                f"Key {kid!r} says alg {jwk['alg']!r}, but a {kty} key here is only used with {alg}."
            )
        if jwk.get("use") not in (None, "sig"):
            raise ValidationError(
                f"Key {kid!r} has use {jwk['use']!r}; a client assertion key must have use 'sig'."
            )
        if "key_ops" in jwk and (not isinstance(jwk["key_ops"], list) or "verify" not in jwk["key_ops"]):
            raise ValidationError(f"Key {kid!r} has key_ops without 'verify'.")
        public_key = _public_key(jwk, alg)
        if public_key is None:
            raise ValidationError(f"Key {kid!r} is not a valid {kty} public key.")
        if kty == "RSA" and public_key.key_size < RSA_KEY_BITS:
            raise ValidationError(
                f"Key {kid!r} has {public_key.key_size} bits; RSA keys need at least {RSA_KEY_BITS}."
            )


def _scopes_check(scopes: list[str]) -> list[str]:
    if isinstance(scopes, str):
        raise ValidationError("Give the scopes as a list of strings, not one string.")
    cleaned: list[str] = []
    for scope in scopes:
        if not isinstance(scope, str):
            raise ValidationError(f"Scope {scope!r} is not a string.")
        try:
            scope_parse(scope)
        except ValueError as exc:
            raise ValidationError(f"Scope {exc}") from None
        if scope not in cleaned:
            cleaned.append(scope)
    if not cleaned:
        raise ValidationError("A client needs at least one system scope, for example system/Task.cruds.")
    return cleaned


def ehr_client_register(*, name: str, clinic, jwks: dict, scopes: list[str]) -> EhrClient:
    """Register an EHR client acting for ``clinic``, with its public keys and the system scopes it may get.

    Raises ValidationError when the name is blank, the JWKS is not a set of public RSA or EC P-384 keys with
    distinct kids, or a scope is not a system scope the hub understands.
    """
    name = (name or "").strip()
    if not name:
        raise ValidationError("The client needs a name (for example the EHR product and site).")
    if len(name) > EhrClient._meta.get_field("name").max_length:
        raise ValidationError("The client name is longer than 200 characters.")
    _jwks_check(jwks)
    cleaned = _scopes_check(scopes)
    # Stored as plain JSON (no tuples or other Python-only values), so it reads back exactly as validated.
    client = EhrClient.objects.create(
        name=name, clinic=clinic, jwks=json.loads(json.dumps(jwks)), scopes=" ".join(cleaned)
    )
    logger.info("registered EHR client %s (%s) for clinic %s", client.client_id, name, clinic.pk)
    return client


def purge_spent_assertions(*, now: datetime | None = None) -> int:
    """Delete the spent jtis whose assertions could no longer be accepted anyway. Returns how many went."""
    deleted, _ = SpentAssertion.objects.filter(expires_at__lt=now or timezone.now()).delete()
    return deleted
