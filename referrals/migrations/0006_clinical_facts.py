
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('referrals', '0005_fill_moved_content_types'),
    ]

    operations = [
        migrations.CreateModel(
            name='ClinicalFacts',
            fields=[
                ('referral', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='facts', serialize=False, to='referrals.referral')),
                ('condition_codes', models.JSONField(blank=True, default=list)),
                ('clearance', models.CharField(blank=True, max_length=64)),
                ('precautions', models.JSONField(blank=True, default=list)),
                ('currently_active', models.BooleanField(blank=True, null=True)),
                ('known_disease', models.BooleanField(blank=True, null=True)),
                ('symptoms', models.BooleanField(blank=True, null=True)),
                ('delivery_modes', models.JSONField(blank=True, default=list)),
                ('latitude', models.FloatField(blank=True, null=True)),
                ('longitude', models.FloatField(blank=True, null=True)),
                ('location_source', models.CharField(blank=True, choices=[('geolocation', 'Geolocation'), ('postal-code', 'Postal Code'), ('', 'Not placed')], max_length=20)),
                ('state', models.CharField(blank=True, max_length=2)),
                ('required_language', models.CharField(blank=True, max_length=35)),
                ('preferred_languages', models.JSONField(blank=True, default=list)),
                ('payer', models.CharField(blank=True, max_length=64)),
                ('pavs_baseline', models.JSONField(blank=True, default=list)),
                ('goals', models.JSONField(blank=True, default=list)),
            ],
            options={
                'verbose_name_plural': 'clinical facts',
            },
        ),
    ]
