"""Factories for the network tests: members placed around Manhattan, credentials by type slug, and referrals
opened through the domain (the FHIR bridge renders their Patient, ServiceRequest and Task)."""

import datetime as dt

import factory
from django.utils import timezone

from network.models import Credential, CredentialType, Organization, Professional, ProfessionalRole, Site
from referrals.risk import Screening
from referrals.routing import PatientFacts
from referrals.models import Referral
from referrals.services import ReferralFacts, referral_create

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


def referral_make(clinic, *, codes=CARDIAC, postal_code="10001", patient: PatientFacts | None = None, **fields) -> Referral:
    """A requested referral owned by the hub, opened through the domain (referral_create), so that it has its
    ClinicalFacts and its rendered Patient, ServiceRequest and Task. ``patient`` gives the clinical facts
    (default: no clearance stated, placed by ``postal_code``)."""
    clinical = {}
    if patient is not None:
        screening = patient.screening or Screening()
        clinical = {
            "latitude": patient.latitude, "longitude": patient.longitude, "state": patient.state,
            "clearance": patient.clearance or "", "precautions": patient.precautions,
            "currently_active": screening.currently_active, "known_disease": screening.known_disease,
            "symptoms": screening.symptoms, "required_language": patient.required_language,
            "preferred_languages": patient.preferred_languages, "payer": patient.payer,
            "delivery_modes": tuple(
                m for m, on in (("virtual-ok", patient.virtual_allowed), (patient.preferred_delivery, True)) if m and on
            ),
        }
        postal_code = patient.postal_code or postal_code
    facts = ReferralFacts(
        condition_codes=list(codes),
        patient_postal_code=postal_code,
        patient_name=fields.pop("patient_name", "Test Patient"),
        requester_reference=fields.pop("requester_reference", "Practitioner/test-physician"),
        **clinical,
        **fields,
    )
    return referral_create(clinic=clinic, facts=facts, actor="test")
