"""A chunk's delivery attempts as one batch (outbox.delivery_attempts): the same decisions as one attempt at a
time (event-number order, waiting behind an earlier pending one, resuming, a failure isolated), at a price that
does not grow with the chunk."""

import json
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import Access
from notifications.bundles import EVENT_NOTIFICATION
from notifications.followups import followup_schedule, followups_run
from notifications.models import Delivery, FollowUp, Subscription
from notifications.outbox import _attempt_plan

pytestmark = pytest.mark.django_db


def _numbered(clinic, endpoint: str, count: int, *, scheduled=None) -> tuple[Subscription, list[Delivery], list[int]]:
    """An active subscription with ``count`` numbered notifications, as the fan-out writes them, and the
    attempt follow-ups of those numbered in ``scheduled`` (all by default). Returns the subscription, its
    deliveries by number (index 0 is number 1) and the follow-up ids, in number order."""
    now = timezone.now()
    sub = Subscription.objects.create(clinic=clinic, channel="rest-hook", endpoint=endpoint, status="active",
                                      events_since_start=count)
    deliveries = Delivery.objects.bulk_create(
        Delivery(channel="rest-hook", subscription=sub, notification_type=EVENT_NOTIFICATION, event_number=n,
                 task_id=f"t{n}", task_version=1, endpoint=endpoint,
                 content=json.dumps({"n": n, "nonce": uuid.uuid4().hex}), next_attempt_at=now)
        for n in range(1, count + 1)
    )
    wanted = set(scheduled if scheduled is not None else range(1, count + 1))
    ids = followup_schedule(plans=[_attempt_plan(d, now) for d in deliveries if d.event_number in wanted], now=now)
    return sub, deliveries, ids


def _arrived(receiver) -> list[int]:
    return [body["n"] for body in receiver.bodies()]


def _run(ids) -> tuple[dict, int]:
    with CaptureQueriesContext(connection) as queries:
        outcomes = dict(followups_run(followup_ids=ids))
    return outcomes, len(queries)


def test_a_chunk_costs_the_same_statements_whatever_its_size(clinic, receiver, dispatched):
    _, _, few = _numbered(clinic, receiver.url, 3)
    few_outcomes, few_queries = _run(few)
    _, _, many = _numbered(clinic, receiver.url, 40)
    many_outcomes, many_queries = _run(many)

    assert set(few_outcomes.values()) == set(many_outcomes.values()) == {"delivered: HTTP 200"}
    # Locks, reads and writes per chunk, none per notification: the claim's transaction (the rows, their leases)
    # and the record's (the rows again, the subscriptions' turns and health, the outcomes), the POSTs between them.
    assert many_queries == few_queries <= 18
    assert _arrived(receiver) == [1, 2, 3, *range(1, 41)]
    assert not Delivery.objects.exclude(state="delivered").exists()
    assert set(Delivery.objects.values_list("attempts", flat=True)) == {1}
    # Each attempt that sent is a disclosure of its own, written in the batch's one INSERT.
    queries = sorted(Access.objects.filter(channel="disclosure").values_list("query", flat=True))
    assert len(queries) == 43 and all("attempt=1" in q for q in queries)
    assert set(FollowUp.objects.filter(pk__in=few + many).values_list("state", "attempts")) == {("done", 1)}


def test_a_batch_holds_back_what_an_earlier_pending_one_goes_before_and_resumes_it_in_order(
    clinic, receiver, dispatched
):
    # Number 2 is pending, its attempt not in this chunk (scheduled later); the chunk's come in reverse order.
    sub, deliveries, ids = _numbered(clinic, receiver.url, 5, scheduled=[1, 3, 4, 5])

    outcomes = followups_run(followup_ids=list(reversed(ids)))

    assert _arrived(receiver) == [1]  # in event-number order: 1 first, 3 to 5 behind 2
    waiting = Delivery.objects.filter(subscription=sub, state="pending", next_attempt_at__isnull=True)
    assert sorted(waiting.values_list("event_number", flat=True)) == [3, 4, 5]
    assert sorted(o for _, o in outcomes) == ["delivered: HTTP 200"] + [
        f"waits for an earlier notification of subscription {sub.pk}"] * 3
    assert not Delivery.objects.filter(event_number__in=[3, 4, 5], attempts__gt=0).exists()  # none counted

    dispatched.clear()
    [second] = followup_schedule(plans=[_attempt_plan(deliveries[1], timezone.now())])
    followups_run(followup_ids=[second])

    # Delivered, 2 resumed the three waiting ones in one message, in order.
    [(_, resumed)] = dispatched[1:]
    assert [FollowUp.objects.get(pk=i).delivery_id for i in resumed] == [d.pk for d in deliveries[2:]]
    followups_run(followup_ids=list(resumed))
    assert _arrived(receiver) == [1, 2, 3, 4, 5]
    assert not Delivery.objects.exclude(state="delivered").exists()


