"""DomainResource's invariants (R4 domainresource.html#invs), which fhir.resources does not check: dom-2 to dom-5
refuse, dom-6 only warns. X-12 is here with its answer."""

import copy
import json
import pathlib

import pytest

from fhir_bridge.models import StoredResource
from fhir_bridge.profiles import domain_resource_issues
from tests.conftest import json_of

pytestmark = pytest.mark.django_db


def _x12() -> dict:
    for parent in pathlib.Path(__file__).resolve().parents:
        candidate = parent.parent / "shared" / "interop-cases" / "X-12.json"
        if candidate.exists():
            return json.loads(candidate.read_text())
    pytest.skip("../shared/interop-cases is not beside this checkout")


def _invariants(response) -> dict[str, str]:
    return {i["expression"][0]: i["diagnostics"][:5] for i in json_of(response)["issue"] if i.get("expression")}


def test_x12_a_contained_resource_referenced_from_nowhere_is_refused_naming_dom_3(fhir):
    # expected 422/400 naming dom-3, and nothing stored (not the orphan as a resource of its own).
    response = fhir.post("Task", _x12())
    assert response.status_code in (400, 422)
    assert _invariants(response) == {"Task.contained[2]": "dom-3"}
    assert not StoredResource.objects.filter(resource_type__in=["Task", "Organization", "Patient"]).exclude(fhir_id="hub").exists()


def test_the_same_task_without_the_orphan_is_taken(fhir):
    task = _x12()
    task["contained"] = task["contained"][:2]
    response = fhir.post("Task", task)
    assert response.status_code == 201, response.content


def test_dom_3_in_a_transaction_entry_names_the_entry(fhir):
    from fhir_bridge.examples import scenario2_bundle

    bundle = scenario2_bundle(identifier="dom3")
    bundle["entry"][0]["resource"]["contained"] = [{"resourceType": "Organization", "id": "lost", "name": "Lost"}]
    response = fhir.post("", bundle)
    assert response.status_code == 422
    assert _invariants(response) == {"Bundle.entry[0].resource.contained[0]": "dom-3"}


def _with_contained(**item) -> dict:
    return {"resourceType": "Patient", "text": {"status": "generated", "div": "<div>x</div>"},
            "generalPractitioner": [{"reference": "#gp"}],
            "contained": [{"resourceType": "Practitioner", "id": "gp"} | item]}


@pytest.mark.parametrize(
    ("item", "rule", "where"),
    [
        ({"contained": [{"resourceType": "Organization", "id": "x"}]}, "dom-2", "Patient.contained[0].contained"),
        ({"meta": {"versionId": "3"}}, "dom-4", "Patient.contained[0].meta"),
        ({"meta": {"lastUpdated": "2026-01-01T00:00:00Z"}}, "dom-4", "Patient.contained[0].meta"),
        ({"meta": {"security": [{"code": "R"}]}}, "dom-5", "Patient.contained[0].meta.security"),
    ],
)
def test_dom_2_4_and_5_are_errors(item, rule, where):
    issues = [i for i in domain_resource_issues(_with_contained(**item)) if i.severity == "error"]
    assert [(i.expression, i.diagnostics[:5]) for i in issues] == [(where, rule)]


def test_a_contained_resource_is_referenced_from_anywhere_even_an_extension_or_back_to_its_container():
    assert not domain_resource_issues(_with_contained())
    in_extension = _with_contained()
    in_extension["generalPractitioner"] = []
    in_extension["extension"] = [{"url": "http://example.org/x", "valueReference": {"reference": "#gp"}}]
    assert not domain_resource_issues(in_extension)
    back = _with_contained(extension=[{"url": "http://example.org/y", "valueReference": {"reference": "#"}}])
    back["generalPractitioner"] = []
    assert not domain_resource_issues(back)


def test_dom_6_is_a_warning_never_a_refusal(fhir):
    patient = {"resourceType": "Patient", "name": [{"family": "NoNarrative"}]}
    issues = domain_resource_issues(patient)
    assert [(i.severity, i.diagnostics[:5]) for i in issues] == [("warning", "dom-6")]
    response = fhir.post("Patient", copy.deepcopy(patient), headers={"Prefer": "return=OperationOutcome"})
    assert response.status_code == 201
    assert [(i["severity"], i["diagnostics"][:5]) for i in json_of(response)["issue"][1:]] == [("warning", "dom-6")]
