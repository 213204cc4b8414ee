"""Real peers for tests and the demo: an HTTP receiver and an SMTP server, both on 127.0.0.1.

``HttpReceiver`` is a threaded http.server that records every request (method, path, headers, body) and answers
as told (over HTTPS when given a server-side SSL context): 200 by default; for a while 500, 503 or 429, or no
answer at all (a hang the client times out on); a redirect or a long body for the client's limits. It can be stopped (connections are refused) and started again on
the same port, which is how a test takes a receiver down and brings it back. ``manage.py subscription_receiver``
runs the same class for the demo.

``SmtpServer`` is aiosmtpd's Controller with a handler that keeps each message. The ``smtp_backend`` fixture points
Django's SMTP e-mail backend at one, so a test sends real SMTP and reads the message back.

The fixtures are imported by tests/conftest.py: ``http_receiver``, ``smtp_server`` and ``smtp_backend``.
"""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str  # with the query
    headers: dict[str, str]  # names in lower case
    body: bytes
    status: int | None  # what the receiver answered; None when it hung up without answering
    at: float  # time.time() when the request had been read


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class _Mode:
    """What the receiver does with the next requests: ``count`` of them (None: until told otherwise), or until
    ``until`` (time.monotonic())."""

    reply: Reply | None  # None: hang, answering nothing until ``hang_seconds`` pass or the receiver stops
    count: int | None = None
    until: float | None = None
    hang_seconds: float = 60.0


class HttpReceiver:
    """A real HTTP receiver on 127.0.0.1 (``port=0``: a free one, kept across ``stop``/``start``)."""

    def __init__(self, port: int = 0, *, on_request: Callable[[ReceivedRequest], None] | None = None,
                 ssl_context: ssl.SSLContext | None = None):
        self.port = port
        self._ssl_context = ssl_context  # a server-side context: the receiver speaks HTTPS
        self._on_request = on_request
        self._lock = threading.Lock()
        self._requests: list[ReceivedRequest] = []
        self._modes: list[_Mode] = []
        self._default = Reply()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._arrived = threading.Condition(self._lock)

    # Life

    def start(self) -> HttpReceiver:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = ThreadingHTTPServer((LOOPBACK, self.port), _handler_for(self))
        server.daemon_threads = True
        if self._ssl_context is not None:
            server.socket = self._ssl_context.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: from now on connections are refused. Requests hanging in the receiver end at once."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = self._thread = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{LOOPBACK}:{self.port}"

    def __enter__(self) -> HttpReceiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # Behaviour

    def answer(self, status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        """What every request gets once no failure mode is in force (200 with no body to begin with)."""
        with self._lock:
            self._default = Reply(status, dict(headers or {}), body)

    def fail(self, status: int = 503, *, count: int | None = None, seconds: float | None = None,
             body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        """Answer ``status`` to the next ``count`` requests, or for ``seconds``, or until ``recover()``."""
        self._push(_Mode(Reply(status, dict(headers or {}), body), count, self._until(seconds)))

    def hang(self, *, count: int | None = None, seconds: float | None = None, hang_seconds: float = 60.0) -> None:
        """Read the request, then answer nothing for ``hang_seconds`` (or until stopped): a client times out."""
        self._push(_Mode(None, count, self._until(seconds), hang_seconds))

    def recover(self) -> None:
        """Forget every failure mode: answer as ``answer`` says again."""
        with self._lock:
            self._modes.clear()

    # What arrived

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    def delivered(self) -> list[ReceivedRequest]:
        """The requests the receiver answered with a 2xx."""
        return [r for r in self.requests if r.status is not None and 200 <= r.status < 300]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        """Wait until at least ``count`` requests have arrived; all of them, or AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self._requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self._requests)} request(s) arrived, not {count}, in {timeout} s")
                self._arrived.wait(left)
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    # Inside

    @staticmethod
    def _until(seconds: float | None) -> float | None:
        return None if seconds is None else time.monotonic() + seconds

    def _push(self, mode: _Mode) -> None:
        with self._lock:
            self._modes.append(mode)

    def _next_reply(self) -> _Mode:
        with self._lock:
            now = time.monotonic()
            self._modes = [
                m for m in self._modes if (m.count is None or m.count > 0) and (m.until is None or m.until > now)
            ]
            if not self._modes:
                return _Mode(self._default)
            mode = self._modes[0]
            if mode.count is not None:
                mode.count -= 1
            return mode

    def _record(self, request: ReceivedRequest) -> None:
        with self._arrived:
            self._requests.append(request)
            self._arrived.notify_all()
        if self._on_request is not None:
            self._on_request(request)


def _handler_for(receiver: HttpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: each one is seen apart

        def _handle(self) -> None:
            length = self.headers.get("Content-Length")
            try:
                body = self.rfile.read(int(length)) if length else b""
            except ValueError:
                body = b""
            if length and length.isdigit() and len(body) < int(length):
                # The sender went away mid-body (a worker killed between its headers and its body, which
                # http.client writes apart): no request, as for any server; nothing is recorded or answered.
                self.close_connection = True
                return
            headers = {name.lower(): value for name, value in self.headers.items()}
            mode = receiver._next_reply()
            if mode.reply is None:
                receiver._record(ReceivedRequest(self.command, self.path, headers, body, None, time.time()))
                receiver._stopping.wait(mode.hang_seconds)
                self.close_connection = True
                return
            reply = mode.reply
            receiver._record(ReceivedRequest(self.command, self.path, headers, body, reply.status, time.time()))
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if reply.body and self.command != "HEAD":
                self.wfile.write(reply.body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        def log_message(self, format, *args) -> None:  # noqa: A002 - http.server's signature
            pass  # the receiver's records are the log

    return Handler


# --- SMTP ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage  # parsed with the modern policy: message["Subject"], message.get_content(), ...


class SmtpServer:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[ReceivedMail] = []
        self._arrived = threading.Condition()
        self._controller = None
        self.port = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._arrived:
            self.messages.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), message))
            self._arrived.notify_all()
        return "250 Message accepted for delivery"

    def start(self) -> SmtpServer:
        from aiosmtpd.controller import Controller

        self.port = _free_port()
        self._controller = Controller(self, hostname=LOOPBACK, port=self.port, ready_timeout=10)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.messages)} message(s) arrived, not {count}, in {timeout} s")
                self._arrived.wait(left)
            return list(self.messages)


def _free_port() -> int:
    # aiosmtpd's Controller checks readiness by connecting to its port, so it needs the number up front.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


# --- Fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture
def http_receiver():
    """A running HttpReceiver on a free loopback port, stopped after the test."""
    receiver = HttpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def smtp_server():
    """A running SmtpServer on a free loopback port, stopped after the test."""
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def smtp_backend(settings, smtp_server):
    """Django's SMTP e-mail backend pointed at ``smtp_server`` (which it yields): mail sent in the test is real
    SMTP, read back from ``smtp_server.messages``."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = LOOPBACK
    settings.EMAIL_PORT = smtp_server.port
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 10
    yield smtp_server
