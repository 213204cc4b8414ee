"""The fan-out's message on commit (notifications.receivers._fan_out_on_commit): one per transaction, and with
HUB_FAN_OUT_COALESCE none while one is queued and its task has not started."""

import pytest
from django.core.cache import cache
from django.db import transaction

from notifications import receivers, tasks

pytestmark = pytest.mark.django_db(transaction=True)  # real commits: on_commit runs as in production


@pytest.fixture
def sent(monkeypatch):
    messages = []
    monkeypatch.setattr(tasks.fan_out, "delay", lambda: messages.append("fan-out"))
    monkeypatch.setattr(tasks, "events_fan_out", lambda limit: 0)  # the task's own work is tested elsewhere
    cache.delete(tasks.FAN_OUT_QUEUED)
    yield messages
    cache.delete(tasks.FAN_OUT_QUEUED)


def _change() -> None:
    with transaction.atomic():
        receivers._fan_out_on_commit()
        receivers._fan_out_on_commit()  # a second change in the same transaction: still one message


def test_with_a_shared_cache_a_queued_fan_out_takes_the_later_changes_too(sent, settings):
    settings.HUB_FAN_OUT_COALESCE = True
    for _ in range(3):
        _change()
    assert sent == ["fan-out"]  # the first change's message is queued: the next two send none

    tasks.fan_out()  # its task starts: from now on a change sends a message again
    _change()
    assert sent == ["fan-out", "fan-out"]


def test_a_message_that_could_not_be_sent_does_not_hold_back_the_next(
    sent, settings, monkeypatch
):
    settings.HUB_FAN_OUT_COALESCE = True

    def broker_down():
        raise ConnectionError("broker down")

    with monkeypatch.context() as down:
        down.setattr(tasks.fan_out, "delay", broker_down)
        _change()  # logged, not raised: the sweep fans out meanwhile
    _change()
    assert sent == ["fan-out"]


def test_without_a_shared_cache_every_transaction_sends_one(sent, settings):
    settings.HUB_FAN_OUT_COALESCE = False
    for _ in range(3):
        _change()
    assert sent == ["fan-out"] * 3
