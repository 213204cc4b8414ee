"""Joint statistics on SearchToken's (resource_type, param, value), on PostgreSQL.

The planner multiplies the three columns' frequencies as if they were independent; they are not (a value such as
``http://hl7.org/fhir/CodeSystem/task-code|`` only ever comes with Task and ``code``). bench.search measured it
estimating 4,428 rows for ``Task?code=...task-code|`` that has 150,000 on 100,000 referrals, and so hashing all
150,000 tokens (1.5 s, 110,000 buffers read) for a search whose date range selects 1,000 resources, where a nested
loop on the token's resource_id takes 8 ms. With an MCV list over the three columns it estimates 160,000 and picks
the nested loop. SQLite's planner has no such statistics and needs none: it drives every search from the index
the query names. ANALYZE (autovacuum's, or the bench's) fills them.
"""

from django.db import migrations

_CREATE = (
    "CREATE STATISTICS IF NOT EXISTS search_token_lookup_stats (mcv, dependencies) "
    "ON resource_type, param, value FROM fhir_bridge_searchtoken"
)
_DROP = "DROP STATISTICS IF EXISTS search_token_lookup_stats"


def _on_postgresql(sql: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("fhir_bridge", "0011_fill_text_tokens")]
    operations = [migrations.RunPython(_on_postgresql(_CREATE), _on_postgresql(_DROP))]
