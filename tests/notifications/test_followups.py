"""The schedule: rows inserted once per key, claimed under a lease, run by a task that is safe to run twice."""

import datetime as dt
import json

import pytest
from django.conf import settings
from django.utils import timezone

from notifications.followups import Planned, followup_run, followup_schedule, followups_claim, followups_run
from notifications.kinds import KINDS, Kind
from notifications.models import FollowUp
from notifications.tasks import followup, followup_delivery, followup_routing, sweep
from tests.conftest import fire_at_once

pytestmark = pytest.mark.django_db

CALLS: list[int] = []


def _count(row, now):
    CALLS.append(row.pk)
    return "counted"


def _explode(row, now):
    FollowUp.objects.create(kind="test-count", key=f"half-done:{row.attempts}", due_at=now)  # rolled back
    raise RuntimeError("receiver on fire")


@pytest.fixture(autouse=True)
def test_kinds(monkeypatch):
    CALLS.clear()
    monkeypatch.setitem(KINDS, "test-count", Kind(_count))
    monkeypatch.setitem(KINDS, "test-explode", Kind(_explode))


def _plan(key="k1", *, kind="test-count", due_at=None):
    return Planned(kind=kind, key=key, due_at=due_at or timezone.now() - dt.timedelta(seconds=1))


def test_the_same_follow_up_is_scheduled_once(dispatched):
    first = followup_schedule(plans=[_plan("offer-deadline:1")])
    again = followup_schedule(plans=[_plan("offer-deadline:1"), _plan("offer-deadline:2")])
    assert len(first) == 1 and len(again) == 1
    assert FollowUp.objects.count() == 2


def test_scheduling_is_one_statement_whatever_the_number_of_plans(dispatched, django_assert_num_queries):
    followup_schedule(plans=[_plan("a")])
    with django_assert_num_queries(1):  # on the hot path of every intake: one INSERT ... ON CONFLICT ... RETURNING
        ids = followup_schedule(plans=[_plan("a"), _plan("b"), _plan("c")])
    assert sorted(FollowUp.objects.filter(key__in=["b", "c"]).values_list("id", flat=True)) == sorted(ids)
    assert FollowUp.objects.filter(key="a").count() == 1


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown follow-up kind"):
        followup_schedule(plans=[_plan(kind="no-such-kind")])


def test_one_due_now_is_handed_to_its_queue_on_commit_and_a_later_one_is_not(dispatched):
    now = timezone.now()
    due = followup_schedule(plans=[_plan("now", due_at=now)], now=now)
    followup_schedule(plans=[_plan("later", due_at=now + dt.timedelta(days=7))], now=now)
    followup_schedule(plans=[_plan("route", kind="route-referral", due_at=now)], now=now)
    assert dispatched[0] == ("notifications.followup", tuple(due))
    assert dispatched[1][0] == "notifications.followup_routing"
    assert len(dispatched) == 2  # nothing is ever sent to the broker for later: no ETA, no countdown


def test_the_sweep_claims_due_rows_once_and_leases_them(dispatched):
    now = timezone.now()
    followup_schedule(plans=[_plan(f"due-{i}", due_at=now - dt.timedelta(minutes=i)) for i in range(3)], now=now)
    followup_schedule(plans=[_plan("future", due_at=now + dt.timedelta(hours=1))], now=now)

    claimed = followups_claim(now=now)

    assert len(claimed) == 3
    leases = set(FollowUp.objects.filter(pk__in=claimed).values_list("claimed_until", flat=True))
    assert leases == {now + dt.timedelta(seconds=settings.HUB_FOLLOWUP_LEASE_SECONDS)}
    assert followups_claim(now=now + dt.timedelta(seconds=30)) == []  # leased: not claimed twice
    assert dispatched[-1] == ("notifications.followup", tuple(claimed))  # one message for the chunk


def test_the_sweep_hands_rows_over_in_chunks_per_queue(dispatched, settings):
    settings.HUB_FOLLOWUP_CHUNK = 2
    now = timezone.now()
    followup_schedule(plans=[_plan(f"c{i}", due_at=now - dt.timedelta(minutes=1)) for i in range(5)], now=now)
    followup_schedule(plans=[_plan("r", kind="route-referral", due_at=now - dt.timedelta(minutes=1))], now=now)
    dispatched.clear()

    claimed = followups_claim(now=now)

    assert sorted(i for _, ids in dispatched for i in ids) == sorted(claimed)
    assert [(name, len(ids)) for name, ids in dispatched] == [
        ("notifications.followup", 2), ("notifications.followup", 2), ("notifications.followup", 1),
        ("notifications.followup_routing", 1),
    ]


def test_a_subscriptions_rows_go_in_one_message_in_their_order(dispatched, settings):
    """One subscription's deliveries in one message run in event-number order in one transaction; split, two
    workers would take them at once and the later ones would wait (outbox.delivery_attempt)."""
    settings.HUB_FOLLOWUP_CHUNK = 2
    now = timezone.now()
    plans = [Planned(kind="delivery-attempt", key=f"s{i}", due_at=now, subscription_id=7 if i % 2 else 8)
             for i in range(6)]
    plans += [Planned(kind="delivery-attempt", key="alone", due_at=now)]

    ids = followup_schedule(plans=plans, now=now)

    assert [ids_ for _, ids_ in dispatched] == [
        tuple(ids[i] for i in (0, 2, 4)),  # subscription 8, more than a chunk, whole and in order
        tuple(ids[i] for i in (1, 3, 5)),  # subscription 7
        (ids[6],),
    ]


