"""The demo's synthetic history: referrals at every stage of the funnel, loaded once, leaving nothing for the
notifications to send and no case in a portal user's lists."""

import pytest
from django.core.management import call_command

from network.demo import demo_network_load
from network.models import Account, ProfessionalRole
from referrals.funnel import FunnelFilters, funnel_compute
from referrals.models import Offer, Referral, ReferralEvent
from tests.portal.conftest import account_make

pytestmark = pytest.mark.django_db


def test_the_history_reaches_every_step_and_loads_once(capsys):
    demo_network_load()
    role = ProfessionalRole.objects.filter(active=True, max_active_cases__gte=5).first()
    account_make("held", role=Account.Role.THERAPIST, professional=role.professional)
    call_command("load_console_history", referrals=200, weeks=26)
    assert "200 referrals" in capsys.readouterr().out
    funnel = funnel_compute(None, FunnelFilters())
    counts = [s.count for s in funnel.steps]
    assert counts[0] == 200 and all(n > 0 for n in counts), counts
    assert counts == sorted(counts, reverse=True)  # each step a subset of the one before
    assert funnel.pavs_patients > 0 and funnel.median_accept_seconds > 0
    assert not ReferralEvent.objects.filter(notified_at__isnull=True).exists()
    assert not Offer.objects.filter(role__professional=role.professional).exists()
    call_command("load_console_history", referrals=200, weeks=26)
    assert "already loaded" in capsys.readouterr().out
    assert Referral.objects.count() == 200
