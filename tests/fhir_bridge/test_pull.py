"""Notify and pull against a real local EHR (tests/fhir_bridge/ehr_server.py): the hub fetches a referral from the
EHR's FHIR server with a SMART backend token (kept while it lives), searches the patient's PA Conditions and PAVS
Observations, maps them as intake maps a pushed referral, locks the referral only for the write, retries a server
that is down, gives up after the configured hours, and refuses bad data with a reason the physician reads. The Task
keeps the EHR's references; its includes and offers give the hub's copies."""

import datetime as dt
import time

import pytest
from django.core.cache import cache
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from audit.models import Access
from fhir_bridge import pull
from fhir_bridge.examples import example
from fhir_bridge.hub_client import hub_client_jwks
from fhir_bridge.models import StoredResource
from fhir_bridge.smart_scopes import PROVIDER_SCOPES
from notifications.followups import followup_run
from notifications.models import FollowUp
from referrals.models import BusinessStatus, Referral, ReferralStatus
from referrals.offers import referral_route_manually
from referrals.services import referral_update
from tests.conftest import fhir_client_for, issue_paths, json_of
from tests.factories import EhrClientFactory
from tests.fhir_bridge.ehr_server import FakeEhr
from tests.network.factories import OrganizationFactory, RoleFactory, SiteFactory, credential_give

pytestmark = pytest.mark.django_db

HUB_AT_EHR = "exercise-hub-at-good-health"


@pytest.fixture
def hub_key(settings, tmp_path):
    settings.HUB_CLIENT_KEY_FILE = tmp_path / "hub-client-key.pem"
    settings.HUB_OUTBOUND_ALLOW = ["http://127.0.0.1"]  # the EHR is on the loopback, over plain HTTP
    settings.HUB_PULL_GIVE_UP_HOURS = 24
    cache.clear()  # the hub's tokens for the EHRs of earlier tests
    yield
    cache.clear()


@pytest.fixture
def ehr(hub_key):
    server = FakeEhr(jwks=hub_client_jwks(), hub_client_id=HUB_AT_EHR).start()
    yield server
    server.stop()


@pytest.fixture
def pull_client(clinic, ehr):
    return EhrClientFactory(clinic=clinic, fhir_base_url=ehr.base, token_url=ehr.token_url, hub_client_id=HUB_AT_EHR)


def _task(ehr: FakeEhr, service_request: str = "Scen2ServiceRequest", identifier: str = "pull-1") -> dict:
    """The PA IG's Scenario 2 Task, sent to the hub to route, pointing at the ServiceRequest and Patient that stay
    on the EHR's server."""
    task = example("Scen2TaskFit4LifeV2")
    task.pop("id")
    task["status"] = "requested"
    task["owner"] = {"reference": "Organization/hub"}
    task["focus"] = {"reference": f"{ehr.base}/ServiceRequest/{service_request}"}
    task["for"] = {"reference": f"{ehr.base}/Patient/Scen2PatientJohansson", "display": "Nancy Johansson"}
    task["identifier"] = [{"system": "urn:ehr:task", "value": identifier}]
    return task


def _notify(pull_client, ehr, **task) -> Referral:
    response = fhir_client_for(pull_client).post("Task", _task(ehr, **task))
    assert response.status_code == 201, response.content
    assert json_of(response)["businessStatus"]["coding"][0]["code"] == "waiting-for-data"
    return Referral.objects.order_by("-pk").first()


def _second_service_request(ehr: FakeEhr) -> str:
    """A second referral of Ms Johansson's on the EHR (another ServiceRequest, for another program)."""
    second = dict(ehr.resources["ServiceRequest/Scen2ServiceRequest"], id="Scen2ServiceRequestB")
    ehr.resources["ServiceRequest/Scen2ServiceRequestB"] = second
    return second["id"]


def _token_requests(ehr: FakeEhr) -> int:
    return sum(1 for method, path, _ in ehr.requests if (method, path) == ("POST", "/auth/token"))


def _pull_row(referral: Referral) -> FollowUp:
    return FollowUp.objects.get(kind="pull-referral", referral_id=referral.pk, state="pending")


