"""One table of what is served: the SMART configuration, the CapabilityStatement and the router agree, every
advertised interaction answers, and a client registered with the default scopes can send a PA referral Bundle."""

import datetime as dt
import json
from urllib.parse import urlencode

import pytest
from django.core.management import call_command

from fhir_bridge.examples import example, scenario2_bundle
from fhir_bridge.models import EhrClient, StoredResource
from fhir_bridge.smart_keys import client_assertion, generate_private_key, public_jwks, token_request_form
from fhir_bridge.smart_scopes import DEFAULT_SCOPES
from network.models import Organization
from referrals.models import ReportKind
from referrals.reports import report_draft, report_send_unsigned
from tests.conftest import FhirClient, json_of
from tests.fhir_bridge.conftest import TEST_TOKEN_URL
from referrals.records import adverse_event_record
from tests.network.factories import OrganizationFactory, RoleFactory
from tests.referrals.cases import THERAPIST, aware, case_make
from tests.referrals.report_cases import START, accepted_referral

pytestmark = pytest.mark.django_db

# Types the PA IG or FHIR names that the hub does not serve: the router must refuse them (404), and neither
# discovery document may list them.
UNSERVED = ("Encounter", "Procedure", "DocumentReference", "Communication")
_WRITES = {"create", "update"}
# Served, but granted only by a scope naming it (route_table's by_default=False): the audit trail.
NOT_BY_DEFAULT = {"AuditEvent"}


def _smart_types(configuration: dict) -> dict[str, set[str]]:
    """Type → the permissions its advertised scopes name (``system/*`` left out)."""
    types: dict[str, set[str]] = {}
    for scope in configuration["scopes_supported"]:
        resource_type, _, permission = scope.removeprefix("system/").partition(".")
        if resource_type != "*":
            types.setdefault(resource_type, set()).add(permission)
    return types


def _capability_types(statement: dict) -> dict[str, set[str]]:
    return {r["type"]: {i["code"] for i in r["interaction"]} for r in statement["rest"][0]["resource"]}


def _router_serves(fhir: FhirClient, resource_type: str) -> bool:
    """Whether the router knows the type: an unknown id of a served type is 'not-found', while a type it does
    not serve is 'not-supported'."""
    response = fhir.get(f"{resource_type}/no-such-id")
    if resource_type in NOT_BY_DEFAULT:  # served, but the default scopes do not reach it
        return response.status_code == 403
    assert response.status_code == 404, (resource_type, response.content)
    return json_of(response)["issue"][0]["code"] != "not-supported"


def test_the_smart_configuration_the_capability_statement_and_the_router_serve_the_same_types(fhir):
    anonymous = FhirClient(None)
    smart = _smart_types(json_of(anonymous.get(".well-known/smart-configuration")))
    capability = _capability_types(json_of(anonymous.get("metadata")))
    candidates = set(smart) | set(capability) | set(UNSERVED)
    router = {t for t in candidates if _router_serves(fhir, t)}

    assert set(smart) == set(capability) == router
    assert {"CarePlan", "RelatedPerson", "PractitionerRole"} <= router
    assert router.isdisjoint(UNSERVED)
    for resource_type, interactions in capability.items():
        # Write scopes exactly where something is written, read scopes where something is read.
        assert ("write" in smart[resource_type]) == bool(interactions & _WRITES), resource_type
        assert ("read" in smart[resource_type]) == bool(interactions - _WRITES), resource_type


def test_every_type_served_can_be_granted_and_is_in_the_default_scopes():
    capability = _capability_types(json_of(FhirClient(None).get("metadata")))
    defaults = dict(scope.removeprefix("system/").split(".") for scope in DEFAULT_SCOPES)
    assert set(defaults) == set(capability) - NOT_BY_DEFAULT
    for resource_type, interactions in capability.items():
        if resource_type in NOT_BY_DEFAULT:
            continue
        assert defaults[resource_type] == ("cruds" if interactions & _WRITES else "rs"), resource_type


# --- every advertised interaction answers --------------------------------------------------------------------

_MINIMAL = {
    "Consent": {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "treatment"}]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
    },
    "CarePlan": {"resourceType": "CarePlan", "status": "active", "intent": "plan"},
    "RelatedPerson": {"resourceType": "RelatedPerson"},
    # The PA IG's own, to a receiver on the loopback (no handshake is sent: the test's transaction never commits),
    # ending later than its own end, which has passed (a subscription that would be off at once is refused).
    "Subscription": {**example("Scen2SubscriptionEhr"), "end": "2099-01-01T00:00:00Z", "channel": {
        **example("Scen2SubscriptionEhr")["channel"], "endpoint": "http://127.0.0.1:9/hook"}},
}
_EXAMPLES = {
    "Patient": "Scen2PatientJohansson",
    "Condition": "Scen2ConditionLackOfExercise",
    "Observation": "Scen2ObsDaysPerWeek2",
    "Goal": "Scen1GoalV1",
    "Practitioner": "Scen2PractitionerMatthews",
    "PractitionerRole": "Scen2RoleLopez",
    "Organization": "Scen2OrgGoodCardio",
}


