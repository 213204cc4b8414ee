import os

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("hub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect(dispatch_uid="config.celery.connections_before")
@task_postrun.connect(dispatch_uid="config.celery.connections_after")
def _close_old_connections(sender=None, task=None, **kwargs) -> None:
    """A task is to a worker what a request is to the web process: before and after each one, Django's
    close_old_connections closes a connection that broke or outlived DATABASE_CONN_MAX_AGE, and keeps the others
    (a health check before reuse, CONN_HEALTH_CHECKS). Celery's own Django fixup would close every connection
    around every task (CELERY_DB_REUSE_MAX, settings.py), so that each task opened a new PostgreSQL connection
    and its backend: at 300 notifications a second, the connect and its set-up were a worker's costliest
    statement (bench/followups.py). An eager task (run inside the caller, perhaps inside its transaction) is
    left alone, as Celery's fixup leaves it."""
    if getattr(getattr(task, "request", None), "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


@worker_process_init.connect(dispatch_uid="config.celery.long_lived")
def _long_lived_freeze(**kwargs) -> None:
    """Each worker process, once started, loads and freezes what it keeps for life (config/long_lived.py)."""
    from config.long_lived import long_lived_freeze

    long_lived_freeze()
