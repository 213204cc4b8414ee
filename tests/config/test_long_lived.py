"""A process loads what it keeps for life at start and freezes it out of the collector's full passes
(config/long_lived.py)."""

import gc

from config.long_lived import long_lived_freeze
from network import geo


def test_a_process_start_loads_what_it_keeps_and_freezes_everything_alive():
    gc.unfreeze()
    try:
        long_lived_freeze()
        assert geo._zip_centroids.cache_info().currsize == 1  # the ZIP table, built now, not at the first patient
        assert gc.get_freeze_count() > 100_000
        assert len(gc.get_objects()) < 5_000  # what the collector still walks: only what was made since
    finally:
        gc.unfreeze()
