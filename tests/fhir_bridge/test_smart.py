"""SMART Backend Services: the token endpoint, bearer tokens, scopes, registration and purging."""

import base64
import hashlib
import hmac
import json
import time
from datetime import timedelta
from io import StringIO

import jwt
import pytest
import time_machine
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.utils import timezone
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from fhir_bridge.models import EhrClient, SpentAssertion
from fhir_bridge.smart_clients import ehr_client_register
from fhir_bridge.smart_scopes import Grant, grant_allows, scopes_grantable
from fhir_bridge.smart_tokens import AuthError, access_token_encode, authenticate_bearer, purge_spent_assertions
from fhir_bridge.smart_views import smart_configuration
from fhir_bridge.smart_keys import client_assertion, generate_private_key, public_jwk, public_jwks
from fhir_bridge.tasks import purge_spent_jtis
from referrals.models import Clinic
from tests.fhir_bridge.conftest import TEST_TOKEN_URL

pytestmark = pytest.mark.django_db

READ_INTERACTIONS = ("read", "vread", "history", "search")
WRITE_INTERACTIONS = ("create", "update", "patch", "delete")


def _claims(client_id: str, **overrides) -> dict:
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": TEST_TOKEN_URL,
        "exp": int(time.time()) + 240,
        "jti": "jti-" + str(time.time_ns()),
    }
    return {name: value for name, value in (claims | overrides).items() if value is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs384_signed(claims: dict, header: dict, secret: bytes) -> str:
    # PyJWT refuses to use a PEM as an HMAC secret, so the attacker's token is put together by hand.
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha384).digest()
    return f"{signing_input}.{_b64(signature)}"


def _assert_refused(response, error="invalid_client", status=401, says=""):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"] == error
    assert says in body["error_description"]
    assert response["Cache-Control"] == "no-store"


# --- The token endpoint: success ----------------------------------------------------------------------------


def test_it_issues_a_token_for_an_rs384_assertion(rsa_client, rsa_key, post_token):
    assertion = client_assertion(
        key=rsa_key, kid="rsa-1", client_id=rsa_client.client_id, token_url=TEST_TOKEN_URL
    )

    response = post_token(assertion, scope="system/Task.read")

    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["scope"] == "system/Task.read"
    assert body["expires_in"] == 300
    grant = authenticate_bearer(f"Bearer {body['access_token']}")
    assert grant.client == rsa_client
    assert grant.scopes == {"system/Task.read"}
    assert SpentAssertion.objects.filter(client=rsa_client).count() == 1


def test_it_issues_a_token_for_an_es384_assertion(ec_client, ec_key, post_token):
    assertion = client_assertion(
        key=ec_key, kid="ec-1", client_id=ec_client.client_id, token_url=TEST_TOKEN_URL
    )

    response = post_token(assertion, scope="system/Task.cruds system/Patient.rs")

    assert response.status_code == 200, response.content
    assert response.json()["scope"] == "system/Task.cruds system/Patient.rs"
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["sub"] == ec_client.client_id
    assert claims["exp"] - claims["iat"] == 300
    assert set(claims) == {"iss", "sub", "scope", "iat", "exp", "jti"}


def test_it_uses_the_public_base_url_as_the_audience_when_set(settings, ec_client, ec_key, post_token):
    settings.HUB_PUBLIC_BASE_URL = "https://hub.example.org/"
    request_host = client_assertion(
        key=ec_key, kid="ec-1", client_id=ec_client.client_id, token_url=TEST_TOKEN_URL
    )
    public = client_assertion(
        key=ec_key, kid="ec-1", client_id=ec_client.client_id, token_url="https://hub.example.org/auth/token"
    )

    _assert_refused(post_token(request_host), says="https://hub.example.org/auth/token")
    assert post_token(public).status_code == 200


def test_it_accepts_an_assertion_that_expired_within_the_clock_skew_leeway(ec_client, ec_key, post_token):
    assertion = jwt.encode(
        _claims(ec_client.client_id, exp=int(time.time()) - 10),
        ec_key,
        algorithm="ES384",
        headers={"kid": "ec-1"},
    )

    assert post_token(assertion).status_code == 200


# --- The token endpoint: refusals ---------------------------------------------------------------------------


