"""Idempotency under load: 20 identical conditional creates at the same moment make one referral (PostgreSQL)."""

import pytest
from django.db import connection

from fhir_bridge.examples import scenario2_bundle
from fhir_bridge.models import StoredResource
from referrals.models import Referral
from tests.conftest import fhir_client_for, fire_at_once, json_of
from tests.factories import EhrClientFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL's concurrent writers (set DATABASE_URL)")


def test_twenty_identical_conditional_creates_make_one_referral():
    client = EhrClientFactory()
    bundle = scenario2_bundle(identifier="race-1")
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Task":
            entry["request"]["ifNoneExist"] = "identifier=urn:ehr:task|race-1"

    responses = fire_at_once(20, lambda _: fhir_client_for(client).post("", bundle))

    assert [r.status_code for r in responses] == [200] * 20
    assert Referral.objects.count() == 1
    assert StoredResource.objects.filter(resource_type="Task").count() == 1
    task_locations = {
        next(e["response"]["location"] for e in json_of(r)["entry"] if e["resource"]["resourceType"] == "Task")
        for r in responses
    }
    assert len(task_locations) == 1  # every caller is told about the same Task


def test_twenty_task_creates_under_one_if_none_exist_key_make_one_task():
    # The query names an identifier the Task does not carry, so only the conditional-create key guards the race.
    client = EhrClientFactory()
    seed = json_of(fhir_client_for(client).post("", scenario2_bundle(identifier="seed")))
    seed_task = next(e["resource"] for e in seed["entry"] if e["resource"]["resourceType"] == "Task")
    seed_sr = next(e["resource"] for e in seed["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
    # A ServiceRequest of its own, contained and without a business identifier: a Task for the seed's, which is
    # already a referral, would be answered as that referral's Task whatever the key.
    service_request = {k: v for k, v in seed_sr.items() if k not in ("id", "meta", "identifier")} | {"id": "sr"}
    task = {
        "resourceType": "Task", "status": "requested", "intent": "order",
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
        "focus": {"reference": "#sr"}, "for": seed_task["for"], "authoredOn": "2026-11-01",
        "requester": {"reference": "Organization/Scen2OrgGoodCardio"}, "owner": {"reference": "Organization/hub"},
        "contained": [service_request],
    }
    headers = {"If-None-Exist": "identifier=urn:ehr:orders|order-77"}

    responses = fire_at_once(20, lambda _: fhir_client_for(client).post("Task", task, headers=headers))

    assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
    assert len({json_of(r)["id"] for r in responses}) == 1
    assert Referral.objects.count() == 2  # the seed and exactly one more
