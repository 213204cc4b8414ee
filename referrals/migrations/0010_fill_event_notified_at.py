# Events written before the outbox existed were never meant to be notified: mark them done, so that the first
# fan-out does not walk the whole history.

from django.db import migrations
from django.db.models.functions import Now


def fill(apps, schema_editor):
    apps.get_model("referrals", "ReferralEvent").objects.filter(notified_at__isnull=True).update(notified_at=Now())


class Migration(migrations.Migration):
    dependencies = [("referrals", "0009_event_notified_at")]

    operations = [migrations.RunPython(fill, migrations.RunPython.noop)]
