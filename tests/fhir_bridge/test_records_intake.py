"""A provider's Observations become the case records (fhir_bridge/records_intake.py): the same rows, events and
served Observations as the therapist's web forms make; a bad one is a 4xx naming its element, and leaves nothing."""

import copy
import datetime as dt

import pytest
from django.utils import timezone

from fhir_bridge.examples import example
from fhir_bridge.models import StoredResource
from fhir_bridge.records_fhir import record_resources
from referrals.models import (
    Assessment,
    Attendance,
    Measure,
    Measurement,
    PavsCheckIn,
    Referral,
    ReferralEvent,
    ReferralStatus,
    Session,
)
from referrals.records import checkin_record
from tests.conftest import json_of
from tests.referrals.cases import received_at
from tests.fhir_bridge.test_provider import (  # noqa: F401 (fixtures)
    _accept,
    _pavs,
    fit4life,
    lopez,
    offered,
    other_provider,
    provider,
)

pytestmark = pytest.mark.django_db

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def _quantity(value, code) -> dict:
    return {"value": value, "unit": code, "system": UCUM, "code": code}


def _component(system, code, value, unit) -> dict:
    return {"code": {"coding": [{"system": system, "code": code}]}, "valueQuantity": _quantity(value, unit)}


def _when(minutes_ago=60) -> str:
    return (timezone.now() - dt.timedelta(minutes=minutes_ago)).isoformat()


def _observation(offered, system, code, value=None, unit=None, *, components=(), category="exam") -> dict:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": category}]}],
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": offered["task"]["for"]["reference"]},
        "basedOn": [{"reference": offered["task"]["focus"]["reference"]}],
        "effectiveDateTime": _when(),
    }
    if value is not None:
        observation["valueQuantity"] = _quantity(value, unit)
    if components:
        observation["component"] = list(components)
    return observation


@pytest.fixture
def case(provider, offered):
    _accept(provider, offered)
    # The PA IG's example Observations are dated 2023: the referral came in before them.
    received_at(offered["referral"], dt.datetime(2023, 3, 1, tzinfo=dt.UTC))
    return offered


def _nothing_written(referral: Referral, observations_before: int) -> None:
    assert StoredResource.objects.filter(resource_type="Observation").count() == observations_before
    assert not PavsCheckIn.objects.filter(referral=referral).exists()
    assert not Assessment.objects.filter(referral=referral).exists()
    assert not Session.objects.filter(referral=referral).exists()


# --- PAVS check-ins ---------------------------------------------------------------------------------------------


def test_a_pavs_answer_with_its_minutes_is_a_check_in_like_the_web_forms(provider, fhir, case):
    referral = case["referral"]
    body = _pavs(case["task"]["for"]["reference"], case["task"]["focus"]["reference"], value=5, minutes_per_day=30)
    body["component"].append(_component(LOINC, "82291-6", 2, "d/wk"))
    response = provider.post("Observation", body)
    assert response.status_code == 201, response.content
    checkin = PavsCheckIn.objects.get(referral=referral)
    assert (checkin.date, checkin.days_per_week, checkin.minutes_per_day, checkin.minutes_per_week,
            checkin.strength_days_per_week) == (dt.date(2023, 3, 15), 5, 30, 150, 2)
    assert checkin.recorded_by.startswith("provider-client:")
    assert ReferralEvent.objects.filter(referral=referral, kind=ReferralEvent.Kind.CHECKIN_RECORDED).count() == 1
    served = json_of(response)
    assert served["id"] == f"checkin-{checkin.pk}-89555-7"
    assert served["valueQuantity"]["value"] == 5
    assert response["Location"].endswith(f"Observation/checkin-{checkin.pk}-89555-7/_history/1")
    # The clinic reads the four PAVS Observations, as it does for a check-in the therapist typed in.
    bundle = json_of(fhir.get(f"Observation?based-on={case['task']['focus']['reference']}&code=http://loinc.org|82290-8"))
    assert [e["resource"]["valueQuantity"]["value"] for e in bundle["entry"]] == [150]
    assert StoredResource.objects.filter(referral_id=referral.pk, resource_type="Observation",
                                         fhir_id__startswith=f"checkin-{checkin.pk}-").count() == 4


def test_the_evs_panel_is_a_check_in_and_answers_with_minutes_per_week(provider, case):
    body = _observation(case, LOINC, "89574-8", category="activity", components=[
        _component(LOINC, "89555-7", 3, "d/wk"), _component(LOINC, "68516-4", 40, "min/d"),
        _component(LOINC, "82290-8", 120, "min/wk"),
    ])
    response = provider.post("Observation", body)
    assert response.status_code == 201, response.content
    checkin = PavsCheckIn.objects.get(referral=case["referral"])
    assert (checkin.minutes_per_week, checkin.strength_days_per_week) == (120, None)
    assert json_of(response)["code"]["coding"][0]["code"] == "82290-8"


