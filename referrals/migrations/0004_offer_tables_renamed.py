"""The moved tables take the referrals app's names (network_offer -> referrals_offer, ...). A rename: the rows,
constraints and indexes stay; constraint and index names do not change."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("network", "0005_offers_routing_to_referrals"),
        ("referrals", "0003_offers_routing_from_network"),
    ]

    operations = [
        migrations.AlterModelTable(name="routingdecision", table=None),
        migrations.AlterModelTable(name="offer", table=None),
        migrations.AlterModelTable(name="offerevent", table=None),
    ]
