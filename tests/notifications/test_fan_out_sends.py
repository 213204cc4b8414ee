"""The fan-out task sends what it has just numbered, in its own process (notifications.tasks.fan_out with
followups.deliveries_held): the notifications arrive in order with no delivery message; a rolled-back
transaction holds nothing back for sending; and rows held but never sent are the sweep's, as after a lost
message."""

import datetime as dt
import json

import pytest
from django.db import connection, transaction
from django.utils import timezone

from notifications import outbox, tasks
from notifications.followups import DELIVERY, deliveries_held, followups_claim
from notifications.models import Delivery, FollowUp, Subscription
from referrals.models import ReferralEvent
from referrals.services import referral_update
from tests.network.factories import referral_make

pytestmark = pytest.mark.django_db(transaction=True)  # real commits: the held rows are added on commit


@pytest.fixture
def changes(clinic, receiver, dispatched):
    """Three Task changes to one referral of a clinic with a rest-hook subscription to ``receiver``, not fanned
    out yet."""
    Subscription.objects.create(clinic=clinic, channel="rest-hook", endpoint=receiver.url, status="active")
    referral = referral_make(clinic, patient_name="Ann Example")
    for n in range(3):
        with transaction.atomic():
            referral_update(referral=referral, status=referral.status, actor="test", business_status_text=f"step {n}")
    return referral


def _handed(dispatched) -> list[tuple[int, ...]]:
    """The messages handed to the delivery queue (followups.hand_over), as the ``dispatched`` fixture saw them."""
    return [args for name, args in dispatched if name == tasks.QUEUE_TASKS[DELIVERY].name]


def _numbers(receiver) -> list[int]:
    numbers = []
    for bundle in receiver.bodies():
        status = {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"]}
        numbers.append(int(status["events-since-subscription-start"]["valueString"]))
    return numbers


def test_the_fan_out_task_sends_what_it_numbered_without_a_delivery_message(changes, receiver, dispatched):
    tasks.fan_out()

    deliveries = Delivery.objects.filter(subscription__isnull=False).order_by("event_number")
    assert [d.state for d in deliveries] == ["delivered"] * deliveries.count()
    assert _numbers(receiver) == [d.event_number for d in deliveries]
    texts = [json.loads(d.content) for d in deliveries]  # the bodies are the rows' fixed contents
    assert receiver.bodies() == texts
    assert not FollowUp.objects.filter(kind="delivery-attempt").exclude(state="done").exists()
    assert [name for name, _ in dispatched if "delivery" in name] == []  # no hand-over to the delivery queue


def test_a_transaction_rolled_back_holds_nothing_for_sending(changes):
    from notifications.outbox import events_fan_out

    with deliveries_held() as held:
        with pytest.raises(RuntimeError), transaction.atomic():
            assert events_fan_out() > 0
            raise RuntimeError("rolled back")
    assert held == []
    assert not Delivery.objects.filter(subscription__isnull=False).exists()


def test_rows_held_and_never_sent_are_claimed_by_the_sweep_once_their_lease_ends(changes, receiver, dispatched,
                                                                                 settings):
    from notifications.outbox import events_fan_out

    with deliveries_held() as held:
        assert events_fan_out() > 0
    assert held and receiver.received == []  # committed and held: nothing handed to Celery, nothing sent
    assert [name for name, _ in dispatched if "delivery" in name] == []
    ids = [followup_id for followup_id, _ in held]
    assert {sub for _, sub in held} == set(Subscription.objects.values_list("pk", flat=True))
    # Leased to the process that holds them: a sweep now leaves them to it (it would send them beside it).
    assert followups_claim() == []
    # That process died. Once the lease ends, the sweep hands them to the delivery queue.
    later = timezone.now() + dt.timedelta(seconds=settings.HUB_FOLLOWUP_LEASE_SECONDS + 1)
    assert set(ids) <= set(followups_claim(now=later))  # (beside the referral's routing safety net, due by then)
    assert sorted(i for args in _handed(dispatched) for i in args) == sorted(ids)


def _turn_held_elsewhere():
    """A second PostgreSQL session holding the fan-out's turn, as another worker process would."""
    import psycopg

    conn = psycopg.connect(**connection.get_connection_params(), autocommit=True)
    conn.execute("SELECT pg_advisory_lock(%s, %s)", tasks.FAN_OUT_TURN)
    return conn


def _turn_free() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) = 0 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s "
            "AND objsubid = 2", tasks.FAN_OUT_TURN,
        )
        return cursor.fetchone()[0]


def _unnotified() -> int:
    return ReferralEvent.objects.filter(notified_at__isnull=True).count()


postgresql_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="the turn is a PostgreSQL lock")


