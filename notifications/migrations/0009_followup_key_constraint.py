"""FollowUp.key unique through a named constraint rather than unique=True: the same unique index, without
the varchar_pattern_ops '_like' index that PostgreSQL also builds for a unique CharField and nothing reads."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('notifications', '0008_delivery_sending_until'),
    ]

    operations = [
        migrations.AlterField(
            model_name='followup',
            name='key',
            field=models.CharField(max_length=200),
        ),
        migrations.AddConstraint(
            model_name='followup',
            constraint=models.UniqueConstraint(fields=('key',), name='followup_key_unique'),
        ),
    ]
