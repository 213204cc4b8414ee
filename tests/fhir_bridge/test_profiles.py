"""PA profile checks against the IG's own examples and the negative cases of pa-ig-workflow.md section 6.

Negative cases mutate a copy of a fixture, so each test breaks exactly the rule it names.
"""

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_bridge.examples import EXAMPLES_DIR
from fhir_bridge.profiles import (
    EVS_UNITS,
    PA_TASK_STATUSES,
    TASK_STATUS_REASON_REQUIRED,
    Issue,
    check_resource,
)

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fhir-examples"
# The IGs' examples beside the checkout; in a clone on its own, the PA ones the hub ships (the same files, as
# test_examples checks).
PA = FIXTURES / "physical-activity" if FIXTURES.is_dir() else EXAMPLES_DIR
EXAMPLE_DIRS = sorted(p for p in FIXTURES.iterdir() if p.is_dir()) if FIXTURES.is_dir() else [EXAMPLES_DIR]
PROFILED_TYPES = ("ServiceRequest", "Task", "Observation", "Condition", "Goal", "Patient", "DiagnosticReport")
PA_FIXTURES = sorted(p for p in PA.glob("*.json") if p.name.split("-", 1)[0] in PROFILED_TYPES)


def load(name: str) -> dict[str, Any]:
    """A fresh copy of physical-activity/<name>.from-fsh.json."""
    return json.loads((PA / f"{name}.from-fsh.json").read_text())


def errors(resource: object) -> list[Issue]:
    return [issue for issue in check_resource(resource) if issue.severity == "error"]  # type: ignore[arg-type]


def error_at(resource: dict[str, Any], expression: str) -> Issue:
    """The one error reported at `expression`; fails listing everything reported otherwise."""
    found = [issue for issue in errors(resource) if issue.expression == expression]
    assert len(found) == 1, check_resource(resource)
    return found[0]


# --- The IG's own examples ----------------------------------------------------------------------------------


def test_the_fixture_folder_holds_the_pa_examples() -> None:
    # Guards the parametrized test below against silently running on an empty list.
    assert len(PA_FIXTURES) == 16


@pytest.mark.parametrize("path", PA_FIXTURES, ids=lambda p: p.name.removesuffix(".from-fsh.json"))
def test_it_passes_every_pa_example_without_errors(path: Path) -> None:
    assert errors(json.loads(path.read_text())) == []


def test_it_warns_that_scen2_referral_code_is_outside_the_extensible_intervention_value_set() -> None:
    # 409063005 "Counseling" is a category code, a known defect of the IG example.
    [issue] = check_resource(load("ServiceRequest-Scen2ServiceRequest"))

    assert (issue.severity, issue.code, issue.expression) == (
        "warning",
        "code-invalid",
        "ServiceRequest.code",
    )


def test_it_only_warns_about_a_note_author_of_another_type() -> None:
    # PA's ExampleFulfillmentTask has a PractitionerRole note author; the profile asks for a Practitioner or
    # an Organization.
    [issue] = check_resource(load("Task-ExampleFulfillmentTask"))

    assert (issue.severity, issue.expression) == ("warning", "Task.note[0].authorReference.reference")


def test_it_has_nothing_to_say_about_resource_types_without_a_profile() -> None:
    assert check_resource(load("Organization-Scen2OrgGoodCardio")) == []
    assert check_resource(load("Subscription-Scen2SubscriptionEhr")) == []


def test_it_prefixes_expressions_with_the_given_path() -> None:
    bundle = load("Bundle-Scen2TaskGetFitResponseBundle")
    task = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Task")
    task["status"] = "ready"

    issues = check_resource(task, path="Bundle.entry[0].resource")

    assert [i.expression for i in issues] == ["Bundle.entry[0].resource.status"]


def test_the_pa_task_status_value_set_is_task_status_without_received_and_ready() -> None:
    assert {"received", "ready"}.isdisjoint(PA_TASK_STATUSES)
    assert TASK_STATUS_REASON_REQUIRED < PA_TASK_STATUSES
    assert len(PA_TASK_STATUSES) == 10


