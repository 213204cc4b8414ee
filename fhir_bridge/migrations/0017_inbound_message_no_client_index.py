"""InboundMessage.client without an index of its own: nothing looks messages up by client."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('fhir_bridge', '0016_search_token_value_collation_c'),
    ]

    operations = [
        migrations.AlterField(
            model_name='inboundmessage',
            name='client',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, to='fhir_bridge.ehrclient'),
        ),
    ]
