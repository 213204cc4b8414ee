"""Console fixtures: two clinics, a clinic admin of the first, a network admin, and a user with no console role.
Part B's tests use them too."""

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client

from console.models import ConsoleRole
from console.network import NETWORK_ANSWERS_CACHE_KEY
from tests.factories import ClinicFactory

PASSWORD = "correct horse battery staple"  # noqa: S105 - a test user's


def console_user_make(username: str, *, role: str | None, clinic=None) -> User:
    user = User.objects.create_user(username, f"{username}@example.org", PASSWORD)
    if role is not None:
        ConsoleRole.objects.create(user=user, role=role, clinic=clinic)
    return user


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture(autouse=True)
def network_answers_forgotten():
    """No test reads another's network answers rollup (kept in the cache for 5 minutes; on Redis, across runs).
    Deletes that one key: cache.clear() on Redis would flush the broker's database too."""
    cache.delete(NETWORK_ANSWERS_CACHE_KEY)
    yield
    cache.delete(NETWORK_ANSWERS_CACHE_KEY)


@pytest.fixture
def other_clinic(db):
    return ClinicFactory(name="Riverside Family Medicine", slug="riverside")


@pytest.fixture
def clinic_admin(clinic):
    return console_user_make("clinicadmin", role=ConsoleRole.Role.CLINIC_ADMIN, clinic=clinic)


@pytest.fixture
def network_admin(db):
    return console_user_make("networkadmin", role=ConsoleRole.Role.NETWORK_ADMIN)


@pytest.fixture
def no_role_user(db):
    return console_user_make("therapist", role=None)
