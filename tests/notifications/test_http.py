"""Outbound HTTP: refusals are decided from the resolved address before any connection; real requests go to a
receiver on the loopback only."""

import datetime
import ipaddress
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from notifications import http as outbound
from notifications.http import AllowList, Outcome, http_get, http_post, outbound_refusal

LOOPBACK_HTTP = AllowList.parse(["http://127.0.0.1"])
NOTHING = AllowList()
_real_getaddrinfo = socket.getaddrinfo


def _fake_dns(monkeypatch, names: dict[str, list[str]]) -> list[str]:
    """Resolve the given names to the given addresses (others as usual); returns the names looked up."""
    looked_up = []

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        looked_up.append(host)
        if host not in names:
            return _real_getaddrinfo(host, port, family, type, proto, flags)
        infos = []
        for text in names[host]:
            address = ipaddress.ip_address(text)
            if address.version == 4:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (text, port or 0)))
            else:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (text, port or 0, 0, 0)))
        return infos

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked_up


@pytest.fixture
def no_connections(monkeypatch):
    """Fail the test if anything opens a socket."""

    def refuse(*args, **kwargs):
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "127.0.0.1", "127.1.2.3", "0.0.0.0",
        "224.0.0.1", "239.255.255.250", "240.0.0.1", "100.64.0.1", "198.18.0.1",
        "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
    ],
)
def test_it_refuses_an_internal_address_before_connecting(monkeypatch, no_connections, address):
    _fake_dns(monkeypatch, {"hooks.example.org": [address]})

    result = http_post("https://hooks.example.org/fhir", body=b"{}", headers={}, allow=NOTHING)

    assert (result.outcome, result.reason, result.status) == (Outcome.PERMANENT, "refused", None)
    assert address.split("::ffff:")[-1] in result.detail or address in result.detail


def test_a_name_with_one_internal_address_among_public_ones_is_refused_whole(monkeypatch, no_connections):
    _fake_dns(monkeypatch, {"hooks.example.org": ["93.184.216.34", "10.0.0.1"]})

    result = http_post("https://hooks.example.org/", body=b"{}", headers={}, allow=NOTHING)

    assert result.reason == "refused" and "10.0.0.1" in result.detail


def test_it_refuses_the_hubs_own_address_unless_allowed(monkeypatch, no_connections):
    _fake_dns(monkeypatch, {"hooks.example.org": ["93.184.216.34"]})
    monkeypatch.setattr(outbound, "hub_addresses", lambda: frozenset({ipaddress.ip_address("93.184.216.34")}))

    refused = outbound_refusal("https://hooks.example.org/", allow=NOTHING)
    allowed = outbound_refusal("https://hooks.example.org/", allow=AllowList.parse(["hooks.example.org:443"]))
    other_port = outbound_refusal("https://hooks.example.org:8443/", allow=AllowList.parse(["hooks.example.org:443"]))

    assert refused.reason == "refused" and "hub's own" in refused.detail
    assert allowed is None
    assert other_port.reason == "refused"


def test_the_hubs_own_addresses_are_its_host_names_and_its_public_base_urls(monkeypatch, settings):
    settings.HUB_PUBLIC_BASE_URL = "https://hub-own-address-test.example.org/fhir"
    _fake_dns(monkeypatch, {"hub-own-address-test.example.org": ["203.0.113.9"],
                            socket.gethostname(): ["198.51.100.7"]})

    own = outbound.hub_addresses()

    assert {ipaddress.ip_address("203.0.113.9"), ipaddress.ip_address("198.51.100.7")} <= own


def test_a_public_address_passes_the_policy(monkeypatch, no_connections):
    _fake_dns(monkeypatch, {"hooks.example.org": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]})
    monkeypatch.setattr(outbound, "hub_addresses", lambda: frozenset())

    assert outbound_refusal("https://hooks.example.org/fhir", allow=NOTHING) is None


def test_plain_http_needs_debug_or_an_http_allow_entry(monkeypatch, no_connections, settings):
    _fake_dns(monkeypatch, {"hooks.example.org": ["93.184.216.34"]})
    monkeypatch.setattr(outbound, "hub_addresses", lambda: frozenset())

    settings.DEBUG = False
    refused = outbound_refusal("http://hooks.example.org/", allow=AllowList.parse(["hooks.example.org"]))
    allowed = outbound_refusal("http://hooks.example.org/", allow=AllowList.parse(["http://hooks.example.org"]))
    settings.DEBUG = True
    in_debug = outbound_refusal("http://hooks.example.org/", allow=NOTHING)

    assert refused.reason == "refused" and "https" in refused.detail
    assert allowed is None
    assert in_debug is None