def test_it_refuses_an_expired_assertion(ec_client, ec_key, post_token):
    assertion = jwt.encode(
        _claims(ec_client.client_id, exp=int(time.time()) - 120),
        ec_key,
        algorithm="ES384",
        headers={"kid": "ec-1"},
    )

    _assert_refused(post_token(assertion), says="expired")
    assert SpentAssertion.objects.count() == 0


def test_it_refuses_an_assertion_that_expires_more_than_five_minutes_ahead(ec_client, ec_key, post_token):
    assertion = client_assertion(
        key=ec_key, kid="ec-1", client_id=ec_client.client_id, token_url=TEST_TOKEN_URL, lifetime=600
    )

    _assert_refused(post_token(assertion), says="within 300 seconds")
    assert SpentAssertion.objects.count() == 0


def test_it_refuses_an_assertion_without_exp(ec_client, ec_key, post_token):
    assertion = jwt.encode(
        _claims(ec_client.client_id, exp=None), ec_key, algorithm="ES384", headers={"kid": "ec-1"}
    )

    _assert_refused(post_token(assertion), says="no exp claim")


def test_it_refuses_an_assertion_without_jti(ec_client, ec_key, post_token):
    assertion = jwt.encode(
        _claims(ec_client.client_id, jti=None), ec_key, algorithm="ES384", headers={"kid": "ec-1"}
    )

    _assert_refused(post_token(assertion), says="no jti claim")


def test_it_refuses_an_assertion_for_another_audience(ec_client, ec_key, post_token):
    assertion = client_assertion(
        key=ec_key,
        kid="ec-1",
        client_id=ec_client.client_id,
        token_url="https://other.example.org/auth/token",
    )

    _assert_refused(post_token(assertion), says=f"aud must be the token URL, {TEST_TOKEN_URL}")


def test_it_refuses_an_assertion_whose_sub_is_not_its_iss(ec_client, ec_key, post_token, register_client):
    other = register_client((ec_key, "ec-1"), name="Other EHR")
    assertion = jwt.encode(
        _claims(ec_client.client_id, sub=other.client_id), ec_key, algorithm="ES384", headers={"kid": "ec-1"}
    )

    _assert_refused(post_token(assertion), says="iss and sub")


def test_it_refuses_a_kid_that_is_not_registered(ec_client, ec_key, post_token):
    assertion = client_assertion(
        key=ec_key, kid="ec-2", client_id=ec_client.client_id, token_url=TEST_TOKEN_URL
    )

    _assert_refused(post_token(assertion), says="kid 'ec-2' is not in the JWKS")


def test_it_refuses_an_assertion_signed_by_a_key_the_client_did_not_register(ec_client, post_token):
    stranger = generate_private_key("EC")
    assertion = client_assertion(
        key=stranger, kid="ec-1", client_id=ec_client.client_id, token_url=TEST_TOKEN_URL
    )

    _assert_refused(post_token(assertion), says="signature does not verify")


def test_it_refuses_an_unknown_client(ec_key, post_token, db):
    assertion = client_assertion(key=ec_key, kid="ec-1", client_id="nobody", token_url=TEST_TOKEN_URL)

    _assert_refused(post_token(assertion), says="no active client")


def test_it_refuses_an_unsigned_assertion(ec_client, post_token):
    assertion = jwt.encode(_claims(ec_client.client_id), None, algorithm="none", headers={"kid": "ec-1"})

    _assert_refused(post_token(assertion), says="'none'")
    assert SpentAssertion.objects.count() == 0


def test_it_refuses_hs384_signed_with_the_registered_rsa_public_key(rsa_client, rsa_key, post_token):
    # The classic algorithm confusion: the public key (which anyone may know) used as an HMAC secret.
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assertion = _hs384_signed(
        _claims(rsa_client.client_id), {"alg": "HS384", "typ": "JWT", "kid": "rsa-1"}, public_pem
    )

    _assert_refused(post_token(assertion), says="'HS384'")
    assert SpentAssertion.objects.count() == 0


def test_it_refuses_an_es384_header_over_a_registered_rsa_key(rsa_client, post_token):
    ec_key = generate_private_key("EC")
    assertion = jwt.encode(_claims(rsa_client.client_id), ec_key, algorithm="ES384", headers={"kid": "rsa-1"})

    _assert_refused(post_token(assertion), says="cannot verify ES384")


