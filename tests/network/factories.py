"""Factories for the network tests: members placed around Manhattan, credentials by type slug, and referrals
with the referral Task that the FHIR bridge keeps beside each (referral_update re-renders it)."""

import datetime as dt
import uuid

import factory
from django.utils import timezone

from fhir_bridge.models import StoredResource
from network.models import Credential, CredentialType, Organization, Professional, ProfessionalRole, Site
from referrals.models import Referral

# The centroid of ZIP 10001 in the zipcodes package; a patient "at 10001" is here.
ZIP_10001 = (40.7484, -73.9967)
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"
CARDIAC = [
    {"system": ICD, "code": "I25.10", "display": "Atherosclerotic heart disease of native coronary artery"}
]
HEALTHY = [{"system": ICD, "code": "Z72.3", "display": "Lack of physical exercise"}]


def km_north(km: float, origin=ZIP_10001) -> tuple[float, float]:
    return origin[0] + km / 111.32, origin[1]


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    fhir_id = factory.Sequence(lambda n: f"net-org-{n}")
    name = factory.Sequence(lambda n: f"Fit Centre {n}")


class SiteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Site

    organization = factory.SubFactory(OrganizationFactory)
    fhir_id = factory.Sequence(lambda n: f"net-site-{n}")
    name = factory.Sequence(lambda n: f"Site {n}")
    state = "NY"
    latitude = ZIP_10001[0]
    longitude = ZIP_10001[1]


class ProfessionalFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Professional

    fhir_id = factory.Sequence(lambda n: f"net-pro-{n}")
    family_name = factory.Sequence(lambda n: f"Trainer{n}")
    given_name = "Alex"


class RoleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProfessionalRole

    fhir_id = factory.Sequence(lambda n: f"net-role-{n}")
    professional = factory.SubFactory(ProfessionalFactory)
    site = factory.SubFactory(SiteFactory)
    organization = factory.LazyAttribute(lambda o: o.site.organization)
    max_active_cases = 5
    service_radius_km = 20.0


def credential_give(professional, slug: str, *, expires_on: dt.date | None = None, verified: bool = True):
    return Credential.objects.create(
        professional=professional,
        type=CredentialType.objects.get(slug=slug),
        number=f"{slug}-{professional.pk}",
        expires_on=expires_on or timezone.now().date() + dt.timedelta(days=365),
        verified_by="admin" if verified else "",
        verified_at=timezone.now() if verified else None,
    )


def role_make(*, credentials=("acsm-cep",), at=ZIP_10001, state="NY", expires_on=None, **role_fields):
    """A role whose site is at ``at`` (lat, long), with current, verified credentials of ``credentials``."""
    site = SiteFactory(latitude=at[0] if at else None, longitude=at[1] if at else None, state=state)
    role = RoleFactory(site=site, **role_fields)
    for slug in credentials:
        credential_give(role.professional, slug, expires_on=expires_on)
    return role


def referral_make(clinic, *, codes=CARDIAC, postal_code="10001", **fields) -> Referral:
    """A requested referral owned by the hub, with its stored Task (as intake leaves it)."""
    referral = Referral.objects.create(
        clinic=clinic,
        owner_reference="Organization/hub",
        reason_codes=list(codes),
        patient_postal_code=postal_code,
        **fields,
    )
    task_id = uuid.uuid4().hex
    StoredResource.objects.create(
        resource_type="Task",
        fhir_id=task_id,
        clinic=clinic,
        referral=referral,
        last_updated=timezone.now(),
        content={"resourceType": "Task", "id": task_id, "status": "requested", "intent": "order"},
    )
    return referral