def test_allow_entries_cover_cidrs_addresses_and_ports(monkeypatch, no_connections):
    _fake_dns(monkeypatch, {"a.internal": ["10.1.2.3"], "b.internal": ["10.9.0.1"], "c.internal": ["::ffff:10.1.0.9"]})
    allow = AllowList.parse(["10.1.0.0/16", "10.9.0.1:8443"])

    assert outbound_refusal("https://a.internal/", allow=allow) is None
    assert outbound_refusal("https://c.internal/", allow=allow) is None  # IPv4-mapped counts as the IPv4 address
    assert outbound_refusal("https://b.internal:8443/", allow=allow) is None
    assert outbound_refusal("https://b.internal/", allow=allow).reason == "refused"


@pytest.mark.parametrize(
    "text", ["10.0.0.0/33", "host:0", "host:x", "a b", "user@host", "[::1", "http://", "-bad-.org/x", "-bad-.org"]
)
def test_a_malformed_allow_entry_is_an_error(text):
    with pytest.raises(ValueError):
        AllowList.parse([text])


@pytest.mark.parametrize(
    "url", ["ftp://example.org/", "https://user:pw@example.org/", "https:///path", "http://[::1",
            "https://x.org:99999/",
            "https://exa mple.org/", "", "javascript:alert(1)"],
)
def test_a_bad_url_is_refused_without_a_lookup(monkeypatch, no_connections, url):
    looked_up = _fake_dns(monkeypatch, {})

    result = http_post(url, body=b"{}", headers={}, allow=NOTHING)

    assert (result.outcome, result.reason) == (Outcome.PERMANENT, "bad-url")
    assert looked_up == []


def test_a_name_that_does_not_resolve_is_transient(monkeypatch, no_connections):
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)

    result = http_post("https://nowhere.example.org/", body=b"{}", headers={}, allow=NOTHING)

    assert (result.outcome, result.reason) == (Outcome.TRANSIENT, "dns")


# --- Real requests to a receiver on the loopback ---------------------------------------------------------------


def test_a_post_arrives_with_its_body_and_headers(http_receiver):
    result = http_post(f"{http_receiver.url}/hook?sub=7", body=b'{"resourceType":"Bundle"}',
                       headers={"Content-Type": "application/fhir+json", "Authorization": "Bearer abc"},
                       allow=LOOPBACK_HTTP)

    assert (result.outcome, result.status, result.address) == (Outcome.OK, 200, "127.0.0.1")
    (got,) = http_receiver.requests
    assert (got.method, got.path, got.body) == ("POST", "/hook?sub=7", b'{"resourceType":"Bundle"}')
    assert got.headers["content-type"] == "application/fhir+json"
    assert got.headers["authorization"] == "Bearer abc"
    assert got.headers["host"] == f"127.0.0.1:{http_receiver.port}"


def test_it_connects_to_the_address_it_checked_and_keeps_the_name_in_host(monkeypatch, http_receiver):
    looked_up = _fake_dns(monkeypatch, {"receiver.test": ["127.0.0.1"]})

    result = http_post(f"http://receiver.test:{http_receiver.port}/hook", body=b"{}", headers={},
                       allow=AllowList.parse(["http://receiver.test"]))

    assert result.ok and result.address == "127.0.0.1"
    assert http_receiver.requests[0].headers["host"] == f"receiver.test:{http_receiver.port}"
    assert looked_up.count("receiver.test") == 1  # one lookup: nothing resolves the name again after the check


def test_a_get_reads_the_answer(http_receiver):
    http_receiver.answer(200, body=b'{"resourceType":"ServiceRequest"}',
                         headers={"Content-Type": "application/fhir+json"})

    result = http_get(f"{http_receiver.url}/fhir/ServiceRequest/1", headers={"Accept": "application/fhir+json"},
                      allow=LOOPBACK_HTTP)

    assert result.ok and result.body == b'{"resourceType":"ServiceRequest"}'
    assert result.headers["content-type"] == "application/fhir+json"
    assert http_receiver.requests[0].method == "GET"


