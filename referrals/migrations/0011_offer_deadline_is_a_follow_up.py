"""An offer's deadline is scheduled as a follow-up row (notifications.FollowUp, kind offer-deadline), the one
schedule: no sweep reads Offer.deadline any more, so its partial index goes."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("referrals", "0010_fill_event_notified_at")]

    operations = [migrations.RemoveIndex(model_name="offer", name="offer_requested_deadline")]
