"""The demo network: about fifty exercise professionals across Springfield, IL (PA IG Scenario 2), for the
embedded run (``manage.py load_network_demo``, and ``make run`` through fhir_bridge's load_demo).

Fit 4 Life, Get Fit and Springfield Cardiac Rehab are Scenario 2's organizations; as in the story, Get Fit is
the nearer clinical choice for a cardiac patient downtown (ZIP 62701). Around them: a YMCA with two branches,
a hospital wellness centre, two physical-therapy practices, an oncology exercise program, a pulmonary
rehabilitation program and independent trainers. The mix makes every routing constraint show up in the demo's
explanations: personal trainers (ACSM-CPT) who may take only healthy, low-risk patients; exercise
physiologists, clinical exercise physiologists and cardiac rehab for cardiac patients; physical therapists for
musculoskeletal and neurological ones; expired and unverified credentials; a role paused for three weeks; a
role restricted to one condition group and one capped at a risk tier; a trainer with room for a single case;
Spanish and Polish speakers; some who also work by video.

Every organization and person is made up. The sites lie within about a kilometre of the centroids of
Springfield's standard ZIP codes (62701-62712), on real street names with invented numbers.

Names, places and numbers come from a seeded ``random.Random``, so the network is the same on every machine;
dates are relative to the day it is loaded (a credential current today stays current in the demo). Loading it
twice changes nothing: rows are found by ``fhir_id`` and only the missing ones are created.
"""

import datetime as dt
import random
from dataclasses import dataclass, field, replace

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from network.geo import zip_place
from network.models import (
    ConditionGroup,
    Credential,
    CredentialType,
    Organization,
    Professional,
    ProfessionalRole,
    Site,
)

SEED = 62701

# Real street names in the standard ZIP codes of Springfield, where the sites go. 62705, 62706 and 62708 are
# PO-box and single-address codes; 62709 and 62710 do not exist.
STREETS = {
    "62701": ["S 5th St", "E Monroe St", "E Capitol Ave", "S 6th St"],
    "62702": ["N Grand Ave E", "N Dirksen Pkwy", "E Sangamon Ave", "N 9th St"],
    "62703": ["E Stevenson Dr", "S 11th St", "E South Grand Ave", "S Walnut St"],
    "62704": ["Wabash Ave", "S MacArthur Blvd", "W Washington St", "S Chatham Rd"],
    "62707": ["N Peoria Rd", "Sangamon Ave", "N Walnut St", "Camp Sangamo Rd"],
    "62711": ["W Iles Ave", "S Veterans Pkwy", "Robbins Rd", "Lindbergh Blvd"],
    "62712": ["Toronto Rd", "E Lake Dr", "Stanton Ave", "Adlai Stevenson Dr"],
}
# Independent trainers stay out of 62701, so that downtown the Scenario 2 story holds (Get Fit nearest).
INDEPENDENT_ZIPS = ["62702", "62703", "62704", "62707", "62711", "62712"]

# Made-up names. Spanish and Polish speakers take their names from their own lists.
GIVEN_NAMES = [
    "Emily", "Jacob", "Hannah", "Marcus", "Olivia", "Tyler", "Grace", "Brandon", "Megan", "Kevin",
    "Rachel", "Derek", "Lauren", "Andre", "Kayla", "Nathan", "Courtney", "Justin", "Heather", "Ryan",
    "Tasha", "Caleb", "Amber", "Evan", "Jasmine", "Trevor", "Natalie", "Logan", "Whitney", "Aaron",
    "Priya", "Omar", "Mei", "Kwame", "Erin", "Dustin", "Brooke", "Terrence",
]  # fmt: skip
FAMILY_NAMES = [
    "Anderson", "Bauer", "Coleman", "Dawson", "Ellis", "Fischer", "Garrett", "Hayes", "Ingram", "Jenkins",
    "Keller", "Lawson", "Mercer", "Oakley", "Palmer", "Quinn", "Schultz", "Turner", "Underwood", "Vaughn",
    "Whitfield", "Yates", "Zimmerman", "Harper", "Mitchell", "Sullivan", "Bishop", "Crawford", "Donovan",
    "Fletcher", "Gibson", "Holloway", "Jensen", "Kim", "Lindgren", "Osei", "Park", "Rhodes", "Sato", "Tran",
    "Walsh", "Abernathy", "Pruitt", "Stroud",
]  # fmt: skip
SPANISH_NAMES = [
    ("Alejandro", "Hernández"), ("Lucía", "Morales"), ("Carmen", "Castillo"), ("Diego", "Ortega"),
    ("Sofía", "Delgado"), ("Javier", "Vargas"), ("Isabel", "Mendoza"), ("Mateo", "Ramos"),
]  # fmt: skip
POLISH_NAMES = [
    ("Katarzyna", "Wiśniewska"), ("Tomasz", "Kowalczyk"), ("Agnieszka", "Zielińska"), ("Piotr", "Wójcik"),
    ("Magdalena", "Kamińska"), ("Krzysztof", "Lewandowski"),
]  # fmt: skip
INDEPENDENT_NAMES = ["{family} Personal Training", "{given} {family} Fitness", "Move Well with {given}"]

