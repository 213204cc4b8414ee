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

from referrals.models import Referral, ReferralStatus, ReportKind
from referrals.errors import DomainError, ErrorCode
from referrals.records import RecordWindow
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
    """The professional reached the patient, at ``contacted_at`` (aware, within the case's RecordWindow: not
    before the referral came in, not in the future). The physician reads it in businessStatus.text."""
    _require(referral, ReferralStatus.ACCEPTED, ReferralStatus.IN_PROGRESS, step="first contact")
    contacted_at = RecordWindow.of(referral, now=timezone.now()).happened(contacted_at, "contacted_at")
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
    """The therapist closes the case as delivered. The referral completes with its discharge report, not before:
    this drafts the discharge report (from the day after the last report sent to today; a case that never
    started gets "did not start", and fails "No session attended") for the therapist to review and sign, and
    the referral Task becomes completed when that report is sent (signed, or preliminary after the wait: see
    referrals/reports.py). Until then the case stays as it is, and the physician reads in businessStatus.text
    that the discharge report follows. Raises DomainError TRANSITION unless the case is accepted or in
    progress (an on-hold case is resumed, or closed as failed)."""
    from referrals.reports import report_draft, report_period_discharge  # reports reads the case's selectors

    _require(referral, ReferralStatus.ACCEPTED, ReferralStatus.IN_PROGRESS, step="discharge")
    start, end = report_period_discharge(referral=referral)
    referral = referral_update(
        referral=referral, status=referral.status,
        business_status_text=f"Discharged by the exercise professional on {end.isoformat()}; the discharge "
        "report follows",
        actor=actor, expected_version=expected_version, detail={"case": "discharge"},
    )
    report_draft(referral=referral, period_start=start, period_end=end, kind=ReportKind.DISCHARGE)
    return referral


@transaction.atomic
def case_complete(*, referral: Referral, actor: str, expected_version: int) -> Referral:
    """A provider's own system closes the case as delivered (its FHIR Task update says ``completed``): completed
    at once, because that update is the Task's new state and a FHIR client reads back what it wrote. The
    follow-up engine then drafts the discharge report from the record (notifications' report-due for a closed
    case), which keeps the completed status when it is sent. The web app's therapist uses case_discharge, which
    waits for the report. Raises DomainError TRANSITION unless the case is accepted or in progress."""
    _require(referral, ReferralStatus.ACCEPTED, ReferralStatus.IN_PROGRESS, step="complete")
    return referral_update(referral=referral, status=ReferralStatus.COMPLETED, actor=actor,
                           expected_version=expected_version, detail={"case": "complete"})


@transaction.atomic
def case_fail(*, referral: Referral, reason: str, actor: str, expected_version: int) -> Referral:
    """The case started but cannot be finished (the patient withdrew, moved away): failed, with the reason, at
    once. The follow-up engine then drafts its discharge report (notifications' report-due), which keeps the
    failed status and reason when it is sent."""
    return referral_update(referral=referral, status=ReferralStatus.FAILED, reason=reason.strip() if isinstance(reason, str) else "",
                           actor=actor, expected_version=expected_version, detail={"case": "fail"})
