"""The one module that imports fhir.resources, pinned to R4B (wire-compatible with R4 4.0.1).

fhir.resources checks structure and datatypes; it does not check required bindings or profile invariants, which
profiles.py does.
"""

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from fhir_bridge.profiles import Issue

FHIR_VERSION = "4.0.1"


def _fhirpath(prefix: str, loc: tuple) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier():
            path += f".{part}"
        # pydantic adds validator names (e.g. "function-after[...]") to some locations; they are not elements
    return path


def structural_issues(resource: object, *, path: str) -> list[Issue]:
    """Every structural problem fhir.resources finds in one resource, each with the element's FHIRPath."""
    if not isinstance(resource, dict):
        return [Issue("error", "structure", path, "expected a FHIR resource (a JSON object)")]
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        return [Issue("error", "required", f"{path}.resourceType", "resourceType is missing")]
    try:
        model = get_fhir_model_class(resource_type)
    except (KeyError, ValueError):
        return [Issue("error", "not-supported", f"{path}.resourceType", f"{resource_type!r} is not a FHIR R4 resource")]
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return [
            Issue("error", "structure", _fhirpath(path, tuple(err["loc"])), str(err["msg"]).removeprefix("Value error, "))
            for err in exc.errors()
        ]
    return []


def is_resource_type(name: str) -> bool:
    try:
        get_fhir_model_class(name)
    except (KeyError, ValueError):
        return False
    return True
