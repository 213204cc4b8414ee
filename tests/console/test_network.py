"""The console's network page: load, acceptance and time to accept per role and program, credentials expiring
soon, pause / resume / capacity through network/services.py, and the import's preview; network admins only."""

import datetime as dt
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from console.network import network_answers_refresh
from network.models import Organization, ProfessionalRole
from network.services import NetworkError, role_capacity_set, role_pause
from referrals.offers import offer_accept, offer_decline, referral_route
from referrals.routing import routing_plan
from tests.console.conftest import signed_in
from tests.network.factories import credential_give, km_north, referral_make, role_make
from tests.referrals.conftest import CARDIAC_PATIENT

pytestmark = pytest.mark.django_db
SAMPLES = Path(__file__).resolve().parents[2] / "network" / "samples"


def test_clinic_admins_may_not_see_the_network(clinic_admin):
    assert signed_in(clinic_admin).get("/console/network").status_code == 403


def test_a_role_shows_its_load_acceptance_and_median_time_to_accept(clinic, network_admin):
    role = role_make(at=km_north(1), max_active_cases=4)
    first = referral_route(referral=referral_make(clinic, patient=CARDIAC_PATIENT), patient=CARDIAC_PATIENT).offer
    offer_accept(offer=first)
    second = referral_route(referral=referral_make(clinic, patient=CARDIAC_PATIENT), patient=CARDIAC_PATIENT).offer
    offer_decline(offer=second, reason="Full this month")
    soon = timezone.now().date() + dt.timedelta(days=20)
    credential_give(role.professional, "acsm-ep", expires_on=soon)

    html = signed_in(network_admin).get("/console/network").content.decode()

    row = html[html.index(f'id="role-{role.pk}"'):]
    assert "Load <strong>1 / 4</strong>" in row[:2000]  # the accepted case; the declined offer holds nothing
    assert "acceptance 50% (1/2)" in row[:2000]
    assert "ACSM" in html[html.index('id="credentials"'):]


def test_the_network_page_costs_a_fixed_number_of_queries(clinic, network_admin):
    client = signed_in(network_admin)

    def queries() -> int:
        network_answers_refresh()  # the beat's run: the page reads acceptance and time to accept from it
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/console/network").status_code == 200
        return len(captured)

    role_make(at=km_north(1))
    few = queries()
    for n in range(6):
        role_make(at=km_north(2 + n))
    assert queries() == few


def test_a_network_admin_pauses_a_professional_and_routing_skips_them(clinic, network_admin):
    role = role_make(at=km_north(1))
    client = signed_in(network_admin)
    until = timezone.localdate() + dt.timedelta(days=14)

    assert client.post(f"/console/network/roles/{role.pk}/pause", {"until": until.isoformat()}).status_code == 302

    role.refresh_from_db()
    assert role.paused_until == until
    referral = referral_make(clinic, patient=CARDIAC_PATIENT)
    plan = routing_plan(referral=referral, patient=CARDIAC_PATIENT, now=timezone.now())
    assert [c.excluded[0][0] for c in plan.candidates if c.role_id == role.pk] == ["paused"]

    assert client.post(f"/console/network/roles/{role.pk}/resume").status_code == 302
    role.refresh_from_db()
    assert role.paused_until is None


def test_a_pause_in_the_past_and_a_bad_capacity_are_errors_in_place(clinic, network_admin):
    role = role_make(at=km_north(1), max_active_cases=5)
    client = signed_in(network_admin)

    past = client.post(f"/console/network/roles/{role.pk}/pause", {"until": "2001-01-01"})
    assert past.status_code == 422 and "a later day than today" in past.content.decode()
    bad = client.post(f"/console/network/roles/{role.pk}/capacity", {"max_active_cases": "-3"})
    assert bad.status_code == 422
    garbage = client.post(f"/console/network/roles/{role.pk}/pause", {"until": "not a date"})
    assert garbage.status_code == 422
    role.refresh_from_db()
    assert (role.paused_until, role.max_active_cases) == (None, 5)

    assert client.post(f"/console/network/roles/{role.pk}/capacity", {"max_active_cases": "8"}).status_code == 302
    role.refresh_from_db()
    assert role.max_active_cases == 8


