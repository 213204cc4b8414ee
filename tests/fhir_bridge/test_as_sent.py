"""What the EHR sent is served back as sent: extensions on primitives, the precision of dates and times, and a
coded statusReason with its coding."""

import pytest

from fhir_bridge.examples import scenario2_bundle
from tests.conftest import json_of

pytestmark = pytest.mark.django_db

EXT = [{"url": "http://example.org/fhir/StructureDefinition/source", "valueString": "ehr"}]
NOTE_AUTHOR = {"reference": "Organization/Scen2OrgGoodCardio"}


def _sent_and_served(fhir):
    bundle = scenario2_bundle(identifier="as-sent")
    by_type = {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}
    by_type["Task"].update(authoredOn="2026-11-02T10:30:00+01:00", _authoredOn={"extension": EXT},
                           _intent={"extension": EXT})
    by_type["ServiceRequest"].update(authoredOn="2026-11", _status={"extension": EXT})
    by_type["Patient"].update(birthDate="1970", _gender={"extension": EXT})
    body = json_of(fhir.post("", bundle))
    served = {e["resource"]["resourceType"]: e["resource"]["id"] for e in body["entry"]}
    return by_type, {t: json_of(fhir.get(f"{t}/{i}")) for t, i in served.items()}


def test_extensions_on_primitives_and_date_precision_come_back_as_sent(fhir):
    sent, served = _sent_and_served(fhir)
    assert served["Task"]["authoredOn"] == "2026-11-02T10:30:00+01:00"
    assert served["Task"]["_authoredOn"] == {"extension": EXT} and served["Task"]["_intent"] == {"extension": EXT}
    assert served["ServiceRequest"]["authoredOn"] == "2026-11"
    assert served["ServiceRequest"]["_status"] == {"extension": EXT}
    assert served["Patient"]["birthDate"] == "1970" and served["Patient"]["_gender"] == {"extension": EXT}


def test_a_coded_status_reason_keeps_its_coding_through_later_versions(fhir):
    _, served = _sent_and_served(fhir)
    task = served["Task"]
    reason = {"coding": [{"system": "http://example.org/fhir/CodeSystem/cancel-reason", "code": "moved",
                          "display": "Patient moved away"}], "text": "Patient moved away"}
    task.update(status="cancelled", statusReason=reason)
    response = fhir.put(f"Task/{task['id']}", task)
    assert response.status_code == 200, response.content
    assert json_of(response)["statusReason"] == reason
    assert json_of(fhir.get(f"Task/{task['id']}"))["statusReason"] == reason



def test_a_coded_status_reason_without_text_is_refused_as_the_pa_profile_requires(fhir):
    _, served = _sent_and_served(fhir)
    task = served["Task"]
    task.update(status="cancelled", statusReason={"coding": [{"system": "http://example.org/r", "code": "moved"}]})
    response = fhir.put(f"Task/{task['id']}", task)
    assert response.status_code == 422
    assert json_of(fhir.get(f"Task/{task['id']}"))["status"] == "requested"
