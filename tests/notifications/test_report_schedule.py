"""The report schedule run by the real follow-up sweep over twelve weeks of time travel (time-machine): a
referral sent by the EHR as a FHIR transaction Bundle, routed and accepted, three sessions and a PAVS check-in
recorded every week through referrals/records.py, a progress report at weeks 4 and 8, a third one the EHR asks
for before a visit in week 10 (POST Task/<id>/$report), and the discharge report at week 12, each a
DiagnosticReport whose figures are the record's, each notified to the physician once. Then the ways a case ends
without its twelve weeks, and a due report with nothing recorded."""

import datetime as dt
import io
import uuid

import pytest
import time_machine
from pypdf import PdfReader

from fhir_bridge import fhir as fhir_models
from fhir_bridge.examples import example, scenario2_bundle
from fhir_bridge.models import StoredResource
from fhir_bridge.profiles import check_resource
from network.models import Organization
from notifications.models import Delivery, FollowUp
from referrals.cases import case_discharge, case_fail, case_hold
from referrals.models import Offer, OfferStatus, Referral, ReferralStatus, Report, ReportKind, ReportStatus
from referrals.offers import offer_accept
from referrals.tasks import route_referral
from referrals.records import ComponentPlan, adverse_event_record, program_set
from referrals.reports import ReportDraft, report_sign
from referrals.selectors import case_time_zone
from tests.conftest import fhir_client_for, json_of
from tests.network.factories import role_make
from tests.notifications.test_physician_told import Physician
from tests.referrals.report_cases import (
    GOALS,
    START,
    THERAPIST,
    accepted_referral,
    record_assessment,
    record_week,
)

pytestmark = pytest.mark.django_db

WAIT = dt.timedelta(hours=72)  # HUB_REPORT_UNSIGNED_WAIT_HOURS' default


def week_of(n: int) -> tuple[int, int, int]:
    """Week ``n``'s PAVS check-in: (days per week, minutes per day, strength days); 60 min/wk rising to 265."""
    return 3 + (n >= 4) + (n >= 8), 20 + 3 * n, min(n // 2, 3)


def minutes_of(n: int) -> int:
    days, per_day, _ = week_of(n)
    return days * per_day


class Clock:
    """The site's wall clock, moved by time-machine; ``at(day, hour)`` travels there (and stays)."""

    def __init__(self, referral):
        self.tz = case_time_zone(referral)
        self.travel = None

    def at(self, day: dt.date, hour: int = 0, minute: int = 0) -> dt.datetime:
        if self.travel is not None:
            self.travel.stop()
        moment = dt.datetime.combine(day, dt.time(hour, minute), tzinfo=self.tz)
        self.travel = time_machine.travel(moment, tick=False)
        self.travel.start()
        return moment

    def stop(self):
        if self.travel is not None:
            self.travel.stop()
            self.travel = None


@pytest.fixture
def clock():
    clocks = []

    def make(referral):
        clocks.append(Clock(referral))
        return clocks[-1]

    yield make
    for c in clocks:
        c.stop()


def _pdf_text(report: Report) -> str:
    return " ".join(" ".join(p.extract_text().split()) for p in PdfReader(io.BytesIO(bytes(report.pdf))).pages)


def _business(task: dict) -> str:
    return task["businessStatus"]["coding"][0]["code"]


def _emails(subject_part: str) -> list[Delivery]:
    return list(Delivery.objects.filter(channel="email", subject__contains=subject_part).order_by("id"))


CARDIAC_REASON = [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I25.10",
                               "display": "Atherosclerotic heart disease of native coronary artery"}]}]
SPRINGFIELD = (39.7990, -89.6440)  # near the centroid of ZIP 62701, the patient's
CLEARANCE_SYSTEM = "http://exercise-referral-hub.org/fhir/CodeSystem/exercise-clearance"


