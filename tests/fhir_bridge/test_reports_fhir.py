"""Reports as the physician's EHR receives them: a PA Intervention Report (DiagnosticReport) with its PDF as a
Binary, listed in the referral Task's output, found by based-on with its result Observations, for the clinic only."""

import base64
import datetime as dt
import hashlib

import pytest

from fhir_bridge import fhir as fhir_models
from fhir_bridge.codes import REPORT_KIND_SYSTEM
from fhir_bridge.models import StoredResource
from fhir_bridge.profiles import check_resource
from fhir_bridge.store import resources_create
from referrals.models import ReportKind
from referrals.reports import report_draft, report_send_unsigned, report_sign
from tests.conftest import fhir_client_for, json_of
from tests.referrals.report_cases import START, accepted_referral, record_four_weeks

pytestmark = pytest.mark.django_db

PERIOD_END = START + dt.timedelta(days=27)
PARAMETERS = {"resourceType": "Parameters"}  # $report without send-now


@pytest.fixture
def referral(clinic):
    """An accepted referral with four weeks recorded through the case records' services."""
    referral = accepted_referral(clinic)
    record_four_weeks(referral)
    return referral


def _task(referral) -> StoredResource:
    return StoredResource.objects.get(referral=referral, resource_type="Task")


def _observation(referral, task: dict, fhir_id: str, on: str, minutes: int, status="final") -> None:
    """A PAVS min/wk Observation served for the referral (as the case records store them)."""
    resources_create(contents=[{
        "resourceType": "Observation", "id": fhir_id, "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "activity"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "82290-8"}]},
        "subject": {"reference": task["for"]["reference"]}, "effectiveDateTime": on,
        "valueQuantity": {"value": minutes, "unit": "min/wk", "system": "http://unitsofmeasure.org",
                          "code": "min/wk"},
    }], clinic_id=referral.clinic_id, referral_id=referral.pk, now=dt.datetime.now(dt.UTC))


def _errors(content: dict) -> list:
    return [i for i in check_resource(content) if i.severity in ("error", "fatal")]


def test_a_signed_progress_report_is_a_conforming_diagnostic_report_in_the_task_output(referral, fhir):
    task_row = _task(referral)
    version_before = task_row.version_id
    _observation(referral, task_row.content, "obs-in-period", "2026-09-20", 90)
    _observation(referral, task_row.content, "obs-after", "2026-10-20", 140)
    _observation(referral, task_row.content, "obs-withdrawn", "2026-09-21", 95, status="entered-in-error")

    report = report_draft(referral=referral, period_start=START, period_end=PERIOD_END, kind=ReportKind.PROGRESS)
    report = report_sign(report=report, actor="user:therapist", expected_version=report.version)

    dr = StoredResource.objects.get(resource_type="DiagnosticReport", fhir_id=str(report.public_id)).content
    assert _errors(dr) == []
    assert fhir_models.structural_issues(dr, path="DiagnosticReport") == []
    task_row.refresh_from_db()
    task = task_row.content
    assert dr["status"] == "final"
    assert dr["basedOn"] == [{"reference": task["focus"]["reference"]}]
    assert dr["subject"] == {"reference": task["for"]["reference"]}
    assert dr["effectivePeriod"] == {"start": "2026-09-07", "end": "2026-10-04"}
    assert {"system": REPORT_KIND_SYSTEM, "code": "progress", "display": "Progress report"} in dr["code"]["coding"]
    # The Observations of the period: the record's (its sessions, check-ins, assessments) and the one posted
    # beside them; not the one after the period nor the one entered in error.
    results = [r["reference"] for r in dr["result"]]
    served = StoredResource.objects.filter(referral=referral, resource_type="Observation", is_deleted=False)
    in_period = {f"Observation/{o.fhir_id}" for o in served
                 if o.content["status"] != "entered-in-error"
                 and "2026-09-07" <= (o.content.get("effectiveDateTime") or o.content["effectivePeriod"]["start"])[:10]
                 <= "2026-10-04"}
    assert set(results) == in_period and len(results) == len(in_period) > 30
    assert "Observation/obs-in-period" in results
    assert not {"Observation/obs-after", "Observation/obs-withdrawn"} & set(results)
    for row in served.filter(fhir_id__in=[r.removeprefix("Observation/") for r in results]).exclude(
            fhir_id="obs-in-period"):  # the hub's own: the test's hand-made one is no PA Observation
        assert _errors(row.content) == [], row.fhir_id
    assert "Attended 11 of 12 scheduled sessions" in dr["conclusion"]
    assert not dr["conclusion"].startswith("Not reviewed")
    form = dr["presentedForm"][0]
    pdf = bytes(report.pdf)
    assert (form["contentType"], form["size"]) == ("application/pdf", len(pdf))
    assert form["hash"] == base64.b64encode(hashlib.sha1(pdf).digest()).decode()

    # The Task: a new version with the output, the note and the business status.
    assert task_row.version_id == version_before + 1
    assert _errors(task) == []
    assert task["businessStatus"]["coding"][0]["code"] == "progress-report-sent"
    assert task["output"] == [{
        "type": {"coding": [{"system": "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/"
                                       "SDOHCC-CodeSystemTemporaryCodes", "code": "resulting-activity"}]},
        "valueReference": {"reference": f"DiagnosticReport/{report.public_id}"},
    }]
    assert task["note"][-1]["text"].startswith("Progress report for 2026-09-07 to 2026-10-04 sent")

    # The EHR reads the PDF through the Binary the report points at.
    binary = fhir.get(form["url"])
    assert binary.status_code == 200
    body = json_of(binary)
    assert body["contentType"] == "application/pdf" and base64.b64decode(body["data"]) == pdf


