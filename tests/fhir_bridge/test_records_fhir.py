"""The case records as FHIR: every measure as an Observation with its code, unit, category and profile, each one
passing the hub's profile checks and fhir.resources R4B; search by each parameter; adverse events as R4
AdverseEvents, acknowledged by a note on the Task; a clinic reads only its own."""

import datetime as dt

import pytest

from fhir_bridge.codes import LOINC_SYSTEM, MEASURE_SYSTEM, SNOMED_SYSTEM, UCUM_SYSTEM
from fhir_bridge.fhir import structural_issues
from fhir_bridge.models import StoredResource
from fhir_bridge.profiles import check_resource
from referrals.models import AdverseEvent, ReferralEvent
from referrals.records import (
    MeasureValue,
    adverse_event_record,
    assessment_record,
    checkin_record,
    session_record,
)
from tests.conftest import json_of
from tests.referrals.cases import THERAPIST, aware, case_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def case(clinic):
    return case_make(clinic)


def _task(case) -> dict:
    return StoredResource.objects.get(referral=case, resource_type="Task").content


def _observations(case) -> dict[str, dict]:
    """The case's Observations by their first code."""
    rows = StoredResource.objects.filter(referral=case, resource_type="Observation")
    return {r.content["code"]["coding"][0]["code"]: r.content for r in rows}


def _valid(resource: dict) -> None:
    assert structural_issues(resource, path=resource["resourceType"]) == []
    assert [i for i in check_resource(resource) if i.severity == "error"] == []


def _categories(observation: dict) -> set[str]:
    return {c["code"] for concept in observation["category"] for c in concept["coding"]}


def _record_everything(case):
    version = lambda: case.version  # noqa: E731 - the case's version moves with each record
    session_record(referral=case, attendance="attended", starts_at=aware(2026, 11, 20, 15), duration_minutes=45,
                   hr_average=112, hr_peak=141, rpe=6, actor=THERAPIST, expected_version=version())
    session_record(referral=case, attendance="no-show", starts_at=aware(2026, 11, 22, 15), actor=THERAPIST,
                   expected_version=version())
    assessment_record(
        referral=case, kind="static", assessed_at=aware(2026, 11, 18, 14),
        measurements=[MeasureValue(c, v) for c, v in (
            ("resting-heart-rate", 68), ("bp-systolic", 132), ("bp-diastolic", 84), ("height", 178),
            ("weight", 92.5), ("bmi", 29.2), ("waist", 101))],
        actor=THERAPIST, expected_version=version(),
    )
    assessment_record(
        referral=case, kind="dynamic", assessed_at=aware(2026, 11, 18, 15),
        measurements=[MeasureValue(c, v) for c, v in (
            ("six-minute-walk", 420), ("chair-stand-30s", 11), ("timed-up-and-go", 9.2), ("single-leg-stance", 14),
            ("grip-strength", 31))],
        actor=THERAPIST, expected_version=version(),
    )
    assessment_record(referral=case, kind="prom", assessed_at=aware(2026, 11, 18, 16),
                      measurements=[MeasureValue("promis-pf", 44.1), MeasureValue("phq2", 1)], actor=THERAPIST,
                      expected_version=version())
    checkin_record(referral=case, date=dt.date(2026, 11, 25), days_per_week=3, minutes_per_day=30,
                   strength_days_per_week=1, actor=THERAPIST, expected_version=version())


