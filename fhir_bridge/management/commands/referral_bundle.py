"""Print a referral to send: PA Scenario 2 (Ms Johansson's referral, fhir_bridge.examples.scenario2_bundle) as
one transaction Bundle, ready for ``POST [base]`` as an EHR would send it.

    .venv/bin/python manage.py referral_bundle --identifier my-first-referral > referral.json

``--identifier`` is its business identifier (a second Bundle with the same one is a resend: 200 and the first
referral); ``--family`` and ``--postal-code`` change the patient.
"""

import json

from django.core.management.base import BaseCommand

from fhir_bridge.examples import scenario2_bundle


class Command(BaseCommand):
    help = "Print a sample PA referral (Scenario 2) as a transaction Bundle to POST to /fhir."

    def add_arguments(self, parser):
        parser.add_argument("--identifier", default="", help="the Task's and ServiceRequest's business "
                            "identifier (default: none, so that every Bundle is a new referral)")
        parser.add_argument("--family", default="", help="the patient's family name (default: Johansson)")
        parser.add_argument("--postal-code", default="", help="the patient's ZIP code (default: the "
                            "example's)")

    def handle(self, *args, identifier: str, family: str, postal_code: str, **options):
        bundle = scenario2_bundle(identifier=identifier or None, family=family or None,
                                  postal_code=postal_code or None)
        self.stdout.write(json.dumps(bundle, indent=2))
