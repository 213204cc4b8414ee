"""Who reaches the console and what they see: sign-in first, a console role next, and a clinic admin's referrals
are their clinic's only."""

import pytest
from django.db import IntegrityError, transaction
from django.test import Client
from django.urls import reverse

from console.access import referrals_visible
from console.models import ConsoleRole
from tests.console.conftest import PASSWORD, console_user_make, signed_in
from tests.network.factories import referral_make

pytestmark = pytest.mark.django_db


def test_an_anonymous_visitor_is_sent_to_sign_in_with_next():
    response = Client().get(reverse("console:overview"))
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('console:login')}?next=/console/"


def test_signing_in_on_the_console_lands_on_the_overview(clinic_admin):
    client = Client()
    response = client.post(reverse("console:login"), {"username": "clinicadmin", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == reverse("console:overview")
    assert client.get(reverse("console:overview")).status_code == 200


def test_a_user_without_a_console_role_is_refused(no_role_user):
    response = signed_in(no_role_user).get(reverse("console:overview"))
    assert response.status_code == 403
    assert "no console role" in response.content.decode()


def test_a_clinic_admin_sees_only_their_clinics_referrals(clinic, other_clinic, clinic_admin, network_admin):
    mine = referral_make(clinic)
    theirs = referral_make(other_clinic)
    assert list(referrals_visible(clinic_admin)) == [mine]
    assert set(referrals_visible(network_admin)) == {mine, theirs}
    assert list(referrals_visible(clinic_admin.console_role)) == [mine]


def test_a_user_without_a_role_sees_no_referrals(clinic, no_role_user):
    referral_make(clinic)
    assert not referrals_visible(no_role_user).exists()


def test_a_role_must_name_a_clinic_exactly_when_it_is_a_clinic_admin(clinic, db):
    with pytest.raises(IntegrityError), transaction.atomic():
        console_user_make("a", role=ConsoleRole.Role.CLINIC_ADMIN, clinic=None)
    with pytest.raises(IntegrityError), transaction.atomic():
        console_user_make("b", role=ConsoleRole.Role.NETWORK_ADMIN, clinic=clinic)


def test_the_nav_names_the_role_and_the_clinic(clinic, clinic_admin):
    page = signed_in(clinic_admin).get(reverse("console:overview")).content.decode()
    assert "Clinic admin" in page and clinic.name in page
    assert 'aria-current="page">Overview' in page


def test_the_demo_gives_a_clinic_admin_and_a_network_admin(settings, tmp_path, capsys):
    from django.core.management import call_command

    settings.VAR_DIR = tmp_path
    settings.DEBUG = True
    call_command("load_demo", base_url="http://127.0.0.1:8000")
    out = capsys.readouterr().out
    assert "clinicadmin / clinicadmin" in out and "networkadmin / networkadmin" in out and "/console/" in out
    assert ConsoleRole.objects.get(user__username="clinicadmin").clinic.slug == "good-health"
    assert ConsoleRole.objects.get(user__username="networkadmin").is_network_admin
    client = Client()
    client.post(reverse("console:login"), {"username": "networkadmin", "password": "networkadmin"})
    assert client.get(reverse("console:overview")).status_code == 200
    call_command("load_demo", base_url="http://127.0.0.1:8000")
    assert ConsoleRole.objects.count() == 2


def test_clinics_visible_is_the_same_rule_as_clinic_ids(clinic, clinic_admin, network_admin):
    from console.access import clinics_visible

    assert clinics_visible(clinic_admin.console_role) == [clinic.pk]
    assert clinics_visible(network_admin.console_role) is None
