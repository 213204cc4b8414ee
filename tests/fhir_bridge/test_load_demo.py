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


def test_each_demo_task_names_its_own_patient(settings, tmp_path):
    from fhir_bridge.models import StoredResource

    settings.VAR_DIR = tmp_path
    call_command("load_demo", base_url="http://127.0.0.1:8000")
    named = {}
    for referral in Referral.objects.all():
        task = StoredResource.objects.filter(referral=referral, resource_type="Task").order_by("id").first().content
        named[referral.patient_name] = task["for"]["display"]
    assert named == {"Nancy Johansson": "Nancy Johansson", "Nancy Okafor": "Nancy Okafor",
                     "Nancy Lindqvist": "Nancy Lindqvist"}


def test_the_readme_referral_bundle_is_accepted_as_printed(fhir):
    """README: `manage.py referral_bundle --identifier my-first-referral > referral.json`, then `curl -X POST ...
    /fhir -d @referral.json`: the Bundle it prints is a referral the hub takes (and a resend is a duplicate)."""
    import io
    import json

    from tests.conftest import json_of

    out = io.StringIO()
    call_command("referral_bundle", identifier="my-first-referral", family="Okafor", stdout=out)
    bundle = json.loads(out.getvalue())
    response = fhir.post("", bundle)
    assert response.status_code == 200, response.content
    answer = json_of(response)
    assert answer["type"] == "transaction-response"
    assert all(entry["response"]["status"].startswith("201") for entry in answer["entry"])
    referral = Referral.objects.get()
    assert referral.patient_name == "Nancy Okafor"
    assert fhir.post("", bundle).status_code == 200 and Referral.objects.count() == 1  # a resend: the first one


def test_the_demo_prints_how_to_send_a_referral_at_its_own_base_url(settings, tmp_path, capsys):
    settings.VAR_DIR = tmp_path
    call_command("load_demo", base_url="http://127.0.0.1:9000")
    out = capsys.readouterr().out
    assert "manage.py referral_bundle --identifier my-first-referral > referral.json" in out
    assert "http://127.0.0.1:9000/fhir -d @referral.json" in out
    assert "--token-url http://127.0.0.1:9000/auth/token --request" in out
