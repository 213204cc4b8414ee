"""Delete the ``system|`` search tokens (any code of a coding's or identifier's system), which search_params.py
no longer writes: search.py answers ``system|`` as a prefix range on the ``system|code`` forms.

Only that form goes. A stored value ending in '|' may also be a bare code or identifier value that itself ends in
'|' (``"A|"`` stores ``A|`` as its bare form), or a ``|code`` form of such a code; a token is deleted only when its
resource's content gives it as a system-only form and today's search_values does not give it at all. The
candidates are read by id in pages, each page's resources once, so that the table is never scanned while it is
deleted from (SQLite cannot have both on one table). Reversed, the system-only forms are written again."""

from django.db import migrations

_PAGE = 2000


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _system_only_forms(content: dict) -> set[tuple[str, str]]:
    """(param, "system|") of each coding of a token parameter and each identifier with a system, as
    search_params._token_forms wrote them before this migration."""
    from fhir_bridge.search_params import SEARCH_PARAMS

    forms = set()
    for param in SEARCH_PARAMS.get(content.get("resourceType"), ()):
        if param.kind not in ("token", "identifier"):
            continue
        for item in _as_list(content.get(param.element)):
            if not isinstance(item, dict):
                continue
            if param.kind == "identifier":
                pairs = [(item.get("system"), item.get("value"))]
            else:
                codings = item.get("coding") if "coding" in item else [item]
                pairs = [(c.get("system"), c.get("code")) for c in _as_list(codings) if isinstance(c, dict)]
            forms.update(
                (param.name, f"{system}|")
                for system, code in pairs
                if isinstance(system, str) and isinstance(code, str) and len(system) < 255
            )
    return forms


def drop_system_only_tokens(apps, schema_editor):
    from fhir_bridge.search_params import search_values

    StoredResource = apps.get_model("fhir_bridge", "StoredResource")
    SearchToken = apps.get_model("fhir_bridge", "SearchToken")
    last = 0
    while True:
        page = list(
            SearchToken.objects.filter(id__gt=last, value__endswith="|")
            .order_by("id")
            .values_list("id", "resource_id", "param", "value")[:_PAGE]
        )
        if not page:
            return
        last = page[-1][0]
        contents = dict(StoredResource.objects.filter(pk__in={r for _, r, _, _ in page}).values_list("id", "content"))
        gone = {
            resource_id: _system_only_forms(content) - set(search_values(content))
            for resource_id, content in contents.items()
        }
        drop = [token_id for token_id, r, p, v in page if (p, v) in gone.get(r, ())]
        SearchToken.objects.filter(pk__in=drop).delete()


def write_system_only_tokens(apps, schema_editor):
    StoredResource = apps.get_model("fhir_bridge", "StoredResource")
    SearchToken = apps.get_model("fhir_bridge", "SearchToken")
    rows = StoredResource.objects.filter(is_deleted=False).only("id", "clinic_id", "resource_type", "content")
    for row in rows.iterator(chunk_size=500):
        forms = _system_only_forms(row.content)
        have = set(SearchToken.objects.filter(resource_id=row.pk, value__endswith="|").values_list("param", "value"))
        SearchToken.objects.bulk_create(
            SearchToken(resource_id=row.pk, clinic_id=row.clinic_id, resource_type=row.resource_type, param=p, value=v)
            for p, v in sorted(forms - have)
        )


class Migration(migrations.Migration):
    dependencies = [("fhir_bridge", "0014_search_token_no_db_constraint")]
    operations = [migrations.RunPython(drop_system_only_tokens, write_system_only_tokens)]
