import factory

from fhir_bridge.models import EhrClient
from referrals.models import Clinic
from tests.network.factories import OrganizationFactory, ProfessionalFactory  # noqa: F401 - one set of network factories
from tests.network.factories import RoleFactory as ProfessionalRoleFactory  # noqa: F401

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
