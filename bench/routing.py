"""Routing benchmark: 1,000 referrals routed against synthetic networks of 1k, 10k and 100k professionals,
on PostgreSQL. Prints p50 and p99 per decision for each size, and how they grow.

    .venv/bin/python bench/routing.py [--sizes 1000,10000,100000] [--referrals 1000] [--seed 7]
    .venv/bin/python bench/routing.py --sizes 10000 --profile cprofile   # or pyinstrument (not a dependency)

It drops and re-creates the database ``hub_bench_routing`` (``--database``; give each concurrent run its own)
on 127.0.0.1:5432 (user postgres; BENCH_PG_URL to change the server), migrates it, and for each size
bulk-creates a network spread over US ZIP centroids, vacuums and analyzes it (as autovacuum keeps a live
database: statistics for the planner, the visibility map for index-only scans), then routes the referrals one
after another through referrals.offers.referral_route. It times the whole service and, within it:

- the decision: the referral's lock, the read-only plan (timed on its own too), the capacity claim under the
  chosen role's lock, and the stored RoutingDecision with every candidate, its exclusions and its score;
- the offer: its row, its event and its child Task (FHIR);
- the referral's update: business status, the gist's note, and the referral Task's next version (FHIR).

``--profile`` also profiles the routing loop of each size (the timings then include the profiler's overhead).

Targets: p99 < 20 ms at 10k and < 100 ms at 100k, growing sub-linearly with the network.
"""

import argparse
import datetime as dt
import os
import secrets
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SERVER = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
DATABASE = "hub_bench_routing"


def database_fresh(database: str) -> None:
    import psycopg

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}"')


def django_start(database: str) -> None:
    os.environ["DATABASE_URL"] = f"{SERVER}/{database}"
    os.environ["DEBUG"] = "false"  # no query log kept in memory
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


# Referral reasons, roughly as an exercise-referral clinic sees them: (weight, codes).
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
REASONS = [
    (30, ["Z72.3"]),
    (12, ["I10"]),
    (12, ["E11.9"]),
    (8, ["E11.9", "I10"]),
    (8, ["I25.10"]),
    (10, ["M54.50"]),
    (5, ["M17.11"]),
    (8, ["E66.9"]),
    (4, ["J44.9"]),
    (3, ["C50.911"]),
]
# Credential mixes of one professional: (weight, slugs).
CREDENTIAL_MIXES = [
    (25, ["acsm-cpt"]),
    (10, ["eim-1", "acsm-cpt"]),
    (15, ["acsm-ep"]),
    (10, ["eim-2", "acsm-ep"]),
    (12, ["acsm-cep"]),
    (4, ["eim-3", "acsm-cep"]),
    (10, ["pt-license"]),
    (5, ["cardiac-rehab", "acsm-cep"]),
    (5, ["issa-et"]),
    (4, ["acsm-cet", "acsm-ep"]),
]


def weighted(rng: random.Random, table):
    return rng.choices([v for _, v in table], weights=[w for w, _ in table])[0]


