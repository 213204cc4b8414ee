"""The moved models' content types follow them (network.offer -> referrals.offer, ...), so that the admin
permissions given on them, and anything else that names them by content type, carry over. A content type not
there yet (a new database, where post_migrate creates them afterwards) or already there under referrals is left
alone."""

from django.db import migrations

MOVED = ("offer", "offerevent", "routingdecision")


def forwards(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    taken = set(ContentType.objects.filter(app_label="referrals", model__in=MOVED).values_list("model", flat=True))
    ContentType.objects.filter(app_label="network", model__in=set(MOVED) - taken).update(app_label="referrals")


def backwards(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    taken = set(ContentType.objects.filter(app_label="network", model__in=MOVED).values_list("model", flat=True))
    ContentType.objects.filter(app_label="referrals", model__in=set(MOVED) - taken).update(app_label="network")


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("referrals", "0004_offer_tables_renamed"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