def test_it_refuses_an_rs384_header_over_a_registered_ec_key(ec_client, rsa_key, post_token):
    assertion = jwt.encode(_claims(ec_client.client_id), rsa_key, algorithm="RS384", headers={"kid": "ec-1"})

    _assert_refused(post_token(assertion), says="cannot verify RS384")


def test_it_refuses_rs256_even_with_the_right_key(rsa_client, rsa_key, post_token):
    assertion = jwt.encode(
        _claims(rsa_client.client_id), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"}
    )

    _assert_refused(post_token(assertion), says="RS384 or ES384")


def test_it_refuses_a_replayed_assertion(ec_client, ec_key, post_token):
    assertion = client_assertion(
        key=ec_key, kid="ec-1", client_id=ec_client.client_id, token_url=TEST_TOKEN_URL
    )
    assert post_token(assertion).status_code == 200

    _assert_refused(post_token(assertion), says="already used")
    assert SpentAssertion.objects.count() == 1


def test_the_same_jti_from_two_clients_is_not_a_replay(register_client, ec_key, post_token):
    first = register_client((ec_key, "ec-1"), name="First")
    second = register_client((ec_key, "ec-1"), name="Second")
    for ehr in (first, second):
        assertion = client_assertion(
            key=ec_key, kid="ec-1", client_id=ehr.client_id, token_url=TEST_TOKEN_URL, jti="same"
        )
        assert post_token(assertion).status_code == 200

    assert SpentAssertion.objects.count() == 2


def test_it_refuses_a_deactivated_client(ec_client, ec_key, post_token):
    EhrClient.objects.filter(pk=ec_client.pk).update(is_active=False)
    assertion = client_assertion(
        key=ec_key, kid="ec-1", client_id=ec_client.client_id, token_url=TEST_TOKEN_URL
    )

    _assert_refused(post_token(assertion), says="no active client")


def test_it_refuses_a_client_id_parameter_that_differs_from_iss(ec_client, ec_key, post_token):
    assertion = client_assertion(
        key=ec_key, kid="ec-1", client_id=ec_client.client_id, token_url=TEST_TOKEN_URL
    )

    _assert_refused(post_token(assertion, client_id="someone-else"), says="client_id")


def test_it_refuses_garbage_as_an_assertion(ec_client, post_token):
    _assert_refused(post_token("not.a.jwt"), says="not a signed JWT")


def test_it_refuses_other_grant_types(ec_client, ec_key, post_token):
    assertion = client_assertion(
        key=ec_key, kid="ec-1", client_id=ec_client.client_id, token_url=TEST_TOKEN_URL
    )

    response = post_token(assertion, grant_type="authorization_code")

    _assert_refused(response, error="unsupported_grant_type", status=400)


def test_it_refuses_a_json_body_and_a_get(client, db):
    _assert_refused(
        client.post("/auth/token", {"grant_type": "client_credentials"}, content_type="application/json"),
        error="invalid_request",
        status=400,
    )
    response = client.get("/auth/token")
    _assert_refused(response, error="invalid_request", status=405)
    assert response["Allow"] == "POST"


# --- Scopes -------------------------------------------------------------------------------------------------


def test_it_grants_only_the_allowed_subset_of_the_requested_scopes(ec_client, ec_key, post_token):
    # ec_client may have system/Task.cruds and system/Patient.rs.
    assertion = client_assertion(
        key=ec_key, kid="ec-1", client_id=ec_client.client_id, token_url=TEST_TOKEN_URL
    )

    response = post_token(
        assertion,
        scope="system/Task.* system/Patient.write system/Patient.read system/Observation.rs "
        "system/Task.rs?status=requested patient/Task.read launch",
    )

    assert response.status_code == 200, response.content
    assert response.json()["scope"] == "system/Task.* system/Patient.read"


def test_it_answers_invalid_scope_when_nothing_requested_is_allowed(ec_client, ec_key, post_token):
    assertion = client_assertion(
        key=ec_key, kid="ec-1", client_id=ec_client.client_id, token_url=TEST_TOKEN_URL
    )

    _assert_refused(post_token(assertion, scope="system/Observation.rs system/*.read"), "invalid_scope", 400)
    _assert_refused(post_token(assertion, scope=""), "invalid_scope", 400, says="scope is required")
    assert SpentAssertion.objects.count() == 0  # no token issued, nothing spent


