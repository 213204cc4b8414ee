"""OperationOutcome: the one shape every FHIR error takes (after medplum's ``outcomes.ts``)."""

from fhir_bridge.profiles import Issue
from referrals.errors import DomainError, ErrorCode


class FhirError(Exception):
    """Raised anywhere below a FHIR handler; the DRF adapter answers with its status and OperationOutcome."""

    def __init__(self, status: int, issues: list[Issue], headers: dict[str, str] | None = None):
        super().__init__("; ".join(issue.diagnostics for issue in issues))
        self.status = status
        self.issues = issues
        self.headers = headers or {}


def error(status: int, code: str, diagnostics: str, expression: str | None = None, **kwargs) -> FhirError:
    return FhirError(status, [Issue("error", code, expression or "", diagnostics)], **kwargs)


def not_found(resource_type: str, fhir_id: str) -> FhirError:
    return error(404, "not-found", f"{resource_type}/{fhir_id} is not known to this server")


def operation_outcome(issues: list[Issue]) -> dict:
    rendered = []
    for issue in issues:
        entry = {"severity": issue.severity, "code": issue.code, "diagnostics": issue.diagnostics}
        if issue.expression:
            entry["expression"] = [issue.expression]
        rendered.append(entry)
    return {"resourceType": "OperationOutcome", "issue": rendered}


def information(diagnostics: str) -> dict:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": "informational", "diagnostics": diagnostics}],
    }


# The domain's refusals on the wire: the HTTP status and FHIR issue type for each ErrorCode (any other: 422
# business-rule), and the FHIRPath of each domain field a refusal may name.
_DOMAIN_STATUS = {
    ErrorCode.CONFLICT: (409, "conflict"),
    ErrorCode.STALE: (409, "conflict"),
    ErrorCode.NOT_FOUND: (404, "not-found"),
}
_DOMAIN_FIELD_PATHS = {
    "status": "Task.status",
    "status_reason": "Task.statusReason",
    "owner_reference": "Task.owner",
    "decline_reason": "Task.statusReason",
}


def domain_error(exc: DomainError, *, paths: dict[str, str] | None = None) -> FhirError:
    """The OperationOutcome a domain refusal answers with (the one place the FHIR edge maps DomainError).
    ``paths`` maps the domain fields of this one call to the elements their values came from (a provider's
    Observation: ``{"days_per_week": "Observation.component[0].valueQuantity.value"}``)."""
    status, code = _DOMAIN_STATUS.get(exc.code, (422, "business-rule"))
    expression = (paths or {}).get(exc.field) or _DOMAIN_FIELD_PATHS.get(exc.field, "")
    return error(status, code, str(exc), expression=expression)
