# PostgreSQL: leave a third of each page of the schedule free, so that the sweep's lease (claimed_until, in no
# index) is a HOT update, written in place without a new entry in each of the table's indexes. With full pages
# every claim of 500 rows wrote 2,000 index entries (bench/followups.py: 30 ms of a claim's execution).

from django.db import migrations


def set_fillfactor(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE notifications_followup SET (fillfactor = 70)")


def reset_fillfactor(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE notifications_followup RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [("notifications", "0001_followups_subscriptions_deliveries")]

    operations = [migrations.RunPython(set_fillfactor, reset_fillfactor)]