GYM_PAYERS = ["self-pay", "silver-sneakers"]
CLINICAL_PAYERS = ["medicare", "medicaid", "bcbs-il", "self-pay"]


@dataclass(frozen=True)
class Staff:
    """One person in a role. ``credentials`` are type slugs; ``slug:expired`` and ``slug:unverified`` make a
    credential that does not count. ``who`` fixes the (given, family) name; otherwise it is drawn."""

    credentials: tuple[str, ...]
    who: tuple[str, str] | None = None
    language: str = ""  # "es" or "pl": a speaker of it (and of English), named from its list
    also_at: str = ""  # the fhir_id of a second site where the same person has a role
    role: dict = field(default_factory=dict)  # other ProfessionalRole fields
    paused_days: int = 0  # paused until this many days after loading
    only_condition_groups: tuple[str, ...] = ()


def _s(*credentials: str, **facts) -> Staff:
    return Staff(credentials=credentials, **facts)


@dataclass(frozen=True)
class SiteSpec:
    """One site and its staff. Its roles' ids are ``<prefix>-<professional id>``. ``fixed`` is (latitude,
    longitude, street line) for the demo's original sites; the others are drawn near their ZIP's centroid."""

    fhir_id: str
    prefix: str
    name: str
    postal_code: str
    staff: list[Staff]
    fixed: tuple[float, float, str] | None = None


@dataclass(frozen=True)
class OrganizationSpec:
    fhir_id: str
    name: str
    kind: str
    payers: list[str]  # what its roles take
    sites: list[SiteSpec]