# code -> (system, UCUM unit or None for a panel/count, a category it carries, a profile it claims or "")
EXPECTED = {
    "55411-3": (LOINC_SYSTEM, "min", "PhysicalActivity", "pa-observation-activity-measure"),
    "55425-3": (LOINC_SYSTEM, "/min", "PhysicalActivity", "pa-observation-activity-measure"),
    "55426-1": (LOINC_SYSTEM, "/min", "PhysicalActivity", "pa-observation-activity-measure"),
    "rpe": (MEASURE_SYSTEM, "{score}", "activity", ""),
    "298057009": (SNOMED_SYSTEM, None, "activity", ""),
    "298058004": (SNOMED_SYSTEM, None, "activity", ""),
    "8867-4": (LOINC_SYSTEM, "/min", "vital-signs", "heartrate"),
    "85354-9": (LOINC_SYSTEM, None, "vital-signs", "bp"),
    "8302-2": (LOINC_SYSTEM, "cm", "vital-signs", "bodyheight"),
    "29463-7": (LOINC_SYSTEM, "kg", "vital-signs", "bodyweight"),
    "39156-5": (LOINC_SYSTEM, "kg/m2", "vital-signs", "bmi"),
    "8280-0": (LOINC_SYSTEM, "cm", "exam", ""),
    "64098-7": (LOINC_SYSTEM, "m", "exam", ""),
    "450738001": (SNOMED_SYSTEM, "{#}", "exam", ""),
    "89423-8": (LOINC_SYSTEM, "s", "exam", ""),
    "single-leg-stance": (MEASURE_SYSTEM, "s", "exam", ""),
    "grip-strength": (MEASURE_SYSTEM, "kg", "exam", ""),
    "71959-1": (LOINC_SYSTEM, "{T-score}", "survey", ""),
    "55757-9": (LOINC_SYSTEM, None, "survey", ""),
    "55758-7": (LOINC_SYSTEM, "{score}", "survey", ""),
    "89555-7": (LOINC_SYSTEM, "d/wk", "PhysicalActivity", "pa-observation-evs-days-per-week"),
    "68516-4": (LOINC_SYSTEM, "min/d", "PhysicalActivity", "pa-observation-evs-min-per-day"),
    "82290-8": (LOINC_SYSTEM, "min/wk", "PhysicalActivity", "pa-observation-evs-min-per-week"),
    "82291-6": (LOINC_SYSTEM, "d/wk", "PhysicalActivity", "pa-observation-strength-days-per-week"),
}


def test_every_measure_is_an_observation_with_its_code_unit_category_and_profile(case):
    _record_everything(case)
    task = _task(case)

    observations = _observations(case)

    assert set(observations) == set(EXPECTED)
    for code, (system, unit, category, profile) in EXPECTED.items():
        observation = observations[code]
        _valid(observation)
        assert observation["code"]["coding"][0]["system"] == system, code
        assert category in _categories(observation), code
        if unit:
            assert observation["valueQuantity"]["code"] == unit and observation["valueQuantity"]["system"] == UCUM_SYSTEM
        if profile:
            assert any(p.endswith("/" + profile) for p in observation["meta"]["profile"]), code
        assert observation["subject"] == {"reference": task["for"]["reference"]}
        assert observation["basedOn"] == [{"reference": task["focus"]["reference"]}]
    bp = observations["85354-9"]
    assert [(c["code"]["coding"][0]["code"], c["valueQuantity"]["value"], c["valueQuantity"]["code"])
            for c in bp["component"]] == [("8480-6", 132, "mm[Hg]"), ("8462-4", 84, "mm[Hg]")]
    assert observations["82290-8"]["valueQuantity"]["value"] == 90  # 3 d/wk x 30 min/d
    assert (observations["298057009"]["valueInteger"], observations["298058004"]["valueInteger"]) == (1, 1)
    assert observations["55757-9"]["hasMember"] == [{"reference": f"Observation/{observations['55758-7']['id']}"}]
    assert {c["code"] for c in observations["89423-8"]["code"]["coding"]} == {"89423-8", "timed-up-and-go"}
    # PAVS come from check-ins only: no session or assessment makes one.
    assert all(observations[c]["id"].startswith("checkin-") for c in ("89555-7", "68516-4", "82290-8", "82291-6"))


