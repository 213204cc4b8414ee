"""A covering index for routing's pool query (network/routing.py::_pool_part).

Each pool part finds sites (in the bounding box, or in the patient's state), then reads their roles' id,
professional, organization, service radius and virtual flag, and orders and limits them; only the roles that
survive the limit are read in full. With those columns in an index that starts with the site, PostgreSQL
answers the part with one index-only probe per site instead of visiting every role row of every site (in
person), or every virtual role in the network (virtual): at 100,000 professionals that was most of the pool
query's time.

Plain SQL rather than AddIndex: the index serves one hand-written query and is not part of the models' state,
so ``makemigrations`` neither adds nor drops it. The statement runs as is on SQLite too.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("network", "0003_fill_qualification")]

    operations = [
        migrations.RunSQL(
            "CREATE INDEX role_site_pool ON network_professionalrole"
            " (site_id, offers_virtual, id, professional_id, organization_id, service_radius_km)",
            reverse_sql="DROP INDEX role_site_pool",
        ),
    ]
