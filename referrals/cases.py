"""The case's transitions, as the exercise professional makes them: first contact, start, hold, resume,
discharge and fail.

Each is keyword-only, takes ``expected_version`` (the case's version the form was built from; a stale one is
refused with DomainError STALE) and goes through referrals.services.referral_update: one Task
version and one ReferralEvent per change (its detail names the step: {"case": "hold"}). The PA state machine's
rules (referrals.models.ALLOWED_TRANSITIONS, a reason exactly for on-hold and failed) raise DomainError (TRANSITION, REASON_REQUIRED, REASON_NOT_ALLOWED).
"""

import datetime as dt

from django.db import transaction
from django.utils import timezone

from referrals.models import Referral, ReferralStatus
from referrals.errors import DomainError, ErrorCode
from referrals.services import referral_update


def _require(referral: Referral, *statuses: str, step: str) -> None:
    if referral.status not in statuses:
        raise DomainError(
            ErrorCode.TRANSITION,
            f"{step} needs a case that is {' or '.join(statuses)}; this one is {referral.status!r}", field="status"
        )


@transaction.atomic
def case_first_contact(
    *, referral: Referral, contacted_at: dt.datetime, actor: str, expected_version: int
) -> Referral:
    """The professional reached the patient. The physician reads it in businessStatus.text."""
    _require(referral, ReferralStatus.ACCEPTED, ReferralStatus.IN_PROGRESS, step="first contact")
    if not isinstance(contacted_at, dt.datetime) or timezone.is_naive(contacted_at):
        raise DomainError(ErrorCode.INVALID, "contacted_at must be a date and time with its time zone",
                          field="contacted_at")
    return referral_update(
        referral=referral, status=referral.status,
        business_status_text=f"Patient contacted on {contacted_at.date().isoformat()}",
        actor=actor, expected_version=expected_version, detail={"case": "first-contact"},
    )


@transaction.atomic
def case_start(*, referral: Referral, actor: str, expected_version: int) -> Referral:
    """Accepted → in-progress (recording the first attended session does this by itself)."""
    _require(referral, ReferralStatus.ACCEPTED, step="starting")
    return referral_update(referral=referral, status=ReferralStatus.IN_PROGRESS, actor=actor,
                           expected_version=expected_version, detail={"case": "start"})


@transaction.atomic
def case_hold(*, referral: Referral, reason: str, actor: str, expected_version: int) -> Referral:
    """In-progress → on-hold, with the reason (injury, holiday) the physician reads in statusReason."""
    return referral_update(referral=referral, status=ReferralStatus.ON_HOLD, reason=reason.strip() if isinstance(reason, str) else "",
                           actor=actor, expected_version=expected_version, detail={"case": "hold"})


@transaction.atomic
def case_resume(*, referral: Referral, actor: str, expected_version: int) -> Referral:
    """On-hold → in-progress."""
    _require(referral, ReferralStatus.ON_HOLD, step="resuming")
    return referral_update(referral=referral, status=ReferralStatus.IN_PROGRESS, actor=actor,
                           expected_version=expected_version, detail={"case": "resume"})


@transaction.atomic
def case_discharge(*, referral: Referral, actor: str, expected_version: int) -> Referral:
    """The program is delivered: the case is completed. Its status event ({"case": "discharge"}) is what the
    follow-up engine starts the discharge report from."""
    return referral_update(referral=referral, status=ReferralStatus.COMPLETED, actor=actor,
                           expected_version=expected_version, detail={"case": "discharge"})


@transaction.atomic
def case_fail(*, referral: Referral, reason: str, actor: str, expected_version: int) -> Referral:
    """The case started but cannot be finished (the patient withdrew, moved away): failed, with the reason."""
    return referral_update(referral=referral, status=ReferralStatus.FAILED, reason=reason.strip() if isinstance(reason, str) else "",
                           actor=actor, expected_version=expected_version, detail={"case": "fail"})