def intake_bundle() -> dict:
    """The referral as the EHR sends it: PA Scenario 2's transaction Bundle for a cardiac patient in Springfield, IL,
    cleared for moderate exercise, with the PAVS baseline (3 d/wk of 10 min: 30 min/wk, no strength days) and the
    physician's two goals (150 min/wk, a 6-minute walk of 450 m) as Goals in supportingInfo."""
    bundle = scenario2_bundle(identifier="twelve-weeks", reason_codes=CARDIAC_REASON)
    by_type = {e["resource"]["resourceType"]: e for e in bundle["entry"]}
    patient_urn, sr = by_type["Patient"]["fullUrl"], by_type["ServiceRequest"]["resource"]
    sr["orderDetail"] = [{"coding": [{"system": CLEARANCE_SYSTEM, "code": "moderate"}]}]
    values = {"89555-7": 3, "68516-4": 10, "82290-8": 30, "82291-6": 0}
    pavs = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    pavs += [example("Scen1ObservationMinsPerWeek"), example("Scen1ObservationStrengthDaysPerWeek")]
    goals = []
    for goal in GOALS:
        resource = example("Scen1GoalV1")
        resource["description"] = {"text": goal["text"]}
        resource["target"] = [{"measure": {"coding": [goal["measure"]]},
                               "detailQuantity": {"value": goal["target"]["value"], "comparator": ">=",
                                                  "system": "http://unitsofmeasure.org",
                                                  "code": goal["target"]["unit"]}}]
        if goal["due"]:
            resource["target"][0]["dueDate"] = goal["due"]
        goals.append(resource)
    entries = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Observation"]
    added = []
    for resource in pavs + goals:
        resource.pop("id", None)
        resource["subject"] = {"reference": patient_urn}
        if resource["resourceType"] == "Observation":
            resource["performer"] = [{"reference": patient_urn}]
            resource["effectiveDateTime"] = "2026-08-20"
            resource["valueQuantity"]["value"] = values[resource["code"]["coding"][0]["code"]]
        added.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": resource,
                      "request": {"method": "POST", "url": resource["resourceType"]}})
    sr["supportingInfo"] = [{"reference": e["fullUrl"]} for e in added]
    bundle["entry"] = added + entries
    return bundle


