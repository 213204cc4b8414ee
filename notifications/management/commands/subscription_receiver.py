"""A local receiver for Subscription notifications, for the demo: it prints each handshake, heartbeat and event
notification the hub posts to it.

    .venv/bin/python manage.py subscription_receiver --port 9100

then give a Subscription the endpoint http://127.0.0.1:9100/notifications (the embedded run allows plain HTTP to
the loopback: HUB_OUTBOUND_ALLOW). It is the tests' HttpReceiver (tests/receivers.py), so it runs from a
checkout with the test extras installed (``make setup``), and listens on 127.0.0.1 only.
"""

import json
import threading

from django.core.management.base import BaseCommand, CommandError


def describe(method: str, path: str, body: bytes) -> str:
    """One line for a request: what kind of notification it is, its subscription, event numbers and focus."""
    try:
        bundle = json.loads(body) if body else None
    except ValueError:
        return f"{method} {path}: {len(body)} bytes, not JSON"
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return f"{method} {path}: {len(body)} bytes, not a notification Bundle"
    entries = bundle.get("entry") or [{}]
    status = (entries[0].get("resource") or {}) if isinstance(entries[0], dict) else {}
    values, events = {}, []
    for parameter in status.get("parameter") or []:
        if parameter.get("name") == "notification-event":
            parts = {part.get("name"): part for part in parameter.get("part") or []}
            number = (parts.get("event-number") or {}).get("valueString", "?")
            focus = ((parts.get("focus") or {}).get("valueReference") or {}).get("reference")
            events.append(f"#{number}" + (f" {focus}" if focus else ""))
        else:
            value = next((v for k, v in parameter.items() if k.startswith("value")), None)
            values[parameter.get("name")] = value.get("reference") if isinstance(value, dict) else value
    line = (
        f"{method} {path}: {values.get('type', '?')} from {values.get('subscription', '?')} "
        f"(status {values.get('status', '?')}, {values.get('events-since-subscription-start', '?')} events so far)"
    )
    if events:
        line += "; events " + ", ".join(events)
    resources = sum(1 for entry in entries[1:] if isinstance(entry, dict) and "resource" in entry)
    if resources:
        line += f"; {resources} resource(s) in the Bundle"
    return line


class Command(BaseCommand):
    help = "Run a local HTTP receiver on 127.0.0.1 that prints the Subscription notifications it gets (demo)."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=9100, help="port on 127.0.0.1 (default 9100)")
        parser.add_argument("--body", action="store_true", help="print each request's body as well")
        parser.add_argument("--count", type=int, default=0, help="stop after this many requests (default: never)")

    def handle(self, *args, port: int, body: bool, count: int, **options):
        try:
            from tests.receivers import HttpReceiver
        except ImportError as exc:  # an installed hub without its checkout's tests
            raise CommandError(f"the receiver comes with the checkout's tests and test extras: {exc}") from None

        done = threading.Event()
        seen = 0
        lock = threading.Lock()

        def on_request(request):
            nonlocal seen
            with lock:
                self.stdout.write(describe(request.method, request.path, request.body))
                if body and request.body:
                    self.stdout.write(request.body.decode("utf-8", "replace"))
                seen += 1
                if count and seen >= count:
                    done.set()

        receiver = HttpReceiver(port, on_request=on_request)
        try:
            receiver.start()
        except OSError as exc:
            raise CommandError(f"cannot listen on 127.0.0.1:{port}: {exc}") from None
        self.stdout.write(f"Receiving on {receiver.url}/ (Ctrl-C stops). Use it as a rest-hook endpoint, e.g. "
                          f"{receiver.url}/notifications")
        try:
            done.wait()
        except KeyboardInterrupt:
            pass
        finally:
            receiver.stop()
