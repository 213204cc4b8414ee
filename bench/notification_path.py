"""The notification path's cost in one process, without Celery: fan-out, then every delivery attempt.

    .venv/bin/python bench/notification_path.py [--changes 300] [--clinics 10] [--database hub_bench_followups]
                                                [--receiver-ms 2]
    PYTHONPATH=/path/to/other/checkout .venv/bin/python /path/to/other/checkout/bench/notification_path.py  # before

Makes ``--changes`` Task changes with ``referral_update`` over ``--clinics`` clinics, each with one referral and one
rest-hook subscription to a local receiver (made on first use in ``--database``, an existing, migrated database:
bench/followups.py leaves one), in one transaction. Then runs ``events_fan_out`` until nothing is left, and every
hand-over message the fan-out made through ``followups_run``, in order, as one worker would (the Celery message
and the parallel workers left out: bench/followups.py has them). Prints milliseconds and queries per change for the
fan-out and per notification for the deliveries (wall, and this process's CPU), the receiver answering each POST
after ``--receiver-ms`` (a receiver's own time, as a real one takes). Pending deliveries and follow-ups in the
database are dropped
first (marked dead, deleted): they would only be noise.
"""

import argparse
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SERVER = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")


class _Receiver(BaseHTTPRequestHandler):
    count = 0
    delay = 0.0
    protocol_version = "HTTP/1.1"  # as receivers are: a batch keeps its connection

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(_Receiver.delay)
        _Receiver.count += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=300)
    parser.add_argument("--clinics", type=int, default=10)
    parser.add_argument("--database", default="hub_bench_followups")
    parser.add_argument("--receiver-ms", type=float, default=0.0)
    args = parser.parse_args()
    _Receiver.delay = args.receiver_ms / 1000
    os.environ.update(
        DATABASE_URL=f"{SERVER}/{args.database}", DEBUG="false", SECRET_KEY="bench-path-not-a-secret-" + "x" * 32,
        LOG_LEVEL="WARNING", HUB_OUTBOUND_ALLOW="http://127.0.0.1", DJANGO_SETTINGS_MODULE="config.settings",
    )
    import django

    django.setup()
    from django.db import connection, transaction
    from django.utils import timezone

    import notifications.followups as followups
    from notifications.followups import followups_run
    from notifications.models import Delivery, FollowUp, Subscription
    from notifications.outbox import events_fan_out
    from referrals.models import Clinic, Referral, ReferralEvent
    from referrals.services import ReferralFacts, referral_create, referral_update

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    with mock.patch("notifications.tasks.fan_out.delay", lambda: None):
        for n in range(Subscription.objects.count(), args.clinics):
            clinic = Clinic.objects.create(name=f"Path clinic {n}", slug=f"path-{n}-{time.time_ns()}")
            Subscription.objects.create(clinic=clinic, channel="rest-hook", endpoint=url, status="active")
            with transaction.atomic():
                referral_create(clinic=clinic, actor="bench", facts=ReferralFacts(
                    patient_name=f"Path patient {n}", patient_postal_code="62701",
                    service_system="http://snomed.info/sct", service_code="390893007"))
    Subscription.objects.update(endpoint=url, status="active", error_count=0)
    Delivery.objects.filter(state="pending").update(state="dead")
    FollowUp.objects.filter(state="pending").delete()
    ReferralEvent.objects.filter(notified_at__isnull=True).update(notified_at=timezone.now())
    referrals = [Referral.objects.filter(clinic_id=s.clinic_id).first() for s in Subscription.objects.order_by("pk")]
    queries = [0]

    def count(execute, sql, params, many, context):
        queries[0] += 1
        return execute(sql, params, many, context)

    messages = []
    with mock.patch("notifications.tasks.fan_out.delay", lambda: None), \
            mock.patch.object(followups, "_enqueue", lambda task, *ids: messages.append(ids)):
        with transaction.atomic():
            for j in range(args.changes):
                referral = referrals[j % len(referrals)]
                referral_update(referral=referral, status=referral.status, actor="bench",
                                business_status_text=f"path change {time.time_ns()} {j}")
        with connection.execute_wrapper(count):
            started = time.perf_counter()
            while events_fan_out(limit=500) == 500:
                pass
            fan_out_seconds, fan_out_queries = time.perf_counter() - started, queries[0]
            queries[0] = 0
            started, cpu = time.perf_counter(), time.process_time()
            while messages:
                followups_run(followup_ids=messages.pop(0))
            delivery_seconds, delivery_queries = time.perf_counter() - started, queries[0]
            delivery_cpu = time.process_time() - cpu
    sent = max(_Receiver.count, 1)
    print(
        f"{args.changes} changes: fan-out {fan_out_seconds * 1000 / args.changes:.2f} ms and "
        f"{fan_out_queries / args.changes:.2f} queries per change; {_Receiver.count} notifications delivered, "
        f"{delivery_seconds * 1000 / sent:.2f} ms ({delivery_cpu * 1000 / sent:.2f} ms CPU) and "
        f"{delivery_queries / sent:.2f} queries each, the receiver taking {args.receiver_ms:g} ms "
        f"(code: {Path(followups.__file__).resolve().parent.parent})"
    )
    server.shutdown()


if __name__ == "__main__":
    main()
