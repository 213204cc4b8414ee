"""The hub's own Organization, Organization/hub: the owner an EHR names to have a referral routed."""

from django.db import migrations
from django.utils import timezone

HUB = {
    "resourceType": "Organization",
    "id": "hub",
    "active": True,
    "type": [
        {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "other"}],
            "text": "Exercise-referral coordination hub",
        }
    ],
    "name": "Exercise referral hub",
}


def fill(apps, schema_editor):
    StoredResource = apps.get_model("fhir_bridge", "StoredResource")
    if StoredResource.objects.filter(resource_type="Organization", fhir_id="hub").exists():
        return
    now = timezone.now()
    content = {**HUB, "meta": {"versionId": "1", "lastUpdated": now.isoformat(timespec="milliseconds").replace("+00:00", "Z")}}
    StoredResource.objects.create(
        resource_type="Organization", fhir_id="hub", clinic=None, version_id=1, last_updated=now, content=content
    )


def unfill(apps, schema_editor):
    apps.get_model("fhir_bridge", "StoredResource").objects.filter(resource_type="Organization", fhir_id="hub").delete()


class Migration(migrations.Migration):
    dependencies = [("fhir_bridge", "0001_initial")]
    operations = [migrations.RunPython(fill, unfill)]