# The first three are the demo's originals: they keep their places, people and ids.
ORGANIZATIONS = [
    OrganizationSpec("get-fit", "Get Fit", Organization.Kind.GYM, GYM_PAYERS, [
        SiteSpec(
            "get-fit-downtown", "get-fit", "Get Fit Downtown", "62701",
            fixed=(39.8003, -89.6470, "400 E Adams St"),
            staff=[
                _s("acsm-cep", "eim-3", who=("Maria", "Rivera"), language="es",
                   role={"offers_virtual": True}),
                _s("acsm-cpt", "eim-1", who=("David", "Chen"), role={"offers_group": True}),
                _s("acsm-cpt", role={"offers_group": True}),
                _s("acsm-ep", "eim-2"),
            ],
        ),
    ]),
    OrganizationSpec("fit-4-life", "Fit 4 Life", Organization.Kind.GYM, GYM_PAYERS, [
        SiteSpec(
            "fit-4-life-west", "fit-4-life", "Fit 4 Life West", "62704",
            fixed=(39.7690, -89.6950, "2900 Wabash Ave"),
            staff=[
                _s("acsm-cep", who=("Linh", "Nguyen"), role={"max_active_cases": 8}),
                _s("acsm-ep", "eim-2", who=("Sam", "Brooks")),
                _s("acsm-cpt", "acsm-ep:expired"),  # the EP lapsed: a diabetic patient's decision says so
                _s("acsm-cpt", language="es"),
            ],
        ),
    ]),
    OrganizationSpec(
        "springfield-cardiac-rehab", "Springfield Cardiac Rehab", Organization.Kind.CARDIAC_REHAB,
        CLINICAL_PAYERS,
        [
            SiteSpec(
                "springfield-cardiac-rehab-main", "scr", "Springfield Cardiac Rehab", "62702",
                fixed=(39.8090, -89.6430, "800 E Carpenter St"),
                staff=[
                    _s("cardiac-rehab", "acsm-cep", who=("Anita", "Patel"), role={"max_active_cases": 15}),
                    _s("pt-license", who=("James", "Okoro")),
                    _s("cardiac-rehab", "acsm-cep", language="pl"),
                    _s("cardiac-rehab", "acsm-ep", role={"offers_group": True}),
                ],
            ),
        ],
    ),
    OrganizationSpec(
        "springfield-area-ymca", "Springfield Area YMCA", Organization.Kind.YMCA, GYM_PAYERS + ["medicare"],
        [
            SiteSpec("ymca-downtown", "ymca-downtown", "Springfield Area YMCA, Downtown", "62701", staff=[
                _s("acsm-ep", "eim-2", also_at="ymca-west", role={"offers_group": True}),
                _s("acsm-cpt", role={"offers_group": True}),
                _s("acsm-cpt", "eim-1", language="es", role={"offers_group": True}),
                _s("acsm-ep", "acsm-cep:unverified"),  # a self-reported CEP: it never counts
                # No medical supervision on site: the Y's clinical physiologist takes patients up to tier 2.
                _s("acsm-cep", role={"max_risk_tier": 2}),
            ]),
            SiteSpec("ymca-west", "ymca-west", "Springfield Area YMCA, West", "62711", staff=[
                _s("acsm-cpt", role={"offers_group": True}),
                _s("acsm-ep", role={"offers_group": True}),  # the falls-prevention classes
                _s("issa-et"),
            ]),
        ],
    ),
    OrganizationSpec(
        "sangamon-valley-wellness", "Sangamon Valley Health Wellness Center", Organization.Kind.WELLNESS,
        CLINICAL_PAYERS,
        [
            SiteSpec(
                "sangamon-valley-wellness-north", "svh-wellness", "Sangamon Valley Health Wellness Center",
                "62702",
                staff=[
                    _s("acsm-cep", "eim-3", role={"offers_virtual": True}),
                    _s("acsm-cep", paused_days=21),  # on leave: back in three weeks
                    _s("acsm-ep", "eim-2", language="pl", role={"offers_virtual": True}),
                    _s("acsm-ep", role={"offers_group": True}),
                    _s("acsm-cep"),
                    _s("pt-license"),
                ],
            ),
        ],
    ),
    OrganizationSpec(
        "capital-city-pt", "Capital City Physical Therapy", Organization.Kind.PRACTICE, CLINICAL_PAYERS,
        [
            SiteSpec("capital-city-pt-wabash", "capital-city-pt", "Capital City PT", "62704", staff=[
                _s("pt-license"),
                _s("pt-license", language="es"),
                _s("pt-license:expired"),  # the license renewal is late
            ]),
        ],
    ),
    OrganizationSpec(
        "prairie-motion-pt", "Prairie Motion Physical Therapy", Organization.Kind.PRACTICE, CLINICAL_PAYERS,
        [
            SiteSpec(
                "prairie-motion-pt-south", "prairie-motion-pt", "Prairie Motion Physical Therapy", "62703",
                staff=[
                    _s("pt-license"),
                    _s("pt-license", language="pl"),
                    _s("issa-et", "acsm-cpt"),
                ],
            ),
        ],
    ),
    OrganizationSpec(
        "springfield-cancer-exercise", "Springfield Cancer Survivorship Exercise Program",
        Organization.Kind.CLINIC, CLINICAL_PAYERS,
        [
            SiteSpec(
                "springfield-cancer-exercise-north", "cancer-exercise", "Cancer Survivorship Exercise",
                "62707",
                staff=[
                    _s("acsm-cet", "acsm-ep"),
                    _s("acsm-cep", "acsm-cet", role={"offers_virtual": True}),
                    _s("pt-license", "acsm-cet"),
                ],
            ),
        ],
    ),
    OrganizationSpec(
        "capitol-pulmonary-rehab", "Capitol Pulmonary Rehabilitation", Organization.Kind.CLINIC,
        CLINICAL_PAYERS,
        [
            SiteSpec(
                "capitol-pulmonary-rehab-south", "pulmonary-rehab", "Capitol Pulmonary Rehabilitation",
                "62703",
                staff=[
                    # The program's clinical physiologist works with its pulmonary patients only.
                    _s("pulmonary-rehab", "acsm-cep", only_condition_groups=("pulmonary",)),
                    _s("pulmonary-rehab", "acsm-ep", role={"offers_group": True}),
                    _s("pulmonary-rehab", "pt-license"),
                ],
            ),
        ],
    ),
]  # fmt: skip

