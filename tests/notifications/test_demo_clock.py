"""The demo's clock (manage.py demo_clock): the demo's open case is played four weeks forward through the case
records' services, and its progress report, due by then, reaches the EHR as a DiagnosticReport with its PDF."""

import io

import pytest
from django.core.management import CommandError, call_command
from pypdf import PdfReader

from fhir_bridge.models import StoredResource
from referrals.models import Clinic, ReferralStatus, Report, ReportKind, Session
from tests.network.factories import ZIP_10001, referral_make, role_make
from tests.referrals.report_cases import accepted_referral

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo(clinic, settings, dispatched):
    settings.DEBUG = True
    Clinic.objects.filter(pk=clinic.pk).update(slug="good-health")
    return clinic


def _run(**options) -> str:
    out = io.StringIO()
    call_command("demo_clock", stdout=out, **options)
    return out.getvalue()


def test_four_weeks_on_the_demo_case_send_its_progress_report_to_the_ehr(demo, fhir):
    referral = accepted_referral(demo)
    out = _run(weeks=4)
    referral.refresh_from_db()
    assert referral.status == ReferralStatus.IN_PROGRESS
    sessions = Session.objects.filter(referral=referral)
    assert sessions.filter(attendance="attended").count() >= 11 and sessions.filter(attendance="no-show").count() == 1
    (report,) = Report.objects.filter(referral=referral)
    assert (report.kind, report.status) == (ReportKind.PROGRESS, "sent-unsigned")
    assert f"DiagnosticReport/{report.public_id}" in out
    service_request = StoredResource.objects.get(referral=referral, resource_type="ServiceRequest").fhir_id
    found = fhir.get("DiagnosticReport", **{"based-on": f"ServiceRequest/{service_request}"})
    assert found.status_code == 200 and found.json()["total"] == 1
    binary = fhir.get(f"Binary/{report.public_id}-pdf")
    assert binary.status_code == 200
    text = PdfReader(io.BytesIO(bytes(report.pdf))).pages[0].extract_text()
    assert "Progress report" in text and "Attended" in text

    # Run again at once: the case is up to date, nothing new is recorded or reported.
    again = _run(weeks=4)
    assert "up to date" in again and Report.objects.filter(referral=referral).count() == 1


def test_with_no_open_case_it_accepts_the_first_offer_and_twelve_weeks_end_in_the_discharge(demo):
    role_make(at=ZIP_10001)
    from referrals.offers import referral_route_first

    referral = referral_make(demo)
    referral_route_first(referral_id=referral.pk)
    out = _run(weeks=12, keep_drafts=True)
    assert "accepted offer" in out
    kinds = list(Report.objects.filter(referral=referral).order_by("period_start").values_list("kind", "status"))
    assert kinds == [("progress", "draft"), ("progress", "draft"), ("discharge", "draft")]


def test_it_refuses_outside_the_demo_and_bad_weeks(clinic, settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG"):
        _run()
    settings.DEBUG = True
    with pytest.raises(CommandError, match="weeks"):
        _run(weeks=0)
    with pytest.raises(CommandError, match="no clinic"):
        _run(clinic="nowhere")


def test_the_console_history_beside_the_demo_case_is_left_as_it_is(demo):
    """make run loads synthetic history into the demo clinic (load_console_history): rows with no FHIR resources,
    which the clock passes over rather than record on (the records' Observations need the referral's Task)."""
    from django.utils import timezone

    from console.history import history_generate
    from network.demo import demo_network_load

    demo_network_load()
    referral = accepted_referral(demo)
    history_generate(referrals=60, weeks=8, clinics=[demo], now=timezone.now(), seed=5)
    synthetic = Session.objects.exclude(referral=referral).count()

    out = _run(weeks=4)

    assert Report.objects.filter(referral=referral).count() == 1 and f"referral {referral.pk}" in out
    assert Session.objects.exclude(referral=referral).count() == synthetic  # the history is untouched
