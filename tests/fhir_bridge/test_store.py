import datetime as dt

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from fhir_bridge.models import InboundMessage, ResourceIdentifier, SearchToken, StoredResource
from fhir_bridge.store import new_id, resources_create, rows_insert

pytestmark = pytest.mark.django_db

# What a JSON or array literal must escape, and what is not ASCII.
AWKWARD = ['say "hi"', "back\\slash", "it's", "{a,b}", "NULL", "", "café", "日本語", "🏃 run", "tab\there", "line\nbreak"]


def _stored(clinic):
    return resources_create(
        contents=[{"resourceType": "Patient", "id": new_id()}], clinic_id=clinic.pk, now=timezone.now()
    )[0]


def test_rows_insert_stores_each_value_as_given(clinic):
    resource = _stored(clinic)
    rows = [(resource.pk, None if i % 2 else clinic.pk, "Patient", f"t-{i}", v) for i, v in enumerate(AWKWARD)]
    rows_insert(SearchToken, ("resource_id", "clinic_id", "resource_type", "param", "value"), rows)
    stored = SearchToken.objects.filter(resource=resource, param__startswith="t-").values_list(
        "resource_id", "clinic_id", "resource_type", "param", "value"
    )
    assert {row[3]: row for row in stored} == {row[3]: row for row in rows}


def test_rows_insert_stores_one_long_text_and_a_datetime(clinic, ehr_client):
    body = "x" * 100_000 + " é \\ \" 🏃"
    received = dt.datetime(2026, 11, 30, 3, 40, 12, 345678, tzinfo=dt.UTC)
    rows_insert(
        InboundMessage,
        ("client_id", "interaction", "body", "received_at", "referral_id"),
        [(ehr_client.pk, "transaction", body, connection.ops.adapt_datetimefield_value(received), None)],
    )
    message = InboundMessage.objects.get()
    assert (message.client_id, message.interaction, message.body, message.received_at, message.referral_id) == (
        ehr_client.pk, "transaction", body, received, None
    )


def test_rows_insert_raises_integrity_error_on_a_taken_key(clinic, ehr_client):
    resource = _stored(clinic)
    row = (ehr_client.pk, "Task", "urn:ehr", "task-1", resource.pk)
    columns = ("client_id", "resource_type", "system", "value", "resource_id")
    rows_insert(ResourceIdentifier, columns, [row])
    with pytest.raises(IntegrityError), transaction.atomic():
        rows_insert(ResourceIdentifier, columns, [row, (ehr_client.pk, "Task", "urn:ehr", "task-2", resource.pk)])
    assert list(ResourceIdentifier.objects.values_list("value", flat=True)) == ["task-1"]


def test_resources_create_gives_each_row_its_own_id_and_content(clinic):
    contents = [{"resourceType": "Observation", "id": new_id(), "status": "final", "note": [{"text": t}]}
                for t in AWKWARD]
    now = timezone.now()
    rows = resources_create(contents=contents, clinic_id=clinic.pk, now=now)
    assert [r.fhir_id for r in rows] == [c["id"] for c in contents]
    for row, sent in zip(rows, contents, strict=True):
        stored = StoredResource.objects.get(pk=row.pk)
        assert (stored.fhir_id, stored.version_id, stored.last_updated, stored.clinic_id) == (
            sent["id"], 1, now, clinic.pk
        )
        assert stored.content == row.content
        assert stored.content["note"] == sent["note"] and stored.content["meta"]["versionId"] == "1"
        assert not row._state.adding  # saved: a later save() updates it