def test_the_referral_waits_for_its_data_then_is_fetched_mapped_and_stored(pull_client, ehr):
    referral = _notify(pull_client, ehr)
    assert referral.business_status == BusinessStatus.WAITING_FOR_DATA
    assert referral.patient_name == ""
    assert not FollowUp.objects.filter(kind="route-referral").exists()  # nothing to route yet
    row = _pull_row(referral)
    assert row.due_at <= timezone.now()

    assert followup_run(followup_id=row.pk) == "fetched 5 resources; routing"

    referral.refresh_from_db()
    assert referral.business_status == BusinessStatus.RECEIVED
    assert referral.status == ReferralStatus.REQUESTED
    # The same mapping as a pushed referral: the patient, the service, the reason Condition's code, the PAVS baseline.
    assert referral.patient_name == "Nancy Johansson"
    assert referral.service_code == "409063005"
    assert any(c.get("code") == "Z72.3" for c in referral.facts.condition_codes)
    assert sorted(m["code"] for m in referral.facts.pavs_baseline) == ["68516-4", "89555-7"]
    stored = {r.resource_type: r for r in StoredResource.objects.filter(referral=referral)}
    assert sorted(r.resource_type for r in StoredResource.objects.filter(referral=referral)) == [
        "Condition", "Observation", "Observation", "Patient", "ServiceRequest", "Task"]
    # The hub's copies point at each other; what was not fetched points back at the EHR.
    service_request = stored["ServiceRequest"].content
    assert service_request["subject"]["reference"] == stored["Patient"].reference
    assert service_request["requester"]["reference"] == f"{ehr.base}/PractitionerRole/Scen2RoleLopez"
    task = stored["Task"].content
    assert task["focus"]["reference"] == f"{ehr.base}/ServiceRequest/Scen2ServiceRequest"  # the Task as sent
    assert task["businessStatus"]["coding"][0]["code"] == "received"
    assert stored["Task"].version_id == 2
    # Routing follows, with its safety net.
    assert FollowUp.objects.filter(kind="route-referral", referral_id=referral.pk).exists()
    # The EHR verified the hub's signed assertion, and every read was made with the token it gave.
    assert ehr.assertion_errors == []
    assert [(m, p) for m, p, s in ehr.requests if s == 200][0] == ("POST", "/auth/token")
    # One audit row per read and per search: who (the EHR's client), what (the URL), and the answer. The searches
    # of the IG's fetch workflow found only what the ServiceRequest named already.
    rows = list(Access.objects.filter(channel=Access.Channel.PULL).order_by("id"))
    assert [(r.interaction, r.entity_type, r.status, r.method) for r in rows] == [
        ("read", "ServiceRequest", 200, "GET"), ("read", "Patient", 200, "GET"), ("read", "Condition", 200, "GET"),
        ("read", "Observation", 200, "GET"), ("read", "Observation", 200, "GET"),
        ("search", "Condition", 200, "GET"), ("search", "Observation", 200, "GET")]
    assert rows[-1].path == (f"{ehr.base}/Observation?patient=Scen2PatientJohansson&category="
                             "http%3A%2F%2Fhl7.org%2Ffhir%2Fus%2Fphysical-activity%2FCodeSystem%2Fpa-temporary-codes"
                             "%7CPhysicalActivity&_count=50")
    assert {r.agent_client for r in rows} == {pull_client.client_id}
    assert rows[0].path == f"{ehr.base}/ServiceRequest/Scen2ServiceRequest"
    assert rows[0].entity_id == "Scen2ServiceRequest" and rows[0].clinic_id == referral.clinic_id


