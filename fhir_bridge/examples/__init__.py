"""The PA IG examples, and referral Bundles built from them (for the demo, the benchmark and the tests)."""

import copy
import json
import uuid
from functools import cache
from pathlib import Path

from fhir_bridge.codes import SNOMED_SYSTEM

EXAMPLES_DIR = Path(__file__).resolve().parent


@cache
def _load(name: str) -> str:
    matches = list(EXAMPLES_DIR.glob(f"{name}.from-fsh.json")) or list(EXAMPLES_DIR.glob(f"*-{name}.from-fsh.json"))
    if len(matches) != 1:
        raise LookupError(f"no single example named {name!r} in {EXAMPLES_DIR}")
    return matches[0].read_text()


def example(name: str) -> dict:
    """A fresh copy of one example, by file stem ("Task-Scen2TaskFit4LifeV2") or FSH instance name."""
    return json.loads(_load(name))


def example_names() -> list[str]:
    return sorted(p.name.removesuffix(".from-fsh.json") for p in EXAMPLES_DIR.glob("*.from-fsh.json"))


def scenario2_bundle(*, identifier: str | None = None, family: str | None = None, owner: str = "Organization/hub",
                     postal_code: str | None = None, reason_codes: list[dict] | None = None) -> dict:
    """PA Scenario 2 as one transaction Bundle: Ms Johansson's referral (Task reset to requested and sent to the
    hub), its ServiceRequest, Patient, Condition and two PAVS Observations, joined by urn:uuid fullUrls.

    ``identifier`` sets the Task's and ServiceRequest's business identifier (what makes a resend a duplicate);
    ``family`` the Patient's family name, which the Task's ``for.display`` and the ServiceRequest's
    ``subject.display`` follow ("Nancy <family>").
    """
    task = example("Scen2TaskFit4LifeV2")
    service_request = example("Scen2ServiceRequest")
    patient = example("Scen2PatientJohansson")
    condition = example("Scen2ConditionLackOfExercise")
    days = example("Scen2ObsDaysPerWeek2")
    minutes = example("Scen2ObsMinutesPerDay2")
    urns = {name: f"urn:uuid:{uuid.uuid4()}" for name in ("task", "sr", "patient", "condition", "days", "minutes")}

    if family:
        patient["name"][0]["family"] = family
    name = patient["name"][0]
    display = " ".join([*name.get("given", []), name["family"]])  # how the Task and ServiceRequest name it

    task["status"] = "requested"
    task["owner"] = {"reference": owner}
    task["focus"] = {"reference": urns["sr"]}
    task["for"] = {"reference": urns["patient"], "display": display}
    service_request["subject"] = {"reference": urns["patient"], "display": display}
    service_request["reasonReference"] = [{"reference": urns["condition"]}]
    service_request["reasonCode"] = reason_codes if reason_codes is not None else [
        {"coding": [{"system": SNOMED_SYSTEM, "code": "38341003", "display": "Hypertension"}]}
    ]
    service_request["supportingInfo"] = [{"reference": urns["days"]}, {"reference": urns["minutes"]}]
    for resource in (condition, days, minutes):
        resource["subject"] = {"reference": urns["patient"]}
    days["performer"] = minutes["performer"] = [{"reference": urns["patient"]}]
    if identifier:
        task["identifier"] = [{"system": "urn:ehr:task", "value": identifier}]
        service_request["identifier"] = [{"system": "urn:ehr:servicerequest", "value": identifier}]
    if postal_code:
        patient["address"][0]["postalCode"] = postal_code
    for resource in (task, service_request, patient, condition, days, minutes):
        resource.pop("id", None)
    entries = [
        (urns["patient"], patient),
        (urns["condition"], condition),
        (urns["days"], days),
        (urns["minutes"], minutes),
        (urns["sr"], service_request),
        (urns["task"], task),
    ]
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": url, "resource": copy.deepcopy(r), "request": {"method": "POST", "url": r["resourceType"]}}
            for url, r in entries
        ],
    }
