"""A chunk's deliveries go out with no transaction open (Kind.staged): a slow receiver holds no lock and no
write, a duplicate message does not send what is in flight, and different subscriptions' notifications go at
once, each subscription's in event-number order. Real transactions (the worker's and the receiver's own
connection), a real HTTP receiver on 127.0.0.1."""

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from notifications.bundles import EVENT_NOTIFICATION
from notifications.followups import followup_schedule, followups_run
from notifications.models import Delivery, FollowUp, Subscription
from notifications.outbox import _attempt_plan

pytestmark = pytest.mark.django_db(transaction=True)


class SlowReceiver:
    """A local HTTP server that answers every POST after ``delay`` seconds, having first run ``during`` (on its
    own thread, so on its own database connection) while the POST is in flight. Records the bodies in arrival
    order and the most requests it had in flight at once."""

    def __init__(self, delay: float, during=None):
        self.bodies: list[dict] = []
        self.seen: list = []  # what ``during`` returned, per request
        self.in_flight = self.most_in_flight = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with lock:
                    receiver.bodies.append(body)
                    receiver.in_flight += 1
                    receiver.most_in_flight = max(receiver.most_in_flight, receiver.in_flight)
                try:
                    if during is not None:
                        try:
                            receiver.seen.append(during(body))
                        finally:
                            close_old_connections()
                            connection.close()
                    time.sleep(delay)
                finally:
                    with lock:
                        receiver.in_flight -= 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _numbered(clinic, endpoint: str, count: int) -> tuple[Subscription, list[int]]:
    """An active subscription with ``count`` numbered notifications and their attempt follow-ups, as the fan-out
    writes them. Returns the subscription and the follow-up ids in number order."""
    now = timezone.now()
    sub = Subscription.objects.create(clinic=clinic, channel="rest-hook", endpoint=endpoint, status="active",
                                      events_since_start=count)
    deliveries = Delivery.objects.bulk_create(
        Delivery(channel="rest-hook", subscription=sub, notification_type=EVENT_NOTIFICATION, event_number=n,
                 task_id=f"t{n}", task_version=1, endpoint=endpoint,
                 content=json.dumps({"sub": sub.pk, "n": n, "nonce": uuid.uuid4().hex}), next_attempt_at=now)
        for n in range(1, count + 1)
    )
    return sub, followup_schedule(plans=[_attempt_plan(d, now) for d in deliveries], now=now)


def _rows_free(ids: list[int]) -> str:
    """From another connection, while a POST is in flight: can the follow-up and delivery rows be locked, and
    the database written, at once? 'free', or what stood in the way."""
    try:
        if connection.vendor == "sqlite":  # one writer: BEGIN IMMEDIATE waits for any other write transaction
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA busy_timeout = 500")
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL lock_timeout = '500ms'")
            rows = list(FollowUp.objects.select_for_update().filter(pk__in=ids).values_list("delivery_id", flat=True))
            list(Delivery.objects.select_for_update().filter(pk__in=rows).values_list("pk"))
            FollowUp.objects.filter(pk__in=ids).update(outcome="")  # a write: nothing changes
    except Exception as exc:  # noqa: BLE001 - the lock timeout, or "database is locked": the answer
        return f"held: {exc}"
    return "free"


@pytest.fixture
def settle(settings, dispatched):
    settings.HUB_DELIVERY_TIMEOUT_SECONDS = 10
    return dispatched


def test_a_slow_receiver_holds_no_transaction_while_its_post_is_in_flight(clinic, settle):
    ids: list[int] = []
    receiver = SlowReceiver(0.3, during=lambda body: _rows_free(ids))
    try:
        _, made = _numbered(clinic, receiver.url, 2)
        ids += made
        outcomes = dict(followups_run(followup_ids=ids))
    finally:
        receiver.close()

    assert receiver.seen == ["free", "free"]  # before this change: the worker's transaction held both
    assert set(outcomes.values()) == {"delivered: HTTP 200"}
    assert [b["n"] for b in receiver.bodies] == [1, 2]
    assert set(Delivery.objects.values_list("state", "sending_until")) == {("delivered", None)}


def test_a_duplicate_message_during_the_send_sends_nothing_twice_and_a_later_one_waits(clinic, settle):
    ids: list[int] = []
    duplicate: dict = {}

    def during(body):
        if body["n"] == 1 and not duplicate:
            # The same chunk again (a duplicate Celery message) while 1 is in flight: it sends nothing.
            duplicate.update(followups_run(followup_ids=ids[:2]))
            # The next notification's own message: it waits behind 1 and 2, in flight.
            duplicate.update(followups_run(followup_ids=ids[2:]))

    receiver = SlowReceiver(0.1, during=during)
    try:
        sub, made = _numbered(clinic, receiver.url, 3)
        ids += made
        first = dict(followups_run(followup_ids=ids[:2]))
        # The record resumed 3 with a new follow-up, handed over on commit; run it as the worker would.
        resumed = [i for _, args in settle for i in args if i not in ids]
        assert resumed, settle
        again = dict(followups_run(followup_ids=resumed))
    finally:
        receiver.close()

    assert duplicate == {
        ids[0]: "not pending, or being run by another worker",
        ids[1]: "not pending, or being run by another worker",
        ids[2]: f"waits for an earlier notification of subscription {sub.pk}",
    }
    assert first == {ids[0]: "delivered: HTTP 200", ids[1]: "delivered: HTTP 200"}
    assert set(again.values()) == {"delivered: HTTP 200"}
    assert [b["n"] for b in receiver.bodies] == [1, 2, 3]  # each once, in order
    assert set(Delivery.objects.values_list("state", flat=True)) == {"delivered"}


def test_subscriptions_are_sent_at_once_and_each_in_its_order(clinic, settle, settings):
    settings.HUB_DELIVERY_SENDERS = 4
    receiver = SlowReceiver(0.05)
    try:
        subs = [_numbered(clinic, receiver.url, 5) for _ in range(3)]
        # Interleaved, as a chunk of several subscriptions' messages may come.
        ids = [i for row in zip(*(made for _, made in subs), strict=True) for i in row]
        outcomes = dict(followups_run(followup_ids=ids))
    finally:
        receiver.close()

    assert set(outcomes.values()) == {"delivered: HTTP 200"}
    assert receiver.most_in_flight >= 2  # different subscriptions' POSTs overlapped
    for sub, _ in subs:
        assert [b["n"] for b in receiver.bodies if b["sub"] == sub.pk] == [1, 2, 3, 4, 5]
