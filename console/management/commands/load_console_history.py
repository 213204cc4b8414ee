"""Give the demo months of referral history at every stage, so that the console looks real (console/history.py
says what is written and what is not). `make run` runs it after load_demo; running it again adds nothing."""

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from console.history import HISTORY_REQUESTER, history_generate
from referrals.funnel import milestones_refresh
from referrals.models import Clinic, Referral

# The demo clinic (load_demo's) and two more, so that a network admin sees more than a clinic admin does.
CLINICS = [("good-health", "Good Health Cardiology"), ("riverside", "Riverside Family Medicine"),
           ("lakeside", "Lakeside Internal Medicine")]


class Command(BaseCommand):
    help = "Load synthetic months of referral history for the console (idempotent; --force adds more)."

    def add_arguments(self, parser):
        parser.add_argument("--referrals", type=int, default=300, help="How many referrals (default 300).")
        parser.add_argument("--weeks", type=int, default=26, help="Spread over this many weeks back (default 26).")
        parser.add_argument("--seed", type=int, default=13)
        parser.add_argument("--force", action="store_true", help="Load even when history is there already.")

    def handle(self, *args, referrals: int, weeks: int, seed: int, force: bool, **options):
        if referrals < 1 or weeks < 1:
            self.stderr.write("--referrals and --weeks must be at least 1")
            return
        if not force and Referral.objects.filter(requester_reference=HISTORY_REQUESTER).exists():
            self.stdout.write("Console history: already loaded (--force to add more).")
            return
        with transaction.atomic():
            clinics = [Clinic.objects.get_or_create(slug=slug, defaults={"name": name})[0] for slug, name in CLINICS]
        counts = history_generate(referrals=referrals, weeks=weeks, clinics=clinics, now=timezone.now(), seed=seed)
        rows = milestones_refresh()
        summary = ", ".join(f"{n} {name}" for name, n in counts.items())
        self.stdout.write(self.style.SUCCESS(f"Console history: {summary} over {weeks} weeks; {rows} milestone rows."))
