"""The one way the hub sends HTTP out: Subscription rest-hooks now, notify-and-pull fetches later.

A receiver's URL is registered by a client, so it must not be able to point the hub at its own internals (a
server-side request forgery). Every request therefore:

1. resolves the host itself (``socket.getaddrinfo``) and refuses loopback, private, link-local, multicast,
   reserved, unspecified and other non-global addresses (IPv4 and IPv6, and an IPv4 address carried inside IPv6:
   IPv4-mapped, NAT64, 6to4, Teredo), and the hub's own addresses, unless ``HUB_OUTBOUND_ALLOW`` allows the
   receiver. A name that resolves to one refused address is refused whole;
2. connects to an address it checked, never to the name: there is no second lookup, so no DNS-rebinding window;
3. keeps the name for the ``Host`` header and for TLS (SNI and certificate verification);
4. follows no redirect (a ``Location`` could name an internal address), has a connect timeout and a deadline for
   the whole response, and stops reading at ``max_response_bytes``;
5. needs ``https`` unless ``DEBUG`` is on or the allow-list entry that matched starts with ``http://``.

Built on the standard library's http.client on purpose: the connect step is ours (the checked address goes
straight to ``socket.connect``), and there is no shared connection pool, proxy from the environment, automatic
retry or redirect to switch off (a caller that sends a batch may keep its own connections open, ``Connections``,
each reused only for a request checked to the same address). ``requests`` reads ``HTTP_PROXY``/``HTTPS_PROXY``
from the environment, and a proxy would resolve the name again, after our check.

``HUB_OUTBOUND_ALLOW`` (settings) is a comma-separated list of entries, each one of:

* ``host`` or ``host:port``: a name as written in the URL; the receiver may resolve to any address;
* an IP address or a CIDR (``10.1.0.0/16``, ``[::1]:9100``, ``127.0.0.1:9100``): resolved addresses in it;
* either, prefixed with ``http://``: plain HTTP is allowed to it as well.

Nothing here raises on a bad URL, a refusal or a network failure: each is an ``HttpResult`` whose ``outcome``
says whether trying again later can help (``transient``) or not (``permanent``).
"""

from __future__ import annotations

import dataclasses
import email.utils
import enum
import heapq
import http.client
import ipaddress
import itertools
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_TIMEOUT = (5.0, 10.0)  # seconds: (connect, whole response)
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
USER_AGENT = "exercise-referral-hub"
_CHUNK = 64 * 1024

# IPv6 prefixes that carry an IPv4 address in their last 32 bits and reach it through a gateway.
_NAT64_PREFIXES = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class Outcome(enum.StrEnum):
    OK = "ok"  # a 2xx answer
    TRANSIENT = "transient"  # may work later: timeout, connection, DNS, TLS, 5xx, 408, 429
    PERMANENT = "permanent"  # will not work by trying again: refused by policy, bad URL, 3xx, other 4xx


@dataclass(frozen=True)
class HttpResult:
    """What one request came to.

    ``reason`` is a stable code for logs and delivery rows: ``ok``; ``refused`` (policy), ``bad-url``,
    ``bad-request`` (headers the hub will not send), ``redirect``, ``http-error`` (4xx other than 408/429),
    ``too-large`` (permanent); ``dns``, ``connect`` (nothing was sent), ``connection`` (lost after sending may
    have begun), ``timeout``, ``tls``, ``protocol``, ``server-error``
    (5xx), ``throttled`` (429), ``request-timeout`` (408) (transient). ``detail`` is one sentence for a person.
    """

    outcome: Outcome
    reason: str
    detail: str = ""
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)  # response headers, names in lower case
    body: bytes = b""  # at most max_response_bytes
    address: str | None = None  # the address connected to
    elapsed: float = 0.0  # seconds
    retry_after: float | None = None  # seconds, from a 429 or 503's Retry-After

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def transient(self) -> bool:
        return self.outcome is Outcome.TRANSIENT

    @property
    def permanent(self) -> bool:
        return self.outcome is Outcome.PERMANENT


