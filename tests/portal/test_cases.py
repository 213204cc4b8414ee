"""My cases, the minimum-PHI walk before acceptance, and a fixed number of queries per page."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from fhir_bridge.models import StoredResource
from referrals.offers import offer_accept
from tests.network.factories import RoleFactory, credential_give
from tests.portal.conftest import PATIENT, offer_make, signed_in

pytestmark = pytest.mark.django_db

CONTACT = {"phone": "+1 217 555 0142", "email": "ingrid.j@example.net", "line": "12 Maple Street", "mrn": "MRN-778812"}


def _patient_details(referral_id: int) -> None:
    """Give the stored Patient what an EHR sends: an identifier, a phone, an e-mail and a street address."""
    patient = StoredResource.objects.get(referral_id=referral_id, resource_type="Patient")
    patient.content = {
        **patient.content,
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.1", "value": CONTACT["mrn"]}],
        "telecom": [{"system": "phone", "value": CONTACT["phone"]}, {"system": "email", "value": CONTACT["email"]}],
        "address": [{"line": [CONTACT["line"]], "city": "New York", "state": "NY", "postalCode": "10001"}],
    }
    patient.save(update_fields=["content"])


def _therapist_pages(client, offer) -> dict[str, object]:
    """Every page a therapist reaches, and the htmx fragments, as responses."""
    urls = {
        "offers": reverse("portal:offers"),
        "decline form": reverse("portal:offer_decline", args=[offer.pk]),
        "cases": reverse("portal:cases"),
        "closed cases": reverse("portal:cases") + "?closed=1",
        "case": reverse("portal:case", args=[offer.referral_id]),
        "account": reverse("portal:account"),
        "case form": reverse("portal:case_action", args=[offer.referral_id, "session"]),
    }
    pages = {name: client.get(url) for name, url in urls.items()}
    pages["decline fragment"] = client.get(urls["decline form"], HTTP_HX_REQUEST="true")
    return pages


def test_before_acceptance_no_page_shows_who_the_patient_is(offer, practice):
    _patient_details(offer.referral_id)
    identity = [PATIENT["patient_name"], "Johansson", PATIENT["patient_birth_date"], "1958", *CONTACT.values(),
                "10001"]
    for account in (practice.therapist, practice.manager):
        pages = _therapist_pages(signed_in(account), offer)
        assert pages["offers"].status_code == 200 and f"offer-{offer.pk}" in pages["offers"].content.decode()
        assert pages["case"].status_code == 404  # not a case until accepted
        for name, response in pages.items():
            assert response.status_code in (200, 404), name
            body = response.content.decode()
            for value in identity:
                assert value not in body, f"{value!r} on {name} for {account}"
    # the portal serves no JSON or FHIR of its own: nothing else to walk
    assert not any(url for url in ("/portal/api", "/portal/fhir") if signed_in(practice.therapist).get(url).status_code != 404)


def test_after_acceptance_the_case_shows_the_referral_in_full(offer, practice):
    _patient_details(offer.referral_id)
    offer_accept(offer=offer, actor="user:therapist")
    client = signed_in(practice.therapist)
    listing = client.get(reverse("portal:cases")).content.decode()
    assert PATIENT["patient_name"] in listing
    page = client.get(reverse("portal:case", args=[offer.referral_id])).content.decode()
    for value in (PATIENT["patient_name"], PATIENT["patient_birth_date"], CONTACT["phone"], CONTACT["email"], CONTACT["line"]):
        assert value in page
    assert "Atherosclerotic heart disease" in page and "Cardiovascular" in page and "moderate" in page
    task = StoredResource.objects.get(referral_id=offer.referral_id, resource_type="Task")
    assert f'<span id="task-version">{task.version_id}</span>' in page
    # the colleague, not their case: not found
    assert signed_in(practice.colleague).get(reverse("portal:case", args=[offer.referral_id])).status_code == 404


def _queries(client, url) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(queries)


# session + user + account (+ the OTP middleware's device lookup), then each page's own reads, then the audit
# row's INSERT. The case page reads the offer with its referral, facts and site once (case_for_account), then the
# stored Task and Patient, the condition groups, the events, the case's records (referrals.selectors.case_record;
# case_dose reuses them) and its reports to the physician (one query).
CASE_QUERIES = 16
EXPECTED_QUERIES = {"offers": 7, "cases": 7, "case": CASE_QUERIES}


def test_each_page_costs_a_fixed_number_of_queries(clinic, practice):
    practice.roles[1].accepting = False
    practice.roles[1].save(update_fields=["accepting"])
    therapist = signed_in(practice.therapist)
    manager = signed_in(practice.manager)
    first = offer_make(clinic, practice.roles[0])
    counts = {"offers": [_queries(c, reverse("portal:offers")) for c in (therapist, manager)]}
    for _ in range(3):
        offer_make(clinic, practice.roles[0])
    counts["offers"] += [_queries(c, reverse("portal:offers")) for c in (therapist, manager)]
    offer_accept(offer=first, actor="test")
    counts["cases"] = [_queries(c, reverse("portal:cases")) for c in (therapist, manager)]
    counts["case"] = [_queries(c, reverse("portal:case", args=[first.referral_id])) for c in (therapist, manager)]
    for offer in first.referral.offers.model.objects.filter(status="requested"):
        offer_accept(offer=offer, actor="test")
    counts["cases"] += [_queries(c, reverse("portal:cases")) for c in (therapist, manager)]
    assert counts == {page: [n] * len(counts[page]) for page, n in EXPECTED_QUERIES.items()}
