"""Subscription.end from the resource each clinic posted: until now the hub kept it there and did not act on it.
One whose end has passed is switched off here, as the hub would have at that time; one still running gets the
follow-up that switches it off then (notifications.subscriptions.subscription_end_plan's row)."""

import datetime as dt

from django.db import migrations
from django.utils import timezone


def fill_subscription_end(apps, schema_editor):
    Subscription = apps.get_model("notifications", "Subscription")
    FollowUp = apps.get_model("notifications", "FollowUp")
    now = timezone.now()
    for subscription in Subscription.objects.exclude(resource={}).filter(end__isnull=True).iterator():
        raw = subscription.resource.get("end") if isinstance(subscription.resource, dict) else None
        if not isinstance(raw, str):
            continue
        try:
            end = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            continue  # parsed as an instant at creation; nothing else is stored
        if end.tzinfo is None:
            continue
        if end <= now:
            Subscription.objects.filter(pk=subscription.pk).update(end=end, status="off")
            continue
        Subscription.objects.filter(pk=subscription.pk).update(end=end)
        FollowUp.objects.get_or_create(
            key=f"subscription-end:{subscription.pk}:{int(end.timestamp())}",
            defaults={"kind": "subscription-end", "due_at": end, "subscription_id": subscription.pk},
        )


class Migration(migrations.Migration):

    dependencies = [
        ("notifications", "0006_subscription_end_version_deleted"),
    ]

    operations = [
        migrations.RunPython(fill_subscription_end, migrations.RunPython.noop),
    ]