def network_build(size: int, rng: random.Random, zips: list) -> None:
    """``size`` professionals, one role each, four to an organization, one site per organization."""
    from django.utils import timezone

    from network.models import Credential, CredentialType, Organization, Professional, ProfessionalRole, Site

    types = dict(CredentialType.objects.values_list("slug", "id"))
    today = timezone.now().date()
    now = timezone.now()
    n_orgs = max(1, size // 4)
    kinds = ["gym", "ymca", "cardiac-rehab", "wellness", "clinic", "practice"]
    orgs = Organization.objects.bulk_create(
        [
            Organization(
                fhir_id=f"org-{i}",
                name=f"Organization {i}",
                kind=rng.choice(kinds),
                active=rng.random() > 0.02,
                paused_until=today + dt.timedelta(days=30) if rng.random() < 0.02 else None,
            )
            for i in range(n_orgs)
        ],
        batch_size=5000,
    )
    sites = []
    for i, org in enumerate(orgs):
        zip_code, lat, lon, state = rng.choice(zips)
        sites.append(
            Site(
                organization=org,
                fhir_id=f"site-{i}",
                name=f"Site {i}",
                state=state,
                postal_code=zip_code,
                latitude=lat + rng.uniform(-0.03, 0.03),
                longitude=lon + rng.uniform(-0.03, 0.03),
            )
        )
    sites = Site.objects.bulk_create(sites, batch_size=5000)
    pros = Professional.objects.bulk_create(
        [
            Professional(
                fhir_id=f"pro-{i}", family_name=f"Family{i}", given_name="Sam", active=rng.random() > 0.01
            )
            for i in range(size)
        ],
        batch_size=5000,
    )
    roles, credentials = [], []
    for i, pro in enumerate(pros):
        site = sites[i // 4 % len(sites)]
        languages = ["en"] + (["es"] if rng.random() < 0.2 else []) + (["zh"] if rng.random() < 0.03 else [])
        roles.append(
            ProfessionalRole(
                fhir_id=f"role-{i}",
                professional=pro,
                organization_id=site.organization_id,
                site=site,
                active=rng.random() > 0.03,
                accepting=rng.random() > 0.05,
                paused_until=today + dt.timedelta(days=14) if rng.random() < 0.05 else None,
                max_active_cases=rng.randint(3, 20),
                languages=languages,
                offers_in_person=rng.random() > 0.1,
                offers_group=rng.random() < 0.2,
                offers_virtual=rng.random() < 0.15,
                payers=rng.sample(["medicare", "medicaid", "self-pay", "silver-sneakers", "aetna"], k=2),
                service_radius_km=rng.choice([8.0, 16.0, 24.0, 40.0, 80.0]),
            )
        )
        for slug in weighted(rng, CREDENTIAL_MIXES):
            roll = rng.random()
            credentials.append(
                Credential(
                    professional=pro,
                    type_id=types[slug],
                    number=f"{slug}-{i}",
                    expires_on=today - dt.timedelta(days=10)
                    if roll < 0.08
                    else today + dt.timedelta(days=400),
                    verified_by="" if 0.08 <= roll < 0.11 else "bench",
                    verified_at=None if 0.08 <= roll < 0.11 else now,
                )
            )
    ProfessionalRole.objects.bulk_create(roles, batch_size=5000)
    Credential.objects.bulk_create(credentials, batch_size=5000)
    history_build(roles, rng)


def history_build(roles: list, rng: random.Random) -> None:
    """A year of past offers, so that scoring has answers to read and the planner sees a real offer table: one
    completed referral per four roles (at most 10,000), each accepted by one role after zero to two declines
    or
    expiries elsewhere."""
    from django.utils import timezone

    from referrals.models import Clinic, Offer, Referral, RoutingDecision

    now = timezone.now()
    clinic = Clinic.objects.create(name="Past clinic", slug="bench-past-clinic")
    count = min(len(roles) // 4, 10_000)
    referrals = Referral.objects.bulk_create(
        [
            Referral(clinic=clinic, owner_reference="Organization/hub", status="completed")
            for _ in range(count)
        ],
        batch_size=5000,
    )
    decisions = RoutingDecision.objects.bulk_create(
        [RoutingDecision(referral=r, trigger="initial", outcome="offered", gist="past") for r in referrals],
        batch_size=5000,
    )
    offers = []
    for referral, decision in zip(referrals, decisions):
        created = now - dt.timedelta(days=rng.uniform(1, 300))
        for status in ["rejected", "expired"][: rng.randint(0, 2)] + ["accepted"]:
            seconds = rng.randint(600, 172_800) if status != "expired" else None
            offers.append(
                Offer(
                    referral=referral,
                    role=(role := rng.choice(roles)),
                    organization_id=role.organization_id,
                    decision=decision,
                    status=status,
                    created_at=created,
                    deadline=created + dt.timedelta(hours=48),
                    response_seconds=seconds,
                    responded_at=created + dt.timedelta(seconds=seconds) if seconds else None,
                    decline_reason="No room" if status == "rejected" else "",
                )
            )
    Offer.objects.bulk_create(offers, batch_size=5000)


def referrals_build(count: int, rng: random.Random, zips: list):
    from django.utils import timezone
    from referrals.risk import Screening
    from referrals.routing import PatientFacts

    from fhir_bridge.models import StoredResource
    from referrals.models import ClinicalFacts, Clinic, Referral

    clinics = [Clinic.objects.create(name=f"Clinic {i}", slug=f"bench-clinic-{i}") for i in range(20)]
    referrals, facts, codes = [], [], []
    for _ in range(count):
        zip_code, lat, lon, state = rng.choice(zips)
        referrals.append(
            Referral(
                clinic=rng.choice(clinics),
                owner_reference="Organization/hub",
                patient_postal_code=zip_code,
            )
        )
        codes.append([{"system": ICD, "code": c} for c in weighted(rng, REASONS)])
        geolocated = rng.random() < 0.5
        facts.append(
            PatientFacts(
                latitude=lat + rng.uniform(-0.05, 0.05) if geolocated else None,
                longitude=lon + rng.uniform(-0.05, 0.05) if geolocated else None,
                postal_code=zip_code,
                clearance=rng.choice(["moderate", "moderate", "vigorous", "light", None]),
                screening=Screening(
                    currently_active=rng.random() < 0.3, known_disease=None, symptoms=rng.random() < 0.05
                )
                if rng.random() < 0.6
                else None,
                required_language="es" if rng.random() < 0.05 else "",
                virtual_allowed=rng.random() < 0.25,
                preferred_delivery=rng.choice(["", "", "in-person", "group", "virtual"]),
                payer=rng.choice(["", "medicare", "self-pay"]),
            )
        )
    referrals = Referral.objects.bulk_create(referrals, batch_size=1000)
    # The record routing reads (intake writes it from the FHIR; here the facts routing is handed directly).
    ClinicalFacts.objects.bulk_create(
        [
            ClinicalFacts(
                referral=r,
                condition_codes=c,
                latitude=f.latitude,
                longitude=f.longitude,
                location_source="geolocation" if f.latitude is not None else "",
                clearance=f.clearance or "",
                required_language=f.required_language,
                payer=f.payer,
            )
            for r, c, f in zip(referrals, codes, facts)
        ],
        batch_size=1000,
    )
    now = timezone.now()
    StoredResource.objects.bulk_create(
        [
            StoredResource(
                resource_type="Task",
                fhir_id=(task_id := uuid.uuid4().hex),
                clinic_id=r.clinic_id,
                referral=r,
                last_updated=now,
                content={"resourceType": "Task", "id": task_id, "status": "requested", "intent": "order"},
            )
            for r in referrals
        ],
        batch_size=1000,
    )
    return list(zip(referrals, facts))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def reset() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE network_organization, network_professional, referrals_clinic, referrals_referral, "
            "fhir_bridge_searchtoken "
            "RESTART IDENTITY CASCADE"
        )


def profiler_start(kind: str):
    if kind == "cprofile":
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        return profiler
    from pyinstrument import Profiler  # pip install pyinstrument (into the venv; not a project dependency)

    profiler = Profiler(interval=0.0005)
    profiler.start()
    return profiler


def profiler_report(kind: str, profiler, size: int) -> None:
    print(f"--- profile at {size:,} professionals ({kind})", flush=True)
    if kind == "cprofile":
        import pstats

        profiler.disable()
        pstats.Stats(profiler).sort_stats(os.environ.get("BENCH_PROFILE_SORT", "cumulative")).print_stats(int(os.environ.get("BENCH_PROFILE_LINES", "30")))
    else:
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False))


