"""Referral.clinic without an index of its own: the (clinic, status) index leads with it."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('referrals', '0017_offer_accepted_responded_index'),
    ]

    operations = [
        migrations.AlterField(
            model_name='referral',
            name='clinic',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='referrals', to='referrals.clinic'),
        ),
    ]