# --- Task: cases 2-7 and 20 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("element", ["focus", "for", "authoredOn", "requester", "owner"])
def test_it_rejects_a_task_missing_a_mandatory_element(element: str) -> None:  # case 2
    task = load("Task-Scen2TaskFit4LifeV2")
    del task[element]

    issue = error_at(task, f"Task.{element}")

    assert issue.code == "required"
    assert len(errors(task)) == 1


def test_it_rejects_a_task_whose_focus_is_not_a_service_request() -> None:  # case 3
    task = load("Task-Scen2TaskFit4LifeV2")
    task["focus"] = {"reference": "Patient/Scen2PatientJohansson"}

    assert error_at(task, "Task.focus.reference").code == "value"


def test_it_rejects_a_task_whose_intent_is_not_order() -> None:  # case 3
    task = load("Task-Scen2TaskFit4LifeV2")
    task["intent"] = "plan"

    assert error_at(task, "Task.intent").code == "value"


def test_it_rejects_a_task_whose_code_is_not_fulfill() -> None:  # case 3
    task = load("Task-Scen2TaskFit4LifeV2")
    task["code"]["coding"][0]["code"] = "approve"

    assert error_at(task, "Task.code").code == "value"


def test_it_accepts_a_task_without_code() -> None:
    task = load("Task-Scen2TaskFit4LifeV2")
    del task["code"]

    assert errors(task) == []


def test_it_accepts_a_task_focus_on_a_contained_service_request() -> None:
    task = load("Task-Scen2TaskFit4LifeV2")
    task["contained"] = [load("ServiceRequest-Scen3ServiceRequest") | {"id": "sr"}]
    task["focus"] = {"reference": "#sr"}

    assert errors(task) == []


@pytest.mark.parametrize(
    "contained, reference",
    [
        ([{"resourceType": "Patient", "id": "p"}], "#p"),  # contained, but not a ServiceRequest
        ([], "#missing"),  # nothing to resolve to
        ([], "#"),  # the Task itself
    ],
)
def test_it_rejects_a_contained_task_focus_that_is_not_a_service_request(
    contained: list, reference: str
) -> None:
    task = load("Task-Scen2TaskFit4LifeV2")
    task["contained"] = contained
    task["focus"] = {"reference": reference}

    assert error_at(task, "Task.focus.reference").code == "value"


@pytest.mark.parametrize(
    "reference",
    [
        "http://example.org/fhir/Group/1",
        "Group/1/_history/2",
        "Group?identifier=http://example.org|1",
    ],
)
def test_it_reads_the_target_type_of_absolute_versioned_and_conditional_references(reference: str) -> None:
    task = load("Task-Scen2TaskFit4LifeV2")
    task["for"] = {"reference": reference}

    assert "not Group" in error_at(task, "Task.for.reference").diagnostics