def _sample_body(resource_type: str, ids: dict[str, str]) -> dict:
    """A resource of ``resource_type`` to create, pointing at what was created before it."""
    patient = {"reference": f"Patient/{ids['Patient']}"} if "Patient" in ids else None
    if resource_type in _EXAMPLES:
        return example(_EXAMPLES[resource_type])
    if resource_type == "ServiceRequest":
        body = example("Scen2ServiceRequest")
        body["subject"] = patient
        return body
    if resource_type == "Task":
        body = example("Scen2TaskFit4LifeV2")
        body.update(status="requested", owner={"reference": "Organization/hub"})
        # Its own ServiceRequest, contained: the one created before is already a referral, and a Task for it is
        # answered as that referral's (200, not 201).
        service_request = example("Scen2ServiceRequest") | {"id": "sr", "subject": patient}
        body["contained"] = [service_request]
        body["focus"] = {"reference": "#sr"}
        body["for"] = patient
        for element in ("statusReason", "output", "identifier"):
            body.pop(element, None)
        return body
    body = dict(_MINIMAL[resource_type])
    if resource_type == "Subscription":
        return body
    body["patient" if resource_type != "CarePlan" else "subject"] = patient
    return body


def _adverse_event_make(clinic):
    case = case_make(clinic)
    return adverse_event_record(
        referral=case, occurred_at=aware(2026, 11, 20, 15), kind="fall", severity="mild", actor=THERAPIST,
        expected_version=case.version,
    )


def _report_sent(clinic) -> dict[str, str]:
    """A progress report sent for a case of ``clinic``: the ids of its DiagnosticReport and Binary."""
    referral = accepted_referral(clinic)
    report = report_draft(referral=referral, period_start=START, period_end=START + dt.timedelta(days=27),
                          kind=ReportKind.PROGRESS)
    report = report_send_unsigned(report=report)
    return {"DiagnosticReport": str(report.public_id), "Binary": f"{report.public_id}-pdf"}


def test_every_advertised_interaction_answers_a_sample_request(fhir, ehr_client):
    RoleFactory(fhir_id="role-sample")
    OrganizationFactory(fhir_id="ymca-sample", kind=Organization.Kind.YMCA)
    network_rows = {"Location": "net-site", "HealthcareService": "ymca-sample"}
    statement = json_of(FhirClient(None).get("metadata"))
    # Create first, in an order where what a resource points at exists: Patient, then the referral.
    order = ["Patient", "ServiceRequest", "Task"]
    resources = sorted(
        (r for r in statement["rest"][0]["resource"] if r["type"] not in NOT_BY_DEFAULT),  # tests/audit/
        key=lambda r: order.index(r["type"]) if r["type"] in order else -1,
    )
    ids: dict[str, str] = {}
    answered = []
    for resource in resources:
        resource_type = resource["type"]
        interactions = [i["code"] for i in resource["interaction"]]
        if "create" in interactions:
            created = fhir.post(resource_type, _sample_body(resource_type, ids))
            assert created.status_code == 201, (resource_type, created.content)
            ids[resource_type] = json_of(created)["id"]
            answered.append((resource_type, "create"))
        elif resource_type == "AdverseEvent":  # rendered from a case's record, never created over FHIR
            ids[resource_type] = f"adverse-event-{_adverse_event_make(ehr_client.clinic).pk}"
        elif resource_type in ("DiagnosticReport", "Binary"):  # rendered by the hub when a report is sent
            if resource_type not in ids:
                ids.update(_report_sent(ehr_client.clinic))
        else:
            rows = json_of(fhir.get(resource_type))["entry"]
            ids[resource_type] = next(
                e["resource"]["id"] for e in rows if e["resource"]["id"].startswith(network_rows[resource_type])
            )
        path = f"{resource_type}/{ids[resource_type]}"
        requests = {
            "read": lambda: fhir.get(path),
            "vread": lambda: fhir.get(f"{path}/_history/1"),
            "history-instance": lambda: fhir.get(f"{path}/_history"),
            "search-type": lambda: fhir.get(resource_type),
            "update": lambda: _add_a_note(fhir, path) if resource_type == "Task" else _change_reason(fhir, path),
            "delete": lambda: fhir.delete(path),
        }
        for interaction in sorted(interactions, key=lambda i: i == "delete"):  # what it deletes is read first
            if interaction == "create":
                continue
            response = requests[interaction]()
            assert response.status_code == 200, (resource_type, interaction, response.content)
            answered.append((resource_type, interaction))
    advertised = {(r["type"], i["code"]) for r in statement["rest"][0]["resource"] for i in r["interaction"]
                  if r["type"] not in NOT_BY_DEFAULT}
    assert set(answered) == advertised


