"""FHIR referral intake over real HTTP: the hub against a floor.

    cd /work/main && .venv/bin/python -m bench.intake [--bundles 1000] [--clients 16]

Creates a fresh PostgreSQL database, migrates it, registers an EHR client, starts the hub and a minimal
Django "floor" under gunicorn (2 sync workers each), and POSTs the same pre-serialized transaction Bundles to
both from concurrent clients, in interleaved rounds. Prints throughput and latency of each, the hub/floor
ratio, and PASS/FAIL against the targets. A measurement, not a test: the exit code is 0 whatever the figures,
nonzero only when setup breaks (2) or the run is interrupted (130, 143). See bench/README.md.
"""

import argparse
import http.client
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import orjson
import psycopg
from psycopg import sql

from fhir_bridge.examples import scenario2_bundle
from fhir_bridge.smart_keys import client_assertion, generate_private_key, public_jwks, token_request_form

ROOT = Path(__file__).resolve().parent.parent

# The scopes a referral Bundle needs: create on every type it carries.
SCOPES = [f"system/{t}.cruds" for t in ("Task", "ServiceRequest", "Patient", "Condition", "Observation")]

# The targets.
MIN_RATIO = 0.40  # hub throughput / floor throughput
MAX_P99_MS = 100.0  # hub p99 latency

FLOOR_TABLE_SQL = "CREATE TABLE IF NOT EXISTS bench_floor (id bigserial primary key, body jsonb not null)"
REFERRALS_SQL = "SELECT count(*) FROM referrals_referral"
FLOOR_ROWS_SQL = "SELECT count(*) FROM bench_floor"


class SetupError(Exception):
    """The benchmark could not be set up: nothing was measured."""


# --- setup --------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def secret_key() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(50))


def bench_env(database_url: str, var_dir: str, broker_url: str) -> dict[str, str]:
    """The environment of migrate, the client registration and both servers."""
    env = dict(os.environ)
    # Everything the run depends on is set here, so that a .env in the checkout (config/settings.py reads one,
    # below the real environment) cannot change it.
    env.update(
        HUB_PUBLIC_BASE_URL="",  # empty = unset: token URLs come from the request, http://127.0.0.1:PORT/...
        DATABASE_CONN_MAX_AGE="60",  # the hub's default; the floor uses the same
        SECURE_PROXY_SSL_HEADER_NAME="",
        DATABASE_URL=database_url,
        SECRET_KEY=secret_key(),
        DEBUG="false",
        HUB_SSL_REDIRECT="false",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_LEVEL="WARNING",
        HUB_ACCESS_TOKEN_SECONDS="3600",
        # The bench's load comes from one address and a few clients: its own limits, so that it never trips the
        # token endpoint's (the FHIR requests themselves have none).
        HUB_TOKEN_LIMIT_PER_CLIENT="100000",
        HUB_TOKEN_LIMIT_PER_IP="100000",
        HUB_VAR_DIR=var_dir,  # the embedded Celery broker's folders go here, not into the checkout
        # Where intake hands each new referral to the router. A real broker, as deployed; "filesystem://" measures
        # the embedded one. Nothing consumes the messages: the queue is dropped after the run.
        CELERY_BROKER_URL=broker_url,
        DJANGO_SETTINGS_MODULE="config.settings",
        PYTHONUNBUFFERED="1",
    )
    return env


def broker_empty(broker_url: str) -> None:
    """Drop the route messages the run left on a Redis broker (nothing consumed them)."""
    if broker_url.startswith("redis://"):
        import redis

        try:
            redis.Redis.from_url(broker_url).flushdb()
        except redis.RedisError as exc:
            print(f"could not empty {broker_url}: {exc}", file=sys.stderr)


