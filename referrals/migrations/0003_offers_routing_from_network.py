"""Offers, their events and routing decisions move from the network app to referrals (issue 7: the referral
workflow is the referrals app's; the network is the directory). State only: the tables stay as they are
(db_table names the old ones here) and every row with them. 0004 then renames the tables. Constraint and index
names are unchanged. network/0005 removes the models from the network's state."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("network", "0004_role_pool_indexes"),
        ("referrals", "0002_referral_business_status_text"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name='Offer',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('status', models.CharField(choices=[('requested', 'Requested'), ('accepted', 'Accepted'), ('rejected', 'Rejected'), ('expired', 'Expired'), ('cancelled', 'Cancelled')], default='requested', max_length=10)),
                        ('delivery', models.CharField(choices=[('in-person', 'In Person'), ('virtual', 'Virtual')], default='in-person', max_length=10)),
                        ('created_at', models.DateTimeField()),
                        ('deadline', models.DateTimeField()),
                        ('responded_at', models.DateTimeField(blank=True, null=True)),
                        ('response_seconds', models.PositiveIntegerField(blank=True, null=True)),
                        ('decline_reason', models.CharField(blank=True, max_length=500)),
                        ('cancel_reason', models.CharField(blank=True, max_length=500)),
                        ('organization', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='network.organization')),
                        ('referral', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='offers', to='referrals.referral')),
                        ('role', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='offers', to='network.professionalrole')),
                    ],
                    options={
                        'db_table': 'network_offer',
                        'ordering': ['id'],
                    },
                ),
                migrations.CreateModel(
                    name='OfferEvent',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('from_status', models.CharField(blank=True, max_length=10)),
                        ('to_status', models.CharField(max_length=10)),
                        ('actor', models.CharField(max_length=200)),
                        ('detail', models.JSONField(blank=True, default=dict)),
                        ('at', models.DateTimeField()),
                        ('offer', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='events', to='referrals.offer')),
                    ],
                    options={
                        'db_table': 'network_offerevent',
                        'ordering': ['id'],
                    },
                ),
                migrations.CreateModel(
                    name='RoutingDecision',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('trigger', models.CharField(choices=[('initial', 'Initial'), ('declined', 'Declined'), ('expired', 'Expired'), ('manual', 'Manual'), ('retry', 'Retry')], max_length=10)),
                        ('outcome', models.CharField(choices=[('offered', 'Offered'), ('manual', 'Manual'), ('unplaced', 'Unplaced')], max_length=10)),
                        ('actor', models.CharField(default='hub', max_length=200)),
                        ('patient_facts', models.JSONField(default=dict)),
                        ('location_source', models.CharField(blank=True, max_length=20)),
                        ('condition_groups', models.JSONField(default=list)),
                        ('mapped_codes', models.JSONField(default=list)),
                        ('unmapped_codes', models.JSONField(default=list)),
                        ('risk', models.JSONField(default=dict)),
                        ('flags', models.JSONField(default=list)),
                        ('candidates', models.JSONField(default=list)),
                        ('summary', models.JSONField(default=dict)),
                        ('overrides', models.JSONField(default=list)),
                        ('override_reason', models.TextField(blank=True)),
                        ('gist', models.CharField(max_length=500)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('chosen_role', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='network.professionalrole')),
                        ('referral', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='routing_decisions', to='referrals.referral')),
                    ],
                    options={
                        'db_table': 'network_routingdecision',
                        'ordering': ['id'],
                    },
                ),
                migrations.AddField(
                    model_name='offer',
                    name='decision',
                    field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='offers', to='referrals.routingdecision'),
                ),
                migrations.AddIndex(
                    model_name='routingdecision',
                    index=models.Index(fields=['referral', '-id'], name='routing_decision_latest'),
                ),
                migrations.AddIndex(
                    model_name='offer',
                    index=models.Index(fields=['role', 'status'], name='offer_role_status'),
                ),
                migrations.AddIndex(
                    model_name='offer',
                    index=models.Index(fields=['organization', 'status'], name='offer_organization_status'),
                ),
                migrations.AddIndex(
                    model_name='offer',
                    index=models.Index(condition=models.Q(('status', 'requested')), fields=['deadline'], name='offer_requested_deadline'),
                ),
                migrations.AddConstraint(
                    model_name='offer',
                    constraint=models.UniqueConstraint(condition=models.Q(('status__in', ['requested', 'accepted'])), fields=('referral',), name='offer_one_live_per_referral'),
                ),
                migrations.AddConstraint(
                    model_name='offer',
                    constraint=models.CheckConstraint(condition=models.Q(models.Q(('decline_reason__gt', ''), ('status', 'rejected')), models.Q(models.Q(('status', 'rejected'), _negated=True), ('decline_reason', '')), _connector='OR'), name='offer_decline_reason_iff_rejected'),
                ),
            ],
        ),
    ]