def _add_a_note(fhir: FhirClient, path: str):
    current = fhir.get(path)
    task = json_of(current)
    note = {
        "authorReference": {"reference": "Practitioner/Scen2PractitionerMatthews"},
        "time": "2026-11-29T10:00:00Z",
        "text": "Patient asks for mornings",
    }
    task["note"] = [*task.get("note", []), note]
    return fhir.put(path, task, headers={"If-Match": current["ETag"]})


def _change_reason(fhir: FhirClient, path: str):
    current = fhir.get(path)
    return fhir.put(path, {**json_of(current), "reason": "Referral updates, all of them"},
                    headers={"If-Match": current["ETag"]})


# --- a newcomer with the defaults ------------------------------------------------------------------------------


def _scenario2_with_requester() -> dict:
    """PA Scenario 2 as the IG's referral Bundle carries it: the requester PractitionerRole (Dr. Lopez at Good
    Health Cardiology) and its Organization ride along, joined to the rest by their urn:uuid fullUrls."""
    bundle = scenario2_bundle(identifier="scen2-requester")
    role, organization = example("Scen2RoleLopez"), example("Scen2OrgGoodCardio")
    role_urn = "urn:uuid:6a1c7c0e-55f1-4c55-9a3b-4d1c8a1b0e01"
    organization_urn = "urn:uuid:6a1c7c0e-55f1-4c55-9a3b-4d1c8a1b0e02"
    role["organization"] = {"reference": organization_urn, "display": "Good Health Cardiology"}
    for resource in (role, organization):
        resource.pop("id")
    by_type = {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}
    by_type["ServiceRequest"]["requester"] = {"reference": role_urn, "display": "Dr. Lopez"}
    by_type["Task"]["requester"] = {"reference": organization_urn, "display": "Good Health Cardiology"}
    bundle["entry"][:0] = [
        {"fullUrl": url, "resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
        for url, resource in ((organization_urn, organization), (role_urn, role))
    ]
    return bundle


def test_a_client_registered_with_the_default_scopes_sends_the_pa_scenario_2_bundle(client, tmp_path, capsys):
    key = generate_private_key("EC")
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_text(json.dumps(public_jwks(key, "ec-1")))
    call_command("register_ehr_client", name="Good Health EHR", clinic="good-health", jwks=str(jwks_path),
                 create_clinic=True)
    client_id = capsys.readouterr().out.splitlines()[0]
    registered = EhrClient.objects.get(client_id=client_id)
    assert registered.allowed_scopes == list(DEFAULT_SCOPES)

    assertion = client_assertion(key=key, kid="ec-1", client_id=client_id, token_url=TEST_TOKEN_URL)
    token_response = client.post(
        "/auth/token", data=urlencode(token_request_form(assertion=assertion, scopes=list(DEFAULT_SCOPES))),
        content_type="application/x-www-form-urlencoded",
    )
    assert token_response.status_code == 200, token_response.content
    token = token_response.json()
    assert "system/PractitionerRole.cruds" in token["scope"].split()

    bundle = _scenario2_with_requester()
    response = FhirClient(token["access_token"]).post("", bundle)

    assert response.status_code == 200, response.content
    entries = json_of(response)["entry"]
    assert [e["response"]["status"] for e in entries] == ["201 Created"] * len(bundle["entry"])
    assert [e["resource"]["resourceType"] for e in entries] == [
        e["resource"]["resourceType"] for e in bundle["entry"]
    ]
    stored = {
        row.resource_type: row
        for row in StoredResource.objects.filter(clinic=registered.clinic, referral__isnull=False)
    }
    assert set(stored) == {e["resource"]["resourceType"] for e in bundle["entry"]}
    role = stored["PractitionerRole"]
    assert stored["ServiceRequest"].content["requester"]["reference"] == f"PractitionerRole/{role.fhir_id}"
    assert role.content["organization"]["reference"] == f"Organization/{stored['Organization'].fhir_id}"