def test_attendance_counts_are_a_new_version_per_session(case):
    session_record(referral=case, attendance="attended", starts_at=aware(2026, 11, 20, 15), duration_minutes=45,
                   actor=THERAPIST, expected_version=case.version)
    session_record(referral=case, attendance="attended", starts_at=aware(2026, 11, 22, 15), duration_minutes=45,
                   actor=THERAPIST, expected_version=case.version)
    attended = StoredResource.objects.get(resource_type="Observation", fhir_id=f"case-{case.pk}-attended")
    assert attended.version_id == 2 and attended.content["valueInteger"] == 2
    assert attended.versions.get(version_id=1).content["valueInteger"] == 1


def test_a_session_corrected_to_no_show_withdraws_its_observations(case):
    session = session_record(referral=case, attendance="attended", starts_at=aware(2026, 11, 20, 15),
                             duration_minutes=45, actor=THERAPIST, expected_version=case.version)
    session_record(referral=case, session=session, attendance="no-show", actor=THERAPIST,
                   expected_version=case.version)
    duration = StoredResource.objects.get(resource_type="Observation", fhir_id=f"session-{session.pk}-duration")
    assert duration.content["status"] == "entered-in-error" and duration.version_id == 2


@pytest.fixture
def recorded(case):
    _record_everything(case)
    return case


def _ids(response) -> set[str]:
    assert response.status_code == 200, response.content
    return {e["resource"]["id"] for e in json_of(response).get("entry", [])}


def test_observations_are_searched_by_each_parameter(fhir, recorded):
    task = _task(recorded)
    patient, request = task["for"]["reference"], task["focus"]["reference"]
    every = {r["id"] for r in _observations(recorded).values()}

    assert _ids(fhir.get("Observation", patient=patient, _count="100")) == every
    assert _ids(fhir.get("Observation", patient=patient.split("/")[1], _count="100")) == every
    assert _ids(fhir.get("Observation", **{"based-on": request, "_count": "100"})) == every
    vitals = _ids(fhir.get("Observation", category="vital-signs", _count="100"))
    assert len(vitals) == 5 and all(i.startswith("measurement-") for i in vitals)
    pavs = _ids(fhir.get("Observation", code="http://loinc.org|82290-8"))
    assert pavs == {f"checkin-{recorded.checkins.get().pk}-82290-8"}
    assert _ids(fhir.get("Observation", code="55411-3,55425-3")) == {
        f"session-{recorded.sessions.get(attendance='attended').pk}-{s}" for s in ("duration", "hr-mean")
    }
    # date: the session on 20 November (UTC), the check-in on the 25th, the assessments on the 18th.
    on_20th = _ids(fhir.get("Observation", date="2026-11-20", code="55411-3"))
    assert len(on_20th) == 1
    assert _ids(fhir.get("Observation", date="2026-11-21", code="55411-3")) == set()
    late = _ids(fhir.get("Observation", date="ge2026-11-25", _count="100"))
    assert late == {i for i in every if i.startswith("checkin-")}
    dynamic = {o["id"] for o in _observations(recorded).values() if o.get("effectiveDateTime", "").startswith("2026-11-18T15")}
    assert len(dynamic) == 5  # the dynamic assessment at 15:00
    assert _ids(fhir.get("Observation", date=["ge2026-11-18T14:30:00Z", "lt2026-11-18T16:00:00Z"], _count="100")) == dynamic


def test_a_bad_date_is_a_400_not_a_500(fhir, recorded):
    response = fhir.get("Observation", date="last-tuesday")
    assert response.status_code == 400
    assert json_of(response)["resourceType"] == "OperationOutcome"


def test_another_clinic_cannot_read_or_find_the_records(fhir, other_fhir, recorded):
    observation_id = next(iter(_observations(recorded).values()))["id"]
    assert fhir.get(f"Observation/{observation_id}").status_code == 200
    assert other_fhir.get(f"Observation/{observation_id}").status_code == 404
    patient = _task(recorded)["for"]["reference"]
    assert _ids(other_fhir.get("Observation", patient=patient)) == set()
    event = adverse_event_record(referral=recorded, occurred_at=aware(2026, 11, 26, 15), kind="fall",
                                 severity="mild", actor=THERAPIST, expected_version=recorded.version)
    assert other_fhir.get(f"AdverseEvent/adverse-event-{event.pk}").status_code == 404
    assert _ids(other_fhir.get("AdverseEvent")) == set()


