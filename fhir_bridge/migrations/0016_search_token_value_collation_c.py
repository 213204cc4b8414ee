"""SearchToken.value in the "C" collation on PostgreSQL: code-point order, whatever the database's default.

search.py answers ``system|`` (any code of a system) and ``:text`` as ranges on value (``>= 'system|' AND <
'system}'``), and dates as ranges on fixed-width strings; each is exactly a prefix or an instant range only in
code-point order, and search_token_lookup serves it as one range scan only when the index is in that order. A
linguistic collation (en_US.UTF-8, ICU) sorts punctuation apart and would both miss rows and fall back to scans.
SQLite's default BINARY collation already is that order, so the model state is unchanged and this runs on
PostgreSQL only (a db_collation="C" would name a collation SQLite does not have). The column's collation is
checked by tests/fhir_bridge/test_search_tokens.py: an AlterField of value that leaves COLLATE out would set it
back to the default.
"""

from django.db import migrations

_ALTER = 'ALTER TABLE fhir_bridge_searchtoken ALTER COLUMN value TYPE varchar(255) COLLATE "{}"'


def _on_postgresql(sql: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("fhir_bridge", "0015_fill_drop_system_only_tokens")]
    operations = [migrations.RunPython(_on_postgresql(_ALTER.format("C")), _on_postgresql(_ALTER.format("default")))]
