from django.db import migrations, models
from django.db.models import OuterRef, Subquery, Value
from django.db.models.functions import Coalesce

# The steps whose text was, until this field, read from the latest routing decision at each render.
GIST_STEPS = ("offered", "awaiting-manual-routing")


def business_status_text_fill(apps, schema_editor):
    Referral = apps.get_model("referrals", "Referral")
    RoutingDecision = apps.get_model("network", "RoutingDecision")
    latest_gist = RoutingDecision.objects.filter(referral_id=OuterRef("pk")).order_by("-id").values("gist")[:1]
    Referral.objects.filter(business_status__in=GIST_STEPS).update(
        business_status_text=Coalesce(Subquery(latest_gist), Value(""))
    )


class Migration(migrations.Migration):
    dependencies = [
        ("referrals", "0001_initial"),
        ("network", "0002_qualification_offers_routing"),
    ]

    operations = [
        migrations.AddField(
            model_name="referral",
            name="business_status_text",
            field=models.TextField(blank=True, default=""),
            preserve_default=False,
        ),
        migrations.RunPython(business_status_text_fill, migrations.RunPython.noop, elidable=True),
    ]
