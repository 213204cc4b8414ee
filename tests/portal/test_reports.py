"""Reports to the physician in the therapists' web app: the case page lists them; a draft's page shows its
figures and the four answers, which the therapist edits and signs (sent final); a stale form is shown again with
what was typed; the PDF opens from the page; a therapist who does not hold the case gets a 404."""

import io

import pytest
from django.urls import reverse
from pypdf import PdfReader

from referrals.models import Referral, ReferralStatus, Report, ReportKind, ReportStatus
from referrals.offers import offer_accept
from referrals.reports import report_draft, report_edit
from tests.portal.conftest import signed_in
from tests.referrals.report_cases import START, record_four_weeks

pytestmark = pytest.mark.django_db


@pytest.fixture
def report(offer):
    offer_accept(offer=offer, actor="user:therapist")
    referral = Referral.objects.get(pk=offer.referral_id)
    record_four_weeks(referral)
    import datetime as dt

    return report_draft(referral=referral, period_start=START, period_end=START + dt.timedelta(days=27),
                        kind=ReportKind.PROGRESS)


def _answers(report, **changes) -> dict:
    data = {"expected_version": report.version, "answer_goals": report.answer_goals,
            "answer_barriers": report.answer_barriers, "answer_participation": report.answer_participation,
            "answer_plan": report.answer_plan}
    data.update(changes)
    return data


def test_the_therapist_edits_and_signs_a_draft_from_the_case_page(report, practice):
    client = signed_in(practice.therapist)
    case_page = client.get(reverse("portal:case", args=[report.referral_id])).content.decode()
    url = reverse("portal:case_report", args=[report.referral_id, report.pk])
    assert url in case_page and "waits for your signature" in case_page

    page = client.get(url).content.decode()
    assert "11 attended, 1 missed" in page and "Sign and send, final" in page
    assert "Attended 11 of 12 scheduled sessions" in page  # the hub's wording, in the form to edit

    saved = client.post(url, _answers(report, answer_barriers="Knee pain on stairs.", do="save"))
    assert saved.status_code == 302
    report.refresh_from_db()
    assert (report.status, report.answer_barriers, report.version) == (ReportStatus.DRAFT, "Knee pain on stairs.", 2)

    signed = client.post(url, _answers(report, answer_plan="Progress to 3 x 45 min.", do="sign"))
    assert signed.status_code == 302
    report.refresh_from_db()
    assert report.status == ReportStatus.SIGNED and report.answer_plan == "Progress to 3 x 45 min."
    referral = Referral.objects.get(pk=report.referral_id)
    assert (referral.status, referral.business_status) == (ReferralStatus.IN_PROGRESS, "progress-report-sent")
    # Signed, the page shows the answers and no form any more; the PDF is the one sent.
    page = client.get(url).content.decode()
    assert "Sign and send" not in page and "Knee pain on stairs." in page
    again = client.post(url, _answers(report, answer_plan="Too late.", do="save"))  # a second tab
    assert again.status_code == 409 and Report.objects.get(pk=report.pk).answer_plan == "Progress to 3 x 45 min."
    pdf = client.get(reverse("portal:case_report_pdf", args=[report.referral_id, report.pk]))
    assert pdf["Content-Type"] == "application/pdf" and pdf.content == bytes(report.pdf)


def test_a_stale_or_empty_form_is_shown_again_with_what_was_typed(report, practice):
    client = signed_in(practice.therapist)
    url = reverse("portal:case_report", args=[report.referral_id, report.pk])
    old = _answers(report)
    report_edit(report=report, answers={"answer_plan": "Changed by the manager."}, actor="user:manager",
                expected_version=1)
    stale = client.post(url, {**old, "answer_goals": "My own words.", "do": "sign"})
    assert stale.status_code == 409
    page = stale.content.decode()
    assert "My own words." in page and 'name="expected_version" value="2"' in page
    assert Report.objects.get(pk=report.pk).status == ReportStatus.DRAFT

    empty = client.post(url, {**_answers(Report.objects.get(pk=report.pk)), "answer_plan": "", "do": "save"})
    assert empty.status_code == 400 and "This field is required" in empty.content.decode()


def test_a_draft_pdf_is_a_preview_and_a_therapist_who_does_not_hold_the_case_gets_a_404(report, practice):
    client = signed_in(practice.therapist)
    pdf = client.get(reverse("portal:case_report_pdf", args=[report.referral_id, report.pk]))
    assert pdf.status_code == 200
    text = PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
    assert "Draft" in text and "not sent" in text
    assert Report.objects.get(pk=report.pk).pdf is None  # a preview is not stored

    colleague = signed_in(practice.colleague)  # a therapist of the practice who does not hold the case
    assert colleague.get(reverse("portal:case_report", args=[report.referral_id, report.pk])).status_code == 404
    assert colleague.get(reverse("portal:case_report_pdf", args=[report.referral_id, report.pk])).status_code == 404
    assert client.get(reverse("portal:case_report", args=[report.referral_id, report.pk + 99])).status_code == 404
