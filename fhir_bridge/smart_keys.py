"""The EHR side of SMART Backend Services: key pairs, public JWKs and signed client assertions.

Plain Python with no Django import, so that the tests, the demo loader and the benchmark can act as an EHR
client with the same code the ``ehr_client_token`` command uses.

Key id convention: when no kid is given, a key is named by its RFC 7638 JWK thumbprint (base64url SHA-256 of
the canonical public JWK). Anyone holding the private key can compute it again, so there is nothing to keep.
"""

import base64
import hashlib
import json
import time
import uuid
from typing import Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
RSA_KEY_BITS = 2048  # the floor the hub accepts; SMART asks for RS384 with at least this much

# The members RFC 7638 hashes, per key type.
_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}


def generate_private_key(kind: Literal["RSA", "EC"] = "EC") -> PrivateKey:
    """A new key for RS384 (``"RSA"``, 2048 bits) or ES384 (``"EC"``, curve P-384)."""
    if kind == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    if kind == "EC":
        return ec.generate_private_key(ec.SECP384R1())
    raise ValueError(f"kind must be 'RSA' or 'EC', not {kind!r}")


def private_key_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM. Whoever writes it to disk keeps the file private."""
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def load_private_key_pem(data: bytes, password: bytes | None = None) -> PrivateKey:
    """Load a PEM private key and check that the hub can verify what it signs (RSA >= 2048 bits, or EC P-384).

    Raises ValueError with a message fit for a person.
    """
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except TypeError as exc:  # encrypted without a password, or a password for an unencrypted key
        raise ValueError(f"cannot read the private key: {exc}") from None
    except ValueError:
        raise ValueError(
            "this is not a PEM private key (expected '-----BEGIN PRIVATE KEY-----' or similar)"
        ) from None
    signing_alg(key)  # refuses key types the hub does not accept
    return key


def signing_alg(key: PrivateKey | PublicKey) -> str:
    """The one algorithm the hub accepts for this key: RS384 for RSA, ES384 for EC P-384."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size < RSA_KEY_BITS:
            raise ValueError(
                f"an RSA key must have at least {RSA_KEY_BITS} bits; this one has {key.key_size}"
            )
        return "RS384"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP384R1):
            raise ValueError(f"an EC key must be on curve P-384 (secp384r1), not {key.curve.name}")
        return "ES384"
    raise ValueError(f"unsupported key type {type(key).__name__}: use an RSA key or an EC P-384 key")


def jwk_thumbprint(jwk: dict) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url without padding) of an RSA or EC public JWK."""
    members = _THUMBPRINT_MEMBERS.get(jwk.get("kty"))
    if members is None:
        raise ValueError(f"no thumbprint for key type {jwk.get('kty')!r}")
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def public_jwk(key: PrivateKey | PublicKey, kid: str | None = None) -> dict:
    """The public half of ``key`` as a JWK with ``kid`` (the thumbprint if not given), ``alg`` and ``use``."""
    alg = signing_alg(key)
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) else key
    algorithm = RSAAlgorithm if alg == "RS384" else ECAlgorithm
    jwk = algorithm.to_jwk(public, as_dict=True)
    jwk.pop("key_ops", None)
    jwk.update(kid=kid or jwk_thumbprint(jwk), alg=alg, use="sig")
    return jwk


def public_jwks(key: PrivateKey | PublicKey, kid: str | None = None) -> dict:
    """A JWKS document holding the public half of one key: what ``register_ehr_client --jwks`` reads."""
    return {"keys": [public_jwk(key, kid)]}


def client_assertion(
    *,
    key: PrivateKey,
    kid: str | None,
    client_id: str,
    token_url: str,
    lifetime: int = 240,
    jti: str | None = None,
) -> str:
    """A private_key_jwt client assertion for ``token_url``.

    ``lifetime`` is in seconds; the hub refuses assertions that expire more than 5 minutes ahead. ``kid`` None
    means the key's thumbprint. Each call gets a fresh ``jti`` unless one is given (the hub takes a jti once).
    """
    alg = signing_alg(key)
    kid = kid or public_jwk(key)["kid"]
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "exp": int(time.time()) + lifetime,
        "jti": jti or uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})


def token_request_form(*, assertion: str, scopes: list[str] | str) -> dict[str, str]:
    """The form fields of a client_credentials token request (to be sent form-encoded)."""
    scope = scopes if isinstance(scopes, str) else " ".join(scopes)
    return {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": assertion,
    }
