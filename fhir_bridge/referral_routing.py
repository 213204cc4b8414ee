"""Routing a referral that came in over FHIR: read the patient's facts from its resources. The routing service
(referrals.offers.referral_route_first) asks for them through ``referrals.offers.PATIENT_FACTS_READER``, which
this app's AppConfig.ready() points here."""

from fhir_bridge.models import StoredResource
from fhir_bridge.routing_facts import patient_facts
from referrals.models import Referral


def referral_facts_read(*, referral: Referral):
    """The referral's PatientFacts, from its stored ServiceRequest, Patient and supporting Observations."""
    resources = list(StoredResource.objects.filter(referral=referral).only("resource_type", "fhir_id", "content"))
    task = next(r.content for r in resources if r.resource_type == "Task")
    focus = (task.get("focus") or {}).get("reference", "")
    subject = (task.get("for") or {}).get("reference", "")
    by_ref = {r.reference: r.content for r in resources}
    missing = [ref for ref in (focus, subject) if ref and ref not in by_ref]
    if missing:  # sent before the referral (a ServiceRequest or Patient created on its own)
        for row in StoredResource.objects.filter(clinic_id=referral.clinic_id, fhir_id__in=[m.split("/")[1] for m in missing]):
            by_ref[row.reference] = row.content
    service_request = by_ref.get(focus, {})
    supporting = {(r or {}).get("reference") for r in service_request.get("supportingInfo") or [] if isinstance(r, dict)}
    observations = [content for ref, content in by_ref.items() if ref in supporting and ref.startswith("Observation/")]
    return patient_facts(service_request=service_request, patient=by_ref.get(subject, {}), observations=observations)
