from django.core.management.base import BaseCommand, CommandError

from notifications.models import Delivery
from notifications.outbox import deliveries_replay


class Command(BaseCommand):
    help = "Give dead deliveries a new round of attempts (all dead ones, or those named, or one subscription's)."

    def add_arguments(self, parser):
        parser.add_argument("ids", nargs="*", type=int, help="delivery ids (default: every dead delivery)")
        parser.add_argument("--subscription", type=int, help="only this subscription's dead deliveries")
        parser.add_argument("--dry-run", action="store_true", help="list them, replay nothing")

    def handle(self, *args, ids, subscription, dry_run, **options):
        dead = Delivery.objects.filter(state=Delivery.State.DEAD)
        if ids:
            dead = dead.filter(pk__in=ids)
        if subscription is not None:
            dead = dead.filter(subscription_id=subscription)
        chosen = list(dead.order_by("id").values_list("pk", flat=True))
        if ids and len(chosen) != len(set(ids)):
            missing = sorted(set(ids) - set(chosen))
            raise CommandError(f"not dead (or no such delivery): {', '.join(map(str, missing))}")
        if dry_run:
            self.stdout.write(f"{len(chosen)} dead deliveries: {', '.join(map(str, chosen)) or 'none'}")
            return
        count = deliveries_replay(delivery_ids=chosen)
        self.stdout.write(f"replayed {count} deliveries")