def test_what_a_provider_posts_is_served_as_what_the_web_form_gives(provider, case):
    """Round trip: the Observation served for a FHIR check-in is the one records_fhir renders for the row the
    web form would have written (ids and times aside)."""
    body = _pavs(case["task"]["for"]["reference"], case["task"]["focus"]["reference"], value=4, minutes_per_day=25)
    served = json_of(provider.post("Observation", body))
    referral = Referral.objects.get(pk=case["referral"].pk)
    web = checkin_record(referral=referral, date=dt.date(2023, 3, 15), days_per_week=4, minutes_per_day=25,
                         actor="user:lopez", expected_version=referral.version)
    contents, _ = record_resources(referral=referral, record=web)
    rendered = next(c for c in contents if c["code"]["coding"][0]["code"] == "89555-7")
    strip = ("id", "meta")
    assert {k: v for k, v in served.items() if k not in strip} == {k: v for k, v in rendered.items() if k not in strip}


@pytest.mark.parametrize(
    "change, expression",
    [
        ({"component": []}, "Observation.component"),  # days per week alone: no check-in
        ({"component": [_component(LOINC, "68516-4", 30, "min/wk")]}, "Observation.component[0].valueQuantity.code"),
        ({"component": [_component(LOINC, "68516-4", 3000, "min/d")]}, "Observation.component[0].valueQuantity.value"),
        ({"component": [_component(LOINC, "68516-4", 30, "min/d"), _component(LOINC, "82290-8", 100, "min/wk")]},
         "Observation.component[1].valueQuantity.value"),  # 3 × 30 is not 100
        ({"valueQuantity": _quantity(9, "d/wk")}, "Observation.valueQuantity.value"),
        ({"effectiveDateTime": "2099-01-01"}, "Observation.effectiveDateTime"),
        ({"effectiveDateTime": "0001-01-01"}, "Observation.effectiveDateTime"),  # before the referral came in
        ({"effectiveDateTime": "2023-02-01"}, "Observation.effectiveDateTime"),  # the month before it
        ({"status": "preliminary"}, "Observation.status"),
    ],
)
def test_a_bad_check_in_is_refused_naming_the_element(provider, case, change, expression):
    before = StoredResource.objects.filter(resource_type="Observation").count()
    body = _pavs(case["task"]["for"]["reference"], case["task"]["focus"]["reference"])
    body.update(copy.deepcopy(change))
    response = provider.post("Observation", body)
    assert response.status_code == 422, response.content
    assert expression in [e for issue in json_of(response)["issue"] for e in issue.get("expression", [])]
    _nothing_written(case["referral"], before)


# --- Assessments ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "system, code, value, unit, measure, kind",
    [
        (LOINC, "64098-7", 420, "m", Measure.SIX_MINUTE_WALK, Assessment.Kind.DYNAMIC),
        ("http://snomed.info/sct", "450738001", 12, "{#}", Measure.CHAIR_STAND_30S, Assessment.Kind.DYNAMIC),
        (LOINC, "89423-8", 9.5, "s", Measure.TIMED_UP_AND_GO, Assessment.Kind.DYNAMIC),
        (LOINC, "39156-5", 31.2, "kg/m2", Measure.BMI, Assessment.Kind.STATIC),
        (LOINC, "29463-7", 88, "kg", Measure.WEIGHT, Assessment.Kind.STATIC),
        (LOINC, "55758-7", 2, "{score}", Measure.PHQ2, Assessment.Kind.PROM),
    ],
)
def test_a_measure_is_an_assessment_of_its_kind(provider, fhir, case, system, code, value, unit, measure, kind):
    response = provider.post("Observation", _observation(case, system, code, value, unit))
    assert response.status_code == 201, response.content
    assessment = Assessment.objects.get(referral=case["referral"])
    measurement = assessment.measurements.get()
    assert (assessment.kind, measurement.code, measurement.value, measurement.unit) == (kind, measure, value, unit)
    served = json_of(response)
    assert served["id"] == f"measurement-{measurement.pk}"
    assert code in [c["code"] for c in served["code"]["coding"]] and served["valueQuantity"]["value"] == value
    assert json_of(fhir.get(f"Observation/{served['id']}"))["valueQuantity"]["value"] == value