@pytest.mark.parametrize(
    ("allowed", "requested", "granted"),
    [
        (
            "system/Task.read system/Task.write",
            "system/Task.cruds system/Task.*",
            "system/Task.cruds system/Task.*",
        ),
        ("system/Task.cruds", "system/Task.read system/Task.write system/Task.c", None),
        (
            "system/Task.rs",
            "system/Task.read system/Task.r system/Task.write system/Task.rsu",
            "system/Task.read system/Task.r",
        ),
        ("system/Task.read", "system/Task.rs system/Task.s system/Task.cud", "system/Task.rs system/Task.s"),
        (
            "system/*.rs",
            "system/Patient.read system/*.read system/Goal.write",
            "system/Patient.read system/*.read",
        ),
        ("system/Patient.cruds", "system/*.read system/Patient.read", "system/Patient.read"),
        ("system/Task.cruds", "system/Task.sr system/Task.cruds?x=1 system/Task.xyz system/Foo.read", ""),
        ("system/Task.read", "system/Task.read system/Task.read", "system/Task.read"),
    ],
)
def test_scopes_are_granted_when_the_allowed_scopes_cover_them(allowed, requested, granted):
    expected = requested.split() if granted is None else granted.split()

    assert scopes_grantable(requested=requested.split(), allowed=allowed.split()) == expected


@pytest.mark.parametrize(
    ("scope", "allowed"),
    [
        ("system/Task.read", READ_INTERACTIONS),
        ("system/Task.rs", READ_INTERACTIONS),
        ("system/Task.write", WRITE_INTERACTIONS),
        ("system/Task.cud", WRITE_INTERACTIONS),
        ("system/Task.*", READ_INTERACTIONS + WRITE_INTERACTIONS),
        ("system/Task.cruds", READ_INTERACTIONS + WRITE_INTERACTIONS),
        ("system/Task.r", ("read", "vread", "history")),
        ("system/Task.s", ("search",)),
        ("system/Task.c", ("create",)),
        ("system/Task.u", ("update", "patch")),
        ("system/Task.d", ("delete",)),
    ],
)
def test_grant_allows_the_same_interactions_for_v1_and_v2_scopes(ec_client, scope, allowed):
    grant = Grant(client=ec_client, scopes=frozenset({scope}))

    for interaction in READ_INTERACTIONS + WRITE_INTERACTIONS:
        assert grant_allows(grant, "Task", interaction) is (interaction in allowed), interaction
        assert grant_allows(grant, "Patient", interaction) is False


def test_grant_allows_any_type_under_a_wildcard_scope(ec_client):
    grant = Grant(client=ec_client, scopes=frozenset({"system/*.read", "system/Task.c"}))

    assert grant_allows(grant, "Patient", "search")
    assert grant_allows(grant, "Task", "read")
    assert grant_allows(grant, "Task", "create")
    assert not grant_allows(grant, "Patient", "create")


def test_grant_allows_refuses_an_unknown_interaction(ec_client):
    grant = Grant(client=ec_client, scopes=frozenset({"system/*.cruds"}))

    with pytest.raises(ValueError, match="operation"):
        grant_allows(grant, "Task", "operation")


# --- Bearer tokens ------------------------------------------------------------------------------------------


def test_authenticate_bearer_loads_the_client_and_clinic_in_one_query(ec_client, django_assert_num_queries):
    token, _ = access_token_encode(client=ec_client, scopes=["system/Task.rs"])

    with django_assert_num_queries(1):
        grant = authenticate_bearer(f"bearer {token}")
        assert grant.client.clinic.slug == "riverside"

    assert grant.scopes == {"system/Task.rs"}


def test_authenticate_bearer_rejects_an_expired_token(ec_client):
    token, _ = access_token_encode(client=ec_client, scopes=["system/Task.rs"], now=time.time() - 3600)

    with pytest.raises(AuthError, match="expired"):
        authenticate_bearer(f"Bearer {token}")


def test_authenticate_bearer_rejects_a_token_signed_with_another_key(ec_client, settings):
    token, _ = access_token_encode(client=ec_client, scopes=["system/Task.rs"])
    claims = jwt.decode(token, options={"verify_signature": False})
    with_raw_secret_key = jwt.encode(
        claims, settings.SECRET_KEY, algorithm="HS256", headers={"typ": "at+jwt"}
    )

    with pytest.raises(AuthError, match="not one this hub issued"):
        authenticate_bearer(f"Bearer {with_raw_secret_key}")

    settings.SECRET_KEY = "another-secret-key-another-secret-key"
    with pytest.raises(AuthError, match="not one this hub issued"):
        authenticate_bearer(f"Bearer {token}")


