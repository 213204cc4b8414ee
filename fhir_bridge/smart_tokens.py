"""SMART Backend Services tokens: the client assertions an EHR signs, the access tokens the hub issues for
them, and turning a bearer token back into a Grant.

An EHR client signs a short-lived JWT (the client assertion) with a private key whose public half is
registered in the hub (``EhrClient.jwks``); ``access_token_issue`` checks it (RFC 7523), spends its jti once,
and issues a short-lived bearer token for the subset of the requested system scopes the client is registered
for. Every FHIR request then carries that token; ``authenticate_bearer`` turns it into a ``Grant``.

References: https://hl7.org/fhir/smart-app-launch/backend-services.html, RFC 6749 §5, RFC 7523, RFC 7521.
"""

import hashlib
import hmac
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from fhir_bridge.models import EhrClient, SpentAssertion
from fhir_bridge.smart_scopes import Grant, scopes_grantable

logger = logging.getLogger(__name__)

# Seconds. SMART: an assertion expires no more than five minutes after it is made.
ASSERTION_MAX_LIFETIME = 300
CLOCK_SKEW_LEEWAY = 30  # seconds of disagreement between the EHR's clock and ours, for time claims only
ASSERTION_ALGORITHMS = ("RS384", "ES384")  # SMART's two; HS* and none are never accepted

ACCESS_TOKEN_ISSUER = "exercise-referral-hub"  # noqa: S105 - a name, not a secret
# RFC 9068's header typ, so that no other JWT the hub might sign passes for an access token.
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type, not a secret
# The access-token key is derived from SECRET_KEY under this label, so the raw SECRET_KEY never signs anything
# clients see, and no other HMAC the project makes with SECRET_KEY can pass for a token signature.
# (The label names the module this lived in before the split; it is part of the key, so it stays.)
_ACCESS_TOKEN_KEY_LABEL = b"fhir_bridge.smart.access-token.v1"


class AuthError(Exception):
    """The request's bearer token is missing or not acceptable. The message says why, for the client."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


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


# (key, token text) -> its claims, for tokens this process verified already. A client sends the same token
# with every request of its hour, and PyJWT's checks of it (base64 alphabet and padding, HMAC, each claim)
# were about a third of a request's authentication. A text that verified once under a key always decodes to
# the same claims; of its checks only the expiry depends on when it is used, and is made on every use. The key
# is part of the entry, so a new SECRET_KEY invalidates everything verified under the old one.
_verified_tokens: dict[tuple[bytes, str], dict] = {}
_VERIFIED_TOKENS_MAX = 10_000


def _access_token_claims(token: str) -> dict:
    """The claims of an access token this hub signed and that has not expired; AuthError otherwise."""
    key = _access_token_key()
    claims = _verified_tokens.get((key, token))
    if claims is not None:
        if claims["exp"] <= time.time():  # PyJWT's own test (no leeway)
            _verified_tokens.pop((key, token), None)
            raise AuthError("the access token has expired: get a new one from /auth/token")
        return claims
    try:
        decoded = jwt.decode_complete(
            token,
            key,
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
    if not isinstance(claims["scope"], str) or not isinstance(claims["exp"], int | float):
        raise AuthError("the access token is not one this hub issued, or it has been altered")
    if len(_verified_tokens) >= _VERIFIED_TOKENS_MAX:
        _verified_tokens.clear()
    _verified_tokens[(key, token)] = claims
    return claims


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
    claims = _access_token_claims(token)

    client = _active_client(claims["sub"])
    if client is None:
        raise AuthError("the client this access token was issued to is unknown or deactivated")
    scopes = scopes_grantable(requested=claims["scope"].split(), allowed=client.allowed_scopes)
    if not scopes:
        raise AuthError("this client is no longer allowed any of the access token's scopes")
    return Grant(client=client, scopes=frozenset(scopes))



# --- Client assertions --------------------------------------------------------------------------------------


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


def jwk_public_key(jwk: dict, alg: str):
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
    public_key = jwk_public_key(jwk, alg)
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



def purge_spent_assertions(*, now: datetime | None = None) -> int:
    """Delete the spent jtis whose assertions could no longer be accepted anyway. Returns how many went."""
    deleted, _ = SpentAssertion.objects.filter(expires_at__lt=now or timezone.now()).delete()
    return deleted