def test_the_loopback_is_refused_without_an_allow_entry(http_receiver):
    result = http_post(f"{http_receiver.url}/hook", body=b"{}", headers={}, allow=NOTHING)

    assert result.reason == "refused"
    assert http_receiver.requests == []


def test_a_receiver_that_does_not_answer_times_out(http_receiver):
    http_receiver.hang()
    started = time.monotonic()

    result = http_post(f"{http_receiver.url}/hook", body=b"{}", headers={}, timeout=(1.0, 0.5), allow=LOOPBACK_HTTP)

    assert (result.outcome, result.reason) == (Outcome.TRANSIENT, "timeout")
    assert time.monotonic() - started < 3


def test_a_receiver_that_drips_its_answer_is_cut_at_the_deadline():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    stop = threading.Event()

    def drip():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        while not stop.is_set():  # each byte comes well within a per-read timeout
            try:
                conn.sendall(b"x")
            except OSError:
                break
            time.sleep(0.05)
        conn.close()

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        result = http_post(f"http://127.0.0.1:{listener.getsockname()[1]}/", body=b"{}", headers={},
                           timeout=(1.0, 0.8), allow=LOOPBACK_HTTP)
    finally:
        stop.set()
        thread.join(5)
        listener.close()

    assert (result.outcome, result.reason) == (Outcome.TRANSIENT, "timeout")
    assert time.monotonic() - started < 3


def test_it_stops_reading_at_the_size_limit(http_receiver):
    http_receiver.answer(200, body=b"x" * 50_000)

    result = http_post(f"{http_receiver.url}/hook", body=b"{}", headers={}, max_response_bytes=1000,
                       allow=LOOPBACK_HTTP)

    assert (result.outcome, result.reason, result.status) == (Outcome.PERMANENT, "too-large", 200)
    assert len(result.body) == 1000


def test_it_follows_no_redirect(http_receiver):
    http_receiver.answer(307, headers={"Location": f"{http_receiver.url}/elsewhere"})

    result = http_post(f"{http_receiver.url}/hook", body=b"{}", headers={}, allow=LOOPBACK_HTTP)

    assert (result.outcome, result.reason, result.status) == (Outcome.PERMANENT, "redirect", 307)
    assert [r.path for r in http_receiver.requests] == ["/hook"]


@pytest.mark.parametrize(
    "status, outcome, reason",
    [
        (500, Outcome.TRANSIENT, "server-error"), (503, Outcome.TRANSIENT, "server-error"),
        (429, Outcome.TRANSIENT, "throttled"), (408, Outcome.TRANSIENT, "request-timeout"),
        (400, Outcome.PERMANENT, "http-error"), (404, Outcome.PERMANENT, "http-error"),
        (410, Outcome.PERMANENT, "http-error"), (201, Outcome.OK, "ok"), (204, Outcome.OK, "ok"),
    ],
)
def test_answers_are_classified(http_receiver, status, outcome, reason):
    http_receiver.fail(status, headers={"Retry-After": "30"})

    result = http_post(f"{http_receiver.url}/hook", body=b"{}", headers={}, allow=LOOPBACK_HTTP)

    assert (result.outcome, result.reason, result.status) == (outcome, reason, status)
    assert result.retry_after == (30.0 if status in (429, 503) else None)


def test_a_stopped_receiver_is_a_transient_connect_failure(http_receiver):
    http_receiver.stop()

    result = http_post(f"{http_receiver.url}/hook", body=b"{}", headers={}, allow=LOOPBACK_HTTP)

    assert (result.outcome, result.reason) == (Outcome.TRANSIENT, "connect")


@pytest.mark.parametrize("headers", [{"Host": "internal.example"}, {"X-Evil": "a\r\nInjected: 1"}])
def test_headers_that_would_change_the_request_are_not_sent(http_receiver, headers):
    result = http_post(f"{http_receiver.url}/hook", body=b"{}", headers=headers, allow=LOOPBACK_HTTP)

    assert (result.outcome, result.reason) == (Outcome.PERMANENT, "bad-request")
    assert http_receiver.requests == []


# --- TLS: the name goes into SNI and the certificate check, the checked address into connect -------------------


