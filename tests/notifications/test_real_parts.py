"""The outbox against real parts failing (issue 8 §6): a Celery worker in a subprocess (``celery -A config
worker`` on queues of this test's own) that is SIGKILLed, a receiver that goes down, and a Redis that restarts.
The test plays beat: it runs the sweep itself, every half second, with a short lease.

PostgreSQL and Redis only: the worker is another process, which SQLite's single writer and the filesystem
broker's folders would serialize or hide."""

import json
import os
import signal
import subprocess
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
import redis

import notifications.followups
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from notifications.bundles import EVENT_NOTIFICATION
from notifications.followups import followup_schedule
from notifications.models import Delivery, Subscription
from notifications.outbox import _attempt_plan
from notifications.tasks import sweep
from tests.notifications.test_worker import own_queues  # noqa: F401 - the hub's tasks go to this test's queues

ROOT = Path(__file__).resolve().parents[2]
REDIS_START = [  # as .ci/run starts it
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379", "--save", "",
    "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log",
]

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.worker,
    pytest.mark.skipif(
        not settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
        or not settings.CELERY_BROKER_URL.startswith("redis://"),
        reason="needs PostgreSQL and Redis (set DATABASE_URL and CELERY_BROKER_URL): the worker is another process",
    ),
    pytest.mark.django_db(transaction=True),
]