def run_size(size: int, n_referrals: int, rng: random.Random, zips: list, profile: str = "") -> dict:
    import referrals.offers as services
    from django.db import connection

    from network.geo import zip_place

    reset()
    t0 = time.perf_counter()
    network_build(size, rng, zips)
    work = referrals_build(n_referrals, rng, zips)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    built = time.perf_counter() - t0
    zip_place("10001")  # load the ZIP table once, outside the timings

    plan_times: list[float] = []
    update_times: list[float] = []
    offer_times: list[float] = []
    real_plan, real_update, real_offer = services.routing_plan, services.referral_update, services._offer_create

    def timed(real, times):
        def call(**kwargs):
            start = time.perf_counter()
            try:
                return real(**kwargs)
            finally:
                times.append(time.perf_counter() - start)

        return call

    queries = [0]

    def count_queries(execute, sql, params, many, context):
        queries[0] += 1
        return execute(sql, params, many, context)

    route_times, offered, considered, truncated = [], 0, [], 0
    services.routing_plan = timed(real_plan, plan_times)
    services.referral_update = timed(real_update, update_times)
    services._offer_create = timed(real_offer, offer_times)
    profiler = profiler_start(profile) if profile else None
    try:
        with connection.execute_wrapper(count_queries):
            for referral, facts in work:
                offers_before = len(offer_times)
                start = time.perf_counter()
                outcome = services.referral_route(referral=referral, patient=facts)
                route_times.append(time.perf_counter() - start)
                if len(offer_times) == offers_before:  # nobody to offer it to: no offer written
                    offer_times.append(0.0)
                offered += outcome.offer is not None
                considered.append(outcome.decision.summary.get("considered", 0))
                truncated += bool(outcome.decision.summary.get("pool", {}).get("in_person_truncated"))
    finally:
        services.routing_plan, services.referral_update, services._offer_create = real_plan, real_update, real_offer
    if profiler is not None:
        profiler_report(profile, profiler, size)
    # The routing decision proper: everything referral_route does but writing its consequences, the offer and
    # the referral's update (each with its FHIR Task).
    decision_times = [r - u - o for r, u, o in zip(route_times, update_times, offer_times)]
    offers = [o for o in offer_times if o]
    ms = 1000.0
    return {
        "size": size,
        "built_s": built,
        "route_p50": percentile(route_times, 0.50) * ms,
        "route_p99": percentile(route_times, 0.99) * ms,
        "route_max": max(route_times) * ms,
        "decision_p50": percentile(decision_times, 0.50) * ms,
        "decision_p99": percentile(decision_times, 0.99) * ms,
        "update_p50": percentile(update_times, 0.50) * ms,
        "update_p99": percentile(update_times, 0.99) * ms,
        "offer_p50": percentile(offers, 0.50) * ms if offers else 0.0,
        "offer_p99": percentile(offers, 0.99) * ms if offers else 0.0,
        "plan_p50": percentile(plan_times, 0.50) * ms,
        "plan_p99": percentile(plan_times, 0.99) * ms,
        "queries": queries[0] / len(work),
        "offered": offered / len(work),
        "considered": statistics.mean(considered),
        "truncated": truncated / len(work),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--referrals", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", choices=["cprofile", "pyinstrument"], help="profile the routing loop")
    # Two runs on one server must not share a database: each drops and re-creates its own.
    parser.add_argument("--database", default=DATABASE, help=f"dropped and re-created (default {DATABASE})")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    database_fresh(args.database)
    django_start(args.database)
    import zipcodes

    zips = [
        (z["zip_code"], float(z["lat"]), float(z["long"]), z["state"])
        for z in zipcodes.list_all()
        if z.get("active")
        and z.get("zip_code_type") == "STANDARD"
        and float(z["lat"] or 0) != 0.0
        and z["state"] not in ("AK", "HI", "PR", "VI", "GU", "AS", "MP", "AA", "AE", "AP")
    ]
    rng = random.Random(args.seed)
    rows = []
    for size in sizes:
        row = run_size(size, args.referrals, rng, zips, profile=args.profile or "")
        rows.append(row)
        print(
            f"{size:>7,} professionals: decision p50 {row['decision_p50']:6.2f} ms"
            f"  p99 {row['decision_p99']:6.2f} ms"
            f" | plan p50 {row['plan_p50']:6.2f}  p99 {row['plan_p99']:6.2f}\n"
            f"{'':>23}offer p50 {row['offer_p50']:6.2f}  p99 {row['offer_p99']:6.2f}"
            f" | referral update p50 {row['update_p50']:6.2f}  p99 {row['update_p99']:6.2f}"
            f" | whole referral_route p50 {row['route_p50']:6.2f}  p99 {row['route_p99']:6.2f}"
            f"  max {row['route_max']:5.0f}\n"
            f"{'':>23}{row['queries']:.1f} queries per route,"
            f" {row['considered']:.0f} candidates considered on average,"
            f" {row['offered']:.0%} offered, {row['truncated']:.0%} pools truncated;"
            f" built in {row['built_s']:.0f} s",
            flush=True,
        )
    print()
    for before, after in zip(rows, rows[1:]):
        print(
            f"{before['size']:,} → {after['size']:,} (×{after['size'] / before['size']:g}):"
            f" decision p50 ×{after['decision_p50'] / before['decision_p50']:.2f},"
            f" p99 ×{after['decision_p99'] / before['decision_p99']:.2f};"
            f" whole route p50 ×{after['route_p50'] / before['route_p50']:.2f},"
            f" p99 ×{after['route_p99'] / before['route_p99']:.2f}"
        )
    targets = {10_000: 20.0, 100_000: 100.0}
    for row in rows:
        if row["size"] in targets:
            for what, label in (("decision", "decision"), ("route", "whole referral_route")):
                p99 = row[f"{what}_p99"]
                verdict = "meets" if p99 < targets[row["size"]] else "misses"
                print(
                    f"{label} p99 at {row['size']:,}: {p99:.1f} ms {verdict}"
                    f" the {targets[row['size']]:g} ms target"
                )


if __name__ == "__main__":
    main()
