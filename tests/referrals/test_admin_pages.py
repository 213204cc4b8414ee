"""The Django admin stays cheap: a changelist costs the same queries for 2 rows as for 12."""

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from referrals.offers import referral_route
from tests.network.factories import km_north, referral_make, role_make
from tests.referrals.conftest import CARDIAC_PATIENT

pytestmark = pytest.mark.django_db


def _queries(client, path) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200
    return len(captured)


@pytest.mark.parametrize("path", ["/admin/referrals/offer/", "/admin/referrals/routingdecision/",
                                  "/admin/network/professionalrole/", "/admin/referrals/referral/"])
def test_a_changelist_costs_a_fixed_number_of_queries_and_names_rows_readably(
    clinic, path
):
    admin = Client()
    admin.force_login(get_user_model().objects.create_superuser("root", "root@hub.invalid", "pw-" * 6))

    def route(n):
        for _ in range(n):
            role_make(at=km_north(1), max_active_cases=50)
            referral_route(referral=referral_make(clinic, patient=CARDIAC_PATIENT), patient=CARDIAC_PATIENT)

    route(2)
    few = _queries(admin, path)
    route(10)
    many = _queries(admin, path)
    assert many == few
    if "offer" in path:
        assert " at Fit Centre " in admin.get(path).content.decode()