def test_the_ehr_finds_the_report_by_based_on_with_its_results_and_only_its_own_clinic(referral, fhir, other_fhir):
    task = _task(referral).content
    _observation(referral, task, "obs-week-2", "2026-09-20", 90)
    report = report_draft(referral=referral, period_start=START, period_end=PERIOD_END, kind=ReportKind.PROGRESS)
    report_sign(report=report, actor="user:therapist", expected_version=report.version)

    found = fhir.get("DiagnosticReport", **{"based-on": task["focus"]["reference"],
                                            "_include": "DiagnosticReport:result"})
    assert found.status_code == 200, found.content
    bundle = json_of(found)
    assert bundle["total"] == 1
    modes = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in bundle["entry"]}
    assert modes == {("DiagnosticReport", "match"), ("Observation", "include")}
    assert json_of(fhir.get("DiagnosticReport", code=f"{REPORT_KIND_SYSTEM}|discharge"))["total"] == 0

    other = other_fhir.get("DiagnosticReport", **{"based-on": task["focus"]["reference"]})
    assert other.status_code == 200 and json_of(other)["total"] == 0
    assert other_fhir.get(f"DiagnosticReport/{report.public_id}").status_code == 404
    assert other_fhir.get(f"Binary/{report.public_id}-pdf").status_code == 404


def test_a_preliminary_report_signed_later_becomes_a_final_version_of_the_same_resource(referral, fhir):
    report = report_draft(referral=referral, period_start=START, period_end=PERIOD_END, kind=ReportKind.DISCHARGE)
    report = report_send_unsigned(report=report)
    row = StoredResource.objects.get(resource_type="DiagnosticReport", fhir_id=str(report.public_id))
    assert row.content["status"] == "preliminary" and row.version_id == 1
    assert row.content["conclusion"].startswith("Not reviewed by the therapist.")
    assert _errors(row.content) == []
    task = _task(referral).content
    assert (task["status"], task["businessStatus"]["coding"][0]["code"]) == ("completed", "discharge-report-sent")

    report_sign(report=report, actor="user:therapist", expected_version=report.version)
    row.refresh_from_db()
    assert row.content["status"] == "final" and row.version_id == 2
    history = json_of(fhir.get(f"DiagnosticReport/{report.public_id}/_history"))
    assert [e["resource"]["status"] for e in history["entry"]] == ["final", "preliminary"]
    # Still one output entry for the one report.
    assert len(_task(referral).content["output"]) == 1


