import pytest
from django.core.management import call_command

from fhir_bridge.models import EhrClient
from referrals.models import Offer, Referral, RoutingDecision

pytestmark = pytest.mark.django_db


def test_the_demo_loads_routes_its_referrals_and_loads_nothing_twice(settings, tmp_path, capsys):
    settings.VAR_DIR = tmp_path
    call_command("load_demo", base_url="http://127.0.0.1:8000")
    first = capsys.readouterr().out

    assert Referral.objects.count() == 3
    assert RoutingDecision.objects.count() == 3  # each one routed, and explained
    assert "routed: Offered to" in first
    client = EhrClient.objects.get()
    assert client.client_id in first
    # The query it prints is the README's: the referral Tasks, not their offers (requested Tasks too).
    assert "/fhir/Task?part-of:missing=true&status=requested&_include=Task:patient'" in first
    assert (tmp_path / "demo-ehr" / "private-key.pem").exists()
    cardiac = Referral.objects.get(patient_name="Nancy Johansson")
    offer = Offer.objects.get(referral=cardiac)
    slugs = {c.type.slug for c in offer.role.professional.credentials.all()}
    assert slugs & {"acsm-cep", "cardiac-rehab"}

    call_command("load_demo", base_url="http://127.0.0.1:8000")
    assert Referral.objects.count() == 3 and EhrClient.objects.count() == 1
    assert RoutingDecision.objects.count() == 3
