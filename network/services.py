"""Writes to the network that the console makes: pausing and resuming a professional's role, and its capacity.
Keyword-only, validated here (NetworkError with the field), each one UPDATE of the one row."""

import datetime as dt

from network.models import ProfessionalRole

# ProfessionalRole.max_active_cases is a PositiveSmallIntegerField; a practice with more than this is a data error.
MAX_ACTIVE_CASES_LIMIT = 500


class NetworkError(ValueError):
    """A refused network change, naming the field it concerns (a form shows it in place)."""

    def __init__(self, message: str, *, field: str = ""):
        super().__init__(message)
        self.field = field


def role_pause(*, role: ProfessionalRole, until: dt.date, today: dt.date) -> ProfessionalRole:
    """Stop offering ``role`` new referrals before ``until`` (it resumes on that date). Its live offers and cases
    stay. Routing reads ``paused_until`` (constraint ``paused``). ``until`` must be after ``today``."""
    if until <= today:
        raise NetworkError("a pause ends on a later day than today", field="until")
    ProfessionalRole.objects.filter(pk=role.pk).update(paused_until=until)
    role.paused_until = until
    return role


def role_resume(*, role: ProfessionalRole) -> ProfessionalRole:
    """End ``role``'s pause now (routing offers it referrals again at once)."""
    ProfessionalRole.objects.filter(pk=role.pk).update(paused_until=None)
    role.paused_until = None
    return role


def role_capacity_set(*, role: ProfessionalRole, max_active_cases: int) -> ProfessionalRole:
    """Set how many active cases ``role`` may hold (live offers and open accepted cases count; routing's
    ``at-capacity`` constraint). Lowering it below the cases held already withdraws nothing: no new offers until
    the count falls under it."""
    if not isinstance(max_active_cases, int) or isinstance(max_active_cases, bool) or not (
        0 <= max_active_cases <= MAX_ACTIVE_CASES_LIMIT
    ):
        raise NetworkError(f"capacity is a whole number from 0 to {MAX_ACTIVE_CASES_LIMIT}", field="max_active_cases")
    ProfessionalRole.objects.filter(pk=role.pk).update(max_active_cases=max_active_cases)
    role.max_active_cases = max_active_cases
    return role
