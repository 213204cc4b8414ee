# Subscriptions served over FHIR (their id, the posted resource, the base the client used) and what a delivery is.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('notifications', '0002_followup_fillfactor'),
    ]

    operations = [
        migrations.AddField(
            model_name='delivery',
            name='notification_type',
            field=models.CharField(blank=True, max_length=20),
        ),
        migrations.AddField(
            model_name='delivery',
            name='task_id',
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name='delivery',
            name='task_version',
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='subscription',
            name='base_url',
            field=models.CharField(blank=True, max_length=300),
        ),
        migrations.AddField(
            model_name='subscription',
            name='fhir_id',
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name='subscription',
            name='resource',
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddIndex(
            model_name='delivery',
            index=models.Index(condition=models.Q(('task_id', ''), _negated=True), fields=['task_id', 'task_version'], name='delivery_task_version'),
        ),
        migrations.AddConstraint(
            model_name='subscription',
            constraint=models.UniqueConstraint(condition=models.Q(('fhir_id', ''), _negated=True), fields=('fhir_id',), name='subscription_fhir_id'),
        ),
    ]
