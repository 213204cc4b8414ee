"""A provider's own system over FHIR (the PA IG's Light Service Provider): registered to its network
organization, it sees only its offers and cases, reads the least PHI before it accepts, answers offers and moves
its cases with If-Match, and posts its cases' Observations. The Task cases of pa-workflow section 6 that concern
a service provider are marked "IG 6.n"."""

import copy
import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction

from fhir_bridge.codes import AGE_BAND_EXTENSION, POSTAL_AREA_EXTENSION
from fhir_bridge.examples import example, scenario2_bundle
from fhir_bridge.models import EhrClient, StoredResource
from fhir_bridge.provider_fhir import age_band, postal_area
from fhir_bridge.smart_clients import ehr_client_register
from fhir_bridge.smart_keys import generate_private_key, public_jwk
from fhir_bridge.smart_scopes import PROVIDER_SCOPES
from notifications.models import FollowUp
from referrals.models import Offer, OfferStatus, Referral, ReferralEvent, ReferralStatus
from referrals.offers import referral_route_manually
from tests.conftest import fhir_client_for, json_of
from tests.factories import ALL_SCOPES, EhrClientFactory
from tests.network.factories import OrganizationFactory, RoleFactory, SiteFactory, credential_give
from tests.referrals.cases import received_at

pytestmark = pytest.mark.django_db

SPRINGFIELD = (39.7990, -89.6440)
SCOPES = " ".join(PROVIDER_SCOPES)


@pytest.fixture
def fit4life(db):
    return OrganizationFactory(fhir_id="fit4life", name="Fit 4 Life")


@pytest.fixture
def lopez(fit4life):
    site = SiteFactory(organization=fit4life, state="IL", latitude=SPRINGFIELD[0], longitude=SPRINGFIELD[1])
    role = RoleFactory(site=site, fhir_id="lopez")
    credential_give(role.professional, "acsm-cep")
    return role


@pytest.fixture
def provider(fit4life):
    """Fit 4 Life's own system, as a FHIR client with the default provider scopes."""
    client = EhrClientFactory(clinic=None, organization=fit4life, scopes=SCOPES)
    return fhir_client_for(client, SCOPES)


@pytest.fixture
def other_provider(db):
    organization = OrganizationFactory(fhir_id="get-fit", name="Get Fit")
    return fhir_client_for(EhrClientFactory(clinic=None, organization=organization, scopes=SCOPES), SCOPES)


def _referral(fhir, identifier="prov-1") -> tuple[Referral, dict]:
    response = fhir.post("", scenario2_bundle(identifier=identifier))
    assert response.status_code == 200, response.content
    task = next(e["resource"] for e in json_of(response)["entry"] if e["resource"]["resourceType"] == "Task")
    return Referral.objects.get(pk=StoredResource.objects.get(resource_type="Task", fhir_id=task["id"]).referral_id), task


@pytest.fixture
def offered(fhir, lopez):
    """The clinic's Scenario 2 referral (Nancy Johansson), offered to Lopez at Fit 4 Life by a coordinator."""
    referral, task = _referral(fhir)
    outcome = referral_route_manually(referral=referral, role=lopez, admin="coordinator", override_reason="test")
    return {"referral": referral, "task": task, "offer": outcome.offer, "offer_task": f"offer-{outcome.offer.pk}"}


def _read(client, path) -> tuple[dict, str]:
    response = client.get(path)
    assert response.status_code == 200, response.content
    return json_of(response), response.get("ETag")


def _put(client, task: dict, etag: str | None, **changes):
    body = copy.deepcopy(task)
    body.pop("meta", None)
    for name, value in changes.items():
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return client.put(f"Task/{task['id']}", body, headers={"If-Match": etag} if etag else None)


def _accept(provider, offered) -> dict:
    task, etag = _read(provider, f"Task/{offered['offer_task']}")
    response = _put(provider, task, etag, status="accepted")
    assert response.status_code == 200, response.content
    return json_of(response)


def _diagnostics(response) -> str:
    return " ".join(issue["diagnostics"] for issue in json_of(response)["issue"])


# --- Registration ------------------------------------------------------------------------------------------


