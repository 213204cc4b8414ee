"""The hub as a SMART Backend Services client of the EHRs it pulls referrals from (notify and pull, issue 8 §5):
its own key pair, and the JWKS an EHR registers the hub with (served at ``/.well-known/jwks.json``).

The private key comes from ``HUB_CLIENT_KEY_FILE`` (a PEM file, RSA >= 2048 bits or EC P-384). When that file does
not exist yet the hub makes an EC P-384 key there, readable by its owner only (mode 0600), so that the embedded
run needs no set-up; production points the setting at a key it manages (the file is read, never overwritten).
"""

import os
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from fhir_bridge.smart_keys import PrivateKey, generate_private_key, load_private_key_pem, private_key_pem, public_jwks


def hub_client_key() -> PrivateKey:
    """The hub's private key as a SMART client (made on first use when its file is missing).

    Raises ValueError when the file holds no key the hub can sign with."""
    return _key_at(str(settings.HUB_CLIENT_KEY_FILE))


@lru_cache(maxsize=4)
def _key_at(path: str) -> PrivateKey:
    file = Path(path)
    try:
        return load_private_key_pem(file.read_bytes())
    except FileNotFoundError:
        pass
    file.parent.mkdir(parents=True, exist_ok=True)
    key = generate_private_key("EC")
    # O_EXCL: two processes starting at once do not both write; the loser reads the winner's key.
    try:
        descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_private_key_pem(file.read_bytes())
    with os.fdopen(descriptor, "wb") as out:
        out.write(private_key_pem(key))
    return key


def hub_client_jwks() -> dict:
    """The public half of the hub's client key, as the JWKS an EHR registers (no private member)."""
    return public_jwks(hub_client_key())


@require_GET
def jwks_view(request):
    return JsonResponse(hub_client_jwks(), headers={"Cache-Control": "max-age=300"})