def test_the_clinic_is_told_at_once_that_the_referral_waits_for_data(pull_client, ehr,
                                                                      django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        _notify(pull_client, ehr)

    # Its creation fans out to the clinic's subscriptions now, not at the pull's outcome (maybe hours away).
    assert any(getattr(callback, "hub_fan_out", False) for callback in callbacks)


def test_a_second_run_of_the_same_row_fetches_nothing_again(pull_client, ehr):
    referral = _notify(pull_client, ehr)
    row = _pull_row(referral)
    followup_run(followup_id=row.pk)
    asked = len(ehr.requests)

    assert followup_run(followup_id=row.pk) == "not pending"
    assert len(ehr.requests) == asked
    assert StoredResource.objects.filter(referral=referral, resource_type="ServiceRequest").count() == 1


def test_an_ehr_that_is_down_is_tried_again_with_backoff_and_fetched_when_it_is_back(pull_client, ehr):
    referral = _notify(pull_client, ehr)
    ehr.stop()
    first = _pull_row(referral)
    now = timezone.now()

    outcome = followup_run(followup_id=first.pk, now=now)

    assert outcome.startswith("retry: its token endpoint answered connect")
    referral.refresh_from_db()
    assert referral.business_status == BusinessStatus.WAITING_FOR_DATA
    second = _pull_row(referral)
    assert second.key == f"pull-referral:{referral.pk}:2"
    assert now < second.due_at <= now + dt.timedelta(seconds=30)  # HUB_RETRY_BASE_SECONDS, less jitter
    assert not Access.objects.filter(channel=Access.Channel.PULL).exists()  # no PHI was read

    ehr.start()  # back, on the same port
    assert followup_run(followup_id=second.pk, now=second.due_at) == "fetched 5 resources; routing"
    referral.refresh_from_db()
    assert referral.business_status == BusinessStatus.RECEIVED


def test_after_24_hours_of_failures_the_referral_is_rejected_with_the_reason(pull_client, ehr):
    referral = _notify(pull_client, ehr)
    ehr.stop()
    give_up_at = referral.created_at + dt.timedelta(hours=24)

    attempts = 0
    while (row := FollowUp.objects.filter(kind="pull-referral", state="pending").first()) is not None:
        assert row.due_at <= give_up_at  # the last try is at the limit, never after it
        followup_run(followup_id=row.pk, now=max(row.due_at, timezone.now()))
        attempts += 1
        assert attempts < 40

    referral.refresh_from_db()
    assert referral.status == ReferralStatus.REJECTED
    assert "for 24 h" in referral.status_reason and "connect" in referral.status_reason
    assert attempts >= 10  # backoff, not a tight loop: 30 s doubling up to 6 h
    task = StoredResource.objects.get(referral=referral, resource_type="Task").content
    assert task["status"] == "rejected"
    assert task["statusReason"]["text"] == referral.status_reason
    assert StoredResource.objects.filter(referral=referral).count() == 1  # the Task alone


def test_bad_data_from_the_ehr_is_rejected_with_each_problem_and_nothing_fetched_is_kept(pull_client, ehr):
    ehr.resources["ServiceRequest/Scen2ServiceRequest"]["status"] = "bogus"
    ehr.resources["Patient/Scen2PatientJohansson"]["gender"] = "robot"
    referral = _notify(pull_client, ehr)

    outcome = followup_run(followup_id=_pull_row(referral).pk)

    assert outcome.startswith("rejected: ")
    referral.refresh_from_db()
    assert referral.status == ReferralStatus.REJECTED
    assert referral.status_reason.startswith("The referral's data on the clinic's FHIR server breaks the PA profiles")
    # In an OperationOutcome's words: each element at fault, and what is wrong with it.
    assert "ServiceRequest/Scen2ServiceRequest.status" in referral.status_reason
    assert "Patient/Scen2PatientJohansson.gender" in referral.status_reason
    assert referral.patient_name == "" and referral.facts.pavs_baseline == []
    assert [r.resource_type for r in StoredResource.objects.filter(referral=referral)] == ["Task"]
    assert Access.objects.filter(channel=Access.Channel.PULL, status=200).count() == 7  # it was read, all the same
    assert not FollowUp.objects.filter(kind__in=["route-referral", "pull-referral"], state="pending").exists()


def test_a_rejection_reason_ends_with_one_period(pull_client, ehr):
    # pa-sr-1's diagnostics is a sentence of its own; the reason said "...or a reasonReference.." (issue 12).
    service_request = ehr.resources["ServiceRequest/Scen2ServiceRequest"]
    service_request.pop("reasonCode", None)
    service_request.pop("reasonReference", None)
    referral = _notify(pull_client, ehr)

    followup_run(followup_id=_pull_row(referral).pk)

    referral.refresh_from_db()
    assert referral.status == ReferralStatus.REJECTED
    assert "pa-sr-1" in referral.status_reason
    assert ".." not in referral.status_reason and ".;" not in referral.status_reason
    assert referral.status_reason.endswith("reasonReference.")


def test_a_service_request_the_ehr_does_not_have_is_rejected_at_once(pull_client, ehr):
    del ehr.resources["ServiceRequest/Scen2ServiceRequest"]
    referral = _notify(pull_client, ehr)

    followup_run(followup_id=_pull_row(referral).pk)

    referral.refresh_from_db()
    assert referral.status == ReferralStatus.REJECTED
    assert "answered HTTP 404" in referral.status_reason
    assert Access.objects.get(channel=Access.Channel.PULL).status == 404


def test_an_ehr_that_refuses_the_hubs_assertion_rejects_the_referral(pull_client, ehr):
    ehr.hub_client_id = "someone-else"  # the EHR knows the hub by another id: the assertion's iss is wrong
    referral = _notify(pull_client, ehr)

    followup_run(followup_id=_pull_row(referral).pk)

    referral.refresh_from_db()
    assert referral.status == ReferralStatus.REJECTED
    assert "token endpoint answered HTTP 401" in referral.status_reason
    assert ehr.assertion_errors


def test_a_task_pointing_outside_the_registered_server_is_refused(pull_client, ehr):
    task = _task(ehr)
    task["focus"]["reference"] = "http://127.0.0.1:1/fhir/ServiceRequest/elsewhere"

    response = fhir_client_for(pull_client).post("Task", task)

    assert response.status_code == 422
    assert issue_paths(response) == ["Task.focus"]
    assert not Referral.objects.exists()
    assert not FollowUp.objects.exists()


def test_a_client_not_registered_for_pull_is_told_to_send_the_service_request(clinic, ehr):
    client = EhrClientFactory(clinic=clinic)  # no FHIR base: it only pushes

    response = fhir_client_for(client).post("Task", _task(ehr))

    assert response.status_code == 422
    assert "no FHIR server registered" in json_of(response)["issue"][0]["diagnostics"]
    assert not Referral.objects.exists()


def test_the_waiting_step_is_published_with_the_business_status_codes(fhir):
    description = json_of(fhir.get("metadata"))["description"]

    assert "waiting-for-data (Waiting for the referral's data from the clinic's FHIR server)" in description
    assert "notify and pull" in description


# --- the token, kept while it lives --------------------------------------------------------------------------


def test_pulls_from_one_ehr_share_its_token_while_it_lives(pull_client, ehr):
    first = _notify(pull_client, ehr)
    second = _notify(pull_client, ehr, service_request=_second_service_request(ehr), identifier="pull-2")

    assert followup_run(followup_id=_pull_row(first).pk) == "fetched 5 resources; routing"
    assert followup_run(followup_id=_pull_row(second).pk) == "fetched 5 resources; routing"

    assert _token_requests(ehr) == 1
    assert len(ehr.tokens) == 1 and ehr.assertion_errors == []
    assert all(status == 200 for _, _, status in ehr.requests)  # every read was made with the one token


def test_the_token_is_kept_until_shortly_before_it_expires(pull_client, ehr, monkeypatch):
    kept = []
    monkeypatch.setattr(pull.cache, "set", lambda key, value, timeout: kept.append((key, timeout)))

    followup_run(followup_id=_pull_row(_notify(pull_client, ehr)).pk)

    [(key, timeout)] = kept
    assert key.startswith(f"pull-token:{pull_client.pk}:")
    assert 260 <= timeout <= 270  # expires_in 300, less 30 s (a tenth of it), less the request's time


def test_a_token_that_lives_too_short_to_keep_is_asked_for_again(pull_client, ehr):
    ehr.token_lifetime = 1  # gone before a second pull could use it
    first = _notify(pull_client, ehr)
    second = _notify(pull_client, ehr, service_request=_second_service_request(ehr), identifier="pull-2")

    followup_run(followup_id=_pull_row(first).pk)
    followup_run(followup_id=_pull_row(second).pk)

    assert _token_requests(ehr) == 2


def test_a_token_the_ehr_refuses_is_dropped_and_a_new_one_asked_for_once(pull_client, ehr):
    first = _notify(pull_client, ehr)
    second = _notify(pull_client, ehr, service_request=_second_service_request(ehr), identifier="pull-2")
    followup_run(followup_id=_pull_row(first).pk)
    ehr.tokens.clear()  # the EHR forgets the token before its time (revoked, or the EHR restarted)

    assert followup_run(followup_id=_pull_row(second).pk) == "fetched 5 resources; routing"

    assert _token_requests(ehr) == 2
    reads = list(Access.objects.filter(channel=Access.Channel.PULL, path__endswith="/Scen2ServiceRequestB"))
    assert [r.status for r in reads] == [401, 200]  # the refused read and its retry, each audited
    # The new token is the one kept: a third pull asks for none.
    third = _notify(pull_client, ehr, identifier="pull-3")
    assert followup_run(followup_id=_pull_row(third).pk) == "fetched 5 resources; routing"
    assert _token_requests(ehr) == 2


def test_a_read_refused_with_a_new_token_too_rejects_the_referral(pull_client, ehr):
    referral = _notify(pull_client, ehr)
    refused = []

    def forget(path):  # the EHR takes no token of the hub's for reads: each one it gave is forgotten at once
        refused.append(path)
        ehr.tokens.clear()

    ehr.on_get = forget

    followup_run(followup_id=_pull_row(referral).pk)

    referral.refresh_from_db()
    assert referral.status == ReferralStatus.REJECTED
    assert "answered HTTP 401" in referral.status_reason
    assert _token_requests(ehr) == 2 and len(refused) == 2  # one new token, one retry: no loop


def test_a_fetch_that_outlasts_its_time_is_tried_again_later(pull_client, ehr, monkeypatch):
    monkeypatch.setattr(pull, "FETCH_SECONDS", 1.5)
    ehr.on_get = lambda path: time.sleep(0.4)  # five reads and two searches: 2.8 s
    referral = _notify(pull_client, ehr)

    outcome = followup_run(followup_id=_pull_row(referral).pk)

    assert outcome == "retry: the EHR took more than 1.5 s to answer the fetch's requests"
    assert 2 <= len([p for m, p, s in ehr.requests if m == "GET"]) <= 4
    referral.refresh_from_db()
    assert referral.business_status == BusinessStatus.WAITING_FOR_DATA
    assert _pull_row(referral).key == f"pull-referral:{referral.pk}:2"


# --- no lock on the referral while the EHR answers -----------------------------------------------------------


def test_a_referral_cancelled_while_its_data_was_fetched_stays_cancelled_and_keeps_none_of_it(pull_client, ehr,
                                                                                              monkeypatch):
    referral = _notify(pull_client, ehr)
    fetch = pull._fetch

    def fetch_while_the_clinic_cancels(**kwargs):
        fetched = fetch(**kwargs)
        referral_update(referral=Referral.objects.get(pk=referral.pk), status=ReferralStatus.CANCELLED,
                        reason="The patient moved away", actor="ehr-client:test")
        return fetched

    monkeypatch.setattr(pull, "_fetch", fetch_while_the_clinic_cancels)

    assert followup_run(followup_id=_pull_row(referral).pk) == "referral is cancelled; nothing fetched is kept"

    referral.refresh_from_db()
    assert referral.status == ReferralStatus.CANCELLED and referral.status_reason == "The patient moved away"
    assert [r.resource_type for r in StoredResource.objects.filter(referral=referral)] == ["Task"]
    assert Access.objects.filter(channel=Access.Channel.PULL, status=200).count() == 7  # the reads stay audited
    assert not FollowUp.objects.filter(kind="route-referral").exists()


@pytest.mark.django_db(transaction=True)
def test_the_referral_is_not_locked_while_the_ehr_answers(pull_client, ehr):
    if not connection.features.has_select_for_update_nowait:
        pytest.skip("SQLite has no row locks: this is PostgreSQL's test")
    referral = _notify(pull_client, ehr)
    tried: list[str] = []

    def lock_it_meanwhile(path):  # from the EHR's thread, with a database connection of its own
        try:
            with transaction.atomic():
                Referral.objects.select_for_update(nowait=True).filter(pk=referral.pk).exists()
            tried.append("free")
        except DatabaseError:
            tried.append("locked")
        finally:
            connection.close()

    ehr.on_get = lock_it_meanwhile

    assert followup_run(followup_id=_pull_row(referral).pk) == "fetched 5 resources; routing"

    assert len(tried) == 7 and set(tried) == {"free"}  # at every read and search, the referral was free


def _referral_locks(ehr: FakeEhr, calls: list[int]):
    """A database wrapper that notes, for each SELECT ... FOR UPDATE of the referral, how many requests the EHR
    had had by then."""
    table = Referral._meta.db_table

    def note(execute, sql, params, many, context):
        if "FOR UPDATE" in sql and f'FROM "{table}"' in sql:
            calls.append(len(ehr.requests))
        return execute(sql, params, many, context)

    return connection.execute_wrapper(note)


@pytest.mark.parametrize("missing, outcome", [(False, "fetched 5 resources; routing"), (True, "rejected: ")])
def test_the_referral_is_locked_for_the_write_after_the_fetch(pull_client, ehr, missing, outcome):
    if not connection.features.has_select_for_update:
        pytest.skip("SQLite has no row locks: this is PostgreSQL's test")
    if missing:
        del ehr.resources["Observation/Scen2ObsMinutesPerDay2"]  # the fetch fails: the referral is rejected
    referral = _notify(pull_client, ehr)
    locks: list[int] = []

    with _referral_locks(ehr, locks):
        assert followup_run(followup_id=_pull_row(referral).pk).startswith(outcome)

    # Locked once, for the write, when the EHR had answered every request.
    assert locks == [len(ehr.requests)]


# --- the searches of the IG's fetch workflow -----------------------------------------------------------------


def _pa_observation(fhir_id: str, code: str, value: int, unit: str, when: str) -> dict:
    observation = example("Scen2ObsMinutesPerDay2")
    observation["id"] = fhir_id
    observation["code"] = {"coding": [{"system": "http://loinc.org", "code": code}]}
    observation["valueQuantity"] = {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
    observation["effectiveDateTime"] = when
    observation["subject"] = {"reference": "Patient/Scen2PatientJohansson"}
    return observation


def test_the_patients_pa_conditions_and_pavs_observations_are_found_by_search(pull_client, ehr):
    # On the EHR, beside what the ServiceRequest names: another PA Condition, a later PAVS minutes-per-week, and
    # a PA Observation that is not a PAVS measure (steps a day), which the hub does not need.
    condition = dict(ehr.resources["Condition/Scen2ConditionLackOfExercise"], id="Scen2ConditionSedentary")
    ehr.resources["Condition/Scen2ConditionSedentary"] = condition
    per_week = _pa_observation("Scen2ObsMinutesPerWeek", "82290-8", 60, "min/wk", "2023-05-01T10:00:00Z")
    steps = _pa_observation("Scen2ObsSteps", "41950-7", 4000, "/d", "2023-05-01T10:00:00Z")
    ehr.resources |= {"Observation/Scen2ObsMinutesPerWeek": per_week, "Observation/Scen2ObsSteps": steps}
    referral = _notify(pull_client, ehr)

    assert followup_run(followup_id=_pull_row(referral).pk) == "fetched 7 resources; routing"

    referral.refresh_from_db()
    assert sorted(m["code"] for m in referral.facts.pavs_baseline) == ["68516-4", "82290-8", "89555-7"]
    stored = StoredResource.objects.filter(referral=referral)
    sources = {r.content["meta"]["source"] for r in stored if r.resource_type in ("Condition", "Observation")}
    assert sources == {
        f"{ehr.base}/Condition/Scen2ConditionLackOfExercise", f"{ehr.base}/Condition/Scen2ConditionSedentary",
        f"{ehr.base}/Observation/Scen2ObsDaysPerWeek2", f"{ehr.base}/Observation/Scen2ObsMinutesPerDay2",
        f"{ehr.base}/Observation/Scen2ObsMinutesPerWeek",
    }
    patient = stored.get(resource_type="Patient")
    [found] = [r for r in stored if r.content["meta"].get("source") == f"{ehr.base}/Observation/Scen2ObsMinutesPerWeek"]
    assert found.content["subject"]["reference"] == patient.reference  # the hub's copy of the patient
    asked = [path for method, path, _ in ehr.requests if "?" in path]
    assert [path.split("?")[0] for path in asked] == ["/fhir/Condition", "/fhir/Observation"]
    assert all("category=" in path and "_count=50" in path for path in asked)


def test_what_a_search_finds_that_breaks_the_pa_profiles_is_left_out_not_the_referral(pull_client, ehr):
    broken = _pa_observation("Scen2ObsOld", "82290-8", 60, "min/wk", "2019-01-01T10:00:00Z")
    del broken["status"]  # 1..1 in R4
    ehr.resources["Observation/Scen2ObsOld"] = broken
    referral = _notify(pull_client, ehr)

    outcome = followup_run(followup_id=_pull_row(referral).pk)

    assert outcome == ("fetched 5 resources; routing; left out, found by search but breaking the PA profiles: "
                       "Observation/Scen2ObsOld")
    referral.refresh_from_db()
    assert referral.business_status == BusinessStatus.RECEIVED
    assert "82290-8" not in [m["code"] for m in referral.facts.pavs_baseline]
    assert StoredResource.objects.filter(referral=referral, resource_type="Observation").count() == 2


def test_searches_follow_their_pages_up_to_the_limit(pull_client, ehr, settings):
    settings.HUB_PULL_SEARCH_COUNT = 1
    settings.HUB_PULL_SEARCH_MAX_PAGES = 2
    for n in range(3):  # three more PAVS measures than the ServiceRequest names: the third is past the limit
        fhir_id = f"Scen2ObsMinutesPerWeek{n}"
        ehr.resources[f"Observation/{fhir_id}"] = _pa_observation(fhir_id, "82290-8", 60 + n, "min/wk",
                                                                   f"2023-05-0{n + 1}T10:00:00Z")
    referral = _notify(pull_client, ehr)

    followup_run(followup_id=_pull_row(referral).pk)

    searched = [path for method, path, _ in ehr.requests if path.startswith("/fhir/Observation?")]
    assert len(searched) == 2 and "_offset=1" in searched[1]
    # Sorted by key on the EHR: Scen2ObsDaysPerWeek2 (read already) on page 1, Scen2ObsMinutesPerDay2 on page 2.
    kept = StoredResource.objects.filter(referral=referral, resource_type="Observation")
    assert sorted(r.content["meta"]["source"].rsplit("/", 1)[1] for r in kept) == [
        "Scen2ObsDaysPerWeek2", "Scen2ObsMinutesPerDay2"]


def test_search_entries_and_pages_outside_the_registered_server_are_ignored_and_audited(pull_client, ehr):
    elsewhere = "http://127.0.0.1:1/fhir"
    stranger = _pa_observation("Scen2ObsStranger", "82290-8", 999, "min/wk", "2023-05-01T10:00:00Z")
    someone_else = dict(_pa_observation("Scen2ObsOther", "82290-8", 888, "min/wk", "2023-05-01T10:00:00Z"),
                        subject={"reference": "Patient/someone-else"})
    ehr.extra_entries["Observation"] = [
        {"fullUrl": f"{elsewhere}/Observation/Scen2ObsStranger", "resource": stranger, "search": {"mode": "match"}},
        {"fullUrl": f"{ehr.base}/Observation/Scen2ObsOther", "resource": someone_else, "search": {"mode": "match"}},
    ]
    ehr.next_link = f"{elsewhere}/Observation?page=2"
    referral = _notify(pull_client, ehr)

    assert followup_run(followup_id=_pull_row(referral).pk) == "fetched 5 resources; routing"

    referral.refresh_from_db()
    assert [m["value"] for m in referral.facts.pavs_baseline if m["code"] == "82290-8"] == []
    ignored = Access.objects.filter(channel=Access.Channel.PULL, query__startswith="ignored")
    assert {(r.path, r.entity_id, r.status) for r in ignored} == {
        (f"{ehr.base}/Observation/Scen2ObsOther", "Scen2ObsOther", 200),
        (f"{elsewhere}/Observation/Scen2ObsStranger", "Scen2ObsStranger", 200),
    }
    # The next page elsewhere was not asked for: the EHR was asked one page per search, and nothing else was.
    assert [p.split("?")[0] for m, p, s in ehr.requests if "?" in p] == ["/fhir/Condition", "/fhir/Observation"]
    assert not [r for r in StoredResource.objects.all() if "Stranger" in str(r.content) or "Other" in str(r.content)]


def test_a_search_the_ehr_fails_is_tried_again_as_a_read_is(pull_client, ehr):
    referral = _notify(pull_client, ehr)
    ehr.on_get = lambda path: ehr.stop() if path.startswith("/fhir/Condition?") else None  # down after that one

    outcome = followup_run(followup_id=_pull_row(referral).pk)

    assert outcome.startswith(f"retry: GET {ehr.base}/Observation?patient=Scen2PatientJohansson&category=")
    referral.refresh_from_db()
    assert referral.business_status == BusinessStatus.WAITING_FOR_DATA
    assert [r.resource_type for r in StoredResource.objects.filter(referral=referral)] == ["Task"]


# --- what the Task says, and what its includes give ------------------------------------------------------------


def test_the_task_keeps_the_ehrs_references_and_its_includes_give_the_hubs_copies(pull_client, ehr):
    referral = _notify(pull_client, ehr)
    followup_run(followup_id=_pull_row(referral).pk)
    task = StoredResource.objects.get(referral=referral, resource_type="Task")
    copies = {r.resource_type: r for r in StoredResource.objects.filter(referral=referral)}
    fhir = fhir_client_for(pull_client)
    focus, patient = f"{ehr.base}/ServiceRequest/Scen2ServiceRequest", f"{ehr.base}/Patient/Scen2PatientJohansson"

    read = json_of(fhir.get(f"Task/{task.fhir_id}"))
    assert read["focus"] == {"reference": focus}
    assert read["for"] == {"reference": patient, "display": "Nancy Johansson"}
    # The EHR finds its Task by its own references.
    for query in (f"focus={focus}", f"patient={patient}"):
        found = json_of(fhir.get(f"Task?{query}"))
        assert [e["resource"]["id"] for e in found["entry"]] == [task.fhir_id], query
    bundle = json_of(fhir.get(f"Task?_id={task.fhir_id}&_include=Task:focus&_include=Task:patient"))
    entries = {e["resource"]["resourceType"]: e for e in bundle["entry"]}
    assert sorted(entries) == ["Patient", "ServiceRequest", "Task"]
    assert entries["ServiceRequest"]["search"]["mode"] == "include"
    assert entries["ServiceRequest"]["resource"]["id"] == copies["ServiceRequest"].fhir_id
    assert entries["ServiceRequest"]["resource"]["meta"]["source"] == focus
    assert entries["Patient"]["resource"]["id"] == copies["Patient"].fhir_id
    assert entries["Patient"]["resource"]["meta"]["source"] == patient
    # And the other way: the Task that names the EHR's ServiceRequest, from the hub's copy of it.
    back = json_of(fhir.get(f"ServiceRequest?_id={copies['ServiceRequest'].fhir_id}&_revinclude=Task:focus"))
    assert sorted(e["resource"]["resourceType"] for e in back["entry"]) == ["ServiceRequest", "Task"]


def test_a_task_still_waiting_for_its_data_includes_nothing(pull_client, ehr):
    referral = _notify(pull_client, ehr)
    task = StoredResource.objects.get(referral=referral, resource_type="Task")

    bundle = json_of(fhir_client_for(pull_client).get(f"Task?_id={task.fhir_id}&_include=Task:focus"))

    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == ["Task"]


def test_its_offers_name_the_hubs_copies_which_the_professional_can_read(pull_client, ehr):
    referral = _notify(pull_client, ehr)
    followup_run(followup_id=_pull_row(referral).pk)
    fit4life = OrganizationFactory(fhir_id="fit4life", name="Fit 4 Life")
    role = RoleFactory(site=SiteFactory(organization=fit4life, state="IL", latitude=39.799, longitude=-89.644))
    credential_give(role.professional, "acsm-cep")
    referral.refresh_from_db()
    offer = referral_route_manually(referral=referral, role=role, admin="coordinator", override_reason="test").offer
    copies = {r.resource_type: r for r in StoredResource.objects.filter(referral=referral)}
    scopes = " ".join(PROVIDER_SCOPES)
    provider = fhir_client_for(EhrClientFactory(clinic=None, organization=fit4life, scopes=scopes), scopes)

    offer_task = json_of(provider.get(f"Task/offer-{offer.pk}"))

    # Not the EHR's URLs (which the professional cannot read, and which carry the clinic's id for the patient).
    assert offer_task["focus"] == {"reference": copies["ServiceRequest"].reference}
    assert offer_task["for"] == {"reference": copies["Patient"].reference}
    assert ehr.base not in str(offer_task)
    # Before accepting, the professional reads the redacted request where the offer points.
    redacted = provider.get(copies["ServiceRequest"].reference)
    assert redacted.status_code == 200 and json_of(redacted)["id"] == copies["ServiceRequest"].fhir_id


def test_the_worker_fetches_with_no_transaction_open(pull_client, ehr, monkeypatch):
    """The worker's path (followups_run, Kind.staged): the pull-referral row is claimed in one short transaction,
    the fetch runs outside any (here: at the test's own depth of savepoints, none of followups_run's), and its
    outcome is recorded in another."""
    from django.db import connection

    from fhir_bridge import pull
    from notifications.followups import followups_run

    referral = _notify(pull_client, ehr)
    row = _pull_row(referral)
    depth = len(connection.savepoint_ids)
    seen = []
    fetch = pull.referral_pull

    def referral_pull(**kwargs):
        seen.append(len(connection.savepoint_ids))
        return fetch(**kwargs)

    monkeypatch.setattr(pull, "referral_pull", referral_pull)
    assert followups_run(followup_ids=[row.pk]) == [(row.pk, "fetched 5 resources; routing")]

    assert seen == [depth]
    row.refresh_from_db()
    assert (row.state, row.claimed_until) == ("done", None)
    referral.refresh_from_db()
    assert referral.business_status != BusinessStatus.WAITING_FOR_DATA
