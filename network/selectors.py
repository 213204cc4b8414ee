from dataclasses import dataclass

from network.models import Organization, Professional, ProfessionalRole

# The FHIR resource types that name a member of the network, and the model behind each.
_MEMBER_MODELS = {
    "Organization": Organization,
    "Practitioner": Professional,
    "PractitionerRole": ProfessionalRole,
}


@dataclass(frozen=True)
class NetworkMember:
    reference: str  # "PractitionerRole/<fhir_id>"
    display: str
    active: bool


def network_member_get(*, reference: str) -> NetworkMember | None:
    """The network member that a relative FHIR reference names, or None when it names no member."""
    resource_type, _, fhir_id = reference.partition("/")
    model = _MEMBER_MODELS.get(resource_type)
    if model is None or not fhir_id or "/" in fhir_id:
        return None
    member = model.objects.filter(fhir_id=fhir_id).first()
    if member is None:
        return None
    return NetworkMember(reference=f"{resource_type}/{fhir_id}", display=str(member), active=member.active)
