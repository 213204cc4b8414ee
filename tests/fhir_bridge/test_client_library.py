"""fhir-py (fhirpy on PyPI), a FHIR client EHR integrators use, against the hub served on a real port
(pytest-django's live_server): read, search with _include and paging, history, conditional create, a transaction
and an update with If-Match, each through the library's own calls where it has one."""

import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome as FhirpyOutcome

from fhir_bridge.examples import scenario2_bundle
from fhir_bridge.models import StoredResource
from fhir_bridge.smart_tokens import access_token_encode
from referrals.models import Referral
from tests.factories import ALL_SCOPES, ClinicFactory, EhrClientFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def hub(live_server):
    ehr = EhrClientFactory(clinic=ClinicFactory(slug="fhirpy-clinic"))
    token, _ = access_token_encode(client=ehr, scopes=ALL_SCOPES.split())
    url = f"{live_server.url}/fhir"

    def client(**headers) -> SyncFHIRClient:
        return SyncFHIRClient(url, authorization=f"Bearer {token}", extra_headers=headers or None)

    return client


def test_fhirpy_completes_what_an_ehr_does(hub):
    client = hub()

    # A transaction: the referral Bundle, posted to the base.
    response = client.execute("", method="post", data=scenario2_bundle(identifier="fhirpy-1"))
    assert response["type"] == "transaction-response"
    task_ref = next(e["response"]["location"] for e in response["entry"] if e["resource"]["resourceType"] == "Task")
    task_id = task_ref.split("/")[1]
    for n in range(2, 5):
        client.execute("", method="post", data=scenario2_bundle(identifier=f"fhirpy-{n}"))

    # Read.
    task = client.reference("Task", task_id).to_resource()
    assert task["status"] == "requested" and task["meta"]["versionId"] == "1"

    # Search with _include, paged through the next links (fhir-py follows them).
    searchset = client.resources("Task").search(**{"part-of:missing": "true"}).include("Task", "patient").limit(2)
    tasks = searchset.fetch_all()
    assert len(tasks) == 4 and len({t.id for t in tasks}) == 4
    first_page = searchset.fetch_raw()
    assert {e["search"]["mode"] for e in first_page["entry"]} == {"match", "include"}
    assert sum(1 for e in first_page["entry"] if e["search"]["mode"] == "match") == 2

    # Conditional create, the way fhir-py sends it (the query on the POST): the second finds the first.
    patient = client.resource("Patient", identifier=[{"system": "urn:test:mrn", "value": "FHIRPY-1"}], gender="unknown")
    patient.create(identifier="urn:test:mrn|FHIRPY-1")
    again = client.resource("Patient", identifier=[{"system": "urn:test:mrn", "value": "FHIRPY-1"}], gender="unknown")
    again.create(identifier="urn:test:mrn|FHIRPY-1")
    assert again.id == patient.id
    assert StoredResource.objects.filter(resource_type="Patient", content__identifier__0__value="FHIRPY-1").count() == 1

    # An update with If-Match: the current version is taken, a stale one refused.
    task["note"] = [{"authorReference": {"reference": "Organization/Scen2OrgGoodCardio"}, "time": "2026-01-02T00:00:00Z",
                     "text": "Patient prefers mornings"}]
    hub(**{"If-Match": 'W/"1"'}).resource("Task", **task).save()
    assert client.reference("Task", task_id).to_resource()["meta"]["versionId"] == "2"
    stale = hub(**{"If-Match": 'W/"1"'}).resource("Task", **task)
    with pytest.raises(Exception, match="version 2"):
        stale.save()

    # History.
    history = client.execute(f"Task/{task_id}/_history", method="get")
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]

    assert Referral.objects.count() == 4


def test_fhirpy_sees_an_unknown_parameter_refused(hub):
    with pytest.raises(FhirpyOutcome):
        hub().resources("Task").search(colour="blue").fetch()
    lenient = hub(Prefer="handling=lenient").resources("Task").search(colour="blue").fetch()
    assert lenient == []
