"""The scorecards page and the audit log."""

import datetime as dt

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import Access
from tests.console.conftest import signed_in
from tests.network.factories import role_make
from tests.referrals.scorecard_cases import closed_case_make, no_kept_scorecards  # noqa: F401 - a fixture

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_kept_scorecards")]


def test_the_scorecards_page_shows_only_scorecards_of_ten_completed_patients_with_intervals(
    clinic, clinic_admin
):
    proven, new = role_make(), role_make()
    for _ in range(10):
        closed_case_make(clinic, proven, baseline=30, latest=90)
    closed_case_make(clinic, new)

    response = signed_in(clinic_admin).get("/console/scorecards")

    html = response.content.decode()
    assert response.status_code == 200
    assert str(proven.professional) in html and str(new.professional) not in html
    assert "Cardiovascular" in html or "cardiovascular" in html.lower()
    assert "[0.72–1.00]" in html  # Wilson 95 % interval of 10/10 gaining >= 30 min/week
    assert '<svg class="chart interval"' in html
    assert "2 scorecards below that are not shown" in html  # the new professional and their program


def test_the_scorecards_come_a_page_at_a_time_keeping_the_filter(clinic, clinic_admin, monkeypatch):
    from console import views_insight

    monkeypatch.setattr(views_insight, "SCORECARD_PAGE_SIZE", 1)
    proven = role_make()
    for _ in range(10):
        closed_case_make(clinic, proven, baseline=30, latest=90)  # two shown: the professional and the program
    client = signed_in(clinic_admin)

    first = client.get("/console/scorecards").content.decode()
    second = client.get("/console/scorecards", {"page": "2"}).content.decode()
    assert "page 1 of 2 (2 scorecards)" in first and "page=2" in first
    assert (str(proven.professional) in first) != (str(proven.professional) in second)  # one card a page
    narrowed = client.get("/console/scorecards", {"kind": "program"}).content.decode()
    assert str(proven.professional) not in narrowed and "page 1 of" not in narrowed  # one card: no pages
    assert client.get("/console/scorecards", {"page": "x"}).status_code == 200  # a bad page number: the first


def test_the_scorecards_filter_narrows_and_refuses_an_unknown_group(clinic, clinic_admin):
    client = signed_in(clinic_admin)
    assert client.get("/console/scorecards", {"kind": "program"}).status_code == 200
    assert client.get("/console/scorecards", {"condition_group": "nope"}).status_code == 422


def _access(**fields) -> Access:
    defaults = dict(channel="fhir", action="R", interaction="read", method="GET", status=200)
    return Access.objects.create(**{**defaults, **fields})


def test_the_audit_log_is_searchable_by_who_what_and_when(network_admin):
    _access(agent_client="ehr-1", entity_type="Task", entity_id="t1")
    _access(agent_user="coord", channel="api", entity_type="Referral", entity_id="9", interaction="search")
    with time_machine.travel(dt.datetime.now(dt.UTC) - dt.timedelta(days=40)):
        _access(agent_client="ehr-1", entity_type="Patient", entity_id="p1")
    client = signed_in(network_admin)

    by_who = client.get("/console/audit", {"who": "ehr-1"}).content.decode()
    by_what = client.get("/console/audit", {"what": "Referral/9"}).content.decode()
    recent = client.get("/console/audit", {"who": "ehr-1", "since": (dt.date.today() - dt.timedelta(days=7)).isoformat()})

    assert "Task/t1" in by_who and "Patient/p1" in by_who and "Referral/9" not in by_who
    assert "Referral/9" in by_what and "Task/t1" not in by_what
    assert "Task/t1" in recent.content.decode() and "Patient/p1" not in recent.content.decode()


def test_the_audit_log_is_for_network_admins_and_refuses_bad_filters_in_place(clinic_admin, network_admin):
    assert signed_in(clinic_admin).get("/console/audit").status_code == 403
    bad = signed_in(network_admin).get("/console/audit", {"since": "2026-02-01", "until": "2026-01-01"})
    assert bad.status_code == 422 and "The end is before the start." in bad.content.decode()
    assert signed_in(network_admin).get("/console/audit", {"since": "yesterday", "page": "x"}).status_code == 422


def test_the_audit_page_costs_the_same_queries_for_few_and_many_rows(network_admin):
    client = signed_in(network_admin)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/console/audit").status_code == 200
        return len(captured)

    _access(agent_client="ehr-1", entity_type="Task", entity_id="t1")
    few = queries()
    for n in range(30):
        _access(agent_client="ehr-1", entity_type="Task", entity_id=f"t{n}")
    assert queries() == few