@postgresql_only
def test_a_message_that_finds_another_process_fanning_out_leaves_its_events_to_it(changes, receiver):
    other = _turn_held_elsewhere()
    try:
        assert tasks.fan_out() == 0
        assert _unnotified() > 0 and receiver.received == []
    finally:
        other.close()  # that process lets go (or is killed: its session, and the lock, end with it)

    assert tasks.fan_out() > 0
    assert _unnotified() == 0 and len(receiver.received) == Delivery.objects.filter(subscription__isnull=False).count()
    assert _turn_free()  # let go at the end


@postgresql_only
def test_after_letting_go_the_holder_looks_again(changes, receiver, monkeypatch):
    real = tasks.events_fan_out
    reads = []

    def first_read_too_early(limit):
        reads.append(limit)
        return 0 if len(reads) == 1 else real(limit=limit)  # the changes committed just after its first read

    monkeypatch.setattr(tasks, "events_fan_out", first_read_too_early)
    tasks.fan_out()
    assert len(reads) >= 2 and _unnotified() == 0
    assert receiver.received and _turn_free()


def test_a_steady_stream_is_handed_on_within_the_task_budget(changes, receiver, monkeypatch):
    real = tasks.events_fan_out

    def another_change_meanwhile(limit):
        count = real(limit=limit)
        with transaction.atomic():  # a change commits while this batch is being sent: there is always more
            referral_update(referral=changes, status=changes.status, actor="test", business_status_text="more")
        return count

    monkeypatch.setattr(tasks, "events_fan_out", another_change_meanwhile)
    monkeypatch.setattr(tasks, "BUDGET_SECONDS", 0)
    handed_on = []
    monkeypatch.setattr(tasks.fan_out, "delay", lambda: handed_on.append("fan-out"))
    tasks.fan_out()
    assert receiver.received  # one batch sent
    if connection.vendor == "postgresql":  # holding the turn, it looked again, found more, and handed it on
        assert handed_on == ["fan-out"] and _turn_free()


def test_a_slow_receivers_notifications_go_through_the_delivery_queue(clinic, receiver, dispatched):
    """One slow receiver must not hold up the fan-out, and every other clinic's notifications behind it."""
    from tests.notifications.conftest import Receiver

    slow_receiver = Receiver()
    slow_receiver.delay = outbox.SLOW_SECONDS + 0.2
    try:
        fast = Subscription.objects.create(clinic=clinic, channel="rest-hook", endpoint=receiver.url, status="active")
        slow = Subscription.objects.create(clinic=clinic, channel="rest-hook", endpoint=slow_receiver.url,
                                           status="active")
        referral = referral_make(clinic, patient_name="Ann Example")

        tasks.fan_out()  # the creation: both are sent here, and the slow one is found slow
        assert len(receiver.received) == len(slow_receiver.received) == 1 and _handed(dispatched) == []
        assert outbox.subscriptions_slow([fast.pk, slow.pk]) == {slow.pk}

        with transaction.atomic():
            referral_update(referral=referral, status=referral.status, actor="test", business_status_text="next")
        tasks.fan_out()
        assert len(receiver.received) == 2 and len(slow_receiver.received) == 1  # the fast one's here, at once
        slow_rows = FollowUp.objects.filter(kind="delivery-attempt", subscription_id=slow.pk, state="pending")
        assert _handed(dispatched) == [tuple(slow_rows.values_list("pk", flat=True))]  # the slow one's: one message
    finally:
        slow_receiver.close()


def test_a_delivery_task_sends_the_notifications_it_resumed_itself(changes, receiver, dispatched):
    """A notification that waited behind an earlier one goes when that one is delivered, in the same task: not
    one more message per round of waiting ones."""
    from notifications.outbox import events_fan_out

    receiver.status = 503  # the first attempts fail: the later notifications wait behind the first
    with deliveries_held() as held:
        events_fan_out()
    tasks._run(tasks.followup_delivery, tuple(i for i, _ in held))
    deliveries = Delivery.objects.filter(subscription__isnull=False).order_by("event_number")
    first, *later = deliveries
    assert first.state == "pending" and first.next_attempt_at and first.attempts == 1
    assert all(d.next_attempt_at is None and d.attempts == 0 for d in later)  # waiting
    receiver.status = 200
    retry = FollowUp.objects.get(kind="delivery-attempt", state="pending", delivery_id=first.pk)
    FollowUp.objects.filter(pk=retry.pk).update(due_at=timezone.now())  # its backoff passed

    tasks.followup_delivery(retry.pk)
    assert [d.state for d in deliveries.all()] == ["delivered"] * len(later + [first])
    assert _numbers(receiver)[-len(later) - 1:] == [d.event_number for d in deliveries]
    assert _handed(dispatched) == []