def test_it_leaves_urn_uuid_references_to_whoever_resolves_the_bundle() -> None:
    task = load("Task-Scen2TaskFit4LifeV2")
    task["focus"] = {"reference": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"}

    assert errors(task) == []


def test_it_rejects_a_task_owner_that_is_a_patient_and_accepts_a_healthcare_service() -> None:
    task = load("Task-Scen2TaskFit4LifeV2")
    task["owner"] = {"reference": "Patient/Scen2PatientJohansson"}
    assert error_at(task, "Task.owner.reference").code == "value"

    task["owner"] = {"reference": "HealthcareService/fit4life-classes"}
    assert errors(task) == []


def test_it_rejects_a_contained_task_owner() -> None:
    task = load("Task-Scen2TaskFit4LifeV2")
    task["contained"] = [{"resourceType": "Organization", "id": "org"}]
    task["owner"] = {"reference": "#org"}

    assert "contained" in error_at(task, "Task.owner.reference").diagnostics


@pytest.mark.parametrize("status", ["received", "ready", "bogus"])
def test_it_rejects_a_task_status_outside_the_pa_task_status_value_set(status: str) -> None:  # case 4
    task = load("Task-Scen2TaskFit4LifeV2")
    task["status"] = status

    assert error_at(task, "Task.status").code == "code-invalid"


@pytest.mark.parametrize("status", sorted(TASK_STATUS_REASON_REQUIRED))
def test_it_rejects_a_task_without_status_reason_when_its_status_needs_one(status: str) -> None:  # case 5
    task = load("Task-Scen2TaskGetFitV2")
    task["status"] = status
    del task["statusReason"]

    issue = error_at(task, "Task.statusReason")

    assert issue.code == "invariant"
    assert issue.diagnostics.startswith("pa-taskrm-1:")


def test_it_accepts_a_rejected_task_with_status_reason() -> None:  # case 5
    task = load("Task-Scen2TaskGetFitV2")

    assert task["status"] == "rejected"
    assert errors(task) == []


@pytest.mark.parametrize("status", ["accepted", "requested", "completed", "in-progress"])
def test_it_rejects_a_status_reason_on_a_task_whose_status_does_not_allow_one(status: str) -> None:  # case 6
    task = load("Task-Scen2TaskFit4LifeV2")
    task["status"] = status
    task["statusReason"] = {"text": "Patient asked for evening classes"}

    issue = error_at(task, "Task.statusReason")

    assert (issue.code, issue.diagnostics.split(":")[0]) == ("invariant", "pa-taskrm-1")


def test_it_rejects_a_task_business_status_without_text() -> None:  # case 7
    task = load("Task-ExampleFulfillmentTask")
    task["businessStatus"] = {"coding": [{"system": "http://example.org/steps", "code": "intake"}]}

    assert error_at(task, "Task.businessStatus.text").code == "required"


def test_it_rejects_a_task_status_reason_without_text() -> None:
    task = load("Task-Scen2TaskGetFitV2")
    task["statusReason"] = {"coding": [{"system": "http://example.org/reasons", "code": "full"}]}

    assert error_at(task, "Task.statusReason.text").code == "required"


def test_it_rejects_a_task_note_without_author_reference() -> None:  # case 7
    task = load("Task-Scen3TaskYMCAV3")
    del task["note"][0]["authorReference"]

    assert error_at(task, "Task.note[0].authorReference").code == "required"


def test_it_does_not_take_author_string_as_a_task_note_author() -> None:
    task = load("Task-Scen3TaskYMCAV3")
    del task["note"][0]["authorReference"]
    task["note"][0]["authorString"] = "YMCA front desk"

    assert "authorString" in error_at(task, "Task.note[0].authorReference").diagnostics


def test_it_rejects_a_task_note_without_time() -> None:  # case 7
    task = load("Task-Scen3TaskYMCAV3")
    del task["note"][0]["time"]

    assert error_at(task, "Task.note[0].time").code == "required"


@pytest.mark.parametrize(
    "authored_on, last_modified",
    [
        ("2023-03-16", "2023-03-15"),
        ("2023-03", "2023-02-28"),
        ("2023-03-16T10:00:00Z", "2023-03-16T09:59:59Z"),
        ("2023-03-16T10:00:00-02:00", "2023-03-16T11:00:00Z"),  # 12:00Z
        ("2023-03-16", "2023-03-14T23:00:00Z"),  # before the date in every time zone
    ],
)
def test_it_rejects_a_task_modified_before_it_was_authored(
    authored_on: str, last_modified: str
) -> None:  # case 20
    task = load("Task-Scen2TaskFit4LifeV2")
    task["authoredOn"], task["lastModified"] = authored_on, last_modified

    issue = error_at(task, "Task.lastModified")

    assert (issue.code, issue.diagnostics.split(":")[0]) == ("invariant", "inv-1")


@pytest.mark.parametrize(
    "authored_on, last_modified",
    [
        ("2023-03-16", "2023-03-16"),
        ("2023-03-16", "2023-03-16T08:00:00Z"),  # same day at another precision is not "earlier"
        ("2023-03-16T10:00:00Z", "2023-03-16"),
        ("2023-03-16T10:00:00+02:00", "2023-03-16T09:30:00Z"),  # 08:00Z: a string comparison gets this wrong
        ("2023-03-16T10:00:00Z", "2023-03-16T10:00:00.5Z"),
        ("2023-03-16", "2023-03-15T23:00:00Z"),  # already the 16th east of UTC
    ],
)
def test_it_accepts_a_last_modified_not_provably_before_authored_on(
    authored_on: str, last_modified: str
) -> None:
    task = load("Task-Scen2TaskFit4LifeV2")
    task["authoredOn"], task["lastModified"] = authored_on, last_modified

    assert errors(task) == []


@pytest.mark.parametrize("value", ["16/03/2023", "2023-02-30", "2023-03-16T10:00:00", "2023-03-16T25:00:00Z"])
def test_it_rejects_an_authored_on_that_is_not_a_fhir_date_time(value: str) -> None:
    task = load("Task-Scen2TaskFit4LifeV2")
    task["authoredOn"] = value
    task["lastModified"] = "2000-01-01"  # inv-1 cannot be judged against an unreadable authoredOn

    assert error_at(task, "Task.authoredOn").code == "value"


def test_it_reports_every_broken_rule_of_a_task_at_once() -> None:
    task = load("Task-Scen2TaskFit4LifeV2")
    task["status"] = "received"
    del task["owner"]
    task["businessStatus"] = {"coding": [{"system": "http://example.org/steps", "code": "intake"}]}
    task["lastModified"] = "2023-03-01"

    found = {(i.expression, i.code) for i in errors(task)}

    assert found == {
        ("Task.status", "code-invalid"),
        ("Task.owner", "required"),
        ("Task.businessStatus.text", "required"),
        ("Task.lastModified", "invariant"),
    }


# --- ServiceRequest: case 16 --------------------------------------------------------------------------------


@pytest.mark.parametrize("element", ["subject", "code", "authoredOn", "requester"])
def test_it_rejects_a_service_request_missing_a_mandatory_element(element: str) -> None:
    sr = load("ServiceRequest-Scen3ServiceRequest")
    del sr[element]

    assert error_at(sr, f"ServiceRequest.{element}").code == "required"
    assert len(errors(sr)) == 1


def test_it_rejects_a_service_request_without_the_pa_category() -> None:
    sr = load("ServiceRequest-Scen3ServiceRequest")
    sr["category"][0]["coding"][0]["code"] = "Nutrition"

    assert error_at(sr, "ServiceRequest.category").code == "required"


def test_it_rejects_a_service_request_with_the_pa_category_twice() -> None:
    sr = load("ServiceRequest-Scen3ServiceRequest")
    sr["category"].append(copy.deepcopy(sr["category"][0]))

    assert error_at(sr, "ServiceRequest.category").code == "structure"


def test_it_rejects_a_service_request_without_reason_code_or_reason_reference() -> None:
    sr = load("ServiceRequest-Scen3ServiceRequest")
    del sr["reasonCode"]

    issue = error_at(sr, "ServiceRequest")

    assert (issue.code, issue.diagnostics.split(":")[0]) == ("invariant", "pa-sr-1")


@pytest.mark.parametrize("value", [True, False])
def test_it_rejects_a_service_request_with_do_not_perform(value: bool) -> None:
    sr = load("ServiceRequest-Scen3ServiceRequest")
    sr["doNotPerform"] = value

    assert error_at(sr, "ServiceRequest.doNotPerform").code == "structure"


@pytest.mark.parametrize(
    "element, value", [("status", "unknown"), ("status", "cancelled"), ("intent", "plan")]
)
def test_it_rejects_a_service_request_status_or_intent_outside_the_pa_value_sets(
    element: str, value: str
) -> None:
    sr = load("ServiceRequest-Scen3ServiceRequest")
    sr[element] = value

    assert error_at(sr, f"ServiceRequest.{element}").code == "code-invalid"


def test_it_rejects_a_snomed_category_outside_the_us_core_slice() -> None:
    sr = load("ServiceRequest-ExampleServiceRequest")
    sr["category"][0]["coding"].append({"system": "http://snomed.info/sct", "code": "410606002"})

    assert error_at(sr, "ServiceRequest.category[0].coding[1].code").code == "code-invalid"


def test_it_rejects_a_service_request_subject_in_contained() -> None:
    sr = load("ServiceRequest-Scen3ServiceRequest")
    sr["contained"] = [{"resourceType": "Patient", "id": "p"}]
    sr["subject"] = {"reference": "#p"}

    assert error_at(sr, "ServiceRequest.subject.reference").code == "value"


def test_it_accepts_a_logical_requester_with_npi_and_display_only() -> None:
    sr = load("ServiceRequest-Scen3ServiceRequest")
    sr["requester"] = {
        "identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"},
        "display": "Dr. Blackrock",
    }
    assert errors(sr) == []

    del sr["requester"]["display"]
    assert error_at(sr, "ServiceRequest.requester.display").diagnostics.startswith("PA-ident-2:")

    sr["requester"] = {
        "identifier": {"system": "http://example.org/staff", "value": "42"},
        "display": "Dr. B",
    }
    assert error_at(sr, "ServiceRequest.requester.identifier.system").diagnostics.startswith("PA-ident-1:")


