import factory

from fhir_bridge.models import EhrClient
from network.models import Organization, Professional, ProfessionalRole
from referrals.models import Clinic

ALL_SCOPES = (
    "system/Task.cruds system/ServiceRequest.cruds system/Patient.cruds system/Condition.cruds "
    "system/Observation.cruds system/Goal.cruds system/Organization.cruds system/Practitioner.cruds "
    "system/PractitionerRole.cruds system/Consent.cruds system/Location.rs system/HealthcareService.rs"
)


class ClinicFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Clinic

    name = factory.Sequence(lambda n: f"Clinic {n}")
    slug = factory.Sequence(lambda n: f"clinic-{n}")


class EhrClientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = EhrClient

    name = factory.Sequence(lambda n: f"EHR {n}")
    clinic = factory.SubFactory(ClinicFactory)
    jwks = factory.LazyFunction(lambda: {"keys": []})
    scopes = ALL_SCOPES


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    fhir_id = factory.Sequence(lambda n: f"org-{n}")
    name = factory.Sequence(lambda n: f"Fitness centre {n}")


class ProfessionalFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Professional

    fhir_id = factory.Sequence(lambda n: f"pro-{n}")
    family_name = factory.Faker("last_name")
    given_name = factory.Faker("first_name")


class ProfessionalRoleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProfessionalRole

    fhir_id = factory.Sequence(lambda n: f"role-{n}")
    professional = factory.SubFactory(ProfessionalFactory)
    organization = factory.SubFactory(OrganizationFactory)
