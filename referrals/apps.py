from django.apps import AppConfig
from django.db.backends.signals import connection_created


class ReferralsConfig(AppConfig):
    name = "referrals"
    verbose_name = "Referrals"

    def ready(self):
        from referrals.funnel import sqlite_median_register

        # The funnel's medians are one aggregate in SQL; SQLite has no MEDIAN of its own.
        connection_created.connect(sqlite_median_register, dispatch_uid="referrals.sqlite_median")
