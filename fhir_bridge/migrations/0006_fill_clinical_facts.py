"""The clinical facts of the referrals stored before the domain kept them (referrals 0006-0007), read once from
their stored FHIR, as intake now maps them: the ServiceRequest's orderDetail, the Patient's address and
communication, the supporting PAVS Observations and Goals."""

from django.db import migrations

from fhir_bridge.clinical_facts import clinical_facts
from network.geo import patient_place
from referrals.models import currently_active_from_pavs


def _facts_of(rows, clinic_rows):
    by_ref = {f"{r.resource_type}/{r.fhir_id}": r.content for r in rows}
    task = next((r.content for r in rows if r.resource_type == "Task"), {})
    focus = (task.get("focus") or {}).get("reference", "")
    subject = (task.get("for") or {}).get("reference", "")
    for ref in (focus, subject):
        if ref and ref not in by_ref and ref in clinic_rows:
            by_ref[ref] = clinic_rows[ref]
    service_request = by_ref.get(focus, {})
    supporting = [(s or {}).get("reference", "") for s in service_request.get("supportingInfo") or [] if isinstance(s, dict)]
    for ref in supporting:
        if ref and ref not in by_ref and ref in clinic_rows:
            by_ref[ref] = clinic_rows[ref]
    observations = [by_ref[ref] for ref in supporting if ref.startswith("Observation/") and ref in by_ref]
    goals = [by_ref[ref] for ref in supporting if ref.startswith("Goal/") and ref in by_ref]
    goals += [r.content for r in rows if r.resource_type == "Goal" and r.content not in goals]
    return clinical_facts(
        service_request=service_request, patient=by_ref.get(subject, {}), observations=observations, goal_resources=goals
    )


def fill(apps, schema_editor):
    Referral = apps.get_model("referrals", "Referral")
    ClinicalFacts = apps.get_model("referrals", "ClinicalFacts")
    StoredResource = apps.get_model("fhir_bridge", "StoredResource")
    for referral in Referral.objects.order_by("pk").iterator():
        rows = list(StoredResource.objects.filter(referral_id=referral.pk))
        if not any(r.resource_type == "Task" for r in rows):
            continue
        wanted = set()
        for r in rows:
            if r.resource_type in ("Task", "ServiceRequest"):
                for element in ("focus", "for", "subject"):
                    ref = (r.content.get(element) or {}).get("reference", "")
                    wanted.add(ref)
                for s in r.content.get("supportingInfo") or []:
                    wanted.add((s or {}).get("reference", "") if isinstance(s, dict) else "")
        ids = [ref.partition("/")[2] for ref in wanted if "/" in ref]
        clinic_rows = {
            f"{r.resource_type}/{r.fhir_id}": r.content
            for r in StoredResource.objects.filter(clinic_id=referral.clinic_id, fhir_id__in=ids)
        }
        facts = _facts_of(rows, clinic_rows)
        place = patient_place(
            latitude=facts["latitude"], longitude=facts["longitude"], postal_code=referral.patient_postal_code,
            state=facts["state"],
        )
        ClinicalFacts.objects.update_or_create(
            referral_id=referral.pk,
            defaults={
                "clearance": facts["clearance"],
                "precautions": list(facts["precautions"]),
                "delivery_modes": list(facts["delivery_modes"]),
                "currently_active": currently_active_from_pavs(facts["pavs_baseline"]),
                "latitude": place.latitude if place else None,
                "longitude": place.longitude if place else None,
                "location_source": place.source if place else "",
                "state": (place.state if place else facts["state"])[:2],
                "required_language": facts["required_language"],
                "preferred_languages": list(facts["preferred_languages"]),
                "pavs_baseline": facts["pavs_baseline"],
                "goals": facts["goals"],
            },
        )


class Migration(migrations.Migration):
    dependencies = [("fhir_bridge", "0005_ehr_client_default_scopes"), ("referrals", "0007_fill_clinical_facts")]

    operations = [migrations.RunPython(fill, migrations.RunPython.noop, elidable=True)]
