"""make run's demo: a therapist who holds a demo offer, and their practice's manager, can sign in."""

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from network.models import Account
from referrals.models import Offer, Referral

pytestmark = pytest.mark.django_db


def test_the_demo_has_a_therapist_and_a_manager_who_see_its_offer(settings, tmp_path, capsys):
    settings.VAR_DIR = tmp_path
    settings.DEBUG = True
    call_command("load_demo", base_url="http://127.0.0.1:8000")
    out = capsys.readouterr().out
    assert "therapist / therapist" in out and "manager / manager" in out and "/portal/" in out

    offer = Offer.objects.get(referral=Referral.objects.get(patient_name="Nancy Johansson"))
    therapist = Account.objects.get(user__username="therapist")
    assert therapist.professional == offer.role.professional
    assert Account.objects.get(user__username="manager").organization == offer.organization

    client = Client()
    signed = client.post(reverse("portal:login"), {"username": "therapist", "password": "therapist"})
    assert signed.status_code == 302
    page = client.get(reverse("portal:offers")).content.decode()
    assert f'id="offer-{offer.pk}"' in page and "Johansson" not in page

    call_command("load_demo", base_url="http://127.0.0.1:8000")
    assert "therapist / therapist" in capsys.readouterr().out
    assert Account.objects.count() == 2


def test_without_debug_the_demo_makes_no_accounts(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.DEBUG = False
    call_command("load_demo", base_url="http://127.0.0.1:8000")
    assert not Account.objects.exists()