def test_authenticate_bearer_rejects_a_token_of_a_deactivated_client(ec_client):
    token, _ = access_token_encode(client=ec_client, scopes=["system/Task.rs"])
    EhrClient.objects.filter(pk=ec_client.pk).update(is_active=False)

    with pytest.raises(AuthError, match="unknown or deactivated"):
        authenticate_bearer(f"Bearer {token}")


def test_authenticate_bearer_drops_scopes_the_client_lost_since_the_token_was_issued(ec_client):
    token, _ = access_token_encode(client=ec_client, scopes=["system/Task.rs", "system/Patient.rs"])
    EhrClient.objects.filter(pk=ec_client.pk).update(scopes="system/Patient.rs")

    assert authenticate_bearer(f"Bearer {token}").scopes == {"system/Patient.rs"}


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer not-a-token"]
)
def test_authenticate_bearer_rejects_a_missing_or_malformed_header(header, db):
    with pytest.raises(AuthError):
        authenticate_bearer(header)


def test_a_client_assertion_is_not_an_access_token(ec_client, ec_key):
    assertion = client_assertion(
        key=ec_key, kid="ec-1", client_id=ec_client.client_id, token_url=TEST_TOKEN_URL
    )

    with pytest.raises(AuthError):
        authenticate_bearer(f"Bearer {assertion}")


# --- Discovery ----------------------------------------------------------------------------------------------


def test_the_smart_configuration_names_the_token_endpoint_and_backend_services_capabilities():
    configuration = smart_configuration(token_url="https://hub.example.org/auth/token")

    assert configuration["token_endpoint"] == "https://hub.example.org/auth/token"
    assert configuration["grant_types_supported"] == ["client_credentials"]
    assert configuration["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert configuration["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    scopes = set(configuration["scopes_supported"])
    assert {"system/Task.read", "system/Task.cruds", "system/CarePlan.cruds", "system/*.rs"} <= scopes
    # Nothing the FHIR endpoint does not serve (it answers 404), and no write on the read-only network nor on the
    # reports the hub writes itself.
    assert not any(s.startswith("system/Encounter.") for s in scopes)
    assert {s for s in scopes if s.startswith("system/DiagnosticReport.")} == {
        "system/DiagnosticReport.read", "system/DiagnosticReport.rs"}
    assert {s for s in scopes if s.startswith("system/Location.")} == {"system/Location.read", "system/Location.rs"}
    assert configuration["capabilities"] == [
        "client-confidential-asymmetric",
        "permission-v1",
        "permission-v2",
    ]


# --- Registration -------------------------------------------------------------------------------------------


def test_register_refuses_private_key_material(clinic, ec_key):
    jwk = public_jwk(ec_key, "ec-1") | {"d": "c2VjcmV0"}

    with pytest.raises(ValidationError, match="private key material"):
        ehr_client_register(name="EHR", clinic=clinic, jwks={"keys": [jwk]}, scopes=["system/Task.rs"])

    assert EhrClient.objects.count() == 0


@pytest.mark.parametrize(
    ("jwks", "message"),
    [
        ({"keys": []}, "non-empty"),
        ({"keys": [{"kty": "EC", "crv": "P-384", "x": "a", "y": "b"}]}, "no kid"),
        ({"keys": [{"kid": "k", "kty": "oct", "k": "c2VjcmV0"}]}, "private key material"),
        ({"keys": [{"kid": "k", "kty": "OKP", "crv": "Ed25519", "x": "a"}]}, "kty 'OKP'"),
        (
            {"keys": [{"kid": "k", "kty": "EC", "crv": "P-384", "x": "a", "y": "b"}]},
            "not a valid EC public key",
        ),
    ],
)
def test_register_refuses_a_malformed_jwks(clinic, jwks, message):
    with pytest.raises(ValidationError, match=message):
        ehr_client_register(name="EHR", clinic=clinic, jwks=jwks, scopes=["system/Task.rs"])


def test_register_refuses_duplicate_kids_p256_keys_and_short_rsa_keys(clinic, ec_key):
    duplicate = {"keys": [public_jwk(ec_key, "same"), public_jwk(generate_private_key("EC"), "same")]}
    p256 = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True) | {
        "kid": "k"
    }
    short = RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 1024).public_key(), as_dict=True) | {
        "kid": "k"
    }

    for jwks, message in [
        (duplicate, "two keys"),
        ({"keys": [p256]}, "P-384"),
        ({"keys": [short]}, "1024 bits"),
    ]:
        with pytest.raises(ValidationError, match=message):
            ehr_client_register(name="EHR", clinic=clinic, jwks=jwks, scopes=["system/Task.rs"])