def test_twelve_weeks_from_intake_give_three_progress_reports_one_asked_for_and_a_discharge_matching_the_record(
    ehr_client, clinic, http_receiver, dispatched, coordinator, clock
):
    # Friday Sep 4 (UTC): the EHR sends the referral at noon, the worker routes it a minute later, the professional
    # accepts it in the afternoon. (The clock stands still within a travel: each change gets its own moment.)
    with time_machine.travel(dt.datetime(2026, 9, 4, 12, tzinfo=dt.UTC), tick=False):
        fhir = fhir_client_for(ehr_client)  # a token of that day
        physician = Physician(fhir, http_receiver)
        role_make(at=SPRINGFIELD, state="IL", email="therapist@gym.test")  # a site in Chicago's time
        response = fhir.post("", intake_bundle())
        assert response.status_code == 200, response.content
        entries = {e["resource"]["resourceType"]: e["resource"] for e in json_of(response)["entry"]}
        task_id, service_request = entries["Task"]["id"], f"ServiceRequest/{entries['ServiceRequest']['id']}"
        referral = Referral.objects.get()
        assert [_business(t) for t in physician.told()] == ["received"]
    with time_machine.travel(dt.datetime(2026, 9, 4, 12, 1, tzinfo=dt.UTC), tick=False):
        route_referral(referral.pk)  # the worker's part: the route task the intake's commit enqueued
        assert [_business(t) for t in physician.told()] == ["offered"]
    with time_machine.travel(dt.datetime(2026, 9, 4, 17, tzinfo=dt.UTC), tick=False):
        offer_accept(offer=Offer.objects.get(referral=referral, status=OfferStatus.REQUESTED))
        assert [_business(t) for t in physician.told()] == ["accepted"]
    referral.refresh_from_db()
    facts = referral.facts
    assert (facts.pavs_value("82290-8"), facts.goal_minutes_per_week(), len(facts.goals)) == (30, 150, 2)
    c = clock(referral)
    sent: list[dict] = []  # the Task versions notified for each report sent
    c.at(START - dt.timedelta(days=1), 12)
    program_set(referral=referral, starts_on=START, components=[ComponentPlan("aerobic", 3, 45)], actor=THERAPIST,
                expected_version=referral.version)  # 135 supervised min/wk prescribed
    # The reports there are after each week (the last key at or before it).
    kinds_by_week = {-1: [], 3: ["progress"], 7: ["progress"] * 2, 9: ["progress"] * 3,
                     11: ["progress"] * 3 + ["discharge"]}

    for week in range(12):
        monday = START + dt.timedelta(days=7 * week)
        # Sunday evening: the week's sessions (the Wednesday of week 7 missed) and check-in are recorded.
        c.at(monday + dt.timedelta(days=6), 18)
        record_week(referral, monday, minutes_per_week=week_of(week), missed_day=2 if week == 6 else None,
                    minutes=45)
        if week in (0, 3, 7, 11):  # assessments in weeks 1, 4, 8 and 12
            walk, systolic, diastolic = {0: (380, 138, 88), 3: (420, 132, 85), 7: (450, 128, 82),
                                         11: (470, 124, 80)}[week]
            record_assessment(referral, monday + dt.timedelta(days=4), walk=walk, systolic=systolic,
                              diastolic=diastolic)
        if week == 8:
            adverse_event_record(referral=referral, occurred_at=c.at(monday + dt.timedelta(days=6), 18) -
                                 dt.timedelta(days=5), kind="fall", severity="mild", action_taken="No injury",
                                 actor=THERAPIST, expected_version=Referral.objects.get(pk=referral.pk).version)
        if week == 9:
            # Sunday 19:30 of week 10 (already Monday in UTC): the physician sees the patient tomorrow, and the EHR
            # asks for a report now. Drafted for the therapist, who signs it on Monday morning.
            c.at(monday + dt.timedelta(days=6), 19, 30)
            fhir = fhir_client_for(ehr_client)  # the EHR's token of the day
            asked = fhir.post(f"Task/{task_id}/$report", {"resourceType": "Parameters"})
            assert asked.status_code == 202, asked.content
            assert "2026-11-02 to 2026-11-15" in json_of(asked)["issue"][0]["diagnostics"]
            assert physician.told() == []  # drafted, not sent: nothing for the physician yet
            assert len(_emails("waits for your signature")) == 3
        told = physician.told(c.at(monday + dt.timedelta(days=7), 0, 30))  # Monday 00:30: the sweep runs
        sent += [t for t in told if _business(t) in ("progress-report-sent", "discharge-report-sent")]
        reports = list(Report.objects.filter(referral=referral).order_by("period_start"))
        # Scheduled reports are drafted when their period is over (the Monday after weeks 4, 8 and 12), not before;
        # the asked-for one in week 10.
        assert [r.kind for r in reports] == kinds_by_week[max(w for w in (-1, *kinds_by_week) if w <= week)], week

        if week == 3:  # week 4's report: drafted, the therapist nudged; signed the next day, it goes out final
            (first,) = reports
            assert first.status == ReportStatus.DRAFT
            assert len(_emails("waits for your signature")) == 1
            c.at(monday + dt.timedelta(days=8), 9)
            report_sign(report=first, actor=THERAPIST, expected_version=first.version)
            sent += [t for t in physician.told() if _business(t) == "progress-report-sent"]
        if week == 7:  # week 8's: nobody signs it; after the wait it goes out preliminary and the admin is told
            second = reports[1]
            drafted = c.at(monday + dt.timedelta(days=7), 0, 30)
            assert drafted + WAIT == c.at(monday + dt.timedelta(days=10), 0, 30)
            assert physician.told(c.at(monday + dt.timedelta(days=10), 0, 29)) == []  # the wait is not over
            sent += physician.told(c.at(monday + dt.timedelta(days=10), 0, 31))
            second.refresh_from_db()
            assert second.status == ReportStatus.SENT_UNSIGNED
            assert len(_emails("went out unsigned")) == 1
            preliminary = StoredResource.objects.get(resource_type="DiagnosticReport", fhir_id=str(second.public_id))
            assert (preliminary.content["status"], preliminary.version_id) == ("preliminary", 1)
        if week == 9:  # the asked-for report: the therapist signs it on Monday morning, before the visit
            third = reports[2]
            assert third.status == ReportStatus.DRAFT
            c.at(monday + dt.timedelta(days=7), 9)
            report_sign(report=third, actor=THERAPIST, expected_version=third.version)
            sent += [t for t in physician.told() if _business(t) == "progress-report-sent"]
            # Its wait runs out later with nothing left to send: not a second notification.
            assert physician.told(c.at(monday + dt.timedelta(days=11), 0, 30)) == []
    # Week 12's is the discharge: the therapist signs it and the referral completes. They sign week 8's too,
    # late: it goes out again, final, as the next version of the same DiagnosticReport.
    discharge = Report.objects.get(referral=referral, kind=ReportKind.DISCHARGE)
    c.at(START + dt.timedelta(days=85), 9)
    report_sign(report=discharge, actor=THERAPIST, expected_version=discharge.version)
    sent += physician.told()
    c.at(START + dt.timedelta(days=85), 10)  # an hour later (the clock stands still between travels)
    second = Report.objects.get(pk=reports[1].pk)
    report_sign(report=second, actor=THERAPIST, expected_version=second.version)
    late = physician.told()

    first, second, third, discharge = Report.objects.filter(referral=referral).order_by("period_start")
    # Each report sent was one notification of one Task version, in order; the preliminary one once, unsigned.
    assert [_business(t) for t in sent] == ["progress-report-sent"] * 3 + ["discharge-report-sent"]
    assert [t["output"][-1]["valueReference"]["reference"] for t in sent] == [
        f"DiagnosticReport/{r.public_id}" for r in (first, second, third, discharge)]
    assert sent[-1]["status"] == "completed"
    assert len({t["meta"]["versionId"] for t in sent}) == 4
    # The late signature: one notification more; the Task stays completed and discharged, four outputs.
    assert [(t["status"], _business(t), len(t["output"])) for t in late] == [
        ("completed", "discharge-report-sent", 4)]
    assert [r.status for r in (first, second, third, discharge)] == ["signed"] * 4
    final = StoredResource.objects.get(resource_type="DiagnosticReport", fhir_id=str(second.public_id))
    assert (final.content["status"], final.version_id) == ("final", 2)
    # The EHR finds all four through FHIR, as it would before the next visit.
    searched = fhir_client_for(ehr_client).get("DiagnosticReport", **{"based-on": service_request})
    assert searched.status_code == 200, searched.content
    found = json_of(searched)
    assert sorted(e["resource"]["id"] for e in found["entry"]) == sorted(
        str(r.public_id) for r in (first, second, third, discharge))
    c.stop()

    # The figures are the record's.
    expected = [
        # (period, attended, missed, supervised min, PAVS latest, walk latest, bp latest, adherence)
        (("2026-09-07", "2026-10-04"), 12, 0, 540, minutes_of(3), 420, "132/85", 1.0),
        (("2026-10-05", "2026-11-01"), 11, 1, 495, minutes_of(7), 450, "128/82", round(495 / (135 * 4), 3)),
        # asked for on Sunday Nov 15 in the site's time zone: from the day after week 8's report to that day
        (("2026-11-02", "2026-11-15"), 6, 0, 270, minutes_of(9), 450, "128/82", 1.0),
        # the schedule carries on from the day after the asked-for report; the discharge counts the whole program
        (("2026-11-16", "2026-11-29"), 35, 1, 1575, minutes_of(11), 470, "124/80", round(1575 / (135 * 12), 3)),
    ]
    for report, (period, attended, missed, minutes, pavs, walk, bp, adherence) in zip(
            (first, second, third, discharge), expected, strict=True):
        assert (report.period_start.isoformat(), report.period_end.isoformat()) == period
        draft = ReportDraft.from_json(report.draft)
        p = draft.participation
        assert (draft.period_start, draft.period_end) == period
        assert (p.attended, p.missed, p.supervised_minutes, p.prescribed_minutes_per_week, p.adherence) == (
            attended, missed, minutes, 135, adherence), period
        line = draft.measure("pavs-minutes")
        assert (line.baseline, line.latest, line.goal) == (30, pavs, 150)
        assert (draft.measure("six-minute-walk").baseline, draft.measure("six-minute-walk").latest) == (380, walk)
        assert draft.measure("bp").latest_text == bp
        text = _pdf_text(report)
        assert f"{pavs} min/wk" in text and f"{walk} m" in text and f"Attended {attended} of" in text
        dr = StoredResource.objects.get(resource_type="DiagnosticReport", fhir_id=str(report.public_id)).content
        assert [i for i in check_resource(dr) if i.severity in ("error", "fatal")] == []
        assert fhir_models.structural_issues(dr, path="DiagnosticReport") == []  # R4 itself (fhir.resources)
        assert dr["status"] == "final"
        assert dr["effectivePeriod"] == {"start": period[0], "end": period[1]}
        assert dr["basedOn"] == [{"reference": service_request}]
        assert len(dr["result"]) > 5
    # The chart runs week by week from the first session: the discharge's shows all twelve check-ins.
    assert [w.minutes_per_week for w in ReportDraft.from_json(discharge.draft).pavs_weeks] == [
        minutes_of(n) for n in range(12)]
    assert [g.status for g in ReportDraft.from_json(discharge.draft).goals] == ["met", "met"]
    assert [a.kind for a in ReportDraft.from_json(second.draft).adverse_events] == []
    assert [a.kind for a in ReportDraft.from_json(third.draft).adverse_events] == ["fall"]
    assert [a.kind for a in ReportDraft.from_json(discharge.draft).adverse_events] == ["fall"]
    referral.refresh_from_db()
    assert (referral.status, referral.business_status) == (ReferralStatus.COMPLETED, "discharge-report-sent")
    assert not FollowUp.objects.filter(kind="report-due", state="pending").exists()  # the schedule ended


