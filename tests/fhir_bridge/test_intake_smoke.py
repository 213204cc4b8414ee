import pytest

from fhir_bridge.examples import scenario2_bundle
from tests.conftest import json_of

pytestmark = pytest.mark.django_db


def test_smoke(fhir):
    response = fhir.post("", scenario2_bundle(identifier="abc"))
    print(response.status_code, response.content[:3000])
    assert response.status_code == 200
