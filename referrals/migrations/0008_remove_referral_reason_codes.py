from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("referrals", "0007_fill_clinical_facts")]

    operations = [
        migrations.RemoveField(
            model_name='referral',
            name='reason_codes',
        ),
    ]