def test_a_client_is_registered_to_exactly_one_side(fit4life, clinic):
    jwks = {"keys": [public_jwk(generate_private_key("EC"), "ec-1")]}
    client = ehr_client_register(name="Fit 4 Life system", organization=fit4life, jwks=jwks, scopes=list(PROVIDER_SCOPES))
    assert client.is_provider and client.clinic_id is None and client.organization == fit4life
    for sides in ({}, {"clinic": clinic, "organization": fit4life}):
        with pytest.raises(ValidationError, match="exactly one side"):
            ehr_client_register(name="Both or neither", jwks=jwks, scopes=["system/Task.rs"], **sides)
    with pytest.raises(IntegrityError), transaction.atomic():  # the database holds the line too
        EhrClient.objects.create(name="Neither", jwks=jwks)


def test_register_command_gives_an_organizations_client_the_provider_scopes(fit4life, tmp_path, capsys):
    jwks = tmp_path / "jwks.json"
    call_command("ehr_client_token", key=str(tmp_path / "key.pem"), new_key="EC", stdout=jwks.open("w"))
    call_command("register_ehr_client", name="Fit 4 Life system", organization="fit4life", jwks=str(jwks))
    printed = capsys.readouterr().out
    client_id = printed.splitlines()[0]
    # the token command it prints asks for the provider's scopes, not an EHR's (which would grant next to nothing)
    assert f"--request --scope '{' '.join(PROVIDER_SCOPES)}'" in printed
    client = EhrClient.objects.get(client_id=client_id)
    assert client.organization == fit4life and client.clinic is None
    assert client.allowed_scopes == list(PROVIDER_SCOPES)
    assert "system/Task.rus" in client.allowed_scopes and not any(s.startswith("system/Task.c") for s in client.allowed_scopes)
    with pytest.raises(CommandError, match="No network organization has the id 'nowhere'"):
        call_command("register_ehr_client", name="X", organization="nowhere", jwks=str(jwks))
    with pytest.raises(CommandError, match="not allowed with argument --clinic"):
        call_command("register_ehr_client", name="X", organization="fit4life", clinic="riverside", jwks=str(jwks))


def test_age_band_and_postal_area_keep_only_the_coarse_facts():
    today = dt.date(2026, 11, 29)
    assert age_band("1960-05-15", today) == (60, 69)
    assert age_band("1960-12-15", today) == (60, 69)  # 65, not yet 66
    assert age_band("1966-11-30", today) == (50, 59)  # 60 tomorrow, 59 today
    assert age_band("1930", today) == (90, None)  # Safe Harbor: every age over 89 is one group
    assert age_band("", today) is None and age_band("not-a-date", today) is None
    assert postal_area("62701") == "627" and postal_area("62701-1234") == "627"
    assert postal_area("K1A 0B1") == "" and postal_area("") == ""


# --- Before acceptance: the least PHI ---------------------------------------------------------------------


def test_owner_search_returns_the_offer_with_a_redacted_patient_and_request(provider, offered):
    """IG 6.15: Task?owner=...&status=requested&_include=Task:patient&_include=Task:focus."""
    response = provider.get(
        "Task?owner=PractitionerRole/lopez&status=requested&_include=Task:patient&_include=Task:focus"
    )
    assert response.status_code == 200
    bundle = json_of(response)
    matches = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "match"]
    included = {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "include"}
    assert [t["id"] for t in matches] == [offered["offer_task"]]
    assert matches[0]["for"] == {"reference": offered["task"]["for"]["reference"]}  # no display naming her
    patient, request = included["Patient"], included["ServiceRequest"]
    assert f"Patient/{patient['id']}" == offered["task"]["for"]["reference"]
    assert f"ServiceRequest/{request['id']}" == offered["task"]["focus"]["reference"]
    assert patient["meta"]["security"][0]["code"] == "REDACTED"
    assert set(patient) == {"resourceType", "id", "meta", "extension"}
    bands = {e["url"]: e for e in patient["extension"]}
    assert bands[AGE_BAND_EXTENSION]["valueRange"]["low"]["value"] == 60  # born 1960-05-15
    assert bands[POSTAL_AREA_EXTENSION]["valueString"] == "627"  # of 62701
    # The conditions as codes (the ServiceRequest's reasonCode, then its Condition's), nothing written around them.
    assert request["reasonCode"][0] == {"coding": [{"system": "http://snomed.info/sct", "code": "38341003", "display": "Hypertension"}]}
    assert all(set(concept) == {"coding"} for concept in request["reasonCode"])
    assert request["subject"] == {"reference": offered["task"]["for"]["reference"]}
    assert not {"supportingInfo", "requester", "note", "reasonReference", "authoredOn"} & set(request)


