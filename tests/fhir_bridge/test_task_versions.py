"""Each referral change stores the referral Task's next version, its history row and its search tokens: the tokens
index exactly the current content (only those that changed are rewritten), the history keeps every version before
it as it was, and a writer that lost the compare-and-set leaves nothing behind."""

import datetime as dt
import threading

import pytest
from django.conf import settings
from django.db import connections, transaction

from fhir_bridge.models import ResourceVersion, SearchToken, StoredResource
from fhir_bridge.search_params import search_values, search_values_changed
from fhir_bridge.store import VersionConflict, resource_update
from referrals.models import BusinessStatus, Clinic, ReferralNote, ReferralStatus
from referrals.services import NoteFacts, ReferralFacts, referral_create, referral_update

TASK = {
    "resourceType": "Task",
    "id": "t1",
    "status": "requested",
    "intent": "order",
    "identifier": [{"system": "http://ehr.example/ids", "value": "T-1"}, {"value": "bare"}],
    "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}],
             "text": "Fulfil the  exercise referral"},
    "businessStatus": {"coding": [{"system": "http://hub.example/bs", "code": "received", "display": "Received"}]},
    "focus": {"reference": "ServiceRequest/sr-1"},
    "for": {"reference": "https://ehr.example/fhir/Patient/p-1"},
    "owner": {"reference": "Organization/hub"},
}
OBSERVATION = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "82290-8"}]},
    "subject": {"reference": "Patient/p-1"},
    "effectiveDateTime": "2026-11-01",
}


def _set_difference(old: dict, new: dict):
    old_pairs, new_pairs = search_values(old), search_values(new)
    return [p for p in old_pairs if p not in new_pairs], [p for p in new_pairs if p not in old_pairs]


@pytest.mark.parametrize(
    "old, new",
    [
        (TASK, TASK),
        (TASK, {**TASK, "status": "accepted"}),
        (TASK, {**TASK, "businessStatus": {"text": "Offered to Dr A, 2 km away"}}),
        (TASK, {**TASK, "owner": {"reference": "PractitionerRole/pr-9", "display": "Dr A"}}),
        (TASK, {**TASK, "identifier": [{"system": "http://ehr.example/ids", "value": "T-2"}]}),
        (TASK, {k: v for k, v in TASK.items() if k not in ("businessStatus", "identifier")}),
        ({k: v for k, v in TASK.items() if k != "owner"}, TASK),
        (TASK, {**TASK, "note": [{"text": "not searched"}], "lastModified": "2026-11-30T00:00:00Z"}),
        (OBSERVATION, {**OBSERVATION, "effectiveDateTime": "2026-11-02"}),
        (OBSERVATION, {k: v for k, v in OBSERVATION.items() if k != "effectiveDateTime"}
         | {"effectivePeriod": {"start": "2026-11-01"}}),
        (OBSERVATION, {k: v for k, v in OBSERVATION.items() if k != "effectiveDateTime"}
         | {"effectivePeriod": {"start": "2026-11-03"}}),
    ],
)
def test_the_tokens_changed_are_the_difference_of_both_versions_tokens(old, new):
    assert search_values_changed(old, new) == _set_difference(old, new)


@pytest.fixture
def referral(db, clinic):
    with transaction.atomic():
        return referral_create(
            clinic=clinic,
            actor="test",
            facts=ReferralFacts(patient_name="Rosa Martinez", patient_postal_code="10001",
                                requester_reference="Practitioner/dr-lopez"),
        )


def _task(referral) -> StoredResource:
    return StoredResource.objects.get(referral=referral, resource_type="Task")


def _tokens(task: StoredResource) -> list[tuple[str, str]]:
    return sorted(SearchToken.objects.filter(resource=task).values_list("param", "value"))


