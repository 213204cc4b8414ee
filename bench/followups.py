"""Follow-up engine benchmark (issue 8 §7), on PostgreSQL and Redis.

    .venv/bin/python bench/followups.py [--pending 1000000] [--rate 300] [--seconds 120] [--sweep 10]
    .venv/bin/python bench/followups.py --quick      # 100k pending, 100/s for 20 s: a smoke run

1. **Claim.** Fills ``FollowUp`` with ``--pending`` pending rows (a mix of kinds, due over the next 30 days, with
   ``--due`` of them already due), vacuums and analyzes, then times ``followups_claim`` for ``--batches``
   batches of 500 (the sweep's SELECT ... FOR UPDATE SKIP LOCKED and the lease's UPDATE, one transaction; the
   hand-over to Celery is left out: it is the broker's cost). Between batches, untimed, the claimed rows are
   marked done, as workers would. Prints each batch's milliseconds, then p50, p99 and max.
2. **Steady load.** Starts ``--workers`` Celery worker processes (prefork) on the three queues and a local HTTP
   receiver; inserts follow-ups that fall due at ``--rate`` per second for ``--seconds`` seconds, half of them
   nudges (first-session-nudge of a referral that is not accepted: the handler reads and decides) and half
   notifications (a delivery-attempt posting 300 bytes to the receiver); and runs the sweep (the
   ``notifications.sweep`` task, as beat would) every ``--sweep`` seconds. Nothing is enqueued on commit here:
   every follow-up goes through the sweep, the worst case. Prints follow-ups done per second (done / from the
   first due to the last done: a sweep interval longer than the load itself), and the lag from due to done
   (p50, p99, max); it keeps up when all are done and none lags more than the sweep interval and 5 s.

3. **Notifications.** ``--clinics`` clinics, each with a referral (``referral_create``, its Task rendered by the
   FHIR bridge) and a rest-hook subscription to the local receiver; Task changes at ``--notify-rate`` per second
   for ``--notify-seconds`` s made by ``referral_update`` (each writes its event and a new Task version in one
   transaction, and the outbox's fan-out is enqueued on its commit) from ``--producers`` processes, and the sweep
   every 10 s as beat would.
   Workers fan out, number and POST each one. Prints notifications per second (arrived / from the first change
   to the last arrival) and the latency from the change's commit to the receiver's read (p50, p99, max).

It drops and re-creates the database ``hub_bench_followups`` (``--database``) on 127.0.0.1:5432 (user postgres;
BENCH_PG_URL to change the server) and uses Redis ``--broker`` (default db 3), whose three queues it empties
after the run.

Targets: claim < 50 ms per 500 with 1 M pending; keeps up with 300 follow-ups/s; lag p99 < sweep + 5 s;
>= 300 notifications/s with p99 < 2 s from the change to its arrival.
"""

import argparse
import datetime as dt
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SERVER = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
DATABASE = "hub_bench_followups"
QUEUES = ("routing", "delivery", "sweeps")


def database_fresh(database: str) -> None:
    import psycopg

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}"')


def environment(database: str, broker: str, var_dir: str) -> dict:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"{SERVER}/{database}",
        CELERY_BROKER_URL=broker,
        DEBUG="false",
        SECRET_KEY="bench-followups-not-a-secret-" + "x" * 32,
        LOG_LEVEL="WARNING",
        HUB_VAR_DIR=var_dir,
        # The receiver is on the loopback, which notifications/http.py refuses unless allowed (DEBUG is off here).
        HUB_OUTBOUND_ALLOW="http://127.0.0.1",
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    return env


