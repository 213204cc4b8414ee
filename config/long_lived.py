"""What a hub process keeps for its whole life, loaded when it starts and then left out of the garbage
collector's full passes (``gc.freeze``: https://docs.python.org/3/library/gc.html#gc.freeze).

A full collection walks every object the collector tracks. After its first requests a web worker holds about
330,000 of them, two thirds made on first use: the ZIP table a patient is placed with (the ``zipcodes``
package's 42,000 records, each a dict of lists), the views the URLconf imports, and fhir.resources' models. A
full pass over them took 260-270 ms every few hundred Bundles: 0.45 ms of each Bundle's intake on average, and
a quarter-second stall for the requests that met it. Loaded first and frozen, a full pass walks only what the
requests made since: 3-5 ms (bench/README.md, "Garbage collection")."""

import gc


def long_lived_freeze() -> None:
    """Load what the process would load on first use, collect the start's garbage, and freeze every object
    alive now: never collected, never walked again. Call once at the end of a process's start (config/wsgi.py,
    and each Celery worker process, config/celery.py); objects made after it are collected as usual."""
    from django.urls import get_resolver

    from fhir_bridge.fhir import fhir_models_load
    from network.geo import zip_centroids_load

    get_resolver().url_patterns  # noqa: B018 - imports every view and what it imports
    zip_centroids_load()
    fhir_models_load()
    gc.collect()
    gc.freeze()