def test_it_rejects_a_service_request_note_without_author_or_time() -> None:
    sr = load("ServiceRequest-Scen3ServiceRequest")
    sr["note"] = [{"text": "Prefers mornings"}]

    assert {(i.expression, i.code) for i in errors(sr)} == {
        ("ServiceRequest.note[0].author", "required"),
        ("ServiceRequest.note[0].time", "required"),
    }


# --- Observation: case 17 -----------------------------------------------------------------------------------


def test_it_rejects_a_days_per_week_observation_in_minutes_per_week() -> None:
    obs = load("Observation-Scen2ObsDaysPerWeek2")
    obs["valueQuantity"]["code"] = "min/wk"

    issue = error_at(obs, "Observation.valueQuantity.code")

    assert issue.code == "value"
    assert "'d/wk'" in issue.diagnostics


@pytest.mark.parametrize("loinc, unit", sorted(EVS_UNITS.items()))
def test_it_accepts_each_evs_code_with_its_own_unit(loinc: str, unit: str) -> None:
    obs = load("Observation-Scen2ObsDaysPerWeek2")
    obs["code"]["coding"][0]["code"] = loinc
    obs["valueQuantity"]["code"] = unit

    assert errors(obs) == []


@pytest.mark.parametrize(
    "category_code, expected_in_diagnostics",
    [
        ("activity", "observation-category#activity"),
        ("PhysicalActivity", "pa-temporary-codes#PhysicalActivity"),
    ],
)
def test_it_rejects_a_pavs_observation_missing_one_of_its_categories(
    category_code: str, expected_in_diagnostics: str
) -> None:
    obs = load("Observation-Scen2ObsDaysPerWeek2")
    obs["category"] = [c for c in obs["category"] if c["coding"][0]["code"] != category_code]

    issue = error_at(obs, "Observation.category")

    assert issue.code == "required"
    assert expected_in_diagnostics in issue.diagnostics


