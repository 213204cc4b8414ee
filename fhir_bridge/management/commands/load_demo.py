"""The demo that `make run` loads: a clinic, its EHR client (with a key pair on disk), a network to route to and a
few sample PA referrals. Running it again changes nothing that is already there."""

import json
from pathlib import Path

import orjson
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from console.demo import demo_console_roles_load
from fhir_bridge.examples import scenario2_bundle
from fhir_bridge.intake import Caller, transaction_intake
from fhir_bridge.models import EhrClient
from fhir_bridge.smart_clients import ehr_client_register
from fhir_bridge.smart_keys import generate_private_key, load_private_key_pem, private_key_pem, public_jwks
from fhir_bridge.smart_scopes import DEFAULT_SCOPES as DEMO_SCOPES  # the route table's, as registration's
from network.demo import demo_network_load
from portal.demo import demo_accounts_load
from referrals.models import Clinic, Referral
from referrals.offers import referral_route_first

DEMO_CLIENT_NAME = "Good Health Cardiology EHR (demo)"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
CLEARANCE = "http://exercise-referral-hub.org/fhir/CodeSystem/exercise-clearance"
PRECAUTION = "http://exercise-referral-hub.org/fhir/CodeSystem/exercise-precaution"


def _reason(code: str, display: str) -> list[dict]:
    return [{"coding": [{"system": ICD10, "code": code, "display": display}]}]


def _details(clearance: str, *precautions: str) -> list[dict]:
    return [{"coding": [{"system": CLEARANCE, "code": clearance}]}] + [
        {"coding": [{"system": PRECAUTION, "code": p}]} for p in precautions
    ]


# (identifier, family name, ZIP code, reasonCode, orderDetail): Ms Johansson of PA Scenario 2 after her heart
# attack, a neighbour with knee osteoarthritis, and one with type 2 diabetes.
DEMO_REFERRALS = [
    ("demo-1", "Johansson", "62701", _reason("I25.2", "Old myocardial infarction"), _details("moderate", "no-valsalva")),
    ("demo-2", "Okafor", "62702", _reason("M17.11", "Unilateral primary osteoarthritis, right knee"), _details("moderate")),
    ("demo-3", "Lindqvist", "62704", _reason("E11.9", "Type 2 diabetes mellitus without complications"), _details("light")),
]


class Command(BaseCommand):
    help = "Load the demo clinic, EHR client, network and sample referrals (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="Where the hub will be served.")

    def handle(self, *args, base_url: str, **options):
        base_url = base_url.rstrip("/")
        key_dir = Path(settings.VAR_DIR) / "demo-ehr"
        key_path = key_dir / "private-key.pem"
        with transaction.atomic():
            clinic, _ = Clinic.objects.get_or_create(slug="good-health", defaults={"name": "Good Health Cardiology"})
            client = EhrClient.objects.filter(name=DEMO_CLIENT_NAME, clinic=clinic).first()
            if client is None or not key_path.exists():
                key_dir.mkdir(parents=True, exist_ok=True)
                key = generate_private_key("EC")
                key_path.write_bytes(private_key_pem(key))
                key_path.chmod(0o600)
                (key_dir / "jwks.json").write_text(json.dumps(public_jwks(key), indent=2))
                if client is None:
                    client = ehr_client_register(
                        name=DEMO_CLIENT_NAME, clinic=clinic, jwks=public_jwks(key), scopes=DEMO_SCOPES
                    )
                else:
                    client.jwks = public_jwks(key)
                    client.save(update_fields=["jwks"])
            load_private_key_pem(key_path.read_bytes())  # fail here, not in front of the newcomer, if it is unusable
            demo_network_load()

        caller = Caller(client=client, base_url=f"{base_url}/fhir")
        opened = []
        for identifier, family, postal_code, reasons, details in DEMO_REFERRALS:
            bundle = scenario2_bundle(identifier=identifier, family=family, postal_code=postal_code, reason_codes=reasons)
            service_request = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
            service_request["orderDetail"] = details
            outcome = transaction_intake(caller, bundle, raw=orjson.dumps(bundle), check_scope=lambda *a, **k: None)
            if outcome.stored is None:  # a duplicate answer names the referral that was already there
                opened.append(next(r.referral_id for r in outcome.created if r.resource_type == "Task"))
        # Routed here rather than by the worker, so that the demo shows its choices as soon as the server is up.
        routed = [referral_route_first(referral_id=pk) for pk in opened]
        admin_note = self._demo_admin()
        # Every demo referral, new or loaded before, so that a second run still names the accounts.
        demo_ids = list(Referral.objects.filter(clinic=clinic).order_by("id").values_list("id", flat=True))
        accounts = demo_accounts_load(referral_ids=demo_ids) if settings.DEBUG else []
        console_lines = demo_console_roles_load(clinic=clinic) if settings.DEBUG else []
        console_note = "\n".join(f"                    user / password: {line}" for line in console_lines) or (
            "                    (give users a role in the admin, Admin console > Console roles)"
        )
        portal_note = "\n".join(f"                    user / password: {line}" for line in accounts) or (
            "                    (no demo offer was made: link users in the admin, Network > Accounts)"
        )

        self.stdout.write(self.style.SUCCESS(f"\nExercise-referral hub demo: {len(opened)} new sample referral(s) loaded."))
        for outcome in filter(None, routed):
            self.stdout.write(f"  routed: {outcome.gist}")
        self.stdout.write(f"""
  FHIR base URL     {base_url}/fhir          (metadata: {base_url}/fhir/metadata)
  Token endpoint    {base_url}/auth/token    (SMART Backend Services, private_key_jwt)
  Demo EHR client   {client.client_id}   clinic "{clinic.name}"
  Its private key   {key_path}
  Admin             {base_url}/admin/   {admin_note}
  Therapists' app   {base_url}/portal/   (demo only)
{portal_note}
  Admin console     {base_url}/console/   (demo only)
{console_note}
  Routing queue     {base_url}/api/admin/routing/queue   (and /api/admin/referrals/<id>/routing: why it went where)

  Get a token (in another terminal, once the server is up):
    .venv/bin/python manage.py ehr_client_token --client-id {client.client_id} \\
        --key {key_path} --token-url {base_url}/auth/token --request
  Then, the referral Tasks still waiting (not their offers), each with its Patient:
    curl -H "Authorization: Bearer $TOKEN" '{base_url}/fhir/Task?part-of:missing=true&status=requested&_include=Task:patient'
  Send a referral of your own (PA Scenario 2 as a transaction Bundle):
    .venv/bin/python manage.py referral_bundle --identifier my-first-referral > referral.json
    curl -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/fhir+json' {base_url}/fhir -d @referral.json
  Every entry point: {base_url}/
""")

    def _demo_admin(self) -> str:
        if not settings.DEBUG:
            return "(create one with: python manage.py createsuperuser)"
        User = get_user_model()
        if not User.objects.filter(username="admin").exists():
            User.objects.create_superuser("admin", "admin@example.org", "admin")
        return "user admin, password admin (demo only)"
