"""Inferno's SMART App Launch test kit, Backend Services group (smart-app-launch-test-kit,
lib/smart_app_launch/backend_services_*), as tests of the hub's own, and the SMART 2.x discovery document.

bs-01 (TLS on the token endpoint) is left to the deployment: the hub sits behind a TLS-terminating proxy
(README, SECURE_PROXY_SSL_HEADER_NAME) and redirects to HTTPS when DEBUG is off.
"""

from urllib.parse import urlencode

import jwt
import pytest

from fhir_bridge.smart_keys import client_assertion
from fhir_bridge.smart_tokens import authenticate_bearer
from tests.fhir_bridge.conftest import TEST_TOKEN_URL

pytestmark = pytest.mark.django_db


def _assertion(client, key, kid="ec-1", **claims) -> str:
    if not claims:
        return client_assertion(key=key, kid=kid, client_id=client.client_id, token_url=TEST_TOKEN_URL)
    import time
    import uuid

    body = {"iss": client.client_id, "sub": client.client_id, "aud": TEST_TOKEN_URL,
            "exp": int(time.time()) + 240, "jti": uuid.uuid4().hex} | claims
    return jwt.encode(body, key, algorithm="ES384", headers={"kid": kid, "typ": "JWT"})


def _oauth_error(response, status, error):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"] == error
    assert response["Cache-Control"] == "no-store"


def test_bs_02_an_invalid_grant_type_is_400(ec_client, ec_key, post_token):
    _oauth_error(post_token(_assertion(ec_client, ec_key), grant_type="not_a_grant_type"), 400, "unsupported_grant_type")


def test_bs_03_x14_an_invalid_client_assertion_type_is_400_invalid_request(ec_client, ec_key, post_token):
    # client_assertion_type=not_an_assertion_type; Inferno asserts 400 (RFC 6749 §5.2 invalid_request).
    response = post_token(_assertion(ec_client, ec_key), client_assertion_type="not_an_assertion_type")
    _oauth_error(response, 400, "invalid_request")


def test_bs_04_an_assertion_with_an_invalid_iss_is_refused_400_or_401(ec_client, ec_key, post_token):
    response = post_token(_assertion(ec_client, ec_key, iss="invalid_iss"))
    assert response.status_code in (400, 401)
    assert response.json()["error"] == "invalid_client"


def test_bs_05_a_correct_request_succeeds(ec_client, ec_key, post_token):
    response = post_token(_assertion(ec_client, ec_key), scope="system/Task.rs")
    assert response.status_code == 200, response.content


def test_bs_06_the_token_response_body_has_what_smart_requires(ec_client, ec_key, post_token):
    response = post_token(_assertion(ec_client, ec_key), scope="system/Task.rs")
    assert response["Content-Type"].startswith("application/json")
    assert response["Cache-Control"] == "no-store" and response["Pragma"] == "no-cache"
    body = response.json()
    assert isinstance(body["access_token"], str) and body["access_token"]
    assert body["token_type"].lower() == "bearer"
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 0
    assert body["scope"] == "system/Task.rs"
    assert authenticate_bearer(f"Bearer {body['access_token']}").client == ec_client


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"client_assertion_type": None}, 400, "invalid_request"),  # missing
        ({"client_assertion": None}, 400, "invalid_request"),
        ({"grant_type": None}, 400, "invalid_request"),
        ({"scope": None}, 400, "invalid_scope"),
        ({"scope": "system/Spaceship.rs"}, 400, "invalid_scope"),
        ({"client_assertion": "not.a.jwt"}, 401, "invalid_client"),
    ],
)
def test_each_token_error_has_its_rfc_6749_status_and_code(ec_client, ec_key, client, change, status, error):
    form = {
        "grant_type": "client_credentials", "scope": "system/Task.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": _assertion(ec_client, ec_key),
    }
    for name, value in change.items():
        if value is None:
            form.pop(name)
        else:
            form[name] = value
    response = client.post("/auth/token", data=urlencode(form), content_type="application/x-www-form-urlencoded")
    _oauth_error(response, status, error)


def test_a_repeated_parameter_is_invalid_request(ec_client, ec_key, client):
    body = urlencode({"grant_type": "client_credentials", "scope": "system/Task.rs",
                      "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                      "client_assertion": _assertion(ec_client, ec_key)}) + "&scope=system/Patient.rs"
    _oauth_error(client.post("/auth/token", data=body, content_type="application/x-www-form-urlencoded"), 400, "invalid_request")


@pytest.mark.parametrize("accept", ["text/html", "application/json", "application/fhir+json", "*/*"])
def test_the_discovery_document_has_every_field_smart_2_requires_for_backend_services(client, accept):
    response = client.get("/fhir/.well-known/smart-configuration", HTTP_ACCEPT=accept)
    assert response.status_code == 200
    assert response["Content-Type"].split(";")[0] == "application/json"
    body = response.json()
    assert body["token_endpoint"] == TEST_TOKEN_URL
    assert "client_credentials" in body["grant_types_supported"]
    assert "private_key_jwt" in body["token_endpoint_auth_methods_supported"]
    assert {"RS384", "ES384"} <= set(body["token_endpoint_auth_signing_alg_values_supported"])
    assert "client-confidential-asymmetric" in body["capabilities"]
    assert "S256" in body["code_challenge_methods_supported"] and "plain" not in body["code_challenge_methods_supported"]
    assert any(scope.startswith("system/") for scope in body["scopes_supported"])
