"""The minimum PHI rule over FHIR: before its organization accepts an offer, no interaction a provider's system
can reach returns the patient's name, birth date, address, identifier or contact. The walk is built from the
route table and from everything stored, so that a type, a search parameter or an _include added later is walked
too; after acceptance the same walk finds her, which shows that it looks in the right places."""

import copy
from urllib.parse import urlencode

import pytest

from fhir_bridge.examples import scenario2_bundle
from fhir_bridge.models import SearchToken, StoredResource
from fhir_bridge.route_table import TABLE
from fhir_bridge.smart_scopes import PROVIDER_SCOPES
from referrals.models import Referral
from referrals.offers import referral_route_manually
from tests.conftest import fhir_client_for, json_of
from tests.factories import ALL_SCOPES, EhrClientFactory
from tests.network.factories import OrganizationFactory, RoleFactory, SiteFactory, credential_give

pytestmark = pytest.mark.django_db

# What a Patient may carry that identifies her, and that a provider must not see before acceptance.
IDENTIFYING_ELEMENTS = ("name", "birthDate", "address", "identifier", "telecom", "contact", "photo")


def _identifying_values(patient: dict) -> set[str]:
    """Every value of hers the walk looks for: names, birth date, address parts, identifiers, phone, e-mail."""
    values = {patient["birthDate"]}
    for name in patient.get("name", []):
        values |= {name.get("family", ""), *name.get("given", []), name.get("text", "")}
    for address in patient.get("address", []):
        values |= {*address.get("line", []), address.get("city", ""), address.get("postalCode", "")}
    values |= {i["value"] for i in patient.get("identifier", [])}
    values |= {t["value"] for t in patient.get("telecom", [])}
    return {v for v in values if v}


def _strings(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, str):
        yield node


def _resources(body):
    """Every resource in a response body: itself, and each entry's of a Bundle."""
    if not isinstance(body, dict):
        return
    yield body
    for entry in body.get("entry", []) or []:
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
            yield entry["resource"]


@pytest.fixture
def world(fhir):
    """The clinic's Scenario 2 referral (Nancy Johansson), offered to Fit 4 Life, whose system uses every scope
    the hub could grant it (the walk must not rest on a narrow registration)."""
    fit4life = OrganizationFactory(fhir_id="fit4life", name="Fit 4 Life")
    site = SiteFactory(organization=fit4life, state="IL", latitude=39.799, longitude=-89.644)
    role = RoleFactory(site=site, fhir_id="lopez")
    credential_give(role.professional, "acsm-cep")
    response = fhir.post("", scenario2_bundle(identifier="phi-walk"))
    assert response.status_code == 200
    referral = Referral.objects.get()
    offer = referral_route_manually(referral=referral, role=role, admin="coordinator", override_reason="test").offer
    patient_row = StoredResource.objects.get(resource_type="Patient", referral=referral)
    scopes = " ".join(dict.fromkeys([*ALL_SCOPES.split(), *PROVIDER_SCOPES]))
    provider = fhir_client_for(EhrClientFactory(clinic=None, organization=fit4life, scopes=scopes), scopes)
    return {
        "provider": provider, "offer": offer, "referral": referral, "patient": patient_row.content,
        "offer_task": f"offer-{offer.pk}",
    }


def _walk(provider) -> list[tuple[str, int, dict]]:
    """(what was asked, status, body) for every read, vread, history and search a provider can send, over
    everything stored and every search value indexed, with every _include and _revinclude the table answers."""
    asked = ["metadata", ".well-known/smart-configuration"]
    for row in StoredResource.objects.all():
        asked += [row.reference, f"{row.reference}/_history"]
        asked += [f"{row.reference}/_history/{v}" for v in range(1, row.version_id + 1)]
    for served in TABLE:
        if "search" not in served.interactions:
            continue
        asked.append(served.name)
        brought = [("_include", i) for i in served.includes] + [("_revinclude", i) for i in served.revincludes]
        for pair in brought:
            asked.append(f"{served.name}?{urlencode([pair])}")
        asked.append(f"{served.name}?" + urlencode(brought))
        for param, value in SearchToken.objects.filter(resource_type=served.name).values_list("param", "value").distinct():
            asked.append(f"{served.name}?" + urlencode([(param, value)] + brought))
    walked = []
    for path in asked:
        response = provider.get(path)
        walked.append((f"GET {path}", response.status_code, json_of(response) if response.content else {}))
    return walked