def test_every_change_stores_one_version_its_history_and_exactly_its_tokens(referral):
    at = dt.datetime(2026, 11, 1, 9, tzinfo=dt.UTC)
    steps = [
        dict(status=ReferralStatus.REQUESTED, business_status=BusinessStatus.ROUTING),
        dict(status=ReferralStatus.REQUESTED, business_status_text="Offered to Dr A (2 km, speaks Spanish)"),
        dict(status=ReferralStatus.REQUESTED,
             notes=[NoteFacts(author_reference="Practitioner/dr-lopez", author_display="Dr Lopez",
                              text="Call after 5 pm", time=at)]),
        dict(status=ReferralStatus.ACCEPTED, business_status=BusinessStatus.ACCEPTED),
        dict(status=ReferralStatus.IN_PROGRESS),
        dict(status=ReferralStatus.ON_HOLD, reason="Travelling until December"),
        dict(status=ReferralStatus.CANCELLED, reason="Moved away"),
    ]
    contents = [_task(referral).content]
    for step in steps:
        with transaction.atomic():
            referral_update(referral=referral, actor="test", **step)
        task = _task(referral)
        contents.append(task.content)
        assert _tokens(task) == sorted(search_values(task.content))
        assert task.version_id == len(contents)

    assert contents[-1]["status"] == "cancelled"
    assert contents[-1]["statusReason"] == {"text": "Moved away"}
    assert contents[-1]["note"] == [{"time": "2026-11-01T09:00:00.000Z", "text": "Call after 5 pm",
                                     "authorReference": {"reference": "Practitioner/dr-lopez",
                                                         "display": "Dr Lopez"}}]
    history = ResourceVersion.objects.filter(resource=task).order_by("version_id")
    assert [(v.version_id, v.method, v.content) for v in history] == [
        (n + 1, "POST" if n == 0 else "PUT", content) for n, content in enumerate(contents[:-1])
    ]
    assert [v.content["meta"]["versionId"] for v in history] == [str(n) for n in range(1, len(contents))]


def test_the_notes_are_rendered_in_time_then_entry_order(referral):
    at = dt.datetime(2026, 11, 1, 9, tzinfo=dt.UTC)
    with transaction.atomic():
        referral_update(referral=referral, status=referral.status, actor="test", notes=[
            NoteFacts(author_reference="", author_display="Hub", text=text, time=time)
            for text, time in (("second", at), ("third", at), ("first", at - dt.timedelta(minutes=1)))
        ])
    assert ReferralNote.objects.filter(referral=referral).count() == 3
    assert [n["text"] for n in _task(referral).content["note"]] == ["first", "second", "third"]


def test_a_writer_that_lost_the_version_writes_nothing(referral):
    stale = _task(referral)
    with transaction.atomic():
        referral_update(referral=referral, status=referral.status, actor="test", business_status_text="moved on")
    tokens, versions = _tokens(_task(referral)), ResourceVersion.objects.count()
    with transaction.atomic():  # committed: what the refused write left, if anything, would stay
        with pytest.raises(VersionConflict):
            resource_update(resource=stale, content={**stale.content, "status": "accepted"},
                            now=dt.datetime.now(dt.UTC))
    task = _task(referral)
    assert (task.version_id, task.content["businessStatus"]["text"]) == (2, "moved on")
    assert (_tokens(task), ResourceVersion.objects.count()) == (tokens, versions)


@pytest.mark.postgres
@pytest.mark.skipif(not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
                    reason="needs PostgreSQL's concurrent writers (set DATABASE_URL)")
@pytest.mark.django_db(transaction=True)
def test_a_writer_that_waited_for_a_newer_version_writes_nothing():
    """The second writer's statement waits on the first's lock, then finds the row at a newer version: it writes
    no history row and no token (on PostgreSQL the version's writes are one statement, store._VersionWrite)."""
    clinic = Clinic.objects.create(name="Race Clinic", slug="race-versions")
    with transaction.atomic():
        referral = referral_create(clinic=clinic, actor="test", facts=ReferralFacts(
            patient_name="Rosa Martinez", patient_postal_code="10001", requester_reference="Practitioner/dr-lopez"))
    stale = _task(referral)
    wrote, release = threading.Event(), threading.Event()

    def first():
        try:
            with transaction.atomic():
                resource_update(resource=_task(referral), content={**stale.content, "status": "accepted"},
                                now=dt.datetime.now(dt.UTC))
                wrote.set()
                release.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=first)
    thread.start()
    assert wrote.wait(10)
    threading.Timer(0.5, release.set).start()  # while the second writer waits on the lock
    with transaction.atomic():  # committed: what the refused write left, if anything, would stay
        with pytest.raises(VersionConflict):
            resource_update(resource=stale, content={**stale.content, "status": "cancelled"},
                            now=dt.datetime.now(dt.UTC))
    thread.join(10)

    task = _task(referral)
    assert (task.version_id, task.content["status"]) == (2, "accepted")
    assert list(ResourceVersion.objects.filter(resource=task).values_list("version_id", flat=True)) == [1]
    assert _tokens(task) == sorted(search_values(task.content))
