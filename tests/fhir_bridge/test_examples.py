"""Every PA example round-trips: parse → store → render → re-parse → compare."""

import json
from pathlib import Path

import pytest

from fhir_bridge.examples import EXAMPLES_DIR, example, example_names
from fhir_bridge.fhir import structural_issues
from fhir_bridge.profiles import check_resource
from tests.conftest import json_of

SHARED = Path(__file__).resolve().parents[3] / "shared" / "fhir-examples" / "physical-activity"
CREATABLE = ("Patient", "Condition", "Observation", "Goal", "Practitioner", "PractitionerRole", "Organization")
_META = ("id", "meta")


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared/fhir-examples is not beside this checkout")
def test_the_shipped_examples_are_the_shared_ones():
    shipped = sorted(p.name for p in EXAMPLES_DIR.glob("*.json"))
    assert shipped == sorted(p.name for p in SHARED.glob("*.json"))
    for name in shipped:
        assert json.loads((EXAMPLES_DIR / name).read_text()) == json.loads((SHARED / name).read_text())


@pytest.mark.parametrize("name", example_names())
def test_every_pa_example_parses_and_meets_its_profile(name):
    resource = example(name)
    assert structural_issues(resource, path=resource["resourceType"]) == []
    assert [i for i in check_resource(resource) if i.severity == "error"] == []


def _without(resource: dict, keys=_META) -> dict:
    return {k: v for k, v in resource.items() if k not in keys}


@pytest.mark.django_db
@pytest.mark.parametrize("name", [n for n in example_names() if n.split("-")[0] in CREATABLE])
def test_a_created_example_reads_back_as_it_was_sent(fhir, name):
    resource = example(name)
    created = fhir.post(resource["resourceType"], resource)
    assert created.status_code == 201, created.content
    read = json_of(fhir.get(f"{resource['resourceType']}/{json_of(created)['id']}"))
    assert structural_issues(read, path=resource["resourceType"]) == []
    assert _without(read) == _without(resource)


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["Task-Scen2TaskFit4LifeV2", "Task-ExampleFulfillmentTask", "Task-Scen3TaskYMCAV3"])
def test_a_pa_task_sent_as_a_referral_reads_back_with_the_hubs_state_laid_over(fhir, name):
    patient = example("Scen2PatientJohansson")
    patient_id = json_of(fhir.post("Patient", patient))["id"]
    service_request = example("Scen2ServiceRequest")
    service_request["subject"] = {"reference": f"Patient/{patient_id}"}
    service_request["id"] = "sr"
    task = example(name)
    # The ServiceRequest travels contained: one POSTed alone first would already be a referral, and a Task for it
    # a duplicate of that referral's Task.
    task.update(status="requested", owner={"reference": "Organization/hub"}, focus={"reference": "#sr"},
                contained=[service_request])
    task["for"] = {"reference": f"Patient/{patient_id}"}
    task.pop("statusReason", None)
    task.pop("output", None)

    created = fhir.post("Task", task)
    assert created.status_code == 201, created.content
    read = json_of(fhir.get(f"Task/{json_of(created)['id']}"))
    assert structural_issues(read, path="Task") == []
    assert [i for i in check_resource(read) if i.severity == "error"] == []
    hub_owned = ("businessStatus", "lastModified", "note")
    lifted = ("focus", "contained")  # the contained ServiceRequest is stored as a resource of its own
    assert _without(read, _META + hub_owned + lifted) == _without(task, _META + hub_owned + lifted)
    stored_sr = json_of(fhir.get(read["focus"]["reference"]))
    assert _without(stored_sr) == _without(service_request)
    assert [n["text"] for n in read.get("note", [])] == [n["text"] for n in task.get("note", [])]
