"""Offers, their events and routing decisions now belong to referrals (referrals/0003 took them over, tables and
rows included): drop them from the network's state only. Nothing happens in the database."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("network", "0004_role_pool_indexes"),
        ("referrals", "0003_offers_routing_from_network"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.RemoveField(model_name="offerevent", name="offer"),
                migrations.RemoveField(model_name="routingdecision", name="chosen_role"),
                migrations.RemoveField(model_name="routingdecision", name="referral"),
                migrations.DeleteModel(name="Offer"),
                migrations.DeleteModel(name="OfferEvent"),
                migrations.DeleteModel(name="RoutingDecision"),
            ],
        ),
    ]