class WorkerProcess:
    """``celery -A config worker`` (prefork, 2 processes) on the test's queues and its test database. Run it
    against a broker no other test run shares at the same time (CI's own Redis database)."""

    def __init__(self, queues: dict[str, str], log_path: Path):
        self.queues = queues
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        db = settings.DATABASES["default"]
        auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
        env = dict(
            os.environ,
            DATABASE_URL=f"postgres://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}",  # pytest-django's test_ db
            CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
            DEBUG="true",
            LOG_LEVEL="WARNING",
            HUB_OUTBOUND_ALLOW="http://127.0.0.1",
            HUB_RETRY_BASE_SECONDS="1",  # retries within the test's time, not half a minute apart
            HUB_RETRY_MAX_SECONDS="2",
            HUB_DELIVERY_MAX_ATTEMPTS="1000",  # a receiver down for a while must not dead-letter anything here
            HUB_DELIVERY_TIMEOUT_SECONDS="5",
        )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                # The test's own queues (what this process hands over), and the hub's queue names, which is where
                # the worker's own hand-overs go (its routes are config's: the next delivery of a subscription,
                # resumed when one is delivered). Messages that earlier tests left there name rows long gone:
                # running them does nothing.
                [str(ROOT / ".venv/bin/celery"), "-A", "config", "worker", "-Q",
                 ",".join([*self.queues.values(), *self.queues]),
                 "--pool", "prefork", "--concurrency", "2", "-n", f"real-parts-{uuid.uuid4().hex[:6]}@%h",
                 "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL the main process and its pool processes: no warm shutdown, nothing acknowledged."""
        pids = [self.process.pid, *_children(self.process.pid)]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=10)
        for pid in pids[1:]:  # the pool's processes are our grandchildren's siblings: wait until they are gone
            _wait_gone(pid)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _wait_gone(pid: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


@pytest.fixture
def worker(own_queues, tmp_path):  # noqa: F811 - the fixture imported above
    process = WorkerProcess(own_queues, tmp_path / "worker.log")
    yield process
    process.stop()


@pytest.fixture
def short_lease(settings):
    # The sweep runs in this process: a row whose worker was killed is claimed again after 5 s, not 5 min.
    settings.HUB_FOLLOWUP_LEASE_SECONDS = 5
    settings.HUB_RETRY_BASE_SECONDS = 1
    settings.HUB_RETRY_MAX_SECONDS = 2


def _notifications(clinic, endpoint: str, count: int) -> int:
    """``count`` numbered notifications of one active subscription, written as the fan-out writes them (each
    Delivery's content fixed, its first attempt enqueued on commit). Returns ``count``. The content is small JSON
    that names its number: these tests are about getting it there, not about what a Bundle says."""
    now = timezone.now()
    with transaction.atomic():
        sub = Subscription.objects.create(
            clinic=clinic, channel="rest-hook", endpoint=endpoint, status="active", events_since_start=count
        )
        deliveries = Delivery.objects.bulk_create(
            Delivery(
                channel="rest-hook", subscription=sub, notification_type=EVENT_NOTIFICATION, event_number=n,
                endpoint=endpoint, content=json.dumps({"n": n, "nonce": uuid.uuid4().hex}), next_attempt_at=now,
            )
            for n in range(1, count + 1)
        )
        followup_schedule(plans=[_attempt_plan(d, now) for d in deliveries], now=now)
    return count


def _sweep_until(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        sweep()  # as beat would: what a dead worker or a lost message left is claimed again once its lease ends
        time.sleep(0.5)
    return predicate()


def _all_delivered(expected: int):
    return lambda: Delivery.objects.filter(state="delivered").count() == expected


def _by_number(requests) -> dict[int, set[bytes]]:
    contents = defaultdict(set)
    for request in requests:
        contents[json.loads(request.body)["n"]].add(request.body)
    return contents


def test_a_worker_killed_three_times_loses_nothing_and_never_changes_a_notification(
    clinic, http_receiver, worker, short_lease
):
    expected = _notifications(clinic, f"{http_receiver.url}/hook", 1000)
    assert http_receiver.requests == []

    worker.start()
    for kill_at in (150, 400, 650):  # three times, each while deliveries are under way
        assert _sweep_until(lambda: len(http_receiver.delivered()) >= kill_at, 60), "deliveries stalled"
        worker.kill()
        worker.start()
    assert _sweep_until(_all_delivered(expected), 120), (
        f"{Delivery.objects.filter(state='delivered').count()} of {expected} delivered"
    )
    time.sleep(1)  # anything sent twice would arrive now

    contents = _by_number(http_receiver.delivered())
    assert sorted(contents) == list(range(1, expected + 1))  # nothing lost
    assert [n for n, bodies in contents.items() if len(bodies) != 1] == []  # one content per event number
    assert not Delivery.objects.exclude(state="delivered").exists()


def test_a_receiver_down_for_a_while_gets_everything_in_event_number_order(clinic, http_receiver, worker, short_lease):
    http_receiver.stop()  # down from the start: every first attempt is refused
    expected = _notifications(clinic, f"{http_receiver.url}/hook", 200)
    worker.start()
    _sweep_until(lambda: Delivery.objects.filter(attempts__gte=2).exists(), 30)
    time.sleep(2)
    assert http_receiver.requests == []
    assert Delivery.objects.filter(state="delivered").count() == 0
    assert Delivery.objects.filter(attempts__gte=2).exists()  # retried with backoff while down

    http_receiver.start()  # back, on the same port
    assert _sweep_until(_all_delivered(expected), 90)

    arrived = [json.loads(r.body)["n"] for r in http_receiver.delivered()]
    assert arrived == list(range(1, expected + 1))  # everything, once, in event-number order
    assert Subscription.objects.get().status == "active"


def _redis_up() -> bool:
    try:
        return redis.Redis(host="127.0.0.1", port=6379, socket_timeout=1).ping()
    except redis.RedisError:
        return False


def _redis_start() -> None:
    Path("/var/lib/redis").mkdir(parents=True, exist_ok=True)
    Path("/var/log/redis").mkdir(parents=True, exist_ok=True)
    subprocess.run(REDIS_START, check=True, capture_output=True, timeout=10)
    deadline = time.monotonic() + 30
    while not _redis_up():
        assert time.monotonic() < deadline, "Redis did not come back"
        time.sleep(0.1)


@pytest.fixture
def redis_restartable():
    """The machine's Redis on 127.0.0.1:6379 (the broker), to be stopped by the test; started again at the end
    whatever happened."""
    if not settings.CELERY_BROKER_URL.startswith("redis://127.0.0.1:6379"):
        pytest.skip("the broker is not the local Redis on 127.0.0.1:6379")
    yield
    if not _redis_up():
        _redis_start()


def test_a_broker_restart_during_a_sweep_loses_nothing(
    clinic, http_receiver, worker, short_lease, redis_restartable, monkeypatch, settings
):
    # The attempts' on-commit messages are lost (as if the broker had been down then too): only sweeps hand
    # them over, and the first one runs while Redis is down.
    with monkeypatch.context() as lost:
        lost.setattr("notifications.followups._enqueue", lambda task, *args: None)
        expected = _notifications(clinic, f"{http_receiver.url}/hook", 300)
    worker.start()

    settings.HUB_FOLLOWUP_CHUNK = 100  # few messages to fail: each one retries its publish before giving up
    hand_over = notifications.followups._enqueue
    stopped = []

    def redis_stops_during_the_sweep(task, *args):
        if not stopped:  # the sweep has claimed and committed; Redis goes down as it hands the rows over
            subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave"],
                           capture_output=True, timeout=10)
            stopped.append(_redis_up())
        hand_over(task, *args)

    monkeypatch.setattr("notifications.followups._enqueue", redis_stops_during_the_sweep)
    claimed = sweep()  # claims every due row and leases it; handing them to Celery fails, and is logged
    assert stopped == [False] and claimed >= expected
    assert Delivery.objects.filter(state="delivered").count() == 0
    _redis_start()
    monkeypatch.setattr("notifications.followups._enqueue", hand_over)

    assert _sweep_until(_all_delivered(expected), 90), (
        f"{Delivery.objects.filter(state='delivered').count()} of {expected} delivered"
    )
    contents = _by_number(http_receiver.delivered())
    assert sorted(contents) == list(range(1, expected + 1))
    assert [n for n, bodies in contents.items() if len(bodies) != 1] == []