# --- The allow list ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AllowEntry:
    text: str
    host: str | None = None  # a name, lower case
    network: IPNetwork | None = None
    port: int | None = None  # None: any port
    plain_http: bool = False

    def covers(self, *, host: str, port: int, address: IPAddress) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host is not None:
            return self.host == host.lower().rstrip(".")
        return _unwrap_mapped(address) in self.network if self.network.version == 4 else address in self.network


class AllowList:
    """Receivers an admin allows although their addresses would be refused (see the module docstring)."""

    def __init__(self, entries: Iterable[AllowEntry] = ()):
        self.entries = tuple(entries)

    def __repr__(self) -> str:
        return f"AllowList({[e.text for e in self.entries]!r})"

    @classmethod
    def parse(cls, items: Iterable[str]) -> AllowList:
        """Entries from their text; ValueError naming the first entry that is not one."""
        return cls(_parse_entry(item.strip()) for item in items if item.strip())

    @classmethod
    def from_settings(cls) -> AllowList:
        from django.conf import settings

        return cls.parse(getattr(settings, "HUB_OUTBOUND_ALLOW", ()))

    def matching(self, *, host: str, port: int, address: IPAddress) -> list[AllowEntry]:
        return [entry for entry in self.entries if entry.covers(host=host, port=port, address=address)]


def _parse_entry(text: str) -> AllowEntry:
    original = text
    plain_http = text.lower().startswith("http://")
    if plain_http:
        text = text[len("http://") :].rstrip("/")
    if not text or any(c in text for c in " /@?#") and not _looks_like_cidr(text):
        raise ValueError(f"{original!r} is not a host[:port], an IP address or a CIDR")
    if _looks_like_cidr(text):
        try:
            return AllowEntry(original, network=ipaddress.ip_network(text, strict=False), plain_http=plain_http)
        except ValueError:
            raise ValueError(f"{original!r} is not a valid CIDR") from None
    host, port = text, None
    if text.startswith("["):  # [v6] or [v6]:port
        inside, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise ValueError(f"{original!r} has no closing bracket")
        host = inside
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{original!r} is not [IPv6]:port")
            port = _port(rest[1:], original)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(port_text, original)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not _is_host_name(host):
            raise ValueError(f"{original!r} is not a host name or an IP address") from None
        return AllowEntry(original, host=host.lower().rstrip("."), port=port, plain_http=plain_http)
    return AllowEntry(original, network=ipaddress.ip_network(address), port=port, plain_http=plain_http)


def _looks_like_cidr(text: str) -> bool:
    return "/" in text and not text.startswith("[")