def test_blood_pressure_is_the_panel_with_both_components(provider, case):
    body = _observation(case, LOINC, "85354-9", category="vital-signs", components=[
        _component(LOINC, "8480-6", 132, "mm[Hg]"), _component(LOINC, "8462-4", 84, "mm[Hg]"),
    ])
    response = provider.post("Observation", body)
    assert response.status_code == 201, response.content
    assert dict(Measurement.objects.filter(referral=case["referral"]).values_list("code", "value")) == {
        Measure.BP_SYSTOLIC: 132, Measure.BP_DIASTOLIC: 84,
    }
    assert json_of(response)["id"].endswith("-bp")


@pytest.mark.parametrize(
    "observation, expression",
    [
        ((LOINC, "29463-7", 190, "[lb_av]"), "Observation.valueQuantity.code"),  # weight in pounds: refused
        ((LOINC, "64098-7", 5000, "m"), "Observation.valueQuantity.value"),  # out of range
        ((LOINC, "64098-7", None, None), "Observation.valueQuantity"),
        ((LOINC, "85354-9", None, None), "Observation.component"),  # a panel without its values
    ],
)
def test_a_bad_measure_is_refused_naming_the_element(provider, case, observation, expression):
    before = StoredResource.objects.filter(resource_type="Observation").count()
    response = provider.post("Observation", _observation(case, *observation))
    assert response.status_code == 422, response.content
    assert expression in [e for issue in json_of(response)["issue"] for e in issue.get("expression", [])]
    _nothing_written(case["referral"], before)


@pytest.mark.parametrize("effective", ["2026-01-05", _when(-120), "not a date"])
def test_a_measure_needs_a_past_time_with_its_zone(provider, case, effective):
    body = _observation(case, LOINC, "64098-7", 420, "m")
    body["effectiveDateTime"] = effective
    response = provider.post("Observation", body)
    assert 400 <= response.status_code < 500, response.content
    assert not Assessment.objects.filter(referral=case["referral"]).exists()


def test_a_case_not_yet_accepted_or_closed_takes_no_records(provider, offered):
    body = _observation(offered, LOINC, "64098-7", 420, "m")
    assert provider.post("Observation", body).status_code == 422  # not its case yet
    _accept(provider, offered)
    Referral.objects.filter(pk=offered["referral"].pk).update(status=ReferralStatus.COMPLETED)
    response = provider.post("Observation", body)
    assert response.status_code == 422 and "Observation.basedOn" in str(json_of(response))
    assert not Assessment.objects.filter(referral=offered["referral"]).exists()


# --- Sessions and the rest ----------------------------------------------------------------------------------


def test_exercise_duration_is_an_attended_session_that_starts_the_case(provider, case):
    body = _observation(case, LOINC, "55411-3", 45, "min", category="activity", components=[
        _component(LOINC, "55425-3", 118, "/min"), _component(LOINC, "55426-1", 142, "/min"),
    ])
    response = provider.post("Observation", body)
    assert response.status_code == 201, response.content
    session = Session.objects.get(referral=case["referral"])
    assert (session.attendance, session.duration_minutes, session.hr_average, session.hr_peak) == (
        Attendance.ATTENDED, 45, 118, 142)
    assert Referral.objects.get(pk=case["referral"].pk).status == ReferralStatus.IN_PROGRESS
    assert json_of(response)["id"] == f"session-{session.pk}-duration"


def test_an_observation_none_of_the_records_is_stored_as_sent(provider, fhir, case):
    body = _observation(case, LOINC, "41950-7", 8200, "/d", category="activity")  # steps per day
    response = provider.post("Observation", body)
    assert response.status_code == 201, response.content
    assert json_of(fhir.get(f"Observation/{json_of(response)['id']}"))["valueQuantity"]["value"] == 8200
    assert not Assessment.objects.filter(referral=case["referral"]).exists()


@pytest.mark.parametrize("effective", ["0001-01-01T10:00:00Z", "2023-02-27T10:00:00-05:00", "9999-12-31T23:59:00+14:00"])
def test_a_session_or_measure_outside_the_case_is_refused_naming_effective(provider, case, effective):
    """Not before the referral came in (2023-03-01, less a day), not in the future: a 422 naming the element."""
    before = StoredResource.objects.filter(resource_type="Observation").count()
    for observation in (_observation(case, LOINC, "64098-7", 420, "m"), _observation(case, LOINC, "55411-3", 45, "min",
                                                                                          category="activity")):
        observation["effectiveDateTime"] = effective
        response = provider.post("Observation", observation)
        assert response.status_code == 422, response.content
        issues = json_of(response)["issue"]
        assert "Observation.effectiveDateTime" in [e for issue in issues for e in issue.get("expression", [])]
    _nothing_written(case["referral"], before)
