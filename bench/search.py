"""FHIR search over real HTTP on PostgreSQL with 100,000 referrals: p50 and p99 per parameter type.

    cd /work/main && .venv/bin/python -m bench.search [--referrals 100000] [--requests 200]

Recreates a PostgreSQL database, migrates it, registers an EHR client, fills it with ``--referrals`` referral
Tasks (each with its ServiceRequest and Patient, every other one with an offer: a child Task ``partOf`` it), as
store.py would have stored and indexed them, then starts the hub under gunicorn and times searches that each
match up to about 1,000 resources: a date range, tokens, a reference, :missing, _include, _sort and _total, each
with the default page (_count=20) and with _count=100. Prints p50 and p99 per search and PASS/FAIL against the
target (p99 < 50 ms). A measurement, not a test: the exit code is 0 whatever the figures, 2 when setup breaks.
See bench/README.md.
"""

import argparse
import datetime as dt
import http.client
import json
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

import orjson
import psycopg

from bench.intake import (
    Server,
    SetupError,
    bench_env,
    database_recreate,
    free_port,
    log_tail,
    run_checked,
    server_start,
    server_stop,
    server_wait,
    token_get,
)
from fhir_bridge.examples import scenario2_bundle
from fhir_bridge.search_params import search_values
from fhir_bridge.smart_keys import generate_private_key, public_jwks

MAX_P99_MS = 50.0
DAYS = 1000  # the referrals' lastUpdated are spread over this many days before the run's start
ORGANIZATIONS = 100  # requesters: each one's referrals are 1/100 of them
RARE_STATUSES = ("in-progress", "on-hold", "accepted", "completed")  # each 1 % of the referrals; the rest requested


def _templates() -> dict[str, dict]:
    bundle = scenario2_bundle(identifier="template")
    return {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}


def fill(database_url: str, clinic_id: int, referrals: int, seed: int) -> int:
    """COPY the referrals' resources and their search tokens into the database; the number of resources."""
    rng = random.Random(seed)
    templates = _templates()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with psycopg.connect(database_url) as conn:
        next_id = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM fhir_bridge_storedresource").fetchone()[0]
        rows, tokens = [], []

        def add(content: dict, moment: dt.datetime) -> None:
            nonlocal next_id
            content["meta"] = {"versionId": "1", "lastUpdated": moment.isoformat().replace("+00:00", "Z")}
            rows.append((next_id, content["resourceType"], content["id"], clinic_id, moment.isoformat(), orjson.dumps(content).decode()))
            for param, value in search_values(content):
                tokens.append((next_id, clinic_id, content["resourceType"], param, value))
            next_id += 1

        for i in range(referrals):
            moment = now - dt.timedelta(days=DAYS * (i / referrals), seconds=rng.randrange(86_400))
            patient = dict(templates["Patient"], id=f"p-{i}", identifier=[{"system": "urn:bench:mrn", "value": f"mrn-{i}"}])
            service_request = dict(
                templates["ServiceRequest"], id=f"sr-{i}", subject={"reference": f"Patient/p-{i}"},
                identifier=[{"system": "urn:ehr:servicerequest", "value": f"bench-{i}"}],
            )
            task = dict(
                templates["Task"], id=f"t-{i}", focus={"reference": f"ServiceRequest/sr-{i}"},
                status=RARE_STATUSES[i % 100] if i % 100 < len(RARE_STATUSES) else "requested",
                requester={"reference": f"Organization/org-{i % ORGANIZATIONS}"},
                identifier=[{"system": "urn:ehr:task", "value": f"bench-{i}"}],
            )
            task["for"] = {"reference": f"Patient/p-{i}"}
            add(patient, moment)
            add(service_request, moment)
            add(task, moment)
            if i % 2 == 0:
                offer = dict(
                    templates["Task"], id=f"o-{i}", status="requested", partOf=[{"reference": f"Task/t-{i}"}],
                    focus={"reference": f"ServiceRequest/sr-{i}"}, owner={"reference": f"PractitionerRole/role-{i % 500}"},
                    requester={"reference": "Organization/hub"}, identifier=[],
                )
                offer["for"] = {"reference": f"Patient/p-{i}"}
                add(offer, moment)
        with conn.cursor() as cur:
            with cur.copy(
                "COPY fhir_bridge_storedresource (id, resource_type, fhir_id, clinic_id, last_updated, content, "
                "version_id, is_deleted) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row((*row, 1, False))
            with cur.copy(
                "COPY fhir_bridge_searchtoken (resource_id, clinic_id, resource_type, param, value) FROM STDIN"
            ) as copy:
                for token in tokens:
                    copy.write_row(token)
            cur.execute(
                "SELECT setval(pg_get_serial_sequence('fhir_bridge_storedresource', 'id'), "
                "(SELECT max(id) FROM fhir_bridge_storedresource))"
            )
        conn.commit()
        # VACUUM as well as ANALYZE, as autovacuum keeps a live database: rows just COPYed carry no hint bits and
        # no visibility map, so the timed searches would otherwise be the first to read each page, dirtying it
        # as they go (seconds per search on a loaded machine), which no running hub sees.
        conn.autocommit = True
        conn.execute("VACUUM (ANALYZE) fhir_bridge_storedresource")
        conn.execute("VACUUM (ANALYZE) fhir_bridge_searchtoken")
        return len(rows)


def searches(rng: random.Random, referrals: int) -> dict[str, callable]:
    """Each search, as a function giving the next query (new values each time, so no two are the same)."""
    per_day = referrals / DAYS
    # days whose Tasks (referrals and offers) number about 1,000 (all of them but one day, on a small fill)
    window = min(max(1, round(1000 / (per_day * 1.5))), DAYS - 1)
    today = dt.date.today()

    def day_range():
        start = today - dt.timedelta(days=rng.randrange(window, DAYS))
        return [("_lastUpdated", f"ge{start.isoformat()}"), ("_lastUpdated", f"lt{(start + dt.timedelta(days=window)).isoformat()}")]

    def requester():
        return [("requester", f"Organization/org-{rng.randrange(ORGANIZATIONS)}")]

    return {
        "date range (_lastUpdated ge/lt)": day_range,
        "token (status, 1 %)": lambda: [("status", rng.choice(RARE_STATUSES))],
        "token (identifier system|value)": lambda: [("identifier", f"urn:ehr:task|bench-{rng.randrange(referrals)}")],
        "token (code system|, with a date range)": lambda: [("code", "http://hl7.org/fhir/CodeSystem/task-code|"), *day_range()],
        "reference (requester)": requester,
        "reference :missing (part-of, date range)": lambda: [("part-of:missing", "true"), *day_range()],
        "_include (Task:patient, Task:focus)": lambda: [*requester(), ("_include", "Task:patient"), ("_include", "Task:focus")],
        "_revinclude (Task:part-of)": lambda: [*requester(), ("_revinclude", "Task:part-of")],
        "_sort (-_lastUpdated)": lambda: [*requester(), ("_sort", "-_lastUpdated")],
        "_sort (_id)": lambda: [*requester(), ("_sort", "_id")],
        "_total=accurate": lambda: [*requester(), ("_total", "accurate")],
        "_summary=count": lambda: [*day_range(), ("_summary", "count")],
    }


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1] * 1000