def django_start(env: dict) -> None:
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def fill(pending: int, due: int) -> None:
    """``pending`` rows in one INSERT ... SELECT: ``due`` of them due in the last hour, the rest over 30 days."""
    from django.db import connection

    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO notifications_followup
                (kind, key, due_at, state, attempts, claimed_until, referral_id, offer_id, subscription_id,
                 delivery_id, outcome, created_at, done_at)
            SELECT (ARRAY['offer-deadline','first-session-nudge','first-session-admin','delivery-attempt'])[1 + i %% 4],
                   'bench:' || i,
                   CASE WHEN i <= %s THEN now() - (i %% 3600) * interval '1 second'
                        ELSE now() + interval '1 minute' + (i %% 2592000) * interval '1 second' END,
                   'pending', 0, NULL, i, NULL, NULL, NULL, '', now(), NULL
            FROM generate_series(1, %s) AS i
            """,
            [due, pending],
        )
        cursor.execute("VACUUM ANALYZE notifications_followup")
    print(f"filled {pending:,} pending follow-ups ({due:,} due) in {time.perf_counter() - t0:.1f} s", flush=True)


def claim_part(batches: int) -> list[float]:
    from django.utils import timezone

    import notifications.followups as followups
    from notifications.models import FollowUp

    followups._enqueue = lambda task, *args: None  # the broker's cost is not the claim's
    # One claim untimed first: the first hand-over imports the table of kinds (notifications.kinds) and the
    # services its handlers call (about 75 ms here), a cost of the process's first sweep, not of a claim.
    t0 = time.perf_counter()
    warm = followups.followups_claim(now=timezone.now(), limit=500)
    FollowUp.objects.filter(pk__in=warm).update(state="done", done_at=timezone.now(), claimed_until=None)
    print(f"  warm-up claim (untimed, first in the process): {(time.perf_counter() - t0) * 1000:.1f} ms", flush=True)
    times = []
    for n in range(batches):
        now = timezone.now()
        t0 = time.perf_counter()
        claimed = followups.followups_claim(now=now, limit=500)
        times.append((time.perf_counter() - t0) * 1000)
        assert len(claimed) == 500, f"batch {n}: only {len(claimed)} due rows left (raise --due)"
        FollowUp.objects.filter(pk__in=claimed).update(state="done", done_at=now, claimed_until=None)
        print(f"  batch {n + 1:3d}: {times[-1]:6.1f} ms", flush=True)
    return times


def _sweep_send(sweep) -> None:
    """Send beat's sweep; a broker that is away for a moment (another suite restarting a shared Redis) costs
    this sweep only, as it would cost beat one tick."""
    from kombu.exceptions import OperationalError

    try:
        sweep.apply_async(queue="sweeps", retry=False)
    except OperationalError as exc:
        print(f"  (sweep not sent: {exc})", flush=True)


class _Server(ThreadingHTTPServer):
    # A production HTTP server's listen backlog (nginx: 511), not socketserver's 5: the hub sends to several
    # subscriptions at once, and with 5 the kernel dropped connection attempts, each costing TCP's 1 s SYN
    # retransmit (a p99 of the receiver's, not of the hub's).
    request_queue_size = 128
    daemon_threads = True


class _Receiver(BaseHTTPRequestHandler):
    # HTTP/1.1, as receivers are: a connection kept open serves a worker's batch (notifications.http.Connections),
    # and this process (which the producers share) starts no thread per notification.
    protocol_version = "HTTP/1.1"
    count = 0
    arrivals: list[tuple[float, bytes]] = []  # (time.time(), body) of each POST, for the notifications part
    keep = False

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _Receiver.count += 1
        if _Receiver.keep:
            _Receiver.arrivals.append((time.time(), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def steady_part(*, env: dict, rate: int, seconds: int, sweep_every: int, workers: int) -> dict:
    from django.utils import timezone

    from notifications.models import Delivery, FollowUp
    from notifications.tasks import sweep

    FollowUp.objects.filter(state="pending").delete()  # the claim part's rows would only be noise here
    server = _Server(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"

    total = rate * seconds
    start = timezone.now() + dt.timedelta(seconds=5)
    deliveries = Delivery.objects.bulk_create(
        (Delivery(channel="rest-hook", endpoint=url, content='{"bench": "' + "x" * 280 + '"}') for _ in range(total // 2)),
        batch_size=1000,
    )
    rows = []
    for i in range(total):
        due = start + dt.timedelta(seconds=i / rate)
        if i % 2:
            rows.append(FollowUp(kind="delivery-attempt", key=f"steady:{i}", due_at=due, delivery_id=deliveries[i // 2].pk))
        else:
            rows.append(FollowUp(kind="first-session-nudge", key=f"steady:{i}", due_at=due, referral_id=10**9 + i))
    FollowUp.objects.bulk_create(rows, batch_size=5000)
    print(f"scheduled {total:,} follow-ups due from {start:%H:%M:%S} at {rate}/s", flush=True)

    worker = subprocess.Popen(
        [str(ROOT / ".venv/bin/celery"), "-A", "config", "worker", "-Q", ",".join(QUEUES), "--pool", "prefork",
         "--concurrency", str(workers), "--loglevel", "WARNING", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env, start_new_session=True,
    )
    try:
        end = start + dt.timedelta(seconds=seconds)
        while timezone.now() < end + dt.timedelta(seconds=sweep_every):
            _sweep_send(sweep)
            time.sleep(sweep_every)
        deadline = time.monotonic() + 60
        while FollowUp.objects.filter(key__startswith="steady:", state="pending").exists() and time.monotonic() < deadline:
            _sweep_send(sweep)
            time.sleep(sweep_every)
    finally:
        worker.terminate()  # the main process only: a warm shutdown lets its children finish their task
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, 9)
            worker.wait()
        server.shutdown()

    done = list(FollowUp.objects.filter(key__startswith="steady:", state="done").values_list("due_at", "done_at"))
    lags = [(d - due).total_seconds() for due, d in done]
    span = (max(d for _, d in done) - min(due for due, _ in done)).total_seconds() if done else 1
    return {
        "total": total,
        "done": len(done),
        "per_second": len(done) / span,
        "lag_p50": percentile(lags, 50) if lags else None,
        "lag_p99": percentile(lags, 99) if lags else None,
        "lag_max": max(lags) if lags else None,
        "received": _Receiver.count,
    }


def _produce(*, n: int, producers: int, referral_ids: list[int], share: int, rate: float, start_at: float,
             env: dict, reports) -> None:
    """Producer ``n`` of ``producers`` (a process of its own, with its own connection): from ``start_at`` (a
    time.time()), ``share`` Task changes to its own referrals at ``rate`` per second, made as the domain makes them,
    then reports (changes made, time.time() at the end, its CPU seconds while making them) on ``reports``."""
    os.environ.update(env)
    import django

    django.setup()
    from django.db import connection, transaction

    from referrals.models import Referral
    from referrals.services import referral_update

    mine = list(Referral.objects.filter(pk__in=referral_ids).order_by("pk"))
    tick = 0.1
    per_tick = max(1, round(rate * tick))
    made = 0
    time.sleep(max(0.0, start_at - time.time()))
    cpu = time.process_time()
    try:
        while made < share:
            # One transaction per tick: a batch of changes, each one referral_update (its event, its Task
            # version), and the fan-out enqueued once on commit, as notifications.receivers asks for it.
            count = min(per_tick, share - made)
            with transaction.atomic():
                for i in range(count):
                    referral = mine[(made + i) % len(mine)]
                    referral_update(
                        referral=referral, status=referral.status, actor="bench",
                        business_status_text=f"bench change {n}:{made + i}",
                    )
            made += count
            time.sleep(max(0.0, start_at + made / rate - time.time()))
    finally:
        connection.close()
        reports.put((made, time.time(), time.process_time() - cpu))


def notifications_part(*, env: dict, rate: int, seconds: int, workers: int, clinics: int, producers: int,
                       referrals_per_clinic: int = 1) -> dict:
    """Task changes at ``rate`` per second for ``seconds`` s, spread over ``clinics`` clinics with one rest-hook
    subscription each, made as the domain makes them: ``referral_update`` on referrals opened with
    ``referral_create`` (whose Patient, ServiceRequest and Task the FHIR bridge renders), so that each change
    writes its event row and a new Task version in one transaction, and notifications.receivers enqueues the
    outbox's fan-out on its commit. Workers fan out, number, and POST each notification to a local receiver.
    Returns notifications per second and the latency from the change's commit to the receiver's read."""
    from django.db import transaction
    from django.utils import timezone

    from notifications.models import Delivery, FollowUp, Subscription
    from notifications.tasks import sweep
    from referrals.models import Clinic, ReferralEvent
    from referrals.services import ReferralFacts, referral_create, referral_update

    FollowUp.objects.filter(state="pending").delete()  # what the parts before left undone would only be noise
    server = _Server(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    referrals = []
    for n in range(clinics):
        clinic = Clinic.objects.create(name=f"Bench clinic {n}", slug=f"bench-{n}")
        Subscription.objects.create(clinic=clinic, channel="rest-hook", endpoint=f"{url}/{n}", status="active")
        for k in range(referrals_per_clinic):
            with transaction.atomic():
                referrals.append(referral_create(
                    clinic=clinic, actor="bench",
                    facts=ReferralFacts(patient_name=f"Bench patient {n}-{k}", patient_postal_code="62701",
                                        service_system="http://snomed.info/sct", service_code="390893007",
                                        requester_reference="Practitioner/bench"),
                ))
    FollowUp.objects.filter(state="pending").delete()  # the routing safety nets of the set-up referrals
    ReferralEvent.objects.update(notified_at=timezone.now())  # nothing from setting up
    _Receiver.arrivals, _Receiver.keep = [], True

    worker = subprocess.Popen(
        [str(ROOT / ".venv/bin/celery"), "-A", "config", "worker", "-Q", ",".join(QUEUES), "--pool", "prefork",
         "--concurrency", str(workers), "--loglevel", "WARNING", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env, start_new_session=True,
    )
    time.sleep(5)  # the worker's start is not what is measured
    total = rate * seconds
    # The producers are processes, each with its own interpreter and connection: as threads of this one they
    # shared one GIL with each other and with the receiver, and measured the bench rather than the hub.
    context = multiprocessing.get_context("spawn")
    reports = context.Queue()
    start_at = time.time() + 10  # after every producer has set Django up (its start is not what is measured)
    procs = [
        context.Process(
            target=_produce,
            kwargs=dict(n=n, producers=producers, referral_ids=[r.pk for r in referrals[n::producers]],
                        share=total // producers + (1 if n < total % producers else 0), rate=rate / producers,
                        start_at=start_at, env=env, reports=reports),
        )
        for n in range(producers)
    ]
    try:
        for proc in procs:
            proc.start()
        while time.time() < start_at:
            time.sleep(0.05)
        next_sweep = started = time.time()
        while any(proc.is_alive() for proc in procs):
            if time.time() >= next_sweep:  # beat's sweep, as in production (HUB_SWEEP_SECONDS = 10 here)
                _sweep_send(sweep)
                next_sweep += 10
            time.sleep(0.1)
        made, finished, cpu = [], [], 0.0
        for _ in procs:  # each producer reports once, at its end, however it ended
            count, finished_at, seconds = reports.get(timeout=30)
            made.append(count)
            finished.append(finished_at)
            cpu += seconds
        if any(proc.exitcode != 0 for proc in procs):
            raise RuntimeError(f"a producer failed (exit codes {[proc.exitcode for proc in procs]})")
        changes_per_second = sum(made) / (max(finished) - started)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
            ReferralEvent.objects.filter(notified_at__isnull=True).exists()
            or Delivery.objects.filter(state="pending").exists()
        ):
            time.sleep(0.5)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, 9)
            worker.wait()
        server.shutdown()
        _Receiver.keep = False

    # The receiver's bodies are the deliveries' fixed contents: each arrival is matched to its change's event.
    events_at = dict(ReferralEvent.objects.values_list("id", "at"))
    changed_at = {
        content.encode(): events_at[event_id].timestamp()
        for content, event_id in Delivery.objects.filter(
            subscription__isnull=False, notification_type="event-notification"
        ).values_list("content", "referral_event_id")
    }
    latencies = [arrived - changed_at[body] for arrived, body in _Receiver.arrivals if body in changed_at]
    # Where the time went: from the change to its Delivery row (the fan-out), and from there to the arrival.
    written_at = {
        content.encode(): created_at.timestamp()
        for content, created_at in Delivery.objects.filter(
            subscription__isnull=False, notification_type="event-notification"
        ).values_list("content", "created_at")
    }
    fanned = [written_at[body] - changed_at[body] for _, body in _Receiver.arrivals if body in changed_at]
    sent = [arrived - written_at[body] for arrived, body in _Receiver.arrivals if body in changed_at]
    first = min(changed_at.values()) if changed_at else 0
    last = max((a for a, _ in _Receiver.arrivals), default=first + 1)
    return {
        "total": sum(made),
        "changes_per_second": changes_per_second,
        # The producers' own CPU (Python; PostgreSQL's is the server's) per change: what 300/s asks of the cores.
        "producer_cpu_ms": cpu * 1000 / max(sum(made), 1),
        "arrived": len({body for _, body in _Receiver.arrivals if body in changed_at}),
        "per_second": len(latencies) / max(last - first, 1e-9),
        "p50": percentile(latencies, 50) if latencies else float("nan"),
        "p99": percentile(latencies, 99) if latencies else float("nan"),
        "max": max(latencies) if latencies else float("nan"),
        "stages": {
            name: (percentile(values, 50), percentile(values, 99)) for name, values in
            (("change→Delivery row", fanned), ("Delivery row→arrival", sent)) if values
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=50_000, help="of the pending rows, how many are due already")
    parser.add_argument("--batches", type=int, default=None,
                        help="claims of 500 to time (default 40, or as many as --due holds)")
    parser.add_argument("--rate", type=int, default=300, help="follow-ups falling due per second")
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--sweep", type=int, default=10, help="seconds between sweeps")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--quick", action="store_true", help="100k pending, 100/s for 20 s")
    parser.add_argument("--skip-steady", action="store_true", help="no steady-load part")
    parser.add_argument("--notify-rate", type=int, default=300, help="Task changes per second (notifications part)")
    parser.add_argument("--notify-seconds", type=int, default=30)
    parser.add_argument("--clinics", type=int, default=10, help="clinics, each with one subscription")
    parser.add_argument("--referrals-per-clinic", type=int, default=1,
                        help="referrals of each clinic that the Task changes go round (notifications part)")
    parser.add_argument("--producers", type=int, default=4,
                        help="processes making the Task changes (notifications part), each on its own clinics")
    parser.add_argument("--skip-notifications", action="store_true", help="no notifications part")
    parser.add_argument("--database", default=DATABASE, help=f"dropped and re-created (default {DATABASE})")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/3")
    args = parser.parse_args()
    if args.quick:
        args.pending, args.due, args.batches, args.rate, args.seconds = 100_000, 10_000, 10, 100, 20
    if args.batches is None:
        args.batches = min(40, args.due // 500)
    if args.batches * 500 > args.due:
        parser.error(f"--batches {args.batches} claims {args.batches * 500:,} due rows: raise --due to that")

    database_fresh(args.database)
    env = environment(args.database, args.broker, tempfile.mkdtemp(prefix="bench-followups-"))
    django_start(env)

    fill(args.pending, args.due)
    times = claim_part(args.batches)
    print(
        f"claim of 500 with {args.pending:,} pending: p50 {statistics.median(times):.1f} ms, "
        f"p99 {percentile(times, 99):.1f} ms, max {max(times):.1f} ms "
        f"[{'PASS' if percentile(times, 99) < 50 else 'FAIL'} < 50 ms]"
    )
    if not args.skip_steady:
        try:
            result = steady_part(
                env=env, rate=args.rate, seconds=args.seconds, sweep_every=args.sweep, workers=args.workers
            )
        finally:
            _queues_empty(args.broker)
        print(
            f"steady load: {result['done']:,}/{result['total']:,} done, {result['per_second']:.0f}/s "
            # Keeping up: everything done, none later than a sweep interval and 5 s after it fell due.
            f"[{'PASS' if result['done'] == result['total'] and result['lag_max'] < args.sweep + 5 else 'FAIL'} "
            f"keeps up with {args.rate}/s]; "
            f"lag due→done p50 {result['lag_p50']:.1f} s, p99 {result['lag_p99']:.1f} s, max {result['lag_max']:.1f} s "
            f"[{'PASS' if result['lag_p99'] < args.sweep + 5 else 'FAIL'} p99 < {args.sweep + 5} s]; "
            f"receiver got {result['received']:,} notifications",
            flush=True,
        )
    if not args.skip_notifications:
        try:
            result = notifications_part(
                env=env, rate=args.notify_rate, seconds=args.notify_seconds, workers=args.workers,
                clinics=args.clinics, producers=min(args.producers, args.clinics),
                referrals_per_clinic=args.referrals_per_clinic,
            )
        finally:
            _queues_empty(args.broker)
        print(
            f"notifications: {result['total']:,} changes made at {result['changes_per_second']:.0f}/s "
            f"(producers' CPU {result['producer_cpu_ms']:.2f} ms per change); "
            f"{result['arrived']:,}/{result['total']:,} arrived, {result['per_second']:.0f}/s "
            f"[{'PASS' if result['per_second'] >= args.notify_rate * 0.98 and result['arrived'] == result['total'] else 'FAIL'} "
            f">= {args.notify_rate}/s]; change→arrival p50 {result['p50'] * 1000:.0f} ms, "
            f"p99 {result['p99'] * 1000:.0f} ms, max {result['max'] * 1000:.0f} ms "
            f"[{'PASS' if result['p99'] < 2 else 'FAIL'} p99 < 2 s]"
        )
        for name, (p50, p99) in result["stages"].items():
            print(f"  {name}: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")


def _queues_empty(broker: str) -> None:
    import redis

    redis.Redis.from_url(broker).delete(*QUEUES)

if __name__ == "__main__":
    main()