def database_recreate(server_url: str, name: str) -> None:
    try:
        with psycopg.connect(f"{server_url}/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise SetupError(f"cannot recreate database {name!r} on {server_url}: {exc}") from None


def run_checked(args: list[str], *, env: dict[str, str], what: str, stdin: str | None = None) -> str:
    done = subprocess.run(args, cwd=ROOT, env=env, input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        raise SetupError(f"{what} failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def count(database_url: str, query: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query).fetchone()[0]


@dataclass
class Server:
    name: str
    port: int
    log: Path
    process: subprocess.Popen | None = None


def server_start(server: Server, app: str, *, env: dict[str, str], workers: int, threads: int = 1) -> None:
    args = [
        sys.executable, "-m", "gunicorn", app,
        "--workers", str(workers),
        # One thread: sync workers. More: gthread workers, which also keep connections alive.
        "--worker-class", "sync" if threads == 1 else "gthread",
        "--threads", str(threads),
        "--bind", f"127.0.0.1:{server.port}",
        "--log-level", "warning",
        "--error-logfile", str(server.log),
        # No --access-logfile: the access log is off. Keep-alive, timeout and backlog are gunicorn's defaults.
    ]
    with open(server.log, "ab") as log:
        # Its own session, so that a Ctrl-C in the terminal reaches only this script, which stops the server.
        server.process = subprocess.Popen(
            args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )


def server_wait(server: Server, path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SetupError(
                f"the {server.name} exited with {server.process.returncode}:\n{log_tail(server.log)}"
            )
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.2)
    raise SetupError(f"the {server.name} did not answer on port {server.port} within {timeout:.0f} s")


def server_stop(server: Server) -> None:
    process = server.process
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)  # gunicorn: quick shutdown of the master and its workers
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the process group started for this server only
        except ProcessLookupError:
            pass
        process.wait(timeout=5)


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def token_get(port: int, *, client_id: str, key) -> str:
    """A real access token from POST /auth/token (client_credentials, private_key_jwt)."""
    token_url = f"http://127.0.0.1:{port}/auth/token"
    assertion = client_assertion(key=key, kid=None, client_id=client_id, token_url=token_url)
    body = urlencode(token_request_form(assertion=assertion, scopes=SCOPES))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            "POST", "/auth/token", body=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise SetupError(f"POST /auth/token answered {response.status}: {data[:500]!r}")
    token = json.loads(data)
    granted = set(token.get("scope", "").split())
    if not set(SCOPES) <= granted:
        raise SetupError(f"the token grants {sorted(granted)}, not all of {SCOPES}")
    return token["access_token"]


def bundles(run: str, kind: str, n: int) -> list[bytes]:
    """``n`` distinct referral Bundles (new business identifiers, so none is a duplicate), as bytes."""
    return [
        orjson.dumps(scenario2_bundle(identifier=f"bench-{run}-{kind}-{i}", family=f"Bench{kind.title()}{i}"))
        for i in range(n)
    ]


# --- load ---------------------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    seconds: float  # wall time from the first request sent to the last answer read
    latencies: list[float]  # seconds, one per request
    statuses: list[int]  # HTTP status, or 0 when no answer came
    samples: dict[int, str] = field(default_factory=dict)  # status -> the first body seen (non-2xx only)

    @property
    def requests(self) -> int:
        return len(self.statuses)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def percentile_ms(self, p: float) -> float:
        ordered = sorted(self.latencies)
        rank = max(1, -(-len(ordered) * p // 100))  # nearest rank
        return ordered[int(rank) - 1] * 1000

    @property
    def non_2xx(self) -> int:
        return sum(1 for s in self.statuses if not 200 <= s < 300)

    @property
    def server_errors(self) -> int:
        return sum(1 for s in self.statuses if s >= 500)

    @property
    def no_answer(self) -> int:
        return sum(1 for s in self.statuses if s == 0)


def load(
    name: str, port: int, path: str, bodies: list[bytes], *, clients: int, headers: dict[str, str]
) -> Result:
    """POST every body once, from ``clients`` threads with a connection each."""
    n = len(bodies)
    latencies = [0.0] * n
    statuses = [0] * n
    samples: dict[int, str] = {}
    tickets = itertools.count()  # next() on it is atomic under the GIL: each body is sent exactly once
    ready = threading.Barrier(clients + 1)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        ready.wait()
        while (i := next(tickets)) < n:
            started = time.perf_counter()
            try:
                conn.request("POST", path, body=bodies[i], headers=headers)
                response = conn.getresponse()
                # Read to the end: the connection is then reused, or (when the server said Connection: close,
                # as gunicorn's sync workers do) opened again by http.client on the next request.
                data = response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                status, data = 0, repr(exc).encode()
            latencies[i] = time.perf_counter() - started
            statuses[i] = status
            if not 200 <= status < 300 and status not in samples:
                samples[status] = data[:600].decode(errors="replace")
        conn.close()

    threads = [threading.Thread(target=client, name=f"{name}-{k}", daemon=True) for k in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return Result(name, time.perf_counter() - started, latencies, statuses, samples)


def merged(name: str, parts: list[Result]) -> Result:
    """The rounds of one server as one result: every request, and the time spent on them."""
    samples: dict[int, str] = {}
    for part in parts:
        for status, body in part.samples.items():
            samples.setdefault(status, body)
    return Result(
        name,
        sum(p.seconds for p in parts),
        [x for p in parts for x in p.latencies],
        [x for p in parts for x in p.statuses],
        samples,
    )


# --- report -------------------------------------------------------------------------------------------------


def report_line(result: Result) -> str:
    return (
        f"{result.name:<5} requests {result.requests:>5}   {result.throughput:7.1f} Bundles/s   "
        f"p50 {result.percentile_ms(50):7.1f} ms   p99 {result.percentile_ms(99):7.1f} ms   "
        f"max {max(result.latencies) * 1000:7.1f} ms   non-2xx {result.non_2xx}   5xx {result.server_errors}"
        + (f"   no answer {result.no_answer}" if result.no_answer else "")
    )


def report_statuses(result: Result) -> None:
    by_status: dict[int, int] = {}
    for status in result.statuses:
        by_status[status] = by_status.get(status, 0) + 1
    print(f"      statuses: {dict(sorted(by_status.items()))}   wall {result.seconds:.2f} s")
    for status, sample in sorted(result.samples.items()):
        print(f"      first {status or 'no-answer'} body: {sample}")


def verdict(ok: bool, text: str) -> str:
    return f"{'PASS' if ok else 'FAIL'}  {text}"


# --- main ---------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.intake", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", type=int, default=1000, help="Bundles timed per server (default 1000)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent client threads (default 16)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed Bundles per server (default 30)")
    parser.add_argument(
        "--rounds", type=int, default=5,
        help="timed rounds, each a chunk to the floor then the same chunk to the hub "
             "(default 5; 1 = the floor's whole run, then the hub's)",
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per server (default 2)")
    parser.add_argument(
        "--broker", default="redis://127.0.0.1:6379/15",
        help="the hub's Celery broker (default: Redis db 15, emptied after the run; filesystem:// for the embedded one)",
    )
    parser.add_argument(
        "--threads", type=int, default=1,
        help="threads per gunicorn worker, for both servers (default 1: sync workers; more: gthread workers)",
    )
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432", help="PostgreSQL URL")
    parser.add_argument("--database", default="hub_bench", help="dropped and recreated (default hub_bench)")
    parser.add_argument(
        "--hub-app", default="config.wsgi:application",
        help="the WSGI app gunicorn serves as the hub (to try a change without editing config/)",
    )
    parser.add_argument("--hub-port", type=int, default=0, help="default: a free port")
    parser.add_argument("--floor-port", type=int, default=0, help="default: a free port")
    args = parser.parse_args(argv)
    if min(args.bundles, args.clients, args.workers, args.rounds) < 1 or args.warmup < 0:
        parser.error("--bundles, --clients, --workers and --rounds must be positive, --warmup not negative")
    args.rounds = min(args.rounds, args.bundles)
    return args


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # progress shows as it happens, even through a pipe
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C works even if started with it ignored
    run = uuid.uuid4().hex[:8]
    server_url = args.server.rstrip("/")
    database_url = f"{server_url}/{args.database}"
    work = Path(tempfile.mkdtemp(prefix=f"hub-bench-{run}-"))
    env = bench_env(database_url, str(work / "var"), args.broker)
    floor = Server("floor", args.floor_port or free_port(), work / "floor-gunicorn.log")
    hub = Server("hub", args.hub_port or free_port(), work / "hub-gunicorn.log")
    try:
        # 1. Setup: database, schema, the floor's table, a clinic and its EHR client.
        print(
            f"run {run}: database {args.database}, {args.bundles} Bundles in {args.rounds} round(s), "
            f"{args.clients} clients, {args.workers} sync workers per server, hub app {args.hub_app}"
        )
        database_recreate(server_url, args.database)
        run_checked([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, what="migrate")
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(FLOOR_TABLE_SQL)
        key = generate_private_key("EC")
        registered = run_checked(
            [sys.executable, "-m", "bench.setup_client"],
            env=env, what="registering the EHR client", stdin=json.dumps(public_jwks(key)),
        )
        client_id = json.loads(registered.strip().splitlines()[-1])["client_id"]

        warm = bundles(run, "warmup", args.warmup)
        timed = bundles(run, "timed", args.bundles)
        size = sum(map(len, timed)) / len(timed)
        print(f"built {len(warm)} + {len(timed)} Bundles ({size:.0f} bytes each)")

        # 2-3. The servers: the same gunicorn settings, the same database.
        server_start(floor, "bench.floor_wsgi:application", env=env, workers=args.workers, threads=args.threads)
        server_start(hub, args.hub_app, env=env, workers=args.workers, threads=args.threads)
        server_wait(floor, "/healthz")
        server_wait(hub, "/healthz")
        token = token_get(hub.port, client_id=client_id, key=key)
        headers = {  # the same for both
            "Content-Type": "application/fhir+json",
            "Accept": "application/fhir+json",
            "Authorization": f"Bearer {token}",
            "Prefer": "return=minimal",
        }
        targets = ((floor, "/floor"), (hub, "/fhir"))

        # 4. The load. Both servers are warmed up first; then the timed Bundles go in rounds, each a chunk to
        # the floor then the same chunk to the hub, so that whatever else the machine does weighs on both.
        for server, path in targets:
            if warm:
                clients = min(args.clients, len(warm))
                warmed = load(server.name, server.port, path, warm, clients=clients, headers=headers)
                if warmed.non_2xx:
                    print(f"warning: {warmed.non_2xx} of the {server.name}'s warm-up requests were not 2xx")
                    report_statuses(warmed)
        before = count(database_url, REFERRALS_SQL)
        step = -(-len(timed) // args.rounds)
        chunks = [timed[k : k + step] for k in range(0, len(timed), step)]
        parts: dict[str, list[Result]] = {"floor": [], "hub": []}
        for number, chunk in enumerate(chunks, start=1):
            print(f"round {number}/{len(chunks)}: {len(chunk)} Bundles to the floor, then the hub")
            for server, path in targets:
                parts[server.name].append(
                    load(server.name, server.port, path, chunk, clients=args.clients, headers=headers)
                )
        after = count(database_url, REFERRALS_SQL)
        floor_rows = count(database_url, FLOOR_ROWS_SQL)

        # 5. Report.
        f, h = merged("floor", parts["floor"]), merged("hub", parts["hub"])
        ratio = h.throughput / f.throughput
        p99 = h.percentile_ms(99)
        print()
        for result in (f, h):
            print(report_line(result))
            report_statuses(result)
        if len(chunks) > 1:
            for name, found in parts.items():
                print(f"{name:<5} Bundles/s per round: {', '.join(f'{r.throughput:.1f}' for r in found)}")
        print(f"hub/floor throughput: {ratio:.3f} ({ratio * 100:.1f} %)")
        print(
            f"referrals_referral: {after} rows, {after - before} new in the timed hub run "
            f"(expected {args.bundles}); bench_floor: {floor_rows} rows (expected {len(warm) + args.bundles})"
        )
        print(verdict(ratio >= MIN_RATIO, f"hub throughput >= {MIN_RATIO:.0%} of the floor's ({ratio:.1%})"))
        print(verdict(p99 < MAX_P99_MS, f"hub p99 < {MAX_P99_MS:.0f} ms ({p99:.1f} ms)"))
        print(verdict(h.server_errors == 0, f"zero 5xx from the hub ({h.server_errors})"))
        stored = after - before
        print(verdict(stored == args.bundles, f"{args.bundles} new referrals stored ({stored})"))
        return 0
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        for server in (floor, hub):
            if server.process is not None:
                print(f"--- {server.name} log ({server.log}) ---\n{log_tail(server.log)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for server in (floor, hub):
            server_stop(server)
        broker_empty(args.broker)
        logs = [s.log for s in (floor, hub) if s.log.exists() and s.log.stat().st_size]
        if logs:
            print(f"server logs kept: {', '.join(map(str, logs))}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)  # a clean run leaves nothing behind


if __name__ == "__main__":
    sys.exit(main())