def test_a_provider_sees_only_its_own_offers(provider, other_provider, offered):
    assert json_of(other_provider.get("Task"))["total"] == 0
    assert other_provider.get(f"Task/{offered['offer_task']}").status_code == 404
    assert other_provider.get(offered["task"]["for"]["reference"]).status_code == 404
    # Fit 4 Life sees its offer, but not the referral Task behind it until it accepts.
    assert [e["resource"]["id"] for e in json_of(provider.get("Task"))["entry"]] == [offered["offer_task"]]
    assert provider.get(f"Task/{offered['task']['id']}").status_code == 404
    assert provider.get(f"Task?part-of=Task/{offered['task']['id']}&_include=Task:part-of").status_code == 200
    assert provider.get(f"Task/{offered['task']['id']}/_history").status_code == 404


def test_reading_the_offered_patient_gives_the_redacted_one(provider, offered):
    patient, _ = _read(provider, offered["task"]["for"]["reference"])
    assert patient["meta"]["security"][0]["code"] == "REDACTED" and "name" not in patient
    assert provider.get(f"{offered['task']['for']['reference']}/_history").status_code == 404
    assert json_of(provider.get("Patient"))["total"] == 0  # nothing of hers is searchable


def test_a_provider_cannot_send_referrals_whatever_its_scopes(fit4life, offered):
    provider = fhir_client_for(EhrClientFactory(clinic=None, organization=fit4life, scopes=ALL_SCOPES), ALL_SCOPES)
    response = provider.post("", scenario2_bundle(identifier="from-provider"))
    assert response.status_code == 403 and "clinic's EHR" in _diagnostics(response)
    task = example("Scen2TaskFit4LifeV2")
    assert provider.post("Task", task).status_code == 403
    assert provider.post("Patient", example("Scen2PatientJohansson")).status_code == 403
    assert provider.post("Subscription", example("Scen2SubscriptionEhr")).status_code == 403
    # The audit trail of its own accesses has no clinic; it is not one a provider reads (nor the subscriptions).
    for path in ("AuditEvent", "AuditEvent/1", "Subscription", "Subscription/x"):
        assert provider.get(path).status_code == 403, path
    assert Referral.objects.count() == 1


# --- Answering the offer ------------------------------------------------------------------------------------


def test_accepting_the_offer_accepts_the_referral_and_opens_the_full_record(provider, fhir, offered):
    """IG 6.9: requested → accepted succeeds."""
    task = _accept(provider, offered)
    assert task["status"] == "accepted" and task["meta"]["versionId"] == "2"
    offer = Offer.objects.get(pk=offered["offer"].pk)
    assert offer.status == OfferStatus.ACCEPTED
    referral = Referral.objects.get(pk=offered["referral"].pk)
    assert referral.status == ReferralStatus.ACCEPTED
    assert referral.events.filter(to_status="accepted").get().actor.startswith("provider-client:")
    # Now the full referral: the referral Task, her Patient as the clinic sent it, the request.
    patient, _ = _read(provider, offered["task"]["for"]["reference"])
    assert patient["name"][0]["family"] == "Johansson" and "security" not in patient.get("meta", {})
    referral_task, _ = _read(provider, f"Task/{offered['task']['id']}")
    assert referral_task["status"] == "accepted"
    bundle = json_of(provider.get(f"Task?_id={offered['task']['id']}&_include=Task:patient"))
    [included] = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "include"]
    assert included["birthDate"] == "1960-05-15"
    # The clinic's EHR follows it in its own Task.
    assert json_of(fhir.get(f"Task/{offered['task']['id']}"))["status"] == "accepted"