# Independent trainers: one person, their own practice and studio each, in a ZIP drawn from INDEPENDENT_ZIPS.
INDEPENDENTS = [
    _s("acsm-cpt", role={"offers_in_person": False, "offers_virtual": True}),  # by video only
    _s("acsm-cpt", "eim-1", role={"max_active_cases": 1}),  # room for one case: the first fills it
    _s("acsm-cpt", language="es"),
    _s("acsm-ep", "eim-2:unverified", language="pl", role={"offers_virtual": True}),
    _s("acsm-cpt:expired"),
    _s("acsm-ep", "eim-2"),
    _s("acsm-cet"),
    _s("acsm-cpt", role={"offers_group": True}),
    _s("acsm-cep", role={"offers_virtual": True}),
    _s("acsm-cpt"),
    _s("issa-et", "acsm-cpt"),
    _s("eim-1", "acsm-cpt"),
]


@dataclass(frozen=True)
class DemoCredential:
    slug: str
    expires_in_days: int  # from the day of loading; negative: expired
    verified: bool


@dataclass(frozen=True)
class DemoRole:
    fhir_id: str
    professional_id: str
    given: str
    family: str
    organization_id: str
    site_id: str
    credentials: tuple[DemoCredential, ...]
    fields: dict
    only_condition_groups: tuple[str, ...]
    paused_days: int = 0


@dataclass(frozen=True)
class DemoSite:
    fhir_id: str
    organization_id: str
    name: str
    line: str
    postal_code: str
    latitude: float
    longitude: float


@dataclass(frozen=True)
class DemoNetwork:
    organizations: list[tuple[str, str, str]]  # (fhir_id, name, kind)
    sites: list[DemoSite]
    roles: list[DemoRole]


def demo_network_spec() -> DemoNetwork:
    """The demo network as plain values, drawn from one seeded generator: the same on every machine."""
    rng = random.Random(SEED)
    # Each list is drawn without repeats (family names are the professionals' ids): add names with people.
    names = {
        "": zip(rng.sample(GIVEN_NAMES, len(GIVEN_NAMES)), rng.sample(FAMILY_NAMES, len(FAMILY_NAMES))),
        "es": iter(rng.sample(SPANISH_NAMES, len(SPANISH_NAMES))),
        "pl": iter(rng.sample(POLISH_NAMES, len(POLISH_NAMES))),
    }

    def place(postal_code: str) -> tuple[float, float, str]:
        # Within about a kilometre of the ZIP's centroid (the one routing places patients at): inside the city
        # and the ZIP.
        centroid = zip_place(postal_code)
        lat = round(centroid.latitude + rng.uniform(-0.008, 0.008), 4)
        lon = round(centroid.longitude + rng.uniform(-0.010, 0.010), 4)
        return lat, lon, f"{rng.randrange(100, 3000, 2)} {rng.choice(STREETS[postal_code])}"

    def person(staff: Staff) -> tuple[str, str, str, tuple[DemoCredential, ...]]:
        given, family = staff.who or next(names[staff.language])
        credentials = []
        for entry in staff.credentials:
            slug, _, state = entry.partition(":")
            days = -rng.randint(5, 120) if state == "expired" else rng.randint(150, 1000)
            credentials.append(DemoCredential(slug, expires_in_days=days, verified=state != "unverified"))
        return given, family, slugify(family), tuple(credentials)

    def role_fields(staff: Staff, payers: list[str], radii: list[float]) -> dict:
        fields = {
            "languages": ["en", staff.language] if staff.language else ["en"],
            "payers": list(payers),
            "service_radius_km": rng.choice(radii),
            "max_active_cases": rng.randint(6, 14),
        }
        if staff.who:  # the demo's original six keep the facts they were first loaded with
            fields = {"languages": fields["languages"], "service_radius_km": 25.0}
        return {**fields, **staff.role}

    organizations, sites, roles, second_roles = [], [], [], []
    prefixes = {}  # site fhir_id → (organization fhir_id, role id prefix)
    for org in ORGANIZATIONS:
        organizations.append((org.fhir_id, org.name, org.kind))
        for site in org.sites:
            prefixes[site.fhir_id] = (org.fhir_id, site.prefix)
            lat, lon, line = site.fixed or place(site.postal_code)
            sites.append(DemoSite(site.fhir_id, org.fhir_id, site.name, line, site.postal_code, lat, lon))
            for staff in site.staff:
                given, family, pro_id, credentials = person(staff)
                fields = role_fields(staff, org.payers, [15.0, 20.0, 25.0])
                role = DemoRole(
                    f"{site.prefix}-{pro_id}", pro_id, given, family, org.fhir_id, site.fhir_id, credentials,
                    fields, staff.only_condition_groups, staff.paused_days,
                )  # fmt: skip
                roles.append(role)
                if staff.also_at:
                    second_roles.append((staff.also_at, role))
    for site_id, role in second_roles:  # the same person, credentials and terms at another site
        org_id, prefix = prefixes[site_id]
        fhir_id = f"{prefix}-{role.professional_id}"
        roles.append(replace(role, fhir_id=fhir_id, organization_id=org_id, site_id=site_id))

    for staff in INDEPENDENTS:
        given, family, pro_id, credentials = person(staff)
        org_id = f"{pro_id}-training"
        org_name = rng.choice(INDEPENDENT_NAMES).format(given=given, family=family)
        organizations.append((org_id, org_name, Organization.Kind.PRACTICE))
        postal_code = rng.choice(INDEPENDENT_ZIPS)
        lat, lon, line = place(postal_code)
        sites.append(DemoSite(f"{org_id}-studio", org_id, org_name, line, postal_code, lat, lon))
        fields = role_fields(staff, GYM_PAYERS, [8.0, 10.0, 12.0, 15.0])
        roles.append(
            DemoRole(
                f"indie-{pro_id}", pro_id, given, family, org_id, f"{org_id}-studio", credentials, fields,
                staff.only_condition_groups, staff.paused_days,
            )
        )  # fmt: skip
    return DemoNetwork(organizations, sites, roles)


