"""The real test peers themselves: the HTTP receiver records and misbehaves as told; the SMTP server gets real mail
from Django."""

import http.client
import socket

import pytest
from django.core.mail import send_mail

from tests.receivers import HttpReceiver


def _post(receiver: HttpReceiver, path: str, body: bytes, timeout: float = 5.0) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/fhir+json", "X-Seen": "1"})
        return connection.getresponse().status
    finally:
        connection.close()


def test_the_receiver_records_method_path_headers_and_body(http_receiver):
    assert _post(http_receiver, "/hook?x=1", b'{"resourceType": "Bundle"}') == 200

    (got,) = http_receiver.wait_for(1)
    assert (got.method, got.path, got.body, got.status) == ("POST", "/hook?x=1", b'{"resourceType": "Bundle"}', 200)
    assert got.headers["content-type"] == "application/fhir+json"
    assert got.headers["x-seen"] == "1"


def test_the_receiver_fails_for_a_count_then_answers_again(http_receiver):
    http_receiver.fail(503, count=2)

    statuses = [_post(http_receiver, "/", b"{}") for _ in range(3)]

    assert statuses == [503, 503, 200]
    assert [r.status for r in http_receiver.requests] == [503, 503, 200]
    assert len(http_receiver.delivered()) == 1


def test_the_receiver_hangs_until_the_client_gives_up(http_receiver):
    http_receiver.hang(count=1)

    with pytest.raises(TimeoutError):
        _post(http_receiver, "/", b"{}", timeout=0.5)
    assert _post(http_receiver, "/", b"{}") == 200
    assert [r.status for r in http_receiver.requests] == [None, 200]


def test_a_stopped_receiver_refuses_connections_and_starts_again_on_the_same_port():
    receiver = HttpReceiver().start()
    port = receiver.port
    try:
        receiver.stop()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()

        receiver.start()
        assert receiver.port == port
        assert _post(receiver, "/again", b"{}") == 200
        assert [r.path for r in receiver.requests] == ["/again"]
    finally:
        receiver.stop()


def test_django_send_mail_goes_through_real_smtp(smtp_backend):
    sent = send_mail("Offer waiting", "Open the offer: https://hub.example.org/offers/42", "hub@example.org",
                     ["therapist@example.org"])

    assert sent == 1
    (mail,) = smtp_backend.wait_for(1)
    assert mail.mail_from == "hub@example.org"
    assert mail.rcpt_tos == ["therapist@example.org"]
    assert mail.message["Subject"] == "Offer waiting"
    assert "https://hub.example.org/offers/42" in mail.message.get_content()