def test_it_rejects_a_pavs_observation_with_an_effective_period() -> None:
    obs = load("Observation-Scen2ObsDaysPerWeek2")
    obs["effectivePeriod"] = {"start": obs.pop("effectiveDateTime")}

    assert error_at(obs, "Observation.effectivePeriod").code == "value"


@pytest.mark.parametrize("element", ["value", "system", "code"])
def test_it_rejects_a_pavs_quantity_missing_a_part(element: str) -> None:
    obs = load("Observation-Scen2ObsMinutesPerDay2")
    del obs["valueQuantity"][element]

    assert error_at(obs, f"Observation.valueQuantity.{element}").code == "required"


def test_it_rejects_a_pavs_quantity_in_another_unit_system() -> None:
    obs = load("Observation-Scen2ObsMinutesPerDay2")
    obs["valueQuantity"]["system"] = "http://example.org/units"

    assert error_at(obs, "Observation.valueQuantity.system").code == "value"


def test_it_reports_every_broken_rule_of_a_pavs_observation_at_once() -> None:
    obs = load("Observation-Scen1ObservationMinsPerWeek")
    obs["status"] = "bogus"
    obs["valueQuantity"]["code"] = "min/d"
    del obs["effectiveDateTime"]
    obs["focus"] = [{"reference": "Patient/Scen1PatientKhatun"}]

    assert {i.expression for i in errors(obs)} == {
        "Observation.status",
        "Observation.valueQuantity.code",
        "Observation.effectiveDateTime",
        "Observation.focus",
    }


