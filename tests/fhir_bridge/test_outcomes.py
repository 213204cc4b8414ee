"""The FHIR edge maps the domain's one error once: its code to an HTTP status and issue type, its field to the
element's FHIRPath."""

import pytest

from fhir_bridge.outcomes import domain_error, operation_outcome
from referrals.errors import DomainError, ErrorCode


@pytest.mark.parametrize(
    ("code", "field", "status", "issue_code", "expression"),
    [
        (ErrorCode.TRANSITION, "status", 422, "business-rule", ["Task.status"]),
        (ErrorCode.REASON_REQUIRED, "status_reason", 422, "business-rule", ["Task.statusReason"]),
        (ErrorCode.OWNER, "owner_reference", 422, "business-rule", ["Task.owner"]),
        (ErrorCode.CONFLICT, "", 409, "conflict", None),
        (ErrorCode.STALE, "", 409, "conflict", None),
        (ErrorCode.NOT_FOUND, "", 404, "not-found", None),
    ],
)
def test_a_domain_error_becomes_an_operation_outcome(code, field, status, issue_code, expression):
    fhir_error = domain_error(DomainError(code, "why, in words", field=field))
    [issue] = operation_outcome(fhir_error.issues)["issue"]
    assert fhir_error.status == status
    assert (issue["severity"], issue["code"], issue["diagnostics"]) == ("error", issue_code, "why, in words")
    assert issue.get("expression") == expression


def test_an_unknown_owner_is_refused_at_the_task_owner(fhir):
    from fhir_bridge.examples import scenario2_bundle
    from referrals.models import Referral

    response = fhir.post("", scenario2_bundle(identifier="owner-1", owner="Organization/nobody-we-know"))
    assert response.status_code == 422
    [issue] = response.json()["issue"]  # nothing was stored: the refusal rolled the whole Bundle back
    assert (issue["code"], issue["expression"]) == ("business-rule", ["Task.owner"])
    assert not Referral.objects.exists()