@transaction.atomic
def demo_network_load() -> int:
    """Create what is missing of the demo network; return how many roles were created."""
    now = timezone.now()
    today = now.date()
    spec = demo_network_spec()
    types = {t.slug: t for t in CredentialType.objects.all()}
    groups = {g.slug: g for g in ConditionGroup.objects.all()}
    organizations = {}
    for org_id, name, kind in spec.organizations:
        organizations[org_id], _ = Organization.objects.get_or_create(
            fhir_id=org_id, defaults={"name": name, "kind": kind}
        )
    sites = {}
    for s in spec.sites:
        sites[s.fhir_id], _ = Site.objects.get_or_create(
            fhir_id=s.fhir_id,
            defaults={
                "organization": organizations[s.organization_id],
                "name": s.name,
                "line": s.line,
                "city": "Springfield",
                "state": "IL",
                "postal_code": s.postal_code,
                "latitude": s.latitude,
                "longitude": s.longitude,
            },
        )
    created = 0
    for r in spec.roles:
        professional, new = Professional.objects.get_or_create(
            fhir_id=r.professional_id, defaults={"given_name": r.given, "family_name": r.family}
        )
        if new:  # credentials belong to the person: made once, whatever their number of roles
            for c in r.credentials:
                if c.slug not in types:
                    continue  # an admin removed the type: the demo does without it
                Credential.objects.create(
                    professional=professional,
                    type=types[c.slug],
                    number=f"DEMO-{c.slug.upper()}-{r.professional_id}",
                    issuer=types[c.slug].issuer,
                    expires_on=today + dt.timedelta(days=c.expires_in_days),
                    verified_by="demo" if c.verified else "",
                    verified_at=now if c.verified else None,
                )
        fields = dict(r.fields)
        if r.paused_days:
            fields["paused_until"] = today + dt.timedelta(days=r.paused_days)
        role, new_role = ProfessionalRole.objects.get_or_create(
            fhir_id=r.fhir_id,
            defaults={
                "professional": professional,
                "organization": organizations[r.organization_id],
                "site": sites[r.site_id],
                "email": f"{r.professional_id}@{r.organization_id}.example.org",
                **fields,
            },
        )
        if new_role and r.only_condition_groups:
            role.only_condition_groups.set([groups[g] for g in r.only_condition_groups if g in groups])
        created += new_role
    return created