def test_rejecting_needs_a_reason_and_routes_on(provider, offered):
    """IG 6.5 / 6.9: rejected without statusReason is refused; with one it succeeds."""
    task, etag = _read(provider, f"Task/{offered['offer_task']}")
    response = _put(provider, task, etag, status="rejected")
    assert response.status_code == 422 and "pa-taskrm-1" in _diagnostics(response)
    response = _put(provider, task, etag, status="rejected", statusReason={"text": "No capacity this month"})
    assert response.status_code == 200, response.content
    offer = Offer.objects.get(pk=offered["offer"].pk)
    assert (offer.status, offer.decline_reason) == (OfferStatus.REJECTED, "No capacity this month")
    # Its answered offer stays its own to read; the case never becomes visible.
    assert json_of(provider.get(f"Task/{offered['offer_task']}"))["status"] == "rejected"
    assert provider.get(f"Task/{offered['task']['id']}").status_code == 404


def test_accepting_with_a_status_reason_is_refused(provider, offered):
    """IG 6.6: a statusReason is not permitted with accepted."""
    task, etag = _read(provider, f"Task/{offered['offer_task']}")
    response = _put(provider, task, etag, status="accepted", statusReason={"text": "Happy to"})
    assert response.status_code == 422
    assert Offer.objects.get(pk=offered["offer"].pk).status == OfferStatus.REQUESTED


def test_an_update_needs_a_current_if_match(provider, offered):
    task, etag = _read(provider, f"Task/{offered['offer_task']}")
    response = _put(provider, task, None, status="accepted")
    assert response.status_code == 428
    response = _put(provider, task, 'W/"7"', status="accepted")
    assert response.status_code == 412
    assert Offer.objects.get(pk=offered["offer"].pk).status == OfferStatus.REQUESTED


def test_statuses_outside_pa_task_status_are_refused(provider, offered):
    """IG 6.4: received and ready are not PA Task statuses."""
    task, etag = _read(provider, f"Task/{offered['offer_task']}")
    for status in ("received", "ready"):
        assert _put(provider, task, etag, status=status).status_code == 422


def test_an_offer_task_moves_only_to_accepted_or_rejected(provider, offered):
    task, etag = _read(provider, f"Task/{offered['offer_task']}")
    response = _put(provider, task, etag, status="in-progress")
    assert response.status_code == 409
    assert "'requested' → 'in-progress'" in _diagnostics(response)
    accepted = _accept(provider, offered)
    response = _put(provider, accepted, f'W/"{accepted["meta"]["versionId"]}"', status="completed")
    assert response.status_code == 409
    assert "'accepted' → 'completed'" in _diagnostics(response) and "referral Task" in _diagnostics(response)


def test_a_provider_may_not_rewrite_the_task(provider, offered):
    task, etag = _read(provider, f"Task/{offered['offer_task']}")
    response = _put(provider, task, etag, status="accepted", owner={"reference": "PractitionerRole/someone-else"})
    assert response.status_code == 422
    assert "Task.owner" in [e for i in json_of(response)["issue"] for e in i.get("expression", [])]


def test_an_offer_withdrawn_by_the_clinic_stays_in_the_owner_search(provider, fhir, offered):
    """IG 6.13 and 6.12: a Task that ended (the clinic withdrew the referral) is still returned by the owner search,
    and the provider cannot reopen it."""
    referral_task, etag = _read(fhir, f"Task/{offered['task']['id']}")
    response = _put(fhir, referral_task, etag, status="entered-in-error")
    assert response.status_code == 200, response.content
    [task] = [e["resource"] for e in json_of(provider.get("Task?owner=PractitionerRole/lopez"))["entry"]]
    assert task["status"] == "cancelled"
    response = _put(provider, task, f'W/"{task["meta"]["versionId"]}"', status="accepted", statusReason=None)
    assert response.status_code == 409 and "'cancelled' → 'accepted'" in _diagnostics(response)


# --- Running the case on the referral Task -------------------------------------------------------------------


