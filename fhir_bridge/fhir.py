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


def fhir_models_load() -> None:
    """Import the fhir.resources models of every type the hub serves now (a process's start,
    config/long_lived.py) rather than when the first resource of each type is checked."""
    from fhir_bridge.smart_scopes import RESOURCE_TYPES

    for resource_type in RESOURCE_TYPES:
        get_fhir_model_class(resource_type)


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
    except (AttributeError, TypeError):
        # fhir.resources' url type calls str methods on the value after its own check fails, so a number or a
        # boolean in a url element (Attachment.url, Subscription.channel.endpoint, valueUrl) escapes as an
        # AttributeError instead of a ValidationError: without this it would be a 500.
        paths = _non_string_urls(resource, path) or [path]
        return [Issue("error", "structure", where, "a url element must be a JSON string") for where in paths]
    return []


# The names R4B gives its elements of type url (endpoint: Subscription.channel; address: Endpoint; *Url: the
# value[x] and output/input value[x] choices).
_URL_ELEMENT_NAMES = frozenset({"url", "endpoint", "address"})


def _non_string_urls(value: object, path: str) -> list[str]:
    """The FHIRPaths of url-named elements that hold a number or a boolean, where fhir.resources breaks."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                continue
            if (key in _URL_ELEMENT_NAMES or key.endswith("Url")) and isinstance(item, (int, float, bool)):
                found.append(f"{path}.{key}")
            else:
                found += _non_string_urls(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _non_string_urls(item, f"{path}[{index}]")
    return found


def is_resource_type(name: str) -> bool:
    try:
        get_fhir_model_class(name)
    except (KeyError, ValueError):
        return False
    return True
