"""Register a SMART Backend Services client: a clinic's EHR, or a network organization's own system (a provider
that answers offers and runs its cases over FHIR).

    python manage.py register_ehr_client --name "Riverside EHR" --clinic riverside --jwks ehr-jwks.json
    python manage.py register_ehr_client --name "Fit 4 Life system" --organization fit4life --jwks jwks.json

The first line of output is the client_id alone, so that scripts can capture it (``| head -n 1``).
"""

import json
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_slug
from django.db import transaction

from fhir_bridge.management.commands.ehr_client_token import default_token_url
from fhir_bridge.smart_clients import ehr_client_register
from fhir_bridge.smart_views import TOKEN_PATH
from fhir_bridge.smart_scopes import DEFAULT_SCOPES, PROVIDER_SCOPES
from network.models import Organization
from referrals.models import Clinic


class Command(BaseCommand):
    help = (
        "Register a client (SMART Backend Services) for a clinic's EHR (--clinic) or for a network "
        "organization's own system (--organization). Prints the client_id on the first line. Make a key and "
        "its JWKS with: "
        "manage.py ehr_client_token --key ehr-key.pem --new-key EC > ehr-jwks.json"
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--name", required=True, help="what the client is, e.g. 'Riverside Family Practice EHR'"
        )
        side = parser.add_mutually_exclusive_group(required=True)
        side.add_argument("--clinic", metavar="SLUG", help="the slug of the clinic whose EHR it is")
        side.add_argument(
            "--organization",
            metavar="FHIR_ID",
            help="the id of the network organization whose own system it is (Organization/<id>): it answers "
            "the offers made to the organization's roles and runs the cases it accepted",
        )
        parser.add_argument(
            "--jwks",
            required=True,
            type=Path,
            metavar="PATH",
            help='a JSON file with the client\'s public keys: {"keys": [...]} (a single JWK is accepted too)',
        )
        parser.add_argument(
            "--scope",
            action="append",
            dest="scopes",
            metavar="SCOPE",
            help="a system scope it may be granted (repeat, or separate with spaces); default for a clinic: "
            + " ".join(DEFAULT_SCOPES)
            + "; for an organization: "
            + " ".join(PROVIDER_SCOPES),
        )
        parser.add_argument(
            "--fhir-base",
            default="",
            metavar="URL",
            help="notify and pull: the EHR's FHIR base URL, the only place the hub fetches a referral's resources from",
        )
        parser.add_argument(
            "--token-url",
            default="",
            metavar="URL",
            help="notify and pull: the EHR's token endpoint, where the hub authenticates as a SMART backend client "
            "with the key published at /.well-known/jwks.json",
        )
        parser.add_argument(
            "--hub-client-id",
            default="",
            metavar="ID",
            help="notify and pull: the client id the EHR registered the hub under (default: the client_id printed "
            "here)",
        )
        parser.add_argument(
            "--create-clinic", action="store_true", help="create the clinic if no clinic has SLUG"
        )
        parser.add_argument(
            "--clinic-name", help="the new clinic's name with --create-clinic (default: from SLUG)"
        )
        parser.add_argument(
            "--hub-url",
            metavar="URL",
            help="the hub's base URL, for the token command this prints (default: HUB_PUBLIC_BASE_URL if that is "
            "set, else http://127.0.0.1:8000)",
        )

    def handle(self, *args, name, clinic, organization, jwks, scopes, create_clinic, clinic_name, fhir_base="",
               token_url="", hub_client_id="", hub_url=None, **options):
        document = _jwks_read(Path(jwks))  # Path() again: call_command(jwks="...") skips argparse's type
        if (clinic is None) == (organization is None):  # call_command skips argparse's group check
            raise CommandError("Give exactly one of --clinic and --organization.")
        if organization is not None and create_clinic:
            raise CommandError("--create-clinic goes with --clinic, not --organization.")
        defaults = PROVIDER_SCOPES if organization is not None else DEFAULT_SCOPES
        scope_list = [scope for argument in scopes or defaults for scope in argument.split()]

        # One transaction: a clinic created here is not left behind when the registration is refused.
        created = False
        with transaction.atomic():
            if organization is not None:
                side_row = _organization_find(organization)
                side = {"organization": side_row}
            else:
                side_row, created = _clinic_find(clinic, create=create_clinic, name=clinic_name)
                side = {"clinic": side_row}
            try:
                client = ehr_client_register(
                    name=name, jwks=document, scopes=scope_list, fhir_base_url=fhir_base, token_url=token_url,
                    hub_client_id=hub_client_id, **side
                )
            except ValidationError as exc:
                raise CommandError(" ".join(exc.messages)) from None

        self.stdout.write(client.client_id)
        kids = ", ".join(f"{key['kid']} ({key['kty']})" for key in client.jwks["keys"])
        kind = "a provider client" if organization is not None else "an EHR client"
        self.stdout.write(self.style.SUCCESS(f"Registered {client.name!r} as {kind}."))
        self.stdout.write(f"  client_id: {client.client_id}")
        if organization is not None:
            self.stdout.write(f"  organization: {side_row.name} (Organization/{side_row.fhir_id})")
        else:
            self.stdout.write(
                f"  clinic:    {side_row.name} ({side_row.slug}){' - created now' if created else ''}"
            )
        self.stdout.write(f"  keys:      {kids}")
        self.stdout.write(f"  scopes:    {client.scopes}")
        if client.fhir_base_url:
            self.stdout.write(
                f"  pulls from {client.fhir_base_url} (token: {client.token_url}) as client {client.hub_client_id}, "
                "with the key published at /.well-known/jwks.json"
            )
        # ehr_client_token asks for DEFAULT_SCOPES unless told otherwise: a client registered with others (a
        # narrower clinic's, a provider's) would be refused invalid_scope or granted next to nothing, so the hint
        # names the scopes it may have. And the token URL, which is not 127.0.0.1:8000 everywhere.
        scope_option = "" if scope_list == list(DEFAULT_SCOPES) else f" --scope '{' '.join(scope_list)}'"
        hub_token_url = f"{hub_url.rstrip('/')}{TOKEN_PATH}" if hub_url else default_token_url()
        self.stdout.write(
            "Get an access token with:\n"
            f"  python manage.py ehr_client_token --client-id {client.client_id} --key PRIVATE_KEY.pem "
            f"--token-url {hub_token_url} --request{scope_option}"
        )


