"""Index the token forms search now answers as equalities on resources stored before it did: ``system|`` and
``|code`` for codings and identifiers, and the absolute URL of an absolute reference (search_params.py)."""

from django.db import migrations


def fill_token_forms(apps, schema_editor):
    from fhir_bridge.search_params import search_values

    StoredResource = apps.get_model("fhir_bridge", "StoredResource")
    SearchToken = apps.get_model("fhir_bridge", "SearchToken")
    rows = StoredResource.objects.filter(is_deleted=False).only("id", "clinic_id", "resource_type", "content")
    for row in rows.iterator(chunk_size=500):
        have = set(SearchToken.objects.filter(resource_id=row.pk).values_list("param", "value"))
        missing = [pair for pair in search_values(row.content) if pair not in have]
        SearchToken.objects.bulk_create(
            SearchToken(resource_id=row.pk, clinic_id=row.clinic_id, resource_type=row.resource_type, param=p, value=v)
            for p, v in missing
        )


class Migration(migrations.Migration):
    dependencies = [("fhir_bridge", "0006_fill_clinical_facts")]
    operations = [migrations.RunPython(fill_token_forms, migrations.RunPython.noop, elidable=True)]
