"""Act as an EHR client from the command line: make a key, show its JWKS, sign an assertion, get a token.

    # 1. a new key (kept in ehr-key.pem) and its public JWKS, to register
    python manage.py ehr_client_token --key ehr-key.pem --new-key EC > ehr-jwks.json
    python manage.py register_ehr_client --name "Demo EHR" --clinic demo --create-clinic --jwks ehr-jwks.json
    # 2. an access token (printed alone on stdout)
    python manage.py ehr_client_token --key ehr-key.pem --client-id CLIENT_ID --request

Without --request the signed client assertion is printed, for use with curl. The key id (kid) is the key's
RFC 7638 thumbprint unless --kid says otherwise; --new-key and --print-jwks name the key the same way.
"""

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from fhir_bridge.smart_scopes import DEFAULT_SCOPES
from fhir_bridge.smart_tokens import ASSERTION_MAX_LIFETIME
from fhir_bridge.smart_views import TOKEN_PATH
from fhir_bridge.smart_keys import (
    client_assertion,
    generate_private_key,
    load_private_key_pem,
    private_key_pem,
    public_jwks,
    token_request_form,
)

LOCAL_TOKEN_URL = "http://127.0.0.1:8000" + TOKEN_PATH  # where `manage.py runserver` answers


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirected POST comes back as a GET without its body; better to say where the hub really is."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise CommandError(
            f"the hub answered {code} and redirects to {newurl}: use that as --token-url "
            "(the assertion's aud must be the exact token URL)"
        )


class Command(BaseCommand):
    help = (
        "Sign a SMART Backend Services client assertion with a private key and print it, or with --request "
        "exchange it for an access token and print that. Also makes keys (--new-key) and prints JWKS "
        "(--print-jwks)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--key", required=True, type=Path, metavar="PATH", help="the private key, PEM")
        parser.add_argument("--client-id", metavar="ID", help="the client_id register_ehr_client printed")
        parser.add_argument(
            "--kid", help="the key's id in the registered JWKS (default: the key's JWK thumbprint)"
        )
        parser.add_argument(
            "--scope",
            action="append",
            dest="scopes",
            metavar="SCOPE",
            help="a system scope to ask for (repeat, or separate with spaces); default: the scopes clients "
            "are registered with by default. The hub grants the subset the client is allowed.",
        )
        parser.add_argument(
            "--token-url",
            metavar="URL",
            help=f"the hub's token endpoint (default: HUB_PUBLIC_BASE_URL{TOKEN_PATH} if that is set, "
            f"else {LOCAL_TOKEN_URL})",
        )
        parser.add_argument(
            "--lifetime",
            type=int,
            default=240,
            metavar="SECONDS",
            help=f"how long the assertion is valid (default 240, at most {ASSERTION_MAX_LIFETIME})",
        )
        parser.add_argument(
            "--request", action="store_true", help="post the assertion and print the access token"
        )
        parser.add_argument(
            "--print-jwks", action="store_true", help="print the public JWKS of --key and stop"
        )
        parser.add_argument(
            "--new-key",
            choices=["EC", "RSA"],
            metavar="EC|RSA",
            help="create --key (EC P-384 for ES384, or RSA 2048 for RS384), print its public JWKS and stop",
        )

    def handle(self, *args, **options):
        key_path = Path(options["key"])  # Path() again: call_command(key="...") skips argparse's type
        if options["new_key"]:
            key = _key_create(key_path, options["new_key"])
            self.stdout.write(json.dumps(public_jwks(key, options["kid"]), indent=2))
            self._note(
                f"Wrote a new private key to {key_path}; keep it secret. The JWKS above is its public half."
            )
            return

        key = _key_read(key_path)
        if options["print_jwks"]:
            self.stdout.write(json.dumps(public_jwks(key, options["kid"]), indent=2))
            return

        if not options["client_id"]:
            raise CommandError("--client-id is required (the client_id that register_ehr_client printed)")
        lifetime = options["lifetime"]
        if not 0 < lifetime <= ASSERTION_MAX_LIFETIME:
            raise CommandError(f"--lifetime must be between 1 and {ASSERTION_MAX_LIFETIME} seconds")
        token_url = options["token_url"] or default_token_url()
        if urllib.parse.urlsplit(token_url).scheme not in ("http", "https"):
            raise CommandError(f"--token-url must be an http or https URL, not {token_url!r}")
        scopes = [scope for argument in options["scopes"] or DEFAULT_SCOPES for scope in argument.split()]

        assertion = client_assertion(
            key=key,
            kid=options["kid"],
            client_id=options["client_id"],
            token_url=token_url,
            lifetime=lifetime,
        )
        if not options["request"]:
            self.stdout.write(assertion)
            self._note(
                f"Valid for {lifetime} seconds, once, at {token_url}. Post it as client_assertion with "
                "grant_type=client_credentials, or run this again with --request."
            )
            return

        answer = _token_request(token_url, token_request_form(assertion=assertion, scopes=scopes))
        self.stdout.write(answer["access_token"])
        self._note(f"Expires in {answer.get('expires_in')} seconds. Scopes granted: {answer.get('scope')}")
        self._note("Send it as: Authorization: Bearer <token>")

    def _note(self, message: str) -> None:
        # Notes go to stderr so that stdout carries only what scripts capture (the token, assertion or JWKS).
        self.stderr.write(message, style_func=self.style.NOTICE)


def default_token_url() -> str:
    """The hub's token endpoint as this process knows it: HUB_PUBLIC_BASE_URL's, else runserver's default."""
    if settings.HUB_PUBLIC_BASE_URL:
        return settings.HUB_PUBLIC_BASE_URL.rstrip("/") + TOKEN_PATH
    return LOCAL_TOKEN_URL


def _key_create(path: Path, kind: str):
    key = generate_private_key(kind)
    try:
        # O_EXCL: never overwrite a key that may already be registered; 0o600: the file is a secret.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CommandError(f"{path} already exists; choose another --key path for the new key") from None
    except OSError as exc:
        raise CommandError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(descriptor, "wb") as file:
        file.write(private_key_pem(key))
    return key


def _key_read(path: Path):
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file. Make a key with --new-key EC (or RSA).") from None
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return load_private_key_pem(data)
    except ValueError as exc:
        raise CommandError(f"{path}: {exc}") from None


def _token_request(token_url: str, form: dict[str, str]) -> dict:
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked to be http or https
        token_url,
        data=urllib.parse.urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        method="POST",
    )
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise CommandError(
            f"the hub refused the token request ({exc.code}): {_oauth_error(exc.read())}"
        ) from None
    except urllib.error.URLError as exc:
        raise CommandError(
            f"cannot reach {token_url} ({exc.reason}). Is the hub running (python manage.py runserver)?"
        ) from None
    try:
        answer = json.loads(body)
        answer["access_token"]  # noqa: B018 - checks the answer has a token
    except (ValueError, KeyError, TypeError):
        raise CommandError(f"the hub's answer is not a token response: {body[:200]!r}") from None
    return answer


def _oauth_error(body: bytes) -> str:
    try:
        error = json.loads(body)
        return f"{error['error']}: {error.get('error_description', '')}"
    except (ValueError, KeyError, TypeError):
        return body[:200].decode(errors="replace")
