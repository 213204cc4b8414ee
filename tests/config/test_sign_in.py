"""Sign-in limits, password hashing and the Content-Security-Policy (issue 12, part 2)."""

import re
import uuid
from urllib.parse import urlencode

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple 12"


@pytest.fixture
def coordinator(db):
    return get_user_model().objects.create_user("coord", "coord@hub.invalid", PASSWORD, is_staff=True,
                                                is_superuser=True)


def _login(client: Client, password: str, ip: str = "10.0.0.1"):
    return client.post("/admin/login/?next=/admin/", {"username": "coord", "password": password}, REMOTE_ADDR=ip)


def _signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_passwords_are_hashed_with_argon2(coordinator):
    assert coordinator.password.startswith("argon2$argon2id$")
    assert coordinator.check_password(PASSWORD)


def test_the_right_password_signs_in_after_a_few_wrong_ones(coordinator):
    client = Client()
    for _ in range(3):
        assert _login(client, "wrong").status_code == 200  # the form again, with its error
    response = _login(client, PASSWORD)
    assert response.status_code == 302 and _signed_in(client)


def test_fifty_wrong_passwords_then_the_right_one_does_not_sign_in(coordinator):
    client = Client()
    statuses = [_login(client, f"wrong-{i}").status_code for i in range(50)]

    response = _login(client, PASSWORD)

    assert statuses[:4] == [200] * 4 and set(statuses[4:]) == {429}  # the fifth failure locks
    assert response.status_code == 429
    assert not _signed_in(client)


def test_a_lockout_holds_for_the_pair_not_for_everyone(coordinator):
    for _ in range(6):
        _login(Client(), "wrong", ip="10.0.0.1")

    elsewhere = Client()
    response = _login(elsewhere, PASSWORD, ip="10.0.0.2")  # the same user from another address

    assert response.status_code == 302 and _signed_in(elsewhere)
    assert _login(Client(), PASSWORD, ip="10.0.0.1").status_code == 429


def _policy(response) -> str:
    policy = response.headers["Content-Security-Policy"]
    script = re.search(r"script-src ([^;]+)", policy).group(1)
    assert "'unsafe-inline'" not in script and "'unsafe-eval'" not in script
    return policy


def _no_inline_script(html: str) -> None:
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag or 'type="application/json"' in tag, tag
    assert not re.search(r"\son[a-z]+=", html), "an inline event handler"


def test_every_page_carries_a_policy_without_inline_script(coordinator, fhir):
    client = Client()
    login_page = client.get("/admin/login/")
    _policy(login_page)
    _no_inline_script(login_page.content.decode())

    client.force_login(coordinator)
    for path in ("/admin/", "/admin/referrals/referral/", "/admin/network/professional/add/"):
        page = client.get(path)
        assert page.status_code == 200, path
        _policy(page)
        _no_inline_script(page.content.decode())

    _policy(fhir.get("metadata"))
    _policy(Client().get("/healthz"))
    _policy(Client().get("/api/admin/routing/queue"))


def _token_request(client: Client, client_id: str, ip: str):
    form = urlencode({"grant_type": "client_credentials", "client_id": client_id,
                      "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                      "client_assertion": "not-a-jwt", "scope": "system/Task.read"})
    return client.post("/auth/token", form, content_type="application/x-www-form-urlencoded", REMOTE_ADDR=ip)


@override_settings(HUB_TOKEN_LIMIT_PER_CLIENT=3, HUB_TOKEN_LIMIT_PER_IP=5, HUB_TOKEN_LIMIT_WINDOW_SECONDS=3600)
def test_the_token_endpoint_limits_each_client_and_each_address():
    # Fresh names and addresses instead of cache.clear(): on Redis that would flush the broker's database too.
    run = uuid.uuid4().hex[:8]
    net = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    client = Client()
    per_client = [_token_request(client, f"a-{run}", f"{net}.{i}").status_code for i in range(4)]
    assert per_client[:3] == [401] * 3 and per_client[3] == 429

    per_ip = [_token_request(client, f"c{i}-{run}", f"{net}.200") for i in range(6)]
    assert [r.status_code for r in per_ip] == [401] * 5 + [429]
    refused = per_ip[-1]
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.json()["error"] == "invalid_request"

    assert _token_request(client, f"b-{run}", f"{net}.201").status_code == 401  # others still get an answer