def test_it_gives_an_observation_with_another_code_only_the_base_checks() -> None:
    obs = load("Observation-Scen2ObsDaysPerWeek2")
    obs["code"]["coding"][0]["code"] = "55411-3"  # exercise duration: not a PAVS code
    obs["valueQuantity"]["code"] = "min"
    del obs["category"]
    obs["effectivePeriod"] = {"start": obs.pop("effectiveDateTime")}
    assert errors(obs) == []

    obs["status"] = "done"
    del obs["subject"]
    assert {i.expression for i in errors(obs)} == {"Observation.status", "Observation.subject"}


# --- Condition ----------------------------------------------------------------------------------------------


def test_it_rejects_a_pa_condition_coded_with_the_misspelt_icd10cm_system() -> None:
    condition = load("Condition-Scen2ConditionLackOfExercise")
    condition["code"]["coding"][0]["system"] = "http://hl7.org/fhid/sid/icd-10-cm"

    assert error_at(condition, "Condition.code").code == "value"


def test_it_rejects_a_pa_condition_with_an_unconfirmed_verification_status() -> None:
    condition = load("Condition-Scen2ConditionLackOfExercise")
    condition["verificationStatus"]["coding"][0]["code"] = "unconfirmed"

    assert error_at(condition, "Condition.verificationStatus.coding[0].code").code == "code-invalid"


def test_it_gives_a_condition_without_the_pa_category_only_the_base_checks() -> None:
    condition = load("Condition-Scen2ConditionLackOfExercise")
    condition["category"] = condition["category"][:1]
    condition["code"] = {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]}  # hypertension
    condition["verificationStatus"]["coding"][0]["code"] = "unconfirmed"
    assert errors(condition) == []

    condition["clinicalStatus"]["coding"][0]["code"] = "cured"
    condition["subject"] = {"display": "Nancy Johansson"}
    assert {i.expression for i in errors(condition)} == {
        "Condition.clinicalStatus.coding[0].code",
        "Condition.subject.reference",
    }


# --- DiagnosticReport: case 18 ------------------------------------------------------------------------------


def test_it_rejects_a_report_form_with_neither_data_nor_url() -> None:
    report = load("DiagnosticReport-Scen2DiagnosticReport")
    del report["presentedForm"][0]["data"]

    issue = error_at(report, "DiagnosticReport.presentedForm[0]")

    assert (issue.code, issue.diagnostics.split(":")[0]) == ("invariant", "pa-dr-1")


def test_it_accepts_a_report_form_with_only_a_url() -> None:
    report = load("DiagnosticReport-Scen2DiagnosticReport")
    report["presentedForm"][0] = {
        "contentType": "application/pdf",
        "url": "https://fit4life.example.org/r/1.pdf",
    }

    assert errors(report) == []


def test_it_rejects_a_report_form_that_is_not_a_pdf() -> None:
    report = load("DiagnosticReport-Scen2DiagnosticReport")
    report["presentedForm"][0]["contentType"] = "text/plain"

    assert error_at(report, "DiagnosticReport.presentedForm[0].contentType").code == "value"


@pytest.mark.parametrize("status", ["registered", "cancelled", "unknown"])
def test_it_rejects_a_report_status_outside_the_pa_report_status_value_set(status: str) -> None:
    report = load("DiagnosticReport-Scen2DiagnosticReport")
    report["status"] = status

    assert error_at(report, "DiagnosticReport.status").code == "code-invalid"


def test_it_rejects_a_report_without_the_pa_category_or_subject() -> None:
    report = load("DiagnosticReport-Scen2DiagnosticReport")
    del report["category"], report["subject"]

    assert {i.expression for i in errors(report)} == {"DiagnosticReport.category", "DiagnosticReport.subject"}


# --- Patient, Goal ------------------------------------------------------------------------------------------


def test_it_rejects_a_patient_gender_outside_administrative_gender() -> None:
    patient = load("Patient-Scen2PatientJohansson")
    patient["gender"] = "F"

    assert error_at(patient, "Patient.gender").code == "code-invalid"