def _run(c: Clock, day: dt.date, hour: int = 0, minute: int = 30) -> list[str]:
    """The sweep at ``day`` ``hour``:``minute`` in the site's time: every follow-up due by then, run."""
    from tests.notifications.conftest import drain

    return drain(c.at(day, hour, minute))


def _accepted(clinic, clock, **overrides):
    with time_machine.travel(dt.datetime(2026, 9, 4, 17, tzinfo=dt.UTC), tick=False):
        referral = accepted_referral(clinic, email="therapist@gym.test", **overrides)
    return referral, clock(referral)


def test_a_case_that_never_starts_gets_did_not_start_at_twelve_weeks_and_fails(clinic, dispatched, coordinator,
                                                                                clock):
    referral, c = _accepted(clinic, clock)  # Friday Sep 4, 12:00 in Chicago
    accepted_on = dt.date(2026, 9, 4)
    _run(c, accepted_on + dt.timedelta(days=83), 23, 59)
    assert not Report.objects.filter(referral=referral).exists()
    _run(c, accepted_on + dt.timedelta(days=84))
    (report,) = Report.objects.filter(referral=referral)
    assert (report.kind, report.status, report.period_start, report.period_end) == (
        ReportKind.DID_NOT_START, ReportStatus.SENT_UNSIGNED, accepted_on, accepted_on + dt.timedelta(days=83))
    referral.refresh_from_db()
    assert (referral.status, referral.status_reason, referral.business_status) == (
        ReferralStatus.FAILED, "No session attended", "discharge-report-sent")
    assert "Did not start" in _pdf_text(report)
    assert len(_emails("'Did not start' report went to the physician")) == 1
    c.stop()