def test_the_services_refuse_what_the_forms_would(db):
    role = role_make()
    with pytest.raises(NetworkError):
        role_pause(role=role, until=timezone.localdate(), today=timezone.localdate())
    with pytest.raises(NetworkError):
        role_capacity_set(role=role, max_active_cases=True)


def test_the_import_previews_then_applies_exactly_the_previewed_file(network_admin):
    client = signed_in(network_admin)
    upload = SimpleUploadedFile("network.csv", (SAMPLES / "network.csv").read_bytes(), content_type="text/csv")

    preview = client.post("/console/network/import", {"file": upload})

    html = preview.content.decode()
    assert preview.status_code == 200 and "nothing written yet" in html
    assert Organization.objects.count() == 0 and ProfessionalRole.objects.count() == 0
    signed_preview = html.split('name="preview" value="')[1].split('"')[0]

    applied = client.post("/console/network/import", {"preview": signed_preview})

    assert applied.status_code == 200 and "Applied: network.csv" in applied.content.decode()
    assert ProfessionalRole.objects.count() > 0
    tampered = client.post("/console/network/import", {"preview": signed_preview[:-2] + "xx"})
    assert tampered.status_code == 422


def test_every_console_post_leaves_one_audit_row_with_its_status(clinic, network_admin):
    from audit.models import Access

    role = role_make(at=km_north(1), max_active_cases=5)
    client = signed_in(network_admin)
    until = (timezone.localdate() + dt.timedelta(days=3)).isoformat()

    assert client.post(f"/console/network/roles/{role.pk}/pause", {"until": until}).status_code == 302
    assert client.post(f"/console/network/roles/{role.pk}/capacity", {"max_active_cases": "-1"}).status_code == 422
    client.get("/console/network")  # a page read: no row
    assert client.post("/console/network/roles/999999/resume").status_code == 404

    rows = list(Access.objects.filter(channel=Access.Channel.CONSOLE).order_by("id").values_list(
        "interaction", "method", "entity_type", "entity_id", "status", "agent_user"))
    assert rows == [
        ("role-pause", "POST", "ProfessionalRole", str(role.pk), 302, network_admin.username),
        ("role-capacity", "POST", "ProfessionalRole", str(role.pk), 422, network_admin.username),
        ("role-resume", "POST", "ProfessionalRole", "999999", 404, network_admin.username),
    ]


def test_acceptance_comes_from_the_rollup_at_most_five_minutes_old_with_its_age(clinic, network_admin):
    from console.network import NETWORK_ANSWERS_MAX_AGE, network_answers_current, network_answers_refresh

    role = role_make(at=km_north(1), max_active_cases=4)
    offer_accept(offer=referral_route(referral=referral_make(clinic, patient=CARDIAC_PATIENT),
                                      patient=CARDIAC_PATIENT).offer)
    now = timezone.now()
    kept = network_answers_refresh(now=now - dt.timedelta(minutes=3))  # the beat's run, 3 minutes ago
    offer_decline(offer=referral_route(referral=referral_make(clinic, patient=CARDIAC_PATIENT),
                                       patient=CARDIAC_PATIENT).offer, reason="Full this month")

    html = signed_in(network_admin).get("/console/network").content.decode()
    row = html[html.index(f'id="role-{role.pk}"'):]
    assert "acceptance 100% (1/1)" in row[:2000]  # the rollup's figures, not the decline made since
    assert "3 min ago; at most 5 minutes old" in html

    assert network_answers_current(now=now).computed_at == kept.computed_at
    later = network_answers_current(now=kept.computed_at + NETWORK_ANSWERS_MAX_AGE + dt.timedelta(seconds=1))
    assert later.roles[role.pk].answered == 2  # older than 5 minutes: computed afresh