@pytest.mark.parametrize("value, code", [(None, "required"), ("achieved", "code-invalid")])
def test_it_rejects_a_goal_without_a_valid_lifecycle_status(value: str | None, code: str) -> None:
    goal = load("Goal-Scen1GoalV1")
    goal["lifecycleStatus"] = value

    assert error_at(goal, "Goal.lifecycleStatus").code == code


# --- Malformed input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("resource", [None, "Task", 42, [], [{"resourceType": "Task"}]])
def test_it_reports_a_resource_that_is_not_a_json_object(resource: object) -> None:
    [issue] = check_resource(resource)  # type: ignore[arg-type]

    assert (issue.code, issue.expression) == ("structure", "Resource")


def test_it_reports_a_resource_without_resource_type() -> None:
    [issue] = check_resource({"status": "requested"}, path="Bundle.entry[1].resource")

    assert (issue.code, issue.expression) == ("structure", "Bundle.entry[1].resource")


@pytest.mark.parametrize(
    "element, junk, expression",
    [
        ("focus", "ServiceRequest/Scen2ServiceRequest", "Task.focus"),  # a string where a Reference belongs
        ("focus", [{"reference": "ServiceRequest/Scen2ServiceRequest"}], "Task.focus"),  # a list of them
        ("status", ["accepted"], "Task.status"),
        ("note", {"text": "hi"}, "Task.note"),
        ("note", ["hi"], "Task.note[0]"),
        ("code", {"coding": {"code": "fulfill"}}, "Task.code.coding"),
        ("owner", {"reference": 7}, "Task.owner.reference"),
        ("authoredOn", 20230316, "Task.authoredOn"),
    ],
)
def test_it_reports_a_wrongly_shaped_element_as_a_structure_issue(
    element: str, junk: Any, expression: str
) -> None:
    task = load("Task-Scen2TaskFit4LifeV2")
    task[element] = junk

    assert error_at(task, expression).code == "structure"


def test_it_reports_a_quantity_value_given_as_a_string() -> None:
    obs = load("Observation-Scen2ObsDaysPerWeek2")
    obs["valueQuantity"]["value"] = "5"

    assert error_at(obs, "Observation.valueQuantity.value").code == "structure"


JUNK: tuple[Any, ...] = (None, "", "x", 0, 1.5, True, [], {}, ["x"], [None], {"x": 1}, [{"coding": "x"}])


def _with_each_node_replaced(value: Any) -> Iterator[Any]:
    """Copies of `value` with one node (object member or array item, at any depth) replaced by each JUNK."""
    if isinstance(value, dict):
        members: list[tuple[Any, Any]] = list(value.items())
    elif isinstance(value, list):
        members = list(enumerate(value))
    else:
        return
    for key, child in members:
        for junk in JUNK:
            mutated = copy.copy(value)
            mutated[key] = junk
            yield mutated
        for mutated_child in _with_each_node_replaced(child):
            mutated = copy.copy(value)
            mutated[key] = mutated_child
            yield mutated


def _profiled_examples() -> Iterator[Any]:
    """Every example resource with profile checks, including those inside the example Bundles."""
    for path in sorted(path for folder in EXAMPLE_DIRS for path in folder.glob("*.json")):
        resource = json.loads(path.read_text())
        name = path.name.removesuffix(".from-fsh.json")
        found = [(name, resource)]
        if resource["resourceType"] == "Bundle":
            found = [(f"{name}.entry[{i}]", e["resource"]) for i, e in enumerate(resource["entry"])]
        for label, item in found:
            if item["resourceType"] in PROFILED_TYPES:
                yield pytest.param(item, id=label)


@pytest.mark.parametrize("resource", list(_profiled_examples()))
def test_it_never_raises_whatever_node_of_an_example_is_replaced_by_junk(resource: dict[str, Any]) -> None:
    mutations = 0
    for mutated in _with_each_node_replaced(resource):
        issues = check_resource(mutated)
        assert all(isinstance(issue, Issue) and issue.severity in ("error", "warning") for issue in issues)
        mutations += 1
    assert mutations > len(JUNK)