def _refused_writes(provider, world) -> list[tuple[str, int, dict]]:
    """Writes a provider may try before acceptance; their errors must not quote her either."""
    offer_task = json_of(provider.get(f"Task/{world['offer_task']}"))
    walked = []
    body = copy.deepcopy(offer_task)
    body["status"] = "in-progress"
    response = provider.put(f"Task/{offer_task['id']}", body, headers={"If-Match": 'W/"1"'})
    walked.append(("PUT offer Task in-progress", response.status_code, json_of(response)))
    observation = {
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "89555-7"}]},
        "subject": offer_task["for"], "basedOn": [offer_task["focus"]], "effectiveDateTime": "2026-11-01",
        "valueQuantity": {"value": 3, "unit": "d/wk", "system": "http://unitsofmeasure.org", "code": "d/wk"},
    }
    response = provider.post("Observation", observation)
    walked.append(("POST Observation", response.status_code, json_of(response)))
    response = provider.post("", scenario2_bundle(identifier="from-provider"))
    walked.append(("POST transaction", response.status_code, json_of(response)))
    return walked


def _leaks(walked, values: set[str]) -> list[str]:
    found = []
    for asked, status, body in walked:
        if body.get("resourceType") == "Bundle" and body.get("type") == "searchset":
            # Its links echo the query the provider sent; what it found is in total and entry.
            if body["total"] and any(value in asked for value in values):
                found.append(f"{asked} ({status}) finds {body['total']} by her data")
            body = {k: v for k, v in body.items() if k != "link"}
        strings = set(_strings(body))
        for value in values:
            if any(value in s for s in strings):
                found.append(f"{asked} ({status}) shows {value!r}")
        for resource in _resources(body):
            if resource.get("resourceType") == "Patient":
                found += [f"{asked} ({status}) serves Patient.{e}" for e in IDENTIFYING_ELEMENTS if e in resource]
        found += [f"{asked} ({status}) shows a display {s!r}" for s in strings if "Johansson" in s]
    return found


def test_nothing_a_provider_can_reach_before_acceptance_identifies_the_patient(world):
    provider = world["provider"]
    values = _identifying_values(world["patient"])
    assert {"Johansson", "Nancy", "1960-05-15", "123 Main St", "62701", "123456", "+1 (555) 555-5555"} <= values
    walked = _walk(provider) + _refused_writes(provider, world)
    assert len(walked) > 60  # every stored resource, version and indexed search value, not a handful
    # It did reach the offer and her redacted record: the walk is not just a row of 404s.
    reached = {asked for asked, status, _ in walked if status == 200}
    assert f"GET Task/{world['offer_task']}" in reached
    assert f"GET {world['patient']['resourceType']}/{world['patient']['id']}" in reached
    assert _leaks(walked, values) == []


def test_after_acceptance_the_same_walk_finds_her(world):
    provider = world["provider"]
    offer_task = json_of(provider.get(f"Task/{world['offer_task']}"))
    body = {k: v for k, v in offer_task.items() if k != "meta"} | {"status": "accepted"}
    assert provider.put(f"Task/{offer_task['id']}", body, headers={"If-Match": 'W/"1"'}).status_code == 200
    leaks = _leaks(_walk(provider), _identifying_values(world["patient"]))
    assert any("Johansson" in leak for leak in leaks)
    assert any("Patient.birthDate" in leak for leak in leaks)


def test_the_walk_reads_every_answer_as_fhir(world):
    # Every body the walk reads is a FHIR resource (an OperationOutcome at worst): one that is not would hide
    # from it. The SMART configuration is plain JSON, and public.
    for asked, status, body in _walk(world["provider"]):
        if asked != "GET .well-known/smart-configuration":
            assert isinstance(body, dict) and "resourceType" in body, (asked, status)