def test_a_period_with_nothing_recorded_sends_a_no_update_report_at_once_and_tells_the_admin(
    clinic, dispatched, coordinator, clock
):
    referral, c = _accepted(clinic, clock)
    c.at(START + dt.timedelta(days=6), 18)
    record_week(referral, START, minutes_per_week=week_of(0))  # week 1 only; then nothing
    _run(c, START + dt.timedelta(days=28))
    (first,) = Report.objects.filter(referral=referral)
    assert (first.kind, first.status) == (ReportKind.PROGRESS, ReportStatus.DRAFT)
    _run(c, START + dt.timedelta(days=56))
    second = Report.objects.filter(referral=referral).order_by("period_start").last()
    assert (second.kind, second.status, second.period_start) == (
        ReportKind.NO_UPDATE, ReportStatus.SENT_UNSIGNED, START + dt.timedelta(days=28))
    assert len(_pdf_text(second)) > 0 and len(PdfReader(io.BytesIO(bytes(second.pdf))).pages) == 1
    assert len(_emails("'No update' report went to the physician")) == 1
    assert len(_emails("waits for your signature")) == 1  # for the first report only: nothing to review here
    c.stop()


def test_an_organization_that_reports_every_six_weeks_gets_its_first_report_at_week_six(clinic, dispatched, clock):
    referral, c = _accepted(clinic, clock)
    Organization.objects.filter(pk=referral.offers.get(status="accepted").organization_id).update(
        report_every_weeks=6)
    for week in range(6):
        c.at(START + dt.timedelta(days=7 * week + 6), 18)
        record_week(referral, START + dt.timedelta(days=7 * week), minutes_per_week=week_of(week))
        _run(c, START + dt.timedelta(days=7 * week + 7))
        assert Report.objects.filter(referral=referral).count() == (1 if week == 5 else 0), week
    report = Report.objects.get(referral=referral)
    assert (report.kind, report.period_end) == (ReportKind.PROGRESS, START + dt.timedelta(days=41))
    c.stop()


