"""Profile the hub's Bundle intake in one process (Django test client), to find where a worker's time goes.

    cd /work/main && .venv/bin/python -m bench.profile_intake [--bundles 300] [--sort tottime]
    cd /work/main && .venv/bin/python -m bench.profile_intake --profiler pyinstrument  # needs pyinstrument

Needs the database ``bench.intake`` leaves behind (hub_bench, with its EHR client); the hub's settings are the
same as in the benchmark (DEBUG off, LOG_LEVEL=WARNING, PostgreSQL). Prints the SQL queries one request makes,
the share of time spent in the database, and the top functions.
"""

import argparse
import atexit
import cProfile
import io
import os
import secrets
import pstats
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_intake")
    parser.add_argument("--bundles", type=int, default=300)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/hub_bench")
    parser.add_argument("--sort", default="tottime", choices=["tottime", "cumulative"])
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", help="also write the profile here (cProfile stats, or pyinstrument HTML)")
    parser.add_argument("--profiler", default="cprofile", choices=["cprofile", "pyinstrument"],
                        help="cProfile (exact call counts; inflates Python-heavy code) or pyinstrument")
    parser.add_argument("--server-side-binding", action="store_true",
                        help="experiment: DATABASES OPTIONS server_side_binding=True")
    args = parser.parse_args(argv)

    var_dir = tempfile.mkdtemp(prefix="hub-profile-")
    atexit.register(shutil.rmtree, var_dir, True)
    os.environ.update(  # all set, so that a .env in the checkout changes nothing
        HUB_PUBLIC_BASE_URL="",
        DATABASE_CONN_MAX_AGE="60",
        SECURE_PROXY_SSL_HEADER_NAME="",
        DATABASE_URL=args.database_url,
        SECRET_KEY=secrets.token_urlsafe(50),
        DEBUG="false",
        HUB_SSL_REDIRECT="false",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_LEVEL="WARNING",
        HUB_ACCESS_TOKEN_SECONDS="3600",
        HUB_VAR_DIR=var_dir,
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    import django

    if args.server_side_binding:
        from django.conf import settings

        settings.DATABASES["default"].setdefault("OPTIONS", {})["server_side_binding"] = True
    django.setup()
    import orjson
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from fhir_bridge.examples import scenario2_bundle
    from fhir_bridge.models import EhrClient
    from fhir_bridge.smart_scopes import DEFAULT_SCOPES
    from fhir_bridge.smart_tokens import access_token_encode

    ehr = EhrClient.objects.filter(is_active=True).order_by("id").first()
    if ehr is None:
        print("no EHR client in the database: run `python -m bench.intake` first", file=sys.stderr)
        return 2
    token, _ = access_token_encode(client=ehr, scopes=list(DEFAULT_SCOPES))
    run = uuid.uuid4().hex[:8]
    bodies = [
        orjson.dumps(scenario2_bundle(identifier=f"profile-{run}-{i}", family=f"Profile{i}"))
        for i in range(args.bundles + 21)
    ]
    client = Client(HTTP_HOST="127.0.0.1")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}", "HTTP_PREFER": "return=minimal"}

    def post(body: bytes) -> int:
        return client.post("/fhir", data=body, content_type="application/fhir+json", **headers).status_code

    for body in bodies[:20]:  # warm up: imports, url resolution, pydantic schemas
        assert post(body) == 200, post(body)

    with CaptureQueriesContext(connection) as queries:
        status = post(bodies[20])
    print(f"one Bundle: status {status}, {len(queries.captured_queries)} SQL queries")
    for q in queries.captured_queries:
        print(f"  {float(q['time']) * 1000:6.2f} ms  {q['sql'][:150]}")

    # Wall time, then the same work under the profiler.
    timed = bodies[21:]
    half = len(timed) // 2
    started = time.perf_counter()
    for body in timed[:half]:
        post(body)
    per_request = (time.perf_counter() - started) / half * 1000
    print(f"\nunprofiled: {per_request:.1f} ms per Bundle in one process ({1000 / per_request:.0f}/s)")

    if args.profiler == "pyinstrument":
        from pyinstrument import Profiler

        sampler = Profiler(interval=0.0005)
        sampler.start()
        for body in timed[half:]:
            post(body)
        sampler.stop()
        if args.out:
            Path(args.out).write_text(sampler.output_html())
        print(sampler.output_text(unicode=False, color=False, show_all=False))
        return 0

    profiler = cProfile.Profile()
    profiler.enable()
    for body in timed[half:]:
        post(body)
    profiler.disable()
    if args.out:
        profiler.dump_stats(args.out)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats(args.sort).print_stats(args.top)
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
