"""The console's pages over referrals made through the domain: the overview's funnel, filters and charts, the
referral list, a referral's timeline and report PDF, and the audited CSV export. Each page's query count is fixed."""

import csv
import io

import pytest
from django.urls import reverse

from audit.models import Access
from referrals.funnel import milestones_refresh
from tests.console.conftest import signed_in
from tests.network.factories import referral_make
from tests.referrals.report_cases import accepted_referral

pytestmark = pytest.mark.django_db


@pytest.fixture
def referrals(clinic, other_clinic):
    mine = accepted_referral(clinic, patient_name="Rosa Martinez")
    theirs = referral_make(other_clinic, postal_code="", patient_name="=HYPERLINK(\"x\")")
    milestones_refresh()
    return mine, theirs


def _text(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def test_the_overview_shows_the_funnel_with_definitions_and_charts(referrals, network_admin):
    page = _text(signed_in(network_admin).get(reverse("console:overview")))
    assert 'id="step-received"' in page and "A session attended in weeks 3-4 after the first" in page
    assert page.count("<svg") == 4 and "<script" not in page.split("</head>")[1]
    assert "refreshed" in page
    assert "Rosa Martinez" not in page  # the overview shows no PHI


def test_a_clinic_admin_counts_only_their_clinic_and_has_no_clinic_filter(referrals, clinic_admin):
    page = _text(signed_in(clinic_admin).get(reverse("console:overview")))
    assert '<tr id="step-received"><th scope="row">Received</th><td class="count-cell">1</td>' in page
    assert 'name="clinic"' not in page and "Riverside" not in page


def test_the_filters_are_in_the_url_and_narrow_the_funnel(referrals, network_admin, other_clinic):
    url = f"{reverse('console:overview')}?clinic={other_clinic.pk}&received_from=2020-01-01"
    page = _text(signed_in(network_admin).get(url))
    assert '<tr id="step-received"><th scope="row">Received</th><td class="count-cell">1</td>' in page
    assert '<tr id="step-routed"><th scope="row">Routed</th><td class="count-cell">0</td>' in page
    assert 'value="2020-01-01"' in page


def test_a_bad_filter_is_an_error_in_place_not_a_500(referrals, network_admin):
    url = f"{reverse('console:overview')}?received_from=yesterday&clinic=999999&received_to=2020-01-01"
    response = signed_in(network_admin).get(url)
    page = _text(response)
    assert "Enter a valid date." in page and "Select a valid choice" in page


def test_the_overview_takes_a_fixed_number_of_queries(referrals, network_admin, clinic, django_assert_num_queries):
    from django.core.cache import cache

    client = signed_in(network_admin)
    url = f"{reverse('console:overview')}?clinic={clinic.pk}"
    cache.clear()
    # session, user, second-factor device, console role; the chosen clinic's lookup; the rollup's age; funnel,
    # weeks, PAVS grid; the filter choices (clinics, condition groups, programs, professionals)
    with django_assert_num_queries(13):
        client.get(url)
    with django_assert_num_queries(10):  # the same figures again before the next refresh: from the cache
        client.get(url)
    accepted_referral(clinic)
    milestones_refresh()  # a new refresh: computed afresh, the same number of queries with more rows
    with django_assert_num_queries(13):
        page = _text(client.get(url))
    assert '<tr id="step-received"><th scope="row">Received</th><td class="count-cell">2</td>' in page


def test_the_list_links_each_visible_referral_to_its_timeline(referrals, clinic_admin):
    mine, theirs = referrals
    page = _text(signed_in(clinic_admin).get(reverse("console:referrals")))
    assert reverse("console:referral", args=[mine.pk]) in page
    assert reverse("console:referral", args=[theirs.pk]) not in page


def test_a_referrals_page_has_its_timeline_and_routing_explanation_and_is_audited(referrals, clinic_admin):
    mine, _ = referrals
    page = _text(signed_in(clinic_admin).get(reverse("console:referral", args=[mine.pk])))
    assert "Why it went where it went" in page and "Rosa Martinez" in page
    timeline = page.split('<ol class="timeline">')[1]
    for source in ("event", "task", "routing", "offer"):
        assert f"source-{source}" in timeline
    assert timeline.index("Created") < timeline.index("Offer ")  # in order: created, then offered
    row = Access.objects.get(channel="console", entity_type="Referral", entity_id=str(mine.pk))
    assert row.agent_user == "clinicadmin" and row.status == 200


def test_another_clinics_referral_is_a_404(referrals, clinic_admin):
    _, theirs = referrals
    assert signed_in(clinic_admin).get(reverse("console:referral", args=[theirs.pk])).status_code == 404


def test_the_timeline_takes_a_fixed_number_of_queries(referrals, clinic_admin, django_assert_num_queries):
    mine, _ = referrals
    client = signed_in(clinic_admin)
    # session, user, second-factor device, role, referral; its routing runs; the timeline's 10 sources; the audit row
    with django_assert_num_queries(17):
        client.get(reverse("console:referral", args=[mine.pk]))


def test_the_export_leaves_out_phi_unless_asked_and_is_audited(referrals, network_admin):
    client = signed_in(network_admin)
    plain = client.get(reverse("console:referrals_export"))
    assert plain["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(plain.streaming_content).decode())))
    assert len(rows) == 2 and "patient_name" not in rows[0]
    assert {r["clinic"] for r in rows} == {"good-health", "riverside"}
    with_phi = client.get(f"{reverse('console:referrals_export')}?phi=on&clinic={referrals[1].clinic_id}")
    rows = list(csv.DictReader(io.StringIO(b"".join(with_phi.streaming_content).decode())))
    assert [r["patient_name"] for r in rows] == ["'=HYPERLINK(\"x\")"]  # a formula is never live in a sheet
    audits = list(Access.objects.filter(channel="console").order_by("id").values_list("interaction", "query"))
    assert audits == [("export", ""), ("export-phi", f"phi=on&clinic={referrals[1].clinic_id}")]


def test_a_report_pdf_is_served_to_its_clinic_only(clinic, other_clinic, clinic_admin, network_admin):
    from referrals.reports import report_request

    referral = accepted_referral(clinic)
    report = report_request(referral=referral, actor="user:coordinator", send_now=True)
    assert report.pdf
    url = reverse("console:report_pdf", args=[referral.pk, report.public_id])
    response = signed_in(clinic_admin).get(url)
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")
    outsider = referral_make(other_clinic, postal_code="")
    wrong = reverse("console:report_pdf", args=[outsider.pk, report.public_id])
    assert signed_in(network_admin).get(wrong).status_code == 404


def test_the_beat_refreshes_the_rollup_and_computes_the_default_overviews(
    clinic, clinic_admin, network_admin, settings, django_assert_num_queries
):
    from django.core.cache import cache

    from console.tasks import rollup_refresh

    entry = settings.CELERY_BEAT_SCHEDULE["refresh-milestones"]
    assert entry["task"] == "console.rollup_refresh" and entry["schedule"] <= 300  # at most 5 minutes stale
    accepted_referral(clinic)
    cache.clear()
    rollup_refresh()
    clinic_client, network_client = signed_in(clinic_admin), signed_in(network_admin)
    # session, user, device, role, rollup age, 3 filter choices (no clinic choice for a clinic admin): no figures
    with django_assert_num_queries(8):
        page = _text(clinic_client.get(reverse("console:overview")))
    assert '<tr id="step-received"><th scope="row">Received</th><td class="count-cell">1</td>' in page
    with django_assert_num_queries(9):  # and the network's, with the clinic choice
        network_client.get(reverse("console:overview"))