@pytest.mark.parametrize(
    "scope",
    ["patient/Task.read", "system/Task.rs?status=requested", "system/Foo.read", "system/Task.sr", "launch"],
)
def test_register_refuses_scopes_the_hub_does_not_understand(clinic, ec_key, scope):
    with pytest.raises(ValidationError, match="Scope"):
        ehr_client_register(name="EHR", clinic=clinic, jwks=public_jwks(ec_key), scopes=[scope])


def test_the_register_command_prints_the_client_id_first(clinic, ec_key, tmp_path):
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_text(json.dumps(public_jwks(ec_key)))
    out = StringIO()

    call_command(
        "register_ehr_client", name="Riverside EHR", clinic="riverside", jwks=str(jwks_path), stdout=out
    )

    client_id = out.getvalue().splitlines()[0]
    registered = EhrClient.objects.get(client_id=client_id)
    assert registered.clinic == clinic
    assert "system/Task.cruds" in registered.allowed_scopes
    assert registered.jwks == public_jwks(ec_key)


def test_the_register_command_refuses_a_jwks_with_a_private_key(clinic, ec_key, tmp_path):
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_text(json.dumps({"keys": [public_jwk(ec_key, "ec-1") | {"d": "c2VjcmV0"}]}))

    with pytest.raises(CommandError, match="private key material"):
        call_command(
            "register_ehr_client", name="EHR", clinic="riverside", jwks=str(jwks_path), stdout=StringIO()
        )

    assert EhrClient.objects.count() == 0


def test_the_register_command_lists_the_clinics_when_the_slug_is_unknown(clinic, ec_key, tmp_path):
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_text(json.dumps(public_jwks(ec_key)))

    with pytest.raises(CommandError, match="The clinics are: riverside"):
        call_command(
            "register_ehr_client", name="EHR", clinic="lakeside", jwks=str(jwks_path), stdout=StringIO()
        )

    call_command(
        "register_ehr_client",
        name="EHR",
        clinic="lakeside",
        jwks=str(jwks_path),
        scope=["system/Task.rs system/Patient.read"],
        create_clinic=True,
        stdout=StringIO(),
    )
    registered = EhrClient.objects.get(clinic__slug="lakeside")
    assert registered.allowed_scopes == ["system/Task.rs", "system/Patient.read"]
    assert Clinic.objects.get(slug="lakeside").name == "Lakeside"


def test_a_refused_registration_does_not_leave_a_created_clinic_behind(db, ec_key, tmp_path):
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_text(json.dumps(public_jwks(ec_key)))

    with pytest.raises(CommandError, match="Scope"):
        call_command(
            "register_ehr_client",
            name="EHR",
            clinic="lakeside",
            jwks=str(jwks_path),
            scope=["patient/*.read"],
            create_clinic=True,
            stdout=StringIO(),
        )

    assert not Clinic.objects.filter(slug="lakeside").exists()


def test_the_token_command_makes_a_key_whose_assertions_the_hub_accepts(clinic, tmp_path, post_token):
    key_path = tmp_path / "ehr-key.pem"
    jwks_out = StringIO()
    call_command("ehr_client_token", key=str(key_path), new_key="EC", stdout=jwks_out, stderr=StringIO())
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_text(jwks_out.getvalue())
    registered = StringIO()
    call_command(
        "register_ehr_client", name="EHR", clinic="riverside", jwks=str(jwks_path), stdout=registered
    )
    client_id = registered.getvalue().splitlines()[0]

    assertion_out = StringIO()
    call_command(
        "ehr_client_token",
        key=str(key_path),
        client_id=client_id,
        token_url=TEST_TOKEN_URL,
        stdout=assertion_out,
        stderr=StringIO(),
    )

    assert key_path.stat().st_mode & 0o077 == 0
    response = post_token(assertion_out.getvalue().strip(), scope="system/Task.cruds")
    assert response.status_code == 200, response.content