def _organization_find(fhir_id: str) -> Organization:
    organization = Organization.objects.filter(fhir_id=fhir_id).first()
    if organization is None:
        raise CommandError(
            f"No network organization has the id {fhir_id!r}. Find it with GET /fhir/Organization?name=... "
            "or in the admin."
        )
    return organization


def _jwks_read(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path}: cannot read it ({exc})") from None
    if "-----BEGIN" in text:
        raise CommandError(
            f"{path} is a PEM file, not a JWKS. Make the JWKS of a private key with: "
            f"python manage.py ehr_client_token --key {path} --print-jwks > jwks.json"
        )
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{path} is not valid JSON: {exc}") from None
    if isinstance(document, dict) and "kty" in document and "keys" not in document:
        document = {"keys": [document]}  # a lone JWK: accept it as the JWKS it obviously means
    return document


def _clinic_find(slug: str, *, create: bool, name: str | None) -> tuple[Clinic, bool]:
    clinic = Clinic.objects.filter(slug=slug).first()
    if clinic is not None:
        return clinic, False
    if not create:
        existing = list(Clinic.objects.order_by("slug").values_list("slug", flat=True))
        known = f"The clinics are: {', '.join(existing)}." if existing else "There are no clinics yet."
        raise CommandError(f"No clinic has the slug {slug!r}. {known} Add --create-clinic to create it.")
    try:
        validate_slug(slug)
    except ValidationError:
        raise CommandError(
            f"{slug!r} is not a valid slug (letters, digits, hyphens and underscores)"
        ) from None
    clinic = Clinic.objects.create(slug=slug, name=name or slug.replace("-", " ").replace("_", " ").title())
    return clinic, True