def test_an_adverse_event_is_an_r4_adverse_event(fhir, case):
    session_record(referral=case, attendance="attended", starts_at=aware(2026, 11, 20, 15), duration_minutes=45,
                   actor=THERAPIST, expected_version=case.version)
    event = adverse_event_record(referral=case, occurred_at=aware(2026, 11, 21, 15), kind="syncope",
                                 severity="severe", serious=True, description="Fainted after the cool-down",
                                 action_taken="EMS called", put_on_hold=True, actor=THERAPIST,
                                 expected_version=case.version)
    task = _task(case)

    response = fhir.get(f"AdverseEvent/adverse-event-{event.pk}")

    assert response.status_code == 200
    resource = json_of(response)
    _valid(resource)
    assert resource["subject"] == {"reference": task["for"]["reference"]}
    assert resource["extension"][0]["valueReference"] == {"reference": task["focus"]["reference"]}
    assert resource["seriousness"]["coding"][0]["code"] == "serious"
    assert resource["severity"]["coding"][0]["code"] == "severe"
    assert resource["event"]["coding"][0]["code"] == "syncope"
    assert _ids(fhir.get("AdverseEvent", patient=task["for"]["reference"])) == {resource["id"]}
    assert task["status"] == "on-hold"


def test_a_note_on_the_task_acknowledges_the_adverse_event(fhir, case):
    event = adverse_event_record(referral=case, occurred_at=aware(2026, 11, 21, 15), kind="abnormal-bp",
                                 severity="moderate", actor=THERAPIST, expected_version=case.version)
    path = f"Task/{_task(case)['id']}"
    current = fhir.get(path)
    task = json_of(current)
    task["note"] = [*task.get("note", []), {
        "authorReference": {"reference": "Practitioner/dr-lopez"},
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "text": f"Seen: AdverseEvent/adverse-event-{event.pk}. Continue with BP checks before each session.",
    }]

    response = fhir.put(path, task, headers={"If-Match": current["ETag"]})

    assert response.status_code == 200, response.content
    event.refresh_from_db()
    assert event.acknowledged_at is not None and event.acknowledged_by.startswith("ehr-client:")
    assert ReferralEvent.objects.filter(referral=case, kind=ReferralEvent.Kind.ADVERSE_EVENT_ACKNOWLEDGED).count() == 1


def test_the_capability_statement_serves_and_publishes_the_records(fhir):
    statement = json_of(fhir.get("metadata"))
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert {p["name"] for p in resources["Observation"]["searchParam"]} >= {
        "patient", "category", "code", "date", "based-on"
    }
    assert "search-type" in {i["code"] for i in resources["AdverseEvent"]["interaction"]}
    assert MEASURE_SYSTEM in statement["description"] and "grip-strength" in statement["description"]
    assert AdverseEvent.Kind.SYNCOPE in statement["description"]


@pytest.mark.parametrize("minutes, acknowledged", [(5, True), (-60, False)])
def test_any_later_note_acknowledges_an_adverse_event_and_an_earlier_one_does_not(fhir, case, minutes, acknowledged):
    event = adverse_event_record(referral=case, occurred_at=aware(2026, 11, 21, 15), kind="fall", severity="mild",
                                 actor=THERAPIST, expected_version=case.version)
    path = f"Task/{_task(case)['id']}"
    current = fhir.get(path)
    task = json_of(current)
    when = event.recorded_at + dt.timedelta(minutes=minutes)
    task["note"] = [*task.get("note", []), {"authorReference": {"reference": "Practitioner/dr-lopez"}, "text": "Noted",
                                            "time": when.isoformat(timespec="seconds").replace("+00:00", "Z")}]

    assert fhir.put(path, task, headers={"If-Match": current["ETag"]}).status_code == 200

    event.refresh_from_db()
    assert (event.acknowledged_at is not None) is acknowledged
