"""Two people recording on the same case from the same version at the same moment: exactly one wins, the other
is told the case moved on and writes nothing (PostgreSQL)."""

import pytest
from django.conf import settings

from referrals.errors import DomainError, ErrorCode
from referrals.models import Clinic, Referral, ReferralEvent, Session
from referrals.records import session_record
from tests.conftest import fire_at_once
from tests.referrals.cases import aware, case_make
from tests.referrals.test_concurrency import _qualification_data

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
        reason="needs PostgreSQL's concurrent writers (set DATABASE_URL)",
    ),
    pytest.mark.django_db(transaction=True),
]


def test_two_sessions_recorded_from_the_same_version_at_once_one_wins():
    _qualification_data()
    case = case_make(Clinic.objects.create(name="Race Clinic", slug="race-records"))
    version = case.version

    def record(i):
        form = Referral.objects.get(pk=case.pk)  # each writer's own copy, as each request has
        return session_record(referral=form, attendance="attended", starts_at=aware(2026, 11, 20, 15 + i),
                              duration_minutes=30 + i, actor=f"user:therapist-{i}", expected_version=version)

    results = fire_at_once(2, record)

    won = [r for r in results if isinstance(r, Session)]
    lost = [r for r in results if isinstance(r, DomainError)]
    assert len(won) == 1 and len(lost) == 1, results
    assert lost[0].code == ErrorCode.STALE
    assert Session.objects.filter(referral=case).count() == 1
    assert ReferralEvent.objects.filter(referral=case, kind=ReferralEvent.Kind.SESSION_RECORDED).count() == 1
    case.refresh_from_db()
    assert case.status == "in-progress"
