"""The domain's one error. Every refusal of a domain service (a rule the referral workflow keeps, a race lost to
someone else) is a ``DomainError`` with a stable ``code`` from ``ErrorCode`` and, where one fact is at fault, the
``field`` it concerns (a field name of the domain: ``status``, ``status_reason``, ``owner_reference``, ...).

Each edge maps it once: the FHIR bridge to an OperationOutcome and its HTTP status (fhir_bridge/outcomes.py), the
coordinators' JSON API to its error body (referrals/api.py), web forms to a form error. Nothing else catches it
to re-word it. (After saleor's ``error_codes.py`` and HackSoft's ``ApplicationError``.)
"""

from enum import StrEnum


class ErrorCode(StrEnum):
    """Why a domain service refused. Stable: clients may branch on it."""

    INVALID = "invalid"  # a value the workflow does not know (a status outside the PA value set)
    TRANSITION = "transition"  # the state machine forbids the move (leaving a terminal state, back to requested)
    REASON_REQUIRED = "reason-required"  # pa-taskrm-1: rejected, on-hold, cancelled and failed need a reason
    REASON_NOT_ALLOWED = "reason-not-allowed"  # pa-taskrm-1: any other status carries none
    OWNER = "owner"  # the owner is neither the hub nor a network member taking referrals
    NOT_ROUTABLE = "not-routable"  # not requested, or an offer is live: nothing to route
    ALREADY_ROUTED = "already-routed"  # a first routing that was done before (a redelivered task)
    NOT_OPEN = "not-open"  # the offer or case is not in a state that takes this answer or record
    CONSTRAINT = "constraint"  # manual routing breaks hard constraints, and no reason to override was given
    CONFLICT = "conflict"  # someone else changed it first (a compare-and-set found another status)
    STALE = "stale"  # the change was prepared from a version that is no longer current
    NOT_FOUND = "not-found"  # what it concerns does not exist


class DomainError(Exception):
    """A domain service's refusal: ``code`` (ErrorCode), a message for a person, the ``field`` at fault ("" for
    none) and ``detail``, a JSON-able dict with more (manual routing's broken constraints)."""

    def __init__(self, code: ErrorCode, message: str, *, field: str = "", detail: dict | None = None):
        super().__init__(message)
        self.code = ErrorCode(code)
        self.field = field
        self.detail = detail or {}

    def __repr__(self):
        return f"DomainError({self.code.value!r}, {str(self)!r}, field={self.field!r})"