def _move(provider, task_id, status, reason=None) -> object:
    task, etag = _read(provider, f"Task/{task_id}")
    return _put(provider, task, etag, status=status, statusReason={"text": reason} if reason else None)


def test_a_case_goes_through_the_pa_state_machine(provider, offered):
    """IG 6.11: in-progress ⇄ on-hold (with a reason), and on-hold that will not resume goes to failed."""
    _accept(provider, offered)
    task_id = offered["task"]["id"]
    for status, reason in (("in-progress", None), ("on-hold", "Knee injury"), ("in-progress", None),
                           ("on-hold", "Moved away"), ("failed", "Did not come back")):
        response = _move(provider, task_id, status, reason)
        assert response.status_code == 200, (status, response.content)
        assert json_of(response)["status"] == status
        referral = Referral.objects.get(pk=offered["referral"].pk)
        assert (referral.status, referral.status_reason) == (status, reason or "")
    versions = json_of(provider.get(f"Task/{task_id}/_history"))["entry"]
    assert [v["resource"]["status"] for v in versions][:6] == [
        "failed", "on-hold", "in-progress", "on-hold", "in-progress", "accepted"
    ]
    # Through the web app's case services: one status event each, naming its step as the web app's do.
    steps = ReferralEvent.objects.filter(
        referral=offered["referral"], kind=ReferralEvent.Kind.STATUS_CHANGED, detail__has_key="case"
    ).order_by("id")
    assert [e.detail["case"] for e in steps] == ["start", "hold", "resume", "hold", "fail"]
    assert {e.actor for e in steps} == {f"provider-client:{EhrClient.objects.get(organization__isnull=False).client_id}"}


def test_accepted_to_completed_succeeds(provider, offered):
    """IG 6.9: accepted → completed, a heavy-line transition."""
    _accept(provider, offered)
    response = _move(provider, offered["task"]["id"], "completed")
    assert response.status_code == 200 and json_of(response)["status"] == "completed"
    # Completed at once (the provider reads back what it wrote), and the discharge report follows: the follow-up
    # engine drafts it for the closed case.
    referral = Referral.objects.get(pk=offered["referral"].pk)
    assert referral.status == "completed"
    assert ReferralEvent.objects.filter(referral=referral, detail__case="complete").count() == 1
    assert FollowUp.objects.filter(kind="report-due", key=f"report-due:{referral.pk}:closed").exists()


def test_a_final_task_is_never_left(provider, offered):
    """IG 6.8: completed → in-progress (or any move out of a terminal status) is refused; the Task stays."""
    _accept(provider, offered)
    assert _move(provider, offered["task"]["id"], "completed").status_code == 200
    response = _move(provider, offered["task"]["id"], "in-progress")
    assert response.status_code == 409
    assert "'completed' → 'in-progress'" in _diagnostics(response)
    assert Referral.objects.get(pk=offered["referral"].pk).status == ReferralStatus.COMPLETED


def test_a_case_never_returns_to_requested(provider, offered):
    """IG 6.10."""
    _accept(provider, offered)
    response = _move(provider, offered["task"]["id"], "requested")
    assert response.status_code == 409 and "'accepted' → 'requested'" in _diagnostics(response)


def test_status_reasons_are_required_exactly_where_pa_says(provider, offered):
    """IG 6.5 and 6.6 on the referral Task."""
    _accept(provider, offered)
    task_id = offered["task"]["id"]
    assert _move(provider, task_id, "in-progress", "Because").status_code == 422
    assert _move(provider, task_id, "in-progress").status_code == 200
    assert _move(provider, task_id, "on-hold").status_code == 422
    assert _move(provider, task_id, "completed", "All done").status_code == 422
    assert Referral.objects.get(pk=offered["referral"].pk).status == ReferralStatus.IN_PROGRESS