def test_a_failure_in_a_batch_holds_back_the_rest_until_it_is_delivered(clinic, receiver, dispatched):
    sub, deliveries, ids = _numbered(clinic, receiver.url, 4)
    receiver.status = 503

    followups_run(followup_ids=ids)

    assert _arrived(receiver) == [1]  # tried once; the others wait behind it, unsent
    first = Delivery.objects.get(pk=deliveries[0].pk)
    assert (first.state, first.attempts, first.last_error) == ("pending", 1, "HTTP 503")
    assert first.next_attempt_at > timezone.now()
    assert Delivery.objects.filter(subscription=sub, next_attempt_at__isnull=True).count() == 3
    sub.refresh_from_db()
    assert sub.error_count == 1

    receiver.status = 200
    retry = FollowUp.objects.get(delivery_id=first.pk, state="pending")
    dispatched.clear()
    followups_run(followup_ids=[retry.pk], now=first.next_attempt_at)
    followups_run(followup_ids=[i for _, ids_ in dispatched for i in ids_], now=first.next_attempt_at)

    assert _arrived(receiver) == [1, 1, 2, 3, 4]
    assert len({r["body"] for r in receiver.received[:2]}) == 1  # the same content again
    sub.refresh_from_db()
    assert (sub.error_count, sub.status) == (0, "active")


def test_a_send_that_raises_fails_its_row_alone_and_only_it_is_retried(
    clinic, receiver, dispatched, monkeypatch
):
    from notifications import outbox

    sub, deliveries, ids = _numbered(clinic, receiver.url, 3)
    send = outbox.deliver

    def deliver(delivery, **kwargs):
        if delivery.event_number == 2:
            raise RuntimeError("a bug, not a receiver's failure")
        return send(delivery, **kwargs)

    monkeypatch.setattr(outbox, "deliver", deliver)
    outcomes = dict(followups_run(followup_ids=ids))

    assert outcomes[ids[0]] == "delivered: HTTP 200"
    assert outcomes[ids[1]] == "error: a bug, not a receiver's failure"
    assert outcomes[ids[2]] == f"waits for an earlier notification of subscription {sub.pk}"
    states = dict(Delivery.objects.values_list("event_number", "state"))
    assert states == {1: "delivered", 2: "pending", 3: "pending"}
    assert FollowUp.objects.get(pk=ids[1]).state == "pending"  # retried with backoff
    # The send runs with no transaction open and its outcomes are recorded apart from the failing one's: 1 was
    # sent once (before, a rollback of the batch sent it again), 3 not at all (it waits for 2).
    assert _arrived(receiver) == [1]
    assert Access.objects.filter(channel="disclosure").count() == 1  # the one attempt that sent


def test_a_batch_out_of_time_hands_the_rest_to_the_next_transaction(clinic, receiver, dispatched):
    _, _, ids = _numbered(clinic, receiver.url, 5)

    with CaptureQueriesContext(connection) as queries:
        outcomes = followups_run(followup_ids=ids, budget_seconds=0)  # at least one per transaction, no more

    assert [o for _, o in outcomes] == ["delivered: HTTP 200"] * 5
    assert _arrived(receiver) == [1, 2, 3, 4, 5]
    # One claim each (the rows read whole; the record after each send locks them again by id only).
    claims = [q for q in queries.captured_queries
              if q["sql"].startswith('SELECT "notifications_followup"."id", "notifications_followup"."kind"')]
    assert len(claims) == 5
    assert set(FollowUp.objects.filter(pk__in=ids).values_list("state", flat=True)) == {"done"}


def test_a_notification_behind_one_in_flight_elsewhere_waits_in_the_same_chunk(clinic, receiver, dispatched):
    sub, deliveries, ids = _numbered(clinic, receiver.url, 2)
    # 1 is being sent by another worker (a duplicate message): its lease has not passed.
    Delivery.objects.filter(pk=deliveries[0].pk).update(sending_until=timezone.now() + timezone.timedelta(minutes=1))

    outcomes = dict(followups_run(followup_ids=ids))

    assert outcomes == {
        ids[0]: "not pending, or being run by another worker",
        ids[1]: f"waits for an earlier notification of subscription {sub.pk}",
    }
    assert _arrived(receiver) == []
    assert FollowUp.objects.get(pk=ids[0]).state == "pending"  # left to that worker (or to its lease's end)
    assert Delivery.objects.get(pk=deliveries[1].pk).next_attempt_at is None  # resumed when 1 is recorded