@pytest.mark.parametrize("close", ["fail", "hold", "discharge"])
def test_a_case_closed_early_or_on_hold_at_the_end_gets_its_discharge_report(clinic, dispatched, coordinator, clock,
                                                                              close):
    referral, c = _accepted(clinic, clock)
    for week in range(2):
        c.at(START + dt.timedelta(days=7 * week + 6), 18)
        record_week(referral, START + dt.timedelta(days=7 * week), minutes_per_week=week_of(week))
    referral.refresh_from_db()
    if close == "fail":  # the therapist closes it as failed: failed at once, its discharge report drafted
        case_fail(referral=referral, reason="Moved away", actor=THERAPIST, expected_version=referral.version)
        _run(c, START + dt.timedelta(days=14), 9)
        expected = (ReferralStatus.FAILED, "Moved away")
    elif close == "hold":  # on hold when the twelve weeks end: failed with the hold's reason
        case_hold(referral=referral, reason="Knee surgery", actor=THERAPIST, expected_version=referral.version)
        for due in (28, 56):  # two no-update reports while it is on hold
            _run(c, START + dt.timedelta(days=due))
        _run(c, START + dt.timedelta(days=84))
        expected = (ReferralStatus.FAILED, "Knee surgery")
    else:  # the therapist discharges it: it completes with its report, not before
        case_discharge(referral=referral, actor=THERAPIST, expected_version=referral.version)
        referral.refresh_from_db()
        assert referral.status == ReferralStatus.IN_PROGRESS
        _run(c, START + dt.timedelta(days=14), 9)
        expected = (ReferralStatus.COMPLETED, "")
    report = Report.objects.get(referral=referral, kind=ReportKind.DISCHARGE)
    assert report.status == ReportStatus.DRAFT and len(_emails("waits for your signature")) >= 1
    # Nobody signs it: after the wait it goes out preliminary, and the referral ends as the case stands.
    _run(c, timezone_date(c) + dt.timedelta(days=4), 12)
    report.refresh_from_db()
    referral.refresh_from_db()
    assert report.status == ReportStatus.SENT_UNSIGNED
    assert (referral.status, referral.status_reason, referral.business_status) == (*expected, "discharge-report-sent")
    draft = ReportDraft.from_json(report.draft)
    assert draft.participation.attended == 6
    if close == "hold":
        assert "On hold: Knee surgery." in draft.barriers
    # The schedule is over: nothing more is drafted, however long the clock runs.
    drafted = Report.objects.filter(referral=referral).count()
    _run(c, START + dt.timedelta(days=200))
    assert Report.objects.filter(referral=referral).count() == drafted
    assert Report.objects.filter(referral=referral, kind__in=["discharge", "did-not-start"]).count() == 1
    c.stop()


def timezone_date(c: Clock) -> dt.date:
    from django.utils import timezone

    return timezone.localdate(timezone.now(), c.tz)


@pytest.mark.parametrize("requested_end, discharge_end", [
    (START + dt.timedelta(days=41), START + dt.timedelta(days=41)),  # six weeks asked for: the discharge then
    (dt.date(2023, 6, 16), START + dt.timedelta(days=83)),  # over before the case started: twelve weeks
])
def test_the_requested_end_ends_the_program_unless_it_was_over_before_the_case_started(
    clinic, dispatched, clock, requested_end, discharge_end
):
    referral, c = _accepted(clinic, clock, occurrence_end=requested_end)
    weeks = (discharge_end - START).days // 7 + 1
    for week in range(weeks):
        c.at(START + dt.timedelta(days=7 * week + 6), 18)
        record_week(referral, START + dt.timedelta(days=7 * week), minutes_per_week=week_of(week))
        _run(c, START + dt.timedelta(days=7 * week + 7))
    reports = list(Report.objects.filter(referral=referral).order_by("period_start").values_list("kind", "period_end"))
    assert reports[-1] == (ReportKind.DISCHARGE, discharge_end)
    assert [k for k, _ in reports[:-1]] == [ReportKind.PROGRESS] * ((discharge_end - START).days // 28)
    c.stop()
