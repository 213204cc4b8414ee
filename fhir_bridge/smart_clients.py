"""Registering a SMART backend client: its name, the side it acts for (a clinic's EHR, or a network
organization's own system), its public keys (JWKS) and the system scopes it may be granted."""

import json
import logging
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

from fhir_bridge.models import EhrClient
from fhir_bridge.smart_keys import RSA_KEY_BITS
from fhir_bridge.smart_scopes import scope_parse
from fhir_bridge.smart_tokens import jwk_public_key

logger = logging.getLogger(__name__)

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
        public_key = jwk_public_key(jwk, alg)
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


def _pull_urls_check(fhir_base_url: str, token_url: str) -> tuple[str, str]:
    fhir_base_url, token_url = (fhir_base_url or "").strip(), (token_url or "").strip()
    if bool(fhir_base_url) != bool(token_url):
        raise ValidationError("Give both the EHR's FHIR base URL and its token URL, or neither.")
    for label, url in (("FHIR base URL", fhir_base_url), ("token URL", token_url)):
        if not url:
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValidationError(f"The EHR's {label} must be an absolute http(s) URL without query: {url!r}.")
    return fhir_base_url.rstrip("/"), token_url


def ehr_client_register(
    *, name: str, clinic=None, organization=None, jwks: dict, scopes: list[str], fhir_base_url: str = "",
    token_url: str = "", hub_client_id: str = "",
) -> EhrClient:
    """Register a client acting for exactly one of ``clinic`` (a referring clinic's EHR) or ``organization``
    (a network.Organization's own system: a provider), with its public keys and the system scopes it may get;
    and, for notify and pull, the EHR's FHIR base URL and token URL (both or neither; the base is kept without a
    trailing slash), and the client id the EHR registered the hub under (``hub_client_id``; the hub's client
    id at the EHR defaults to this client's own ``client_id`` when blank).

    Raises ValidationError when neither or both sides are given, the name is blank, the JWKS is not a set of
    public RSA or EC P-384 keys with distinct kids, a scope is not a system scope the hub understands, or the URLs
    are not absolute http(s).
    """
    if (clinic is None) == (organization is None):
        raise ValidationError(
            "A client acts for exactly one side: a clinic (an EHR that sends referrals) or a network "
            "organization (a provider's own system that answers offers)."
        )
    name = (name or "").strip()
    if not name:
        raise ValidationError("The client needs a name (for example the EHR product and site).")
    if len(name) > EhrClient._meta.get_field("name").max_length:
        raise ValidationError("The client name is longer than 200 characters.")
    _jwks_check(jwks)
    cleaned = _scopes_check(scopes)
    fhir_base_url, token_url = _pull_urls_check(fhir_base_url, token_url)
    # Stored as plain JSON (no tuples or other Python-only values), so it reads back exactly as validated.
    client = EhrClient.objects.create(
        name=name, clinic=clinic, organization=organization, jwks=json.loads(json.dumps(jwks)),
        scopes=" ".join(cleaned),
        fhir_base_url=fhir_base_url,
        token_url=token_url,
        hub_client_id=(hub_client_id or "").strip()[:255],
    )
    if client.fhir_base_url and not client.hub_client_id:
        # The EHR must know the hub by some id; its own client id here is as good a default as any, and printed.
        client.hub_client_id = client.client_id
        client.save(update_fields=["hub_client_id"])
    side = f"clinic {clinic.pk}" if clinic is not None else f"organization {organization.fhir_id}"
    logger.info("registered client %s (%s) for %s", client.client_id, name, side)
    return client