def test_a_row_whose_worker_died_is_claimed_again_when_its_lease_ends(dispatched):
    now = timezone.now()
    [row_id] = followup_schedule(plans=[_plan()], now=now)
    assert followups_claim(now=now) == [row_id]
    # The worker that got it was killed: nothing ran, the row is still pending under its lease.
    lease_end = now + dt.timedelta(seconds=settings.HUB_FOLLOWUP_LEASE_SECONDS)
    assert followups_claim(now=lease_end - dt.timedelta(seconds=1)) == []
    assert followups_claim(now=lease_end) == [row_id]
    assert followup_run(followup_id=row_id, now=lease_end) == "counted"
    assert CALLS == [row_id]


def test_a_task_run_twice_has_one_side_effect(dispatched):
    [row_id] = followup_schedule(plans=[_plan()])
    args = json.loads(json.dumps([row_id]))  # what the broker carries

    assert followup.apply(args=args).get() == 1
    assert followup.apply(args=args).get() == 1  # ran again: found it done, did nothing

    row = FollowUp.objects.get(pk=row_id)
    assert CALLS == [row_id]
    assert (row.state, row.attempts, row.outcome, row.claimed_until) == ("done", 1, "counted", None)


def test_a_row_not_yet_due_is_not_run(dispatched):
    [row_id] = followup_schedule(plans=[_plan(due_at=timezone.now() + dt.timedelta(hours=1))])
    assert followup_run(followup_id=row_id) == "not due"
    assert CALLS == []


def test_a_failing_handler_is_rolled_back_retried_with_backoff_then_failed(dispatched, settings):
    settings.HUB_FOLLOWUP_MAX_ATTEMPTS = 3
    now = timezone.now()
    [row_id] = followup_schedule(plans=[_plan(kind="test-explode")], now=now)
    dues = []
    for _ in range(3):
        row = FollowUp.objects.get(pk=row_id)
        assert followup_run(followup_id=row_id, now=row.due_at) == "error: receiver on fire"
        dues.append(FollowUp.objects.get(pk=row_id).due_at - row.due_at)
    row = FollowUp.objects.get(pk=row_id)
    assert (row.state, row.attempts) == ("failed", 3)
    assert not FollowUp.objects.filter(key__startswith="half-done").exists()
    # 30 s base doubling, half of it jitter: within [15, 30] then [30, 60] seconds
    assert dt.timedelta(seconds=15) <= dues[0] <= dt.timedelta(seconds=30)
    assert dt.timedelta(seconds=30) <= dues[1] <= dt.timedelta(seconds=60)


def test_task_names_and_queues_are_explicit():
    assert (followup.name, followup_routing.name, followup_delivery.name, sweep.name) == (
        "notifications.followup", "notifications.followup_routing", "notifications.followup_delivery",
        "notifications.sweep",
    )
    routes = settings.CELERY_TASK_ROUTES
    assert routes["notifications.followup_routing"]["queue"] == routes["fhir_bridge.route_referral"]["queue"] == "routing"
    assert routes["notifications.followup_delivery"]["queue"] == "delivery"
    assert settings.CELERY_BEAT_SCHEDULE["sweep-follow-ups"]["schedule"] == settings.HUB_SWEEP_SECONDS
    assert "expire-offers" not in settings.CELERY_BEAT_SCHEDULE  # the offer-deadline follow-up is the one schedule


@pytest.mark.postgres
@pytest.mark.skipif(
    not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
    reason="needs PostgreSQL's concurrent writers (set DATABASE_URL)",
)
@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_the_same_moment_claim_each_row_once(dispatched):
    now = timezone.now()
    followup_schedule(plans=[_plan(f"r{i}", due_at=now - dt.timedelta(seconds=i)) for i in range(900)], now=now)

    results = fire_at_once(2, lambda i: followups_claim(now=now, limit=600))

    assert not any(isinstance(r, Exception) for r in results), results
    first, second = map(set, results)
    assert first and second and not first & second
    assert len(first | second) == 900


def _write_and_count(row, now):
    FollowUp.objects.create(kind="test-count", key=f"written-by:{row.pk}", due_at=now + dt.timedelta(days=1))
    return _count(row, now)


def test_a_chunk_shares_transactions_and_a_failing_handler_fails_alone(dispatched, monkeypatch):
    monkeypatch.setitem(KINDS, "test-write", Kind(_write_and_count))
    now = timezone.now()
    ids = followup_schedule(
        plans=[_plan("a", kind="test-write"), _plan("b", kind="test-explode"), _plan("c", kind="test-write")], now=now
    )

    outcomes = dict(followups_run(followup_ids=[*ids, ids[0]], now=now))  # an id twice: run once

    rows = {r.key: r for r in FollowUp.objects.filter(pk__in=ids)}
    assert outcomes == {ids[0]: "counted", ids[1]: "error: receiver on fire", ids[2]: "counted"}
    assert [(rows[k].state, rows[k].attempts) for k in "abc"] == [("done", 1), ("pending", 1), ("done", 1)]
    assert rows["b"].due_at > now  # retried later, with backoff
    # The handlers that succeeded kept their writes (run again, after the first pass was rolled back); the
    # failing one's are gone.
    assert set(FollowUp.objects.filter(key__startswith="written-by:").values_list("key", flat=True)) == {
        f"written-by:{ids[0]}", f"written-by:{ids[2]}"
    }
    assert not FollowUp.objects.filter(key__startswith="half-done").exists()
    assert followups_run(followup_ids=ids[:1], now=now) == [(ids[0], "not pending, or being run by another worker")]