def test_the_capability_statement_publishes_the_report_kinds_and_the_served_types(fhir):
    statement = json_of(fhir.get("metadata"))
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    report = resources["DiagnosticReport"]
    assert {p["name"] for p in report["searchParam"]} >= {"based-on", "patient", "category", "code", "status"}
    assert report["searchInclude"] == ["DiagnosticReport:result"]
    assert REPORT_KIND_SYSTEM in report["documentation"]
    assert all(k.value in report["documentation"] for k in ReportKind)
    assert {i["code"] for i in resources["Binary"]["interaction"]} == {"read", "vread", "history-instance"}


def test_an_ehr_asks_for_a_report_now_drafted_then_sent_at_once(referral, fhir):
    task = _task(referral)
    drafted = fhir.post(f"Task/{task.fhir_id}/$report", PARAMETERS)
    assert drafted.status_code == 202, drafted.content
    assert "drafted" in json_of(drafted)["issue"][0]["diagnostics"]
    (draft,) = referral.reports.all()
    assert (draft.status, draft.kind, draft.period_start) == ("draft", "progress", START)

    sent = fhir.post(f"Task/{task.fhir_id}/$report",
                     {"resourceType": "Parameters", "parameter": [{"name": "send-now", "valueBoolean": True}]})
    assert sent.status_code == 200, sent.content
    dr = json_of(sent)
    assert dr["resourceType"] == "DiagnosticReport" and dr["status"] == "preliminary"
    assert _errors(dr) == []
    assert sorted(referral.reports.values_list("status", flat=True)) == ["sent-unsigned", "superseded"]
    task.refresh_from_db()
    assert task.content["output"][-1]["valueReference"]["reference"] == f"DiagnosticReport/{dr['id']}"

    # The report sent covers the case up to today: nothing new to report.
    again = fhir.post(f"Task/{task.fhir_id}/$report", PARAMETERS)
    assert again.status_code == 422 and "already covers" in json_of(again)["issue"][0]["diagnostics"]


def test_report_requests_that_make_no_sense_are_refused_without_a_500(referral, fhir, other_fhir):
    task = _task(referral)
    assert other_fhir.post(f"Task/{task.fhir_id}/$report", PARAMETERS).status_code == 404
    bad = fhir.post(f"Task/{task.fhir_id}/$report", {"resourceType": "Parameters",
                                                     "parameter": [{"name": "when", "valueString": "now"}]})
    assert bad.status_code == 400
    assert fhir.post(f"Task/{task.fhir_id}/$report", [1, 2]).status_code == 400
    assert fhir.get(f"Task/{task.fhir_id}/$report").status_code == 405
    read_only = fhir_client_for(referral.clinic.ehr_clients.first(), scopes="system/Task.rs")
    assert read_only.post(f"Task/{task.fhir_id}/$report", PARAMETERS).status_code == 403


def test_report_is_an_operation_on_task_only(fhir):
    response = fhir.post("ServiceRequest/some-id/$report", {"resourceType": "Parameters"})
    assert response.status_code == 404 and "not an operation on ServiceRequest" in json_of(response)["issue"][0]["diagnostics"]


def test_send_now_may_come_in_the_url_as_the_drafted_answer_says(referral, fhir):
    task = _task(referral)
    drafted = fhir.post(f"Task/{task.fhir_id}/$report", PARAMETERS)
    assert "send-now=true" in json_of(drafted)["issue"][0]["diagnostics"]
    assert fhir.post(f"Task/{task.fhir_id}/$report?send-now=maybe", PARAMETERS).status_code == 400
    sent = fhir.post(f"Task/{task.fhir_id}/$report?send-now=true", PARAMETERS)
    assert sent.status_code == 200 and json_of(sent)["status"] == "preliminary"


def test_a_create_with_no_resource_type_says_so_in_words(fhir):
    response = fhir.post("Task", {})
    assert response.status_code == 400
    assert json_of(response)["issue"][0]["diagnostics"] == "the body has no resourceType: send a Task"
