"""GET /: a page naming the hub's entry points, under the site's Content-Security-Policy (no inline script)."""

import re

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_the_front_page_names_the_entry_points(client):
    response = client.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    for target in (f'href="{reverse("portal:login")}"', f'href="{reverse("console:overview")}"', "http://testserver/fhir",
                   'href="http://testserver/fhir/metadata"', "http://testserver/auth/token"):
        assert target in page, target
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert not re.search(r"<script(?![^>]*\bsrc=)", page) and " on" + "click=" not in page
    for link in (reverse("portal:login"), reverse("console:overview"), "/fhir/metadata"):
        assert client.get(link).status_code in (200, 302), link
