"""Create the benchmark's clinic and EHR client in the hub's database (run by bench.intake in a subprocess,
with the hub's environment). Reads the client's public JWKS as JSON on stdin; prints its client_id and
clinic_id as JSON."""

import json
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from fhir_bridge.smart_clients import ehr_client_register
    from fhir_bridge.smart_scopes import DEFAULT_SCOPES
    from referrals.models import Clinic

    jwks = json.load(sys.stdin)
    # get_or_create: bench.search --reuse registers a new client for the clinic its earlier run filled.
    clinic, _ = Clinic.objects.get_or_create(slug="benchmark-clinic", defaults={"name": "Benchmark clinic"})
    client = ehr_client_register(name="Benchmark EHR", clinic=clinic, jwks=jwks, scopes=list(DEFAULT_SCOPES))
    print(json.dumps({"client_id": client.client_id, "clinic_id": clinic.pk}))


if __name__ == "__main__":
    main()
