"""fhir_bridge 0008 indexes the Observations stored before Observation search existed."""

import importlib

import pytest
from django.apps import apps
from django.utils import timezone

from fhir_bridge.examples import example
from fhir_bridge.models import SearchToken
from fhir_bridge.search_params import search_values
from fhir_bridge.store import resources_create

pytestmark = pytest.mark.django_db
fill = importlib.import_module("fhir_bridge.migrations.0008_fill_observation_search_tokens").fill


def test_old_observations_get_their_search_tokens(clinic):
    [row] = resources_create(contents=[example("Scen2ObsDaysPerWeek2")], clinic_id=clinic.pk, now=timezone.now())
    # As stored before: only the identifier was indexed.
    SearchToken.objects.filter(resource=row).exclude(param="identifier").delete()

    fill(apps, None)
    fill(apps, None)  # a second run adds nothing

    tokens = sorted(SearchToken.objects.filter(resource=row).values_list("param", "value"))
    assert {"patient", "category", "code", "date"} <= {p for p, _ in tokens}
    assert tokens == sorted(search_values(row.content))
