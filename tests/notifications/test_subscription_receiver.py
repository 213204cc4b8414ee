"""The demo's receiver command prints the notifications it gets."""

import datetime as dt
import io
import json
import socket
import threading

from django.core.management import call_command

from fhir_bridge.subscriptions import NotificationEvent, notification_bundle
from notifications.http import AllowList, http_post


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_it_prints_a_handshake_and_an_event_notification():
    port = _free_port()
    out = io.StringIO()
    command = threading.Thread(target=call_command, args=("subscription_receiver", "--port", str(port), "--count", "2"),
                               kwargs={"stdout": out}, daemon=True)
    command.start()
    now = dt.datetime.now(dt.UTC)
    handshake = notification_bundle(base_url="http://127.0.0.1:8000/fhir", subscription_id="7", status="requested",
                                    type="handshake", events_since_start=0, content="id-only", timestamp=now)
    event = notification_bundle(base_url="http://127.0.0.1:8000/fhir", subscription_id="7", status="active",
                                type="event-notification", events_since_start=1, content="id-only", timestamp=now,
                                events=[NotificationEvent(1, now, {"resourceType": "Task", "id": "42"})])
    allow = AllowList.parse([f"http://127.0.0.1:{port}"])
    results = []
    for bundle in (handshake, event):
        for _ in range(50):  # the command needs a moment to start listening
            result = http_post(f"http://127.0.0.1:{port}/notifications", body=json.dumps(bundle).encode(),
                               headers={"Content-Type": "application/fhir+json"}, allow=allow)
            if result.reason != "connect":
                break
            threading.Event().wait(0.1)
        results.append(result)
    command.join(10)

    assert [r.status for r in results] == [200, 200]
    assert not command.is_alive()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"Receiving on http://127.0.0.1:{port}/")
    assert "handshake from http://127.0.0.1:8000/fhir/Subscription/7 (status requested, 0 events so far)" in lines[1]
    assert "event-notification" in lines[2] and "events #1 http://127.0.0.1:8000/fhir/Task/42" in lines[2]