def time_search(port: int, token: str, make_query, requests: int, count: int | None) -> tuple[list[float], list[int], int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    latencies, statuses, most = [], [], 0
    for n in range(requests + 5):  # the first five warm the worker's plans and connection, untimed
        query = make_query() + ([("_count", str(count))] if count is not None else [])
        started = time.perf_counter()
        conn.request("GET", "/fhir/Task?" + urlencode(query), headers=headers)
        response = conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        if n >= 5:
            latencies.append(elapsed)
            statuses.append(response.status)
            if response.status == 200:
                most = max(most, json.loads(body).get("total", 0))
    conn.close()
    return latencies, statuses, most


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__.split("\n\n")[0])
    parser.add_argument("--referrals", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per search and page size")
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432", help="PostgreSQL URL")
    parser.add_argument("--database", default="hub_bench_search", help="dropped and recreated")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reuse", action="store_true", help="time the database an earlier run filled (same --referrals)")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    run = uuid.uuid4().hex[:8]
    database_url = f"{args.server.rstrip('/')}/{args.database}"
    work = Path(tempfile.mkdtemp(prefix=f"hub-bench-search-{run}-"))
    env = bench_env(database_url, str(work / "var"), "filesystem://")
    hub = Server("hub", free_port(), work / "hub-gunicorn.log")
    try:
        if not args.reuse:
            database_recreate(args.server.rstrip("/"), args.database)
        run_checked([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, what="migrate")
        key = generate_private_key("EC")
        registered = run_checked([sys.executable, "-m", "bench.setup_client"], env=env, what="registering the EHR client",
                                 stdin=json.dumps(public_jwks(key)))
        ids = json.loads(registered.strip().splitlines()[-1])
        if not args.reuse:
            started = time.perf_counter()
            stored = fill(database_url, ids["clinic_id"], args.referrals, args.seed)
            print(f"filled {args.referrals} referrals ({stored} resources) in {time.perf_counter() - started:.0f} s")
        server_start(hub, "config.wsgi:application", env=env, workers=args.workers)
        server_wait(hub, "/healthz")
        token = token_get(hub.port, client_id=ids["client_id"], key=key)
    except SetupError as exc:
        server_stop(hub)
        print(f"setup failed: {exc}", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    failed = []
    try:
        print(f"{'search':<44} {'_count':>6} {'p50 ms':>8} {'p99 ms':>8} {'max total':>10}  non-200")
        for name, make_query in searches(rng, args.referrals).items():
            for count in (None, 100):
                latencies, statuses, most = time_search(hub.port, token, make_query, args.requests, count)
                p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
                bad = sum(1 for s in statuses if s != 200)
                print(f"{name:<44} {count or 20:>6} {p50:8.1f} {p99:8.1f} {most:>10}  {bad}")
                if p99 >= MAX_P99_MS or bad:
                    failed.append(f"{name} _count={count or 20}")
    finally:
        server_stop(hub)
    print()
    print(f"{'FAIL' if failed else 'PASS'}  p99 < {MAX_P99_MS:.0f} ms for every search" + (f": {', '.join(failed)}" if failed else ""))
    if failed:
        print(log_tail(hub.log, 5))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
