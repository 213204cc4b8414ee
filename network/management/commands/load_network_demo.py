from django.core.management.base import BaseCommand

from network.demo import demo_network_load


class Command(BaseCommand):
    help = "Load the demo network around Springfield, IL: sites, people, credentials and roles (idempotent)."

    def handle(self, *args, **options):
        created = demo_network_load()
        self.stdout.write(self.style.SUCCESS(f"Demo network: {created} new role(s)."))