def test_the_token_command_will_not_overwrite_a_key(tmp_path):
    key_path = tmp_path / "ehr-key.pem"
    key_path.write_text("precious")

    with pytest.raises(CommandError, match="already exists"):
        call_command(
            "ehr_client_token", key=str(key_path), new_key="RSA", stdout=StringIO(), stderr=StringIO()
        )

    assert key_path.read_text() == "precious"


# --- Purging ------------------------------------------------------------------------------------------------


def test_purge_deletes_only_expired_spent_assertions(ec_client):
    now = timezone.now()
    SpentAssertion.objects.create(client=ec_client, jti="old", expires_at=now - timedelta(seconds=1))
    SpentAssertion.objects.create(client=ec_client, jti="live", expires_at=now + timedelta(minutes=5))

    assert purge_spent_assertions(now=now) == 1

    assert list(SpentAssertion.objects.values_list("jti", flat=True)) == ["live"]


def test_the_purge_task_is_named_for_the_beat_schedule_and_purges(ec_client, settings):
    SpentAssertion.objects.create(client=ec_client, jti="old", expires_at=timezone.now() - timedelta(hours=1))

    assert purge_spent_jtis.name == "fhir_bridge.purge_spent_jtis"
    assert settings.CELERY_BEAT_SCHEDULE["purge-spent-assertion-ids"]["task"] == purge_spent_jtis.name
    assert purge_spent_jtis() == 1
    assert SpentAssertion.objects.count() == 0


def test_the_register_command_hints_the_scopes_a_narrow_client_must_ask_for(clinic, ec_key, tmp_path):
    # Following the hint for a client registered with --scope used to ask for every default scope: invalid_scope.
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_text(json.dumps(public_jwks(ec_key)))
    narrow, default = StringIO(), StringIO()

    call_command("register_ehr_client", name="Narrow", clinic="riverside", jwks=str(jwks_path),
                 scope=["system/Task.rs"], stdout=narrow)
    call_command("register_ehr_client", name="Wide", clinic="riverside", jwks=str(jwks_path), stdout=default)

    assert "--request --scope 'system/Task.rs'" in narrow.getvalue()
    assert "--scope" not in default.getvalue()


def test_the_register_command_prints_a_token_command_that_works_off_port_8000(clinic, ec_key, tmp_path, settings):
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_text(json.dumps(public_jwks(ec_key)))
    given, configured = StringIO(), StringIO()
    call_command("register_ehr_client", name="A", clinic="riverside", jwks=str(jwks_path),
                 hub_url="http://127.0.0.1:9000/", stdout=given)
    settings.HUB_PUBLIC_BASE_URL = "https://hub.example.org"
    call_command("register_ehr_client", name="B", clinic="riverside", jwks=str(jwks_path), stdout=configured)

    assert "--token-url http://127.0.0.1:9000/auth/token --request" in given.getvalue()
    assert "--token-url https://hub.example.org/auth/token --request" in configured.getvalue()


def test_a_token_verified_once_is_not_decoded_again_until_it_expires(ec_client, monkeypatch):
    from fhir_bridge import smart_tokens

    token, lifetime = access_token_encode(client=ec_client, scopes=["system/Task.rs"])
    decodes = []
    real_decode = jwt.decode_complete
    monkeypatch.setattr(smart_tokens.jwt, "decode_complete", lambda *a, **k: decodes.append(1) or real_decode(*a, **k))

    assert authenticate_bearer(f"Bearer {token}").scopes == {"system/Task.rs"}
    assert authenticate_bearer(f"Bearer {token}").scopes == {"system/Task.rs"}
    assert len(decodes) == 1

    with time_machine.travel(time.time() + lifetime + 1):
        with pytest.raises(AuthError, match="expired"):
            authenticate_bearer(f"Bearer {token}")


def test_a_verified_token_is_refused_once_the_signing_key_changes(ec_client, settings):
    token, _ = access_token_encode(client=ec_client, scopes=["system/Task.rs"])
    authenticate_bearer(f"Bearer {token}")

    settings.SECRET_KEY = "another-secret-key-another-secret-key"
    with pytest.raises(AuthError, match="not one this hub issued"):
        authenticate_bearer(f"Bearer {token}")