def _port(text: str, original: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{original!r} has no valid port")
    return int(text)


def _is_host_name(host: str) -> bool:
    labels = host.rstrip(".").split(".")
    return bool(host) and len(host) <= 253 and all(
        0 < len(label) <= 63 and label.isascii() and label.replace("-", "").isalnum() and label[0] != "-" != label[-1]
        for label in labels
    )


# --- The address policy --------------------------------------------------------------------------------------


def _unwrap_mapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address leads to through a translator or tunnel."""
    found = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)  # (server, client)
    if any(address in prefix for prefix in _NAT64_PREFIXES):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def address_refusal(address: IPAddress) -> str | None:
    """Why the hub refuses to connect to ``address`` (a few words), or None. The hub's own addresses are checked
    apart (``hub_addresses``)."""
    if isinstance(address, ipaddress.IPv6Address):
        for inner in _embedded_ipv4(address):
            reason = address_refusal(inner)
            if reason:
                return f"{reason} (inside {address})"
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        # Shared (carrier NAT), documentation, benchmarking and other special ranges are not private but are
        # not on the public internet either.
        ("not global", not address.is_global),
    )
    for name, hit in checks:
        if hit:
            return f"{address} is a {name} address" if name != "not global" else f"{address} is not a global address"
    return None


_hub_addresses_cache: dict[str, tuple[float, frozenset[IPAddress]]] = {}
_HUB_ADDRESSES_TTL = 300.0  # seconds


def hub_addresses() -> frozenset[IPAddress]:
    """The hub's own addresses: its host name's and those of ``HUB_PUBLIC_BASE_URL``'s host (so a receiver cannot
    be the hub itself through its proxy). Looked up at most every five minutes."""
    from django.conf import settings

    base_url = getattr(settings, "HUB_PUBLIC_BASE_URL", None) or ""
    key = f"{socket.gethostname()}|{base_url}"
    cached = _hub_addresses_cache.get(key)
    if cached and cached[0] > time.monotonic():
        return cached[1]
    names = [socket.gethostname()]
    public_host = urlsplit(base_url).hostname if base_url else None
    if public_host:
        names.append(public_host)
    addresses: set[IPAddress] = set()
    for name in names:
        try:
            infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            continue
        for info in infos:
            try:
                addresses.add(_unwrap_mapped(ipaddress.ip_address(info[4][0])))
            except ValueError:
                continue
    result = frozenset(addresses)
    _hub_addresses_cache[key] = (time.monotonic() + _HUB_ADDRESSES_TTL, result)
    return result


# --- Requests ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # as in the URL, without brackets
    port: int
    path: str  # path and query: the request target
    addresses: tuple[tuple[int, tuple], ...]  # (family, sockaddr) of each checked address


def http_post(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    allow: AllowList | None = None,
    ssl_context: ssl.SSLContext | None = None,
    connections: Connections | None = None,
) -> HttpResult:
    """POST ``body`` to ``url`` under the outbound policy (module docstring); never raises.

    ``headers`` are sent as given (``Host`` may not be among them: it is always the URL's host). ``timeout`` is
    seconds, one number for both or ``(connect, response)``: the response deadline covers the TLS handshake,
    sending, and reading the whole answer. ``allow`` defaults to ``HUB_OUTBOUND_ALLOW``; ``ssl_context`` to the
    system's trust store with hostname checks. With ``connections`` (a ``Connections``), the connection is kept
    open after the answer, for the caller's next request to the same receiver.
    """
    return _request("POST", url, body, headers, timeout, max_response_bytes, allow, ssl_context, connections)


def http_get(
    url: str,
    *,
    headers: dict[str, str],
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    allow: AllowList | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> HttpResult:
    """GET ``url`` under the outbound policy; as ``http_post``."""
    return _request("GET", url, None, headers, timeout, max_response_bytes, allow, ssl_context, None)


def outbound_refusal(url: str, *, allow: AllowList | None = None) -> HttpResult | None:
    """The refusal ``http_post`` would give ``url`` before connecting (policy, bad URL or DNS), or None: for
    checking a receiver when it is registered. It resolves the name but connects to nothing."""
    target = _resolve(url, allow if allow is not None else AllowList.from_settings())
    return target if isinstance(target, HttpResult) else None


def _refused(detail: str) -> HttpResult:
    return HttpResult(Outcome.PERMANENT, "refused", detail)


def _resolve(url: str, allow: AllowList) -> _Target | HttpResult:
    """The checked target of ``url``, or the result that refuses it. Connects to nothing."""
    from django.conf import settings

    if not isinstance(url, str) or any(ord(c) < 33 for c in url):
        return HttpResult(Outcome.PERMANENT, "bad-url", "the URL is empty or has spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return HttpResult(Outcome.PERMANENT, "bad-url", f"the URL cannot be read: {exc}")
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return HttpResult(Outcome.PERMANENT, "bad-url", f"only http and https URLs are sent to, not {scheme!r}")
    if parts.username is not None or parts.password is not None:
        return HttpResult(Outcome.PERMANENT, "bad-url", "a URL with credentials in it is not sent to")
    host = parts.hostname
    if not host:
        return HttpResult(Outcome.PERMANENT, "bad-url", "the URL names no host")
    port = port or (443 if scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return HttpResult(Outcome.TRANSIENT, "dns", f"{host} could not be resolved: {exc}")
    checked: list[tuple[int, tuple]] = []
    own = None
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        try:
            address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        except ValueError:
            return _refused(f"{host} resolved to {sockaddr[0]!r}, which is not an IP address")
        entries = allow.matching(host=host, port=port, address=address)
        if not entries:
            reason = address_refusal(address)
            if reason is None:
                own = hub_addresses() if own is None else own
                if _unwrap_mapped(address) in own:
                    reason = f"{address} is one of the hub's own addresses"
            if reason:
                return _refused(f"{host} resolves to {reason}; an admin may allow it in HUB_OUTBOUND_ALLOW")
        if scheme == "http" and not settings.DEBUG and not any(entry.plain_http for entry in entries):
            return _refused(
                f"plain http to {host} is refused: receivers must use https "
                "(or be allowed in HUB_OUTBOUND_ALLOW as http://...)"
            )
        if (family, sockaddr) not in checked:
            checked.append((family, sockaddr))
    if not checked:
        return HttpResult(Outcome.TRANSIENT, "dns", f"{host} resolved to no IP address")
    return _Target(scheme, host, port, path, tuple(checked))


class _Watchdog:
    """One daemon thread per process that shuts down the sockets of requests past their deadline (``_Deadline``),
    earliest first. A thread per request cost its start (about 0.5 ms of a loaded worker's time, bench/followups.py)
    on every POST. Started on first use in each process: a Celery prefork child does not inherit its parent's
    threads."""

    def __init__(self):
        self._pid: int | None = None
        self._lock = threading.Lock()

    def _start(self) -> None:
        self._pid = os.getpid()
        self._wake = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._order = itertools.count()
        threading.Thread(target=self._run, name="outbound-http-deadlines", daemon=True).start()

    def watch(self, deadline: _Deadline) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._start()
        with self._wake:
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if self._heap[0][2] is deadline:
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)  # done in time: dropped here, not searched for by cancel()
                if not self._heap:
                    self._wake.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                _, _, deadline = heapq.heappop(self._heap)
            deadline.expire()


_watchdog = _Watchdog()


class _Deadline:
    """Shuts the socket down when the response is late: a receiver that drips a byte at a time would otherwise
    keep each read within its timeout for ever. Watched by the process's ``_Watchdog``."""

    def __init__(self, seconds: float):
        self.expired = False
        self.cancelled = False
        self.at = time.monotonic() + seconds
        self._sock: socket.socket | None = None
        self._watched = False
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return max(self.at - time.monotonic(), 0.001)

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down at the deadline; called again with the TLS socket that wraps the first one."""
        self._sock = sock
        if not self._watched:
            self._watched = True
            _watchdog.watch(self)

    def expire(self) -> None:
        with self._lock:  # not after cancel(): the socket may carry the next request by then (Connections)
            if self.cancelled:
                return
            self.expired = True
            try:
                if self._sock is not None:
                    self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            self._sock = None


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to an address checked beforehand; the URL's name goes only into Host and TLS."""

    def __init__(self, target: _Target, family: int, sockaddr: tuple, connect_timeout: float, deadline: _Deadline,
                 ssl_context: ssl.SSLContext | None):
        # Set before __init__, which reads it: the Host header leaves out the scheme's default port.
        self.default_port = 443 if target.scheme == "https" else 80
        super().__init__(target.host, target.port, timeout=connect_timeout)
        self._family, self._sockaddr = family, sockaddr
        self._connect_timeout, self._deadline = connect_timeout, deadline
        self._tls = target.scheme == "https"
        self._ssl_context = ssl_context

    def connect(self) -> None:
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        try:
            sock.settimeout(self._connect_timeout)
            sock.connect(self._sockaddr)
            sock.settimeout(self._deadline.remaining())
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._deadline.watch(sock)  # the TLS handshake counts against the deadline too
            if self._tls:
                context = self._ssl_context or ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=self.host)
                self._deadline.watch(sock)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def rearm(self, deadline: _Deadline) -> None:
        """Give a kept-open connection the next request's deadline."""
        self._deadline = deadline
        deadline.watch(self.sock)
        self.sock.settimeout(deadline.remaining())


class Connections:
    """Connections kept open between requests (HTTP/1.1 keep-alive), for a caller that sends several in a row to
    the same receivers (the outbox's batch of deliveries): no TCP (and TLS) set-up per request, for the hub and
    the receiver. Each request still resolves its host and checks every address (rules 1 and 2 of the module
    docstring); a kept connection is used only when that request chose the very address it is connected to, for
    the same scheme, host name, port and TLS context, so reuse takes no decision the policy did not take. A
    connection that answered ``Connection: close``, failed, or was cut by its deadline is not kept.

    A context manager: it closes them all at its end. For one thread, and short-lived (a receiver may close an
    idle connection: the request then goes again on a new one, once, as it had not reached the receiver)."""

    def __init__(self):
        self._open: dict[tuple, _PinnedConnection] = {}

    def __enter__(self) -> Connections:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for connection in self._open.values():
            connection.close()
        self._open.clear()

    def _take(self, key: tuple) -> _PinnedConnection | None:
        connection = self._open.pop(key, None)
        return connection if connection is not None and connection.sock is not None else None

    def _keep(self, key: tuple, connection: _PinnedConnection) -> None:
        self._open[key] = connection


def _split_timeout(timeout) -> tuple[float, float]:
    if isinstance(timeout, (tuple, list)):
        connect, response = timeout
    else:
        connect = response = timeout
    return float(connect), float(response)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _classify(status: int) -> tuple[Outcome, str]:
    if 200 <= status < 300:
        return Outcome.OK, "ok"
    if 300 <= status < 400:
        return Outcome.PERMANENT, "redirect"
    if status == 429:
        return Outcome.TRANSIENT, "throttled"
    if status == 408:
        return Outcome.TRANSIENT, "request-timeout"
    if status >= 500:
        return Outcome.TRANSIENT, "server-error"
    return Outcome.PERMANENT, "http-error"


def _request(method, url, body, headers, timeout, max_response_bytes, allow, ssl_context, connections) -> HttpResult:
    started = time.monotonic()
    target = _resolve(url, allow if allow is not None else AllowList.from_settings())
    if isinstance(target, HttpResult):
        log.info("outbound %s %s not sent: %s", method, _loggable(url), target.detail)
        return target
    sent_headers = {"User-Agent": USER_AGENT, **(headers or {})}
    if any(name.lower() == "host" for name in sent_headers):
        return HttpResult(Outcome.PERMANENT, "bad-request", "a Host header is not sent: it is the URL's host")
    connect_timeout, response_timeout = _split_timeout(timeout)

    last: HttpResult | None = None
    for family, sockaddr in target.addresses:
        key = (target.scheme, target.host.lower(), target.port, family, sockaddr, id(ssl_context))
        kept = connections._take(key) if connections is not None else None
        result = _exchange(method, target, family, sockaddr, body, sent_headers, connect_timeout, response_timeout,
                           max_response_bytes, ssl_context, kept=kept, connections=connections, key=key)
        if result is _STALE:  # the receiver had closed the kept connection: the request did not reach it
            result = _exchange(method, target, family, sockaddr, body, sent_headers, connect_timeout,
                               response_timeout, max_response_bytes, ssl_context, kept=None, connections=connections,
                               key=key)
        result = dataclasses.replace(result, address=sockaddr[0], elapsed=time.monotonic() - started)
        # Only a failed connect moves on to the next address: once a request may have been sent, trying another
        # address could deliver it twice.
        if result.reason != "connect":
            return result
        last = result
    return last


# _exchange's answer when a kept connection turned out closed by the receiver before it answered anything.
_STALE = HttpResult(Outcome.TRANSIENT, "connection", "the kept connection was closed by the receiver")


def _exchange(method, target, family, sockaddr, body, headers, connect_timeout, response_timeout, limit,
              ssl_context, *, kept=None, connections=None, key=None) -> HttpResult:
    deadline = _Deadline(connect_timeout + response_timeout)
    keep = False
    if kept is not None:
        connection = kept
        connection.rearm(deadline)
    else:
        connection = _PinnedConnection(target, family, sockaddr, connect_timeout, deadline, ssl_context)
    try:
        if kept is None:
            try:
                connection.connect()
            except ssl.SSLError as exc:
                return HttpResult(Outcome.TRANSIENT, "tls", f"TLS with {target.host} failed: {exc.reason or exc}")
            except TimeoutError:
                return HttpResult(Outcome.TRANSIENT, "connect", f"connecting to {sockaddr[0]} timed out")
            except OSError as exc:
                if deadline.expired:
                    return HttpResult(Outcome.TRANSIENT, "timeout", "no answer before the deadline")
                return HttpResult(Outcome.TRANSIENT, "connect", f"could not connect to {sockaddr[0]}: {exc}")
        try:
            connection.request(method, target.path, body=body, headers=headers)
        except ValueError as exc:  # http.client refuses header names or values with CR/LF and the like
            return HttpResult(Outcome.PERMANENT, "bad-request", f"the request cannot be sent: {exc}")
        except (BrokenPipeError, ConnectionResetError):
            if kept is not None and not deadline.expired:
                return _STALE
            raise
        try:
            response = connection.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            # Closed without a byte of an answer: on a kept connection, the receiver's idle close.
            if kept is not None and not deadline.expired:
                return _STALE
            raise
        status = response.status
        response_headers = {name.lower(): value for name, value in response.getheaders()}
        chunks, size = [], 0
        while True:
            chunk = response.read(min(_CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                return HttpResult(Outcome.PERMANENT, "too-large",
                                  f"the answer is longer than {limit} bytes; reading stopped", status=status,
                                  headers=response_headers, body=b"".join(chunks)[:limit])
        if deadline.expired:  # the watchdog's shutdown reads as the end of a body without a length
            return HttpResult(Outcome.TRANSIENT, "timeout", "no complete answer before the deadline", status=status)
        outcome, reason = _classify(status)
        # The answer read whole, and the receiver keeps the connection open (HTTP/1.1 with a length): kept.
        keep = connections is not None and not response.will_close and connection.sock is not None
        return HttpResult(
            outcome, reason, f"HTTP {status}", status=status, headers=response_headers, body=b"".join(chunks),
            retry_after=_retry_after(response_headers.get("retry-after")) if status in (429, 503) else None,
        )
    except (TimeoutError, ssl.SSLError, OSError, http.client.HTTPException) as exc:
        if deadline.expired or isinstance(exc, TimeoutError):
            return HttpResult(Outcome.TRANSIENT, "timeout", "no complete answer before the deadline")
        if isinstance(exc, ssl.SSLError):
            return HttpResult(Outcome.TRANSIENT, "tls", f"TLS with {target.host} failed: {exc}")
        if isinstance(exc, http.client.HTTPException):
            return HttpResult(Outcome.TRANSIENT, "protocol", f"the answer is not HTTP: {exc!r}")
        return HttpResult(Outcome.TRANSIENT, "connection", f"the connection failed: {exc}")
    finally:
        deadline.cancel()
        if keep and not deadline.expired:
            connections._keep(key, connection)
        else:
            connection.close()


def _loggable(url: str) -> str:
    # The path and query may hold identifiers; logs keep the scheme, host and port only.
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    except ValueError:
        return "<unreadable URL>"
