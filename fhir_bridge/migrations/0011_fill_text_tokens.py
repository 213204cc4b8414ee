"""Index the :text forms (``code:text``, ``business-status:text``, ``category:text``: the words of each
CodeableConcept's text and codings' displays, search_params._texts) of resources stored before search answered
:text. Only the types with such a parameter are read, and only the missing rows written, so that running it twice
adds nothing."""

from django.db import migrations


def fill_text_tokens(apps, schema_editor):
    from fhir_bridge.search_params import SEARCH_PARAMS, search_values

    StoredResource = apps.get_model("fhir_bridge", "StoredResource")
    SearchToken = apps.get_model("fhir_bridge", "SearchToken")
    types = [name for name, params in SEARCH_PARAMS.items() if any(p.text for p in params)]
    rows = StoredResource.objects.filter(is_deleted=False, resource_type__in=types).only(
        "id", "clinic_id", "resource_type", "content"
    )
    for row in rows.iterator(chunk_size=500):
        wanted = [(p, v) for p, v in search_values(row.content) if p.endswith(":text")]
        if not wanted:
            continue
        have = set(
            SearchToken.objects.filter(resource_id=row.pk, param__endswith=":text").values_list("param", "value")
        )
        SearchToken.objects.bulk_create(
            SearchToken(resource_id=row.pk, clinic_id=row.clinic_id, resource_type=row.resource_type, param=p, value=v)
            for p, v in wanted
            if (p, v) not in have
        )


class Migration(migrations.Migration):
    dependencies = [("fhir_bridge", "0010_ehr_client_pull_urls")]
    operations = [migrations.RunPython(fill_text_tokens, migrations.RunPython.noop, elidable=True)]
