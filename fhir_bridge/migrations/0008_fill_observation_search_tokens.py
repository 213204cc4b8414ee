"""The search tokens of the Observations stored before Observation had a search interaction (only their
identifiers were indexed then): patient, category, code, date and based-on, as search_params.py indexes them
now. Tokens a row already has are left alone, so running it over a partly indexed table adds only what is
missing."""

from django.db import migrations

from fhir_bridge.search_params import search_values


def fill(apps, schema_editor):
    StoredResource = apps.get_model("fhir_bridge", "StoredResource")
    SearchToken = apps.get_model("fhir_bridge", "SearchToken")
    rows = StoredResource.objects.filter(resource_type="Observation").only("pk", "clinic_id", "content")
    for row in rows.iterator(chunk_size=500):
        have = set(SearchToken.objects.filter(resource_id=row.pk).values_list("param", "value"))
        SearchToken.objects.bulk_create(
            SearchToken(resource_id=row.pk, clinic_id=row.clinic_id, resource_type="Observation", param=p, value=v)
            for p, v in search_values(row.content)
            if (p, v) not in have
        )


class Migration(migrations.Migration):
    dependencies = [("fhir_bridge", "0007_fill_token_forms")]

    operations = [migrations.RunPython(fill, migrations.RunPython.noop, elidable=True)]
