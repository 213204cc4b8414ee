"""Real parts for the follow-up engine's tests: an HTTP receiver and an SMTP server on 127.0.0.1, both recording
what they get; and a way to play the worker's part (claim, then run) at a chosen moment."""

import asyncio
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from notifications.followups import followup_run, followups_claim


class Receiver:
    """A local HTTP server that records every POST (path, headers, JSON body) and answers ``status``, after
    ``delay`` seconds."""

    def __init__(self):
        self.received: list[dict] = []
        self.status = 200
        self.delay = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                time.sleep(receiver.delay)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.received]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


class _Mailbox:
    def __init__(self):
        self.messages: list[dict] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.messages.append({"to": list(envelope.rcpt_tos), "data": envelope.content.decode("utf8", "replace")})
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp(settings):
    """A real SMTP server (aiosmtpd) on 127.0.0.1, with Django's SMTP backend pointed at it. ``.messages``
    lists what arrived."""
    mailbox = _Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=_free_port(), loop=asyncio.new_event_loop())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = controller.port
    settings.EMAIL_USE_TLS = False
    yield mailbox
    controller.stop()


@pytest.fixture
def coordinator(db):
    user = get_user_model().objects.create_user(
        "coordinator", email="coordinator@hub.test", password="x", is_staff=True
    )
    user.user_permissions.add(Permission.objects.get(codename="coordinator", content_type__app_label="notifications"))
    return user


@pytest.fixture
def dispatched(monkeypatch):
    """What would be handed to Celery on commit, recorded instead of sent (a test that plays the worker itself
    leaves nothing behind on the shared broker)."""
    sent = []
    monkeypatch.setattr("notifications.followups._enqueue", lambda task, *args: sent.append((task.name, args)))
    monkeypatch.setattr("notifications.receivers._fan_out_on_commit", lambda: None)
    return sent


def drain(now, *, rounds: int = 20) -> list[str]:
    """Play the worker: claim what is due at ``now`` and run each, until nothing is left due. The outcomes."""
    outcomes = []
    for _ in range(rounds):
        claimed = followups_claim(now=now)
        if not claimed:
            return outcomes
        outcomes += [followup_run(followup_id=i, now=now) for i in claimed]
    raise AssertionError(f"still claiming after {rounds} rounds: {outcomes[-5:]}")
