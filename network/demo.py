"""A small demo network around Springfield, IL (the PA IG's Scenario 2), for the embedded run.

The organizations are the ones referrals/management/commands/load_demo.py creates (Fit 4 Life, Get Fit,
Springfield Cardiac Rehab); this gives them sites, professionals, credentials and roles, so that the demo's
referrals have somewhere to go. As in Scenario 2, Get Fit is the nearer clinical choice for a cardiac patient.
Loading it twice changes nothing.
"""

import datetime as dt

from django.db import transaction
from django.utils import timezone

from network.models import Credential, CredentialType, Organization, Professional, ProfessionalRole, Site

# organization (fhir_id, name, kind), site (fhir_id, name, line, zip, lat, long), roles:
# [(role fhir_id, practitioner fhir_id, given, family, credential slugs, extra role fields)]
DEMO_NETWORK = [
    (
        ("get-fit", "Get Fit", Organization.Kind.GYM),
        ("get-fit-downtown", "Get Fit Downtown", "400 E Adams St", "62701", 39.8003, -89.6470),
        [
            (
                "get-fit-rivera",
                "rivera",
                "Maria",
                "Rivera",
                ["acsm-cep", "eim-3"],
                {"languages": ["en", "es"], "offers_virtual": True},
            ),
            ("get-fit-chen", "chen", "David", "Chen", ["acsm-cpt", "eim-1"], {"offers_group": True}),
        ],
    ),
    (
        ("fit-4-life", "Fit 4 Life", Organization.Kind.GYM),
        ("fit-4-life-west", "Fit 4 Life West", "2900 Wabash Ave", "62704", 39.7690, -89.6950),
        [
            ("fit-4-life-nguyen", "nguyen", "Linh", "Nguyen", ["acsm-cep"], {"max_active_cases": 8}),
            ("fit-4-life-brooks", "brooks", "Sam", "Brooks", ["acsm-ep", "eim-2"], {}),
        ],
    ),
    (
        ("springfield-cardiac-rehab", "Springfield Cardiac Rehab", Organization.Kind.CARDIAC_REHAB),
        (
            "springfield-cardiac-rehab-main",
            "Springfield Cardiac Rehab",
            "800 E Carpenter St",
            "62702",
            39.8090,
            -89.6430,
        ),
        [
            ("scr-patel", "patel", "Anita", "Patel", ["cardiac-rehab", "acsm-cep"], {"max_active_cases": 15}),
            ("scr-okoro", "okoro", "James", "Okoro", ["pt-license"], {}),
        ],
    ),
]


@transaction.atomic
def demo_network_load() -> int:
    """Create what is missing of the demo network; return how many roles were created."""
    today = timezone.now().date()
    types = {t.slug: t for t in CredentialType.objects.all()}
    created = 0
    for (org_id, org_name, kind), site_facts, roles in DEMO_NETWORK:
        organization, _ = Organization.objects.get_or_create(
            fhir_id=org_id, defaults={"name": org_name, "kind": kind}
        )
        site_id, site_name, line, postal_code, lat, lon = site_facts
        site, _ = Site.objects.get_or_create(
            fhir_id=site_id,
            defaults={
                "organization": organization,
                "name": site_name,
                "line": line,
                "city": "Springfield",
                "state": "IL",
                "postal_code": postal_code,
                "latitude": lat,
                "longitude": lon,
            },
        )
        for role_id, pro_id, given, family, slugs, extra in roles:
            professional, new = Professional.objects.get_or_create(
                fhir_id=pro_id, defaults={"given_name": given, "family_name": family}
            )
            if new:
                for slug in slugs:
                    if slug in types:
                        Credential.objects.create(
                            professional=professional,
                            type=types[slug],
                            number=f"DEMO-{slug.upper()}-{pro_id}",
                            issuer=types[slug].issuer,
                            expires_on=today + dt.timedelta(days=700),
                            verified_by="demo",
                            verified_at=timezone.now(),
                        )
            _, new_role = ProfessionalRole.objects.get_or_create(
                fhir_id=role_id,
                defaults={
                    "professional": professional,
                    "organization": organization,
                    "site": site,
                    "email": f"{pro_id}@{org_id}.example.org",
                    "service_radius_km": 25.0,
                    **extra,
                },
            )
            created += new_role
    return created