def test_cancelling_is_the_clinics_and_a_cancelled_case_stays_cancelled(provider, fhir, offered):
    """IG 6.12: the clinic cancels; the provider reads it and cannot move it on."""
    _accept(provider, offered)
    response = _move(provider, offered["task"]["id"], "cancelled", "We stop")
    assert response.status_code == 409
    referral_task, etag = _read(fhir, f"Task/{offered['task']['id']}")
    assert _put(fhir, referral_task, etag, status="cancelled", statusReason={"text": "Patient moved"}).status_code == 200
    assert json_of(provider.get(f"Task/{offered['task']['id']}"))["status"] == "cancelled"
    response = _move(provider, offered["task"]["id"], "in-progress")
    assert response.status_code == 409 and "'cancelled' → 'in-progress'" in _diagnostics(response)


# --- Observations of a case ---------------------------------------------------------------------------------


def _pavs(patient_ref: str, request_ref: str, value=3, minutes_per_day=30) -> dict:
    """The IG's days-per-week answer, with the minutes per day the check-in needs beside it as a component."""
    observation = example("Scen2ObsDaysPerWeek2")
    observation.pop("id", None)
    observation["subject"] = {"reference": patient_ref}
    observation["basedOn"] = [{"reference": request_ref}]
    observation.pop("performer", None)
    observation["valueQuantity"]["value"] = value
    observation["component"] = [{
        "code": {"coding": [{"system": "http://loinc.org", "code": "68516-4"}]},
        "valueQuantity": {"value": minutes_per_day, "unit": "min/d", "system": "http://unitsofmeasure.org",
                          "code": "min/d"},
    }]
    return observation


def test_a_provider_posts_pavs_for_its_case_and_the_clinic_reads_it(provider, fhir, offered):
    patient_ref, request_ref = offered["task"]["for"]["reference"], offered["task"]["focus"]["reference"]
    response = provider.post("Observation", _pavs(patient_ref, request_ref))
    assert response.status_code == 422  # not its case yet
    _accept(provider, offered)
    # The PA IG's example check-in is dated 2023-03-15: the referral came in before it.
    received_at(offered["referral"], dt.datetime(2023, 3, 1, tzinfo=dt.UTC))
    response = provider.post("Observation", _pavs(patient_ref, request_ref, value=4))
    assert response.status_code == 201, response.content
    stored = StoredResource.objects.get(resource_type="Observation", fhir_id=json_of(response)["id"])
    assert stored.referral_id == offered["referral"].pk
    assert offered["referral"].checkins.get().days_per_week == 4  # a check-in, as the web form records it
    assert json_of(fhir.get(f"Observation/{stored.fhir_id}"))["valueQuantity"]["value"] == 4
    assert json_of(provider.get(f"Observation/{stored.fhir_id}"))["valueQuantity"]["value"] == 4


def test_a_pavs_observation_that_breaks_its_profile_is_refused(provider, offered):
    """IG 6.17: 89555-7 must be in d/wk."""
    _accept(provider, offered)
    observation = _pavs(offered["task"]["for"]["reference"], offered["task"]["focus"]["reference"])
    observation["valueQuantity"].update(unit="min/wk", code="min/wk")
    stored_before = StoredResource.objects.filter(resource_type="Observation").count()
    response = provider.post("Observation", observation)
    assert response.status_code == 422
    assert StoredResource.objects.filter(resource_type="Observation").count() == stored_before


def test_an_observation_for_someone_elses_case_is_refused(provider, other_provider, offered):
    _accept(provider, offered)
    observation = _pavs(offered["task"]["for"]["reference"], offered["task"]["focus"]["reference"])
    response = other_provider.post("Observation", observation)
    assert response.status_code == 422
    observation["subject"] = {"reference": "Patient/someone-else"}
    response = provider.post("Observation", observation)
    assert response.status_code == 422 and "Observation.subject" in str(json_of(response))


def test_notes_on_the_case_need_an_author_and_a_time(provider, offered):
    """IG 6.7: a note without authorReference or time is refused; a whole one is added, in a version of its own."""
    _accept(provider, offered)
    task, etag = _read(provider, f"Task/{offered['task']['id']}")
    notes = task.get("note", [])
    response = _put(provider, task, etag, note=notes + [{"text": "First call made", "time": "2026-11-29T10:00:00Z"}])
    assert response.status_code == 422
    note = {"text": "First call made", "time": "2026-11-29T10:00:00Z", "authorReference": {"reference": "PractitionerRole/lopez"}}
    response = _put(provider, task, etag, note=notes + [note])
    assert response.status_code == 200, response.content
    assert "First call made" in [n["text"] for n in json_of(response)["note"]]
    assert offered["referral"].notes.filter(text="First call made", author_reference="PractitionerRole/lopez").exists()
    response = _put(provider, json_of(response), response["ETag"], status="in-progress", note=notes + [note, dict(note, text="Again")])
    assert response.status_code == 422  # a status change and a note: one at a time