@pytest.fixture
def tls_receiver(tmp_path):
    """An HTTPS receiver on 127.0.0.1 with a certificate for receiver.test only; it records the SNI it is sent.
    Yields (receiver, client context trusting that certificate, SNI names seen)."""
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from tests.receivers import HttpReceiver

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "receiver.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("receiver.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    sni_seen = []
    server_context.sni_callback = lambda sock, server_name, ctx: sni_seen.append(server_name)
    client_context = ssl.create_default_context(cadata=cert_pem.decode())
    receiver = HttpReceiver(ssl_context=server_context).start()
    yield receiver, client_context, sni_seen
    receiver.stop()


def test_https_sends_the_name_as_sni_and_verifies_the_certificate_for_it(monkeypatch, tls_receiver):
    receiver, client_context, sni_seen = tls_receiver
    _fake_dns(monkeypatch, {"receiver.test": ["127.0.0.1"]})

    result = http_post(f"https://receiver.test:{receiver.port}/hook", body=b"{}", headers={},
                       allow=AllowList.parse(["receiver.test"]), ssl_context=client_context)

    assert (result.outcome, result.status, result.address) == (Outcome.OK, 200, "127.0.0.1")
    assert sni_seen == ["receiver.test"]
    assert receiver.requests[0].headers["host"] == f"receiver.test:{receiver.port}"


def test_https_to_a_name_the_certificate_does_not_cover_fails_before_sending(monkeypatch, tls_receiver):
    receiver, client_context, sni_seen = tls_receiver
    _fake_dns(monkeypatch, {"other.test": ["127.0.0.1"]})

    result = http_post(f"https://other.test:{receiver.port}/hook", body=b"secret", headers={},
                       allow=AllowList.parse(["other.test"]), ssl_context=client_context)

    assert (result.outcome, result.reason) == (Outcome.TRANSIENT, "tls")
    assert sni_seen == ["other.test"]
    assert receiver.requests == []


@pytest.fixture
def keep_alive_receiver():
    """An HTTP/1.1 receiver on the loopback that keeps connections open, as real ones do. ``.peers`` lists the
    client port of each request (one port: one connection); a request with ``X-Close: answer`` is answered with
    ``Connection: close``, one with ``X-Close: idle`` has its connection closed after the answer without a word
    (as a receiver's idle timeout does)."""
    peers = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            peers.append(self.client_address[1])
            self.send_response(200)
            self.send_header("Content-Length", "2")
            if self.headers.get("X-Close") == "answer":
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"ok")
            if self.headers.get("X-Close") == "idle":
                self.close_connection = True

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.peers = peers
    yield server
    server.shutdown()
    server.server_close()


def test_posts_over_kept_connections_share_one_connection_per_receiver(keep_alive_receiver):
    url = keep_alive_receiver.url
    with outbound.Connections() as connections:
        results = [http_post(url, body=b"{}", headers={}, allow=LOOPBACK_HTTP, connections=connections)
                   for _ in range(5)]
    assert [(r.status, r.body) for r in results] == [(200, b"ok")] * 5
    assert len(keep_alive_receiver.peers) == 5 and len(set(keep_alive_receiver.peers)) == 1

    for _ in range(2):  # without: a connection each
        http_post(url, body=b"{}", headers={}, allow=LOOPBACK_HTTP)
    assert len(set(keep_alive_receiver.peers)) == 3


def test_a_kept_connection_serves_only_a_request_that_passes_the_checks(keep_alive_receiver):
    url = keep_alive_receiver.url
    with outbound.Connections() as connections:
        assert http_post(url, body=b"{}", headers={}, allow=LOOPBACK_HTTP, connections=connections).ok
        refused = http_post(url, body=b"secret", headers={}, allow=NOTHING, connections=connections)
    assert (refused.outcome, refused.reason) == (Outcome.PERMANENT, "refused")
    assert len(keep_alive_receiver.peers) == 1  # nothing went over the open connection


def test_a_connection_the_receiver_closes_is_not_used_again(keep_alive_receiver):
    url = keep_alive_receiver.url
    with outbound.Connections() as connections:
        post = lambda close: http_post(  # noqa: E731
            url, body=b"{}", headers={"X-Close": close}, allow=LOOPBACK_HTTP, connections=connections)
        assert post("answer").ok  # Connection: close: not kept
        assert post("idle").ok  # kept, then closed by the receiver without a word
        time.sleep(0.2)
        again = post("no")  # found closed: sent once more on a new connection
        assert (again.status, again.body) == (200, b"ok")
    peers = keep_alive_receiver.peers
    assert len(peers) == 3 and len(set(peers)) == 3  # each request arrived once, each on its own connection
