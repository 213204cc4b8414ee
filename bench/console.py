"""Console benchmark: every admin-console page with 100,000 referrals on PostgreSQL. Prints each page's queries,
p50, p95 and max, and how long the milestones rollup takes to refresh (in full, and incrementally).

    .venv/bin/python -m bench.console [--referrals 100000] [--weeks 52] [--clinics 20] [--requests 100]

It drops and re-creates the database ``hub_bench_console`` (``--database``) on 127.0.0.1:5432 (user postgres;
BENCH_PG_URL to change the server), migrates it, loads the demo network (about 50 professionals), and writes
``--referrals`` referrals of ``--clinics`` clinics over ``--weeks`` weeks with console/history.py's bulk writer
(routing decisions, offers and their events, sessions, PAVS check-ins, discharge reports, events: every stage of
the funnel). Then it refreshes the rollup, vacuums and analyzes, and times each page of PAGES through Django's
test client in this process (the whole request: middleware, session, second-factor check, selectors, template),
``--requests`` times each after a warm-up, as a network admin (sees all) and as a clinic admin (one clinic).

Target: p95 < 300 ms per page (issue 13), the overview's both from its cache and computed afresh (its figures
are cached until the next rollup refresh). Add a page: one row in PAGES.
"""

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.routing import database_fresh  # noqa: E402 (after the path is set)
from bench.workspace import django_start, timed  # noqa: E402

TARGET_MS = 300.0

# (name, who: "network" | "clinic", URL; "{referral}" is a referral of the clinic admin's clinic, "{report}" its
# discharge report's public id, "{clinic}" that clinic's id).
PAGES = [
    ("overview (network admin, default window)", "network", "/console/"),
    ("overview (network admin, 52 weeks)", "network", "/console/?received_from={year_ago}"),
    ("overview (clinic admin)", "clinic", "/console/"),
    ("overview (network admin, clinic + group)", "network", "/console/?clinic={clinic}&condition_group=cardiovascular"),
    ("referral list page 1 (network admin)", "network", "/console/referrals"),
    ("referral list page 50 (clinic admin)", "clinic", "/console/referrals?page=50"),
    ("referral timeline (clinic admin)", "clinic", "/console/referrals/{referral}"),
    ("work queues (network admin)", "network", "/console/queues"),
    ("work queues (clinic admin)", "clinic", "/console/queues"),
    ("network page 1 (network admin)", "network", "/console/network"),
    ("network search (network admin)", "network", "/console/network?q=a"),
    ("scorecards (clinic admin)", "clinic", "/console/scorecards"),
    ("audit log page 1 (network admin)", "network", "/console/audit"),
]


def data_build(*, referrals: int, weeks: int, clinics: int, seed: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from console.history import history_generate
    from console.models import ConsoleRole
    from network.demo import demo_network_load
    from referrals.models import Clinic, Referral, ReportKind

    demo_network_load()
    made = Clinic.objects.bulk_create([Clinic(name=f"Bench Clinic {n}", slug=f"bench-{n}") for n in range(clinics)])
    start = time.perf_counter()
    counts = history_generate(
        referrals=referrals, weeks=weeks, clinics=made, now=timezone.now(), seed=seed,
        progress=lambda done: print(f"  {done} referrals written", end="\r", flush=True),
    )
    print(f"seeded in {time.perf_counter() - start:.0f} s: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    User = get_user_model()
    network = User.objects.create_user("bench-network", password="x")
    ConsoleRole.objects.create(user=network, role=ConsoleRole.Role.NETWORK_ADMIN)
    clinic = User.objects.create_user("bench-clinic", password="x")
    ConsoleRole.objects.create(user=clinic, role=ConsoleRole.Role.CLINIC_ADMIN, clinic=made[0])
    completed = (
        Referral.objects.filter(clinic=made[0], reports__kind=ReportKind.DISCHARGE).order_by("id").first()
    )
    return {"network": network, "clinic": clinic, "clinic_id": made[0].pk, "referral": completed.pk}


def cold(client, url: str, requests: int) -> list[float]:
    from django.core.cache import cache

    times = []
    for _ in range(requests):
        cache.clear()
        start = time.perf_counter()
        assert client.get(url).status_code == 200, url
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--referrals", type=int, default=100_000)
    parser.add_argument("--weeks", type=int, default=52)
    parser.add_argument("--clinics", type=int, default=20)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--database", default="hub_bench_console")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()

    database_fresh(args.database)
    django_start(args.database)
    import datetime as dt

    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from referrals.funnel import milestones_refresh
    from referrals.models import Referral

    random.seed(args.seed)
    data = data_build(referrals=args.referrals, weeks=args.weeks, clinics=args.clinics, seed=args.seed)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # as a live database would have its statistics for the rollup's plan
    start = time.perf_counter()
    rows = milestones_refresh(full=True)
    full_s = time.perf_counter() - start
    # A beat run after 1 % of the referrals changed: the incremental refresh's usual work.
    changed = list(Referral.objects.order_by("?").values_list("pk", flat=True)[: max(1, args.referrals // 100)])
    Referral.objects.filter(pk__in=changed).update(updated_at=timezone.now())
    start = time.perf_counter()
    incremental = milestones_refresh()
    incremental_s = time.perf_counter() - start
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    # The outcome scorecards, as the beat task computes them (the scorecards page and routing read the result).
    from referrals.scorecards import scorecards_refresh

    start = time.perf_counter()
    cards = scorecards_refresh()
    scorecards_s = time.perf_counter() - start
    # The network page's acceptance and time to accept, as console.rollup_refresh computes them.
    from console.network import network_answers_refresh

    start = time.perf_counter()
    answers = network_answers_refresh()
    answers_s = time.perf_counter() - start
    clients = {}
    for who in ("network", "clinic"):
        clients[who] = Client()
        clients[who].force_login(data[who])
    values = {"referral": data["referral"], "clinic": data["clinic_id"],
              "year_ago": (timezone.localdate() - dt.timedelta(weeks=52)).isoformat()}
    print(f"console: {args.referrals} referrals of {args.clinics} clinics over {args.weeks} weeks; "
          f"{args.requests} requests per page, PostgreSQL")
    print(f"milestones rollup: full refresh of {rows} rows {full_s:.1f} s; incremental ({incremental} rows) "
          f"{incremental_s:.2f} s")
    print(f"outcome scorecards: {len(cards.cards)} computed ({len(cards.shown())} shown) in {scorecards_s:.2f} s")
    print(f"network answers: {len(answers.roles)} roles, {len(answers.organizations)} organizations in "
          f"{answers_s:.2f} s")
    print(f"{'page':48} {'queries':>7} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    failed = False
    for name, who, url in PAGES:
        times, queries = timed(clients[who], url.format(**values), args.requests)
        p95 = statistics.quantiles(times, n=20)[18]
        failed |= p95 >= TARGET_MS
        print(f"{name:48} {queries:>7} {statistics.median(times):8.1f} {p95:8.1f} {max(times):8.1f}")
    # The overview's figures are cached until the next rollup refresh; its first request after one computes them.
    print("overview, first request after a refresh (cache cleared before each):")
    for name, who, url in PAGES:
        if not name.startswith("overview"):
            continue
        times = cold(clients[who], url.format(**values), max(10, args.requests // 5))
        p95 = statistics.quantiles(times, n=20)[18]
        failed |= p95 >= TARGET_MS
        print(f"{name + ' (cold)':56} {statistics.median(times):8.1f} {p95:8.1f} {max(times):8.1f}")
    print(("FAIL" if failed else "PASS") + f": p95 < {TARGET_MS:.0f} ms on every page")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
