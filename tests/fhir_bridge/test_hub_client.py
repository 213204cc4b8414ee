"""The hub as a SMART backend client of EHRs (notify and pull): its key pair, the JWKS it publishes, and the EHR
URLs kept on a client's registration."""

import json
import stat

import jwt
import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from fhir_bridge.hub_client import hub_client_key
from fhir_bridge.models import EhrClient
from fhir_bridge.smart_keys import client_assertion, generate_private_key, private_key_pem, public_jwks
from fhir_bridge.smart_tokens import jwk_public_key


@pytest.fixture
def key_file(settings, tmp_path):
    settings.HUB_CLIENT_KEY_FILE = tmp_path / "keys" / "hub-client-key.pem"
    return settings.HUB_CLIENT_KEY_FILE


def test_the_hub_makes_its_key_once_readable_by_its_owner_only(key_file):
    assert not key_file.exists()
    key = hub_client_key()

    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    written = key_file.read_bytes()
    assert public_jwks(hub_client_key()) == public_jwks(key)
    assert key_file.read_bytes() == written  # read again, never replaced


def test_a_key_given_in_settings_is_used_as_it_is(key_file):
    key_file.parent.mkdir()
    mine = generate_private_key("RSA")
    key_file.write_bytes(private_key_pem(mine))

    assert public_jwks(hub_client_key()) == public_jwks(mine)


def test_a_file_that_holds_no_key_is_an_error_not_a_new_key(key_file):
    key_file.parent.mkdir()
    key_file.write_text("not a key")
    with pytest.raises(ValueError, match="not a PEM private key"):
        hub_client_key()
    assert key_file.read_text() == "not a key"


def test_the_published_jwks_verifies_what_the_hub_signs_and_holds_no_private_part(key_file, db):
    response = Client().get("/.well-known/jwks.json")

    assert response.status_code == 200
    jwks = json.loads(response.content)
    [jwk] = jwks["keys"]
    assert "d" not in jwk and jwk["use"] == "sig"
    # What an EHR's token endpoint does with the hub's client assertion: find the key by kid, verify.
    assertion = client_assertion(key=hub_client_key(), kid=None, client_id="hub", token_url="https://ehr.test/token")
    header = jwt.get_unverified_header(assertion)
    assert header["kid"] == jwk["kid"]
    claims = jwt.decode(assertion, jwk_public_key(jwk, header["alg"]), algorithms=[header["alg"]],
                        audience="https://ehr.test/token")
    assert claims["iss"] == claims["sub"] == "hub"


def test_jwks_takes_only_get(key_file, db):
    assert Client().post("/.well-known/jwks.json").status_code == 405


def _jwks_file(tmp_path):
    path = tmp_path / "ehr-jwks.json"
    path.write_text(json.dumps(public_jwks(generate_private_key("EC"))))
    return path


def test_register_keeps_the_ehrs_fhir_base_and_token_urls(clinic, tmp_path, capsys):
    call_command(
        "register_ehr_client", name="Pull EHR", clinic=clinic.slug, jwks=str(_jwks_file(tmp_path)),
        fhir_base="https://ehr.example.org/fhir/", token_url="https://ehr.example.org/auth/token",
    )
    client = EhrClient.objects.get(name="Pull EHR")
    assert client.fhir_base_url == "https://ehr.example.org/fhir"
    assert client.token_url == "https://ehr.example.org/auth/token"
    assert "pulls from https://ehr.example.org/fhir" in capsys.readouterr().out
    assert client.hub_client_id == client.client_id  # the id the EHR knows the hub by, unless told another
    assert client.can_be_pulled_from


def test_register_keeps_the_id_the_ehr_knows_the_hub_by(clinic, tmp_path):
    call_command(
        "register_ehr_client", name="Pull EHR", clinic=clinic.slug, jwks=str(_jwks_file(tmp_path)),
        fhir_base="https://ehr.example.org/fhir", token_url="https://ehr.example.org/auth/token",
        hub_client_id="exercise-hub",
    )
    assert EhrClient.objects.get(name="Pull EHR").hub_client_id == "exercise-hub"


@pytest.mark.parametrize(
    "urls, message",
    [
        ({"fhir_base": "https://ehr.example.org/fhir"}, "both"),
        ({"token_url": "https://ehr.example.org/token"}, "both"),
        ({"fhir_base": "ftp://ehr.example.org/fhir", "token_url": "https://ehr.example.org/token"}, "http"),
        ({"fhir_base": "https://ehr.example.org/fhir?x=1", "token_url": "https://ehr.example.org/t"}, "without query"),
    ],
)
def test_register_refuses_half_or_odd_pull_urls(clinic, tmp_path, urls, message):
    with pytest.raises(CommandError, match=message):
        call_command("register_ehr_client", name="Odd EHR", clinic=clinic.slug, jwks=str(_jwks_file(tmp_path)), **urls)
    assert not EhrClient.objects.filter(name="Odd EHR").exists()
