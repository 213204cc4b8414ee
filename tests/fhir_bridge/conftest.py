"""Fixtures for the SMART Backend Services tests: a clinic, EHR keys and registered clients."""

from urllib.parse import urlencode

import pytest

from fhir_bridge.smart_clients import ehr_client_register
from fhir_bridge.smart_keys import generate_private_key, public_jwk, token_request_form
from referrals.models import Clinic

# The audience the hub computes for the test client (http, host "testserver", no HUB_PUBLIC_BASE_URL).
TEST_TOKEN_URL = "http://testserver/auth/token"


@pytest.fixture(scope="session")
def rsa_key():
    return generate_private_key("RSA")


@pytest.fixture(scope="session")
def ec_key():
    return generate_private_key("EC")


@pytest.fixture
def clinic(db):
    return Clinic.objects.create(name="Riverside Family Practice", slug="riverside")


@pytest.fixture
def register_client(clinic):
    """Register an EHR client with the public halves of ``keys`` (kids "rsa-1"/"ec-1" unless given)."""

    def register(*keys_and_kids, scopes=("system/Task.cruds", "system/Patient.rs"), name="Riverside EHR"):
        jwks = {"keys": [public_jwk(key, kid) for key, kid in keys_and_kids]}
        return ehr_client_register(name=name, clinic=clinic, jwks=jwks, scopes=list(scopes))

    return register


@pytest.fixture
def rsa_client(register_client, rsa_key):
    return register_client((rsa_key, "rsa-1"))


@pytest.fixture
def ec_client(register_client, ec_key):
    return register_client((ec_key, "ec-1"))


@pytest.fixture
def post_token(client):
    """POST a token request to /auth/token, form-encoded, as an EHR would."""

    def post(assertion: str, scope: str = "system/Task.read", **extra):
        form = token_request_form(assertion=assertion, scopes=scope) | extra
        return client.post(
            "/auth/token", data=urlencode(form), content_type="application/x-www-form-urlencoded"
        )

    return post
