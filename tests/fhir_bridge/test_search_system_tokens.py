"""``system|`` token searches (any code of a system, R4 search.html#token), which search.py answers as a range on
the stored ``system|code`` forms, and migration 0015 that dropped the ``system|`` forms stored before."""

import importlib

import pytest
from django.apps import apps
from django.db import connection

from fhir_bridge.examples import scenario2_bundle
from fhir_bridge.models import SearchToken, StoredResource
from tests.conftest import json_of

pytestmark = pytest.mark.django_db
tokens_migration = importlib.import_module("fhir_bridge.migrations.0015_fill_drop_system_only_tokens")

LOINC = "http://loinc.org"
PA_CODES = "http://hl7.org/fhir/us/physical-activity/CodeSystem/pa-temporary-codes"
IDS = "urn:test:ids"


def _open(fhir, identifier: str, *, task_identifiers: list[dict] | None = None) -> dict[str, list[dict]]:
    """A Scenario 2 referral; its stored resources by type. The days-per-week Observation gets a second LOINC
    coding, so that two of its tokens fall in one ``http://loinc.org|`` range."""
    bundle = scenario2_bundle(identifier=identifier)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Task" and task_identifiers is not None:
            resource["identifier"] = task_identifiers
        if resource["resourceType"] == "Observation" and resource["code"]["coding"][0]["code"] == "89555-7":
            resource["code"]["coding"].append({"system": LOINC, "code": "LA-TEST-1"})
    response = fhir.post("", bundle)
    assert response.status_code == 200, response.content
    out: dict[str, list[dict]] = {}
    for entry in json_of(response)["entry"]:
        out.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    return out


def _matches(fhir, path: str, **params) -> list[str]:
    """The ids of the matches, in page order, repeats kept; checks the total agrees with them."""
    response = fhir.get(path, _count="100", **params)
    assert response.status_code == 200, response.content
    bundle = json_of(response)
    ids = [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
    assert bundle["total"] == len(ids)
    return ids


def test_system_bar_finds_every_resource_with_a_code_of_that_system_once(fhir):
    a, b = _open(fhir, "sys-a"), _open(fhir, "sys-b")
    observations = sorted(o["id"] for o in a["Observation"] + b["Observation"])

    assert sorted(_matches(fhir, "Observation", code=f"{LOINC}|")) == observations
    assert sorted(_matches(fhir, "Observation", category=f"{PA_CODES}|")) == observations
    assert _matches(fhir, "Observation", code="http://loinc.org/other|") == []
    assert _matches(fhir, "Observation", code="http://loinc.or|") == []  # a prefix of the system is not it
    assert sorted(_matches(fhir, "ServiceRequest", category=f"{PA_CODES}|")) == sorted(
        r["id"] for r in a["ServiceRequest"] + b["ServiceRequest"]
    )
    assert sorted(_matches(fhir, "ServiceRequest", code="http://snomed.info/sct|")) == sorted(
        r["id"] for r in a["ServiceRequest"] + b["ServiceRequest"]
    )
    assert _matches(fhir, "ServiceRequest", identifier="urn:ehr:servicerequest|") != []
    tasks = sorted(t["id"] for t in a["Task"] + b["Task"])
    assert sorted(_matches(fhir, "Task", code="http://hl7.org/fhir/CodeSystem/task-code|")) == tasks
    assert sorted(_matches(fhir, "Task", identifier="urn:ehr:task|")) == tasks
    # Two values ORed, both ranges over the same resources: each still once.
    both = f"{LOINC}|,http://terminology.hl7.org/CodeSystem/observation-category|"
    assert sorted(_matches(fhir, "Observation", code=both.split(",")[0], category=both.split(",")[1])) == observations
    assert sorted(_matches(fhir, "Observation", category=f"{PA_CODES}|,{PA_CODES}|PhysicalActivity")) == observations
    # :not with a system is "no code of that system".
    assert _matches(fhir, "Observation", **{"code:not": f"{LOINC}|"}) == []
    assert sorted(_matches(fhir, "Observation", **{"code:not": "http://snomed.info/sct|"})) == observations


def test_system_bar_with_identifier_values_that_hold_a_bar(fhir):
    ends = _open(fhir, "bar-1", task_identifiers=[{"system": IDS, "value": "R-7|"}])["Task"][0]["id"]
    holds = _open(fhir, "bar-2", task_identifiers=[{"system": IDS, "value": "A|B"}])["Task"][0]["id"]
    _open(fhir, "bar-3", task_identifiers=[{"system": "urn:test:other", "value": "R-7"}])

    assert sorted(_matches(fhir, "Task", identifier=f"{IDS}|")) == sorted([ends, holds])
    assert _matches(fhir, "Task", identifier=f"{IDS}|R-7|") == [ends]
    assert _matches(fhir, "Task", identifier=f"{IDS}|A|B") == [holds]
    assert _matches(fhir, "Task", identifier="R-7|") == [ends]  # its bare value, stored as sent
    assert _matches(fhir, "Task", identifier="A|B") == [holds]
    assert _matches(fhir, "Task", identifier=f"{IDS}|R-7") == []  # the value is R-7|, not R-7
    assert _matches(fhir, "Task", identifier="|") == []  # no system and no code: nothing, not every code
    assert sorted(_matches(fhir, "Task", **{"identifier:not": f"{IDS}|"})) == sorted(
        set(StoredResource.objects.filter(resource_type="Task").values_list("fhir_id", flat=True)) - {ends, holds}
    )


def test_no_system_bar_token_is_stored(fhir):
    _open(fhir, "stored-1", task_identifiers=[{"system": IDS, "value": "R-7|"}])
    bar_ended = set(SearchToken.objects.filter(value__endswith="|").values_list("param", "value"))
    # The bare value and the system|value form, both ending in the value's '|'; no "system|" form.
    assert bar_ended == {("identifier", "R-7|"), ("identifier", f"{IDS}|R-7|")}


def test_migration_drops_only_the_system_bar_forms_and_its_reverse_writes_them(fhir):
    task = _open(fhir, "mig-1", task_identifiers=[{"system": IDS, "value": "R-7|"}])["Task"][0]
    row = StoredResource.objects.get(resource_type="Task", fhir_id=task["id"])
    before = set(SearchToken.objects.filter(resource=row).values_list("param", "value"))

    tokens_migration.write_system_only_tokens(apps, None)  # as stored before 0015
    with_bars = set(SearchToken.objects.filter(resource=row).values_list("param", "value"))
    assert with_bars - before == {("identifier", f"{IDS}|"), ("code", "http://hl7.org/fhir/CodeSystem/task-code|")} | {
        ("business-status", f"{c['system']}|") for c in task.get("businessStatus", {}).get("coding", [])
    }
    tokens_migration.write_system_only_tokens(apps, None)  # a second run adds nothing
    assert SearchToken.objects.filter(resource=row).count() == len(with_bars)

    tokens_migration.drop_system_only_tokens(apps, None)
    assert set(SearchToken.objects.filter(resource=row).values_list("param", "value")) == before
    assert ("identifier", "R-7|") in before  # the bare value that ends in '|' stays
    assert _matches(fhir, "Task", identifier=f"{IDS}|") == [task["id"]]


def test_token_values_are_in_code_point_order_on_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite's default BINARY collation is code-point order")
    # Migration 0016 sets it outside the model state: an AlterField of value that leaves COLLATE out undoes it.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT collation_name FROM information_schema.columns "
            "WHERE table_name = 'fhir_bridge_searchtoken' AND column_name = 'value'"
        )
        assert cursor.fetchone() == ("C",)