def test_a_case_entered_in_error_is_still_found(provider, fhir, offered):
    """IG 6.13: the clinic marks the referral entered-in-error; the provider's search still returns it."""
    _accept(provider, offered)
    referral_task, etag = _read(fhir, f"Task/{offered['task']['id']}")
    assert _put(fhir, referral_task, etag, status="entered-in-error").status_code == 200
    found = json_of(provider.get("Task?status=entered-in-error"))["entry"]
    assert [e["resource"]["id"] for e in found] == [offered["task"]["id"]]


def test_a_provider_system_gets_a_token_with_its_key_and_reads_its_offers(fit4life, offered, ec_key, post_token, client):
    from fhir_bridge.smart_keys import client_assertion
    from tests.fhir_bridge.conftest import TEST_TOKEN_URL

    registered = ehr_client_register(
        name="Fit 4 Life system", organization=fit4life, jwks={"keys": [public_jwk(ec_key, "ec-1")]},
        scopes=list(PROVIDER_SCOPES),
    )
    assertion = client_assertion(key=ec_key, kid="ec-1", client_id=registered.client_id, token_url=TEST_TOKEN_URL)
    response = post_token(assertion, scope="system/Task.rus system/Task.c system/Patient.rs")
    assert response.status_code == 200, response.content
    assert response.json()["scope"] == "system/Task.rus system/Patient.rs"  # never Task create
    token = response.json()["access_token"]
    response = client.get("/fhir/Task", HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_ACCEPT="application/fhir+json")
    assert [e["resource"]["id"] for e in json_of(response)["entry"]] == [offered["offer_task"]]


@pytest.mark.parametrize(
    "change",
    [
        {"status": None},
        {"status": 7},
        {"statusReason": "busy"},
        {"note": "hello"},
        {"for": "Patient/x"},
        {"identifier": [{"system": 1}]},
        {"status": "rejected", "statusReason": {"text": ""}},
        {"status": "rejected", "statusReason": {"text": "   "}},
    ],
)
def test_bad_updates_from_a_provider_are_4xx(provider, offered, change):
    task, etag = _read(provider, f"Task/{offered['offer_task']}")
    response = _put(provider, task, etag, **{k: v for k, v in change.items()})
    assert 400 <= response.status_code < 500, response.content
    assert json_of(response)["resourceType"] == "OperationOutcome"
    assert Offer.objects.get(pk=offered["offer"].pk).status == OfferStatus.REQUESTED


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Observation"},
        {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "basedOn": "ServiceRequest/1"},
        {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient"}},
        {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": 5}},
        {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "basedOn": [{"reference": "Task/offer-99999999999999999999"}]},
    ],
)
def test_bad_observations_from_a_provider_are_4xx(provider, offered, body):
    _accept(provider, offered)
    response = provider.post("Observation", body)
    assert 400 <= response.status_code < 500, response.content
    assert json_of(response)["resourceType"] == "OperationOutcome"


def test_owner_may_be_the_organization_itself(provider, other_provider, offered):
    """A provider's system works for its whole organization: owner=Organization/<its id> finds its roles' offers."""
    for owner in ("Organization/fit4life", "http://example.org/fhir/Organization/fit4life", "fit4life"):
        bundle = json_of(provider.get(f"Task?owner={owner}&status=requested&_include=Task:patient"))
        assert [e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "match"] == [offered["offer_task"]]
        assert "PractitionerRole%2Flopez" in bundle["link"][0]["url"]  # the self link says what was applied
    assert json_of(provider.get("Task?owner=Organization/get-fit"))["total"] == 0
    assert json_of(other_provider.get("Task?owner=Organization/fit4life"))["total"] == 0
