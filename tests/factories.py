import factory

from fhir_bridge.models import EhrClient
from fhir_bridge.smart_scopes import DEFAULT_SCOPES
from referrals.models import Clinic
from tests.network.factories import OrganizationFactory, ProfessionalFactory  # noqa: F401 - one set of network factories
from tests.network.factories import RoleFactory as ProfessionalRoleFactory  # noqa: F401

# What a client registered with the defaults may be granted (derived from the route table).
ALL_SCOPES = " ".join(DEFAULT_SCOPES)


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
    # scopes: the model's default, the same as register_ehr_client's
