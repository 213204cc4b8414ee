"""The hub's limits on what a FHIR request may carry, checked at the edge before anything is parsed as FHIR or
written, so that bad input is a clear 4xx naming the element and never a recursion error, a 500 or a database
error that looks transient.

| limit | setting | default | answer |
|---|---|---|---|
| request body | ``HUB_MAX_BODY_BYTES`` | 5 MiB | 413 |
| JSON nesting (objects and arrays) | ``HUB_MAX_JSON_DEPTH`` | 32 | 400 |
| entries in a Bundle | ``HUB_MAX_BUNDLE_ENTRIES`` | 200 | 413 |
| characters in one string | ``HUB_MAX_STRING_CHARS`` | 1,048,576 (FHIR's own: a string SHALL NOT exceed 1 MB) | 400 |
| ``_count`` | ``HUB_SEARCH_MAX_COUNT`` | 200 | 400 |
| ``_offset`` | ``HUB_SEARCH_MAX_OFFSET`` | 10,000 | 400 |
| search values: every parameter's repeats and comma-separated values together | ``HUB_SEARCH_MAX_VALUES`` | 100 | 400 |
| query or form parameters (Django's own, read before the hub's) | ``DATA_UPLOAD_MAX_NUMBER_FIELDS`` | 1,000 | 400 |
| a NUL character (U+0000) anywhere: PostgreSQL cannot store it | always | | 400 |
| a business identifier's system or value (a unique key) | ``KEY_CHARS`` | 255 | 422 |
| an If-None-Exist query (a unique key) | ``CONDITIONAL_QUERY_CHARS`` | 500 | 400 |

capability.py publishes the same figures (``limits_described``), and the README lists them.
"""

import orjson
from django.conf import settings

from fhir_bridge.outcomes import FhirError, error
from fhir_bridge.profiles import Issue

KEY_CHARS = 255  # ResourceIdentifier.system and .value
CONDITIONAL_QUERY_CHARS = 500  # ConditionalCreateKey.query
NUL = "\x00"


def check_body_size(content_length: str | None) -> None:
    """413 when the declared body is over ``HUB_MAX_BODY_BYTES``; call before reading it."""
    try:
        size = int(content_length or 0)
    except ValueError:
        raise error(400, "structure", f"Content-Length {content_length!r} is not a number") from None
    if size > settings.HUB_MAX_BODY_BYTES:
        raise error(
            413, "too-costly",
            f"the body is {size} bytes; this server takes at most {settings.HUB_MAX_BODY_BYTES}",
        )


def parse_json(raw: bytes) -> object:
    """The body as JSON, checked against the limits on depth, strings, NUL and Bundle entries. FhirError 400 (or
    413 for a Bundle with too many entries) names the first element at fault."""
    if len(raw) > settings.HUB_MAX_BODY_BYTES:
        raise error(413, "too-costly", f"the body is {len(raw)} bytes; this server takes at most "
                                       f"{settings.HUB_MAX_BODY_BYTES}")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc).lower() or "recursion" in str(exc).lower():  # orjson stops at 1024 levels
            raise error(400, "structure", _too_deep()) from None
        try:  # orjson names a bad byte as a Python text error ("surrogates not allowed"); say what it is
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise error(400, "structure", f"the body is not UTF-8 (byte {bad.start} is not); FHIR JSON is UTF-8"
                        ) from None
        raise error(400, "structure", f"the body is not valid JSON: {exc}") from None
    check_document(document)
    return document


def _too_deep() -> str:
    return f"the JSON is nested too deeply: at most {settings.HUB_MAX_JSON_DEPTH} levels of objects and arrays"


def check_document(document: object) -> None:
    """Walk the document once, without recursion (so depth itself cannot break the walk), and raise FhirError at
    the first value over a limit."""
    max_depth, max_chars = settings.HUB_MAX_JSON_DEPTH, settings.HUB_MAX_STRING_CHARS
    stack = [(document, 1)] if isinstance(document, (dict, list)) else []
    fault = "string" if isinstance(document, str) and (len(document) > max_chars or NUL in document) else None
    while stack and not fault:
        node, depth = stack.pop()
        if depth > max_depth:
            fault = "depth"
            break
        if isinstance(node, dict):
            if any(NUL in key for key in node):
                fault = "string"  # a key, named by the second walk like a value
                break
            node = node.values()
        for value in node:
            if isinstance(value, str):
                if len(value) > max_chars or NUL in value:
                    fault = "string"
                    break
            elif isinstance(value, (dict, list)):
                stack.append((value, depth + 1))
    if fault == "depth":
        raise error(400, "structure", _too_deep(), expression=_root(document))
    if fault:
        # Rare: walk again, this time keeping paths, to name the element (depth is known to be within bounds).
        raise FhirError(400, [_string_issue(path, value) for path, value in _bad_strings(document, _root(document))][:1])
    if isinstance(document, dict) and document.get("resourceType") == "Bundle":
        entries = document.get("entry")
        if isinstance(entries, list) and len(entries) > settings.HUB_MAX_BUNDLE_ENTRIES:
            raise error(
                413, "too-costly",
                f"the Bundle has {len(entries)} entries; this server takes at most {settings.HUB_MAX_BUNDLE_ENTRIES}",
                expression="Bundle.entry",
            )


def _root(document: object) -> str:
    if isinstance(document, dict) and isinstance(document.get("resourceType"), str):
        return document["resourceType"]
    return ""


def _bad_strings(node: object, path: str):
    if isinstance(node, dict):
        for key, value in node.items():
            child = f"{path}.{key}" if path else key
            if NUL in key:
                yield child, key
            else:
                yield from _bad_strings(value, child)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _bad_strings(value, f"{path}[{index}]")
    elif isinstance(node, str) and (len(node) > settings.HUB_MAX_STRING_CHARS or NUL in node):
        yield path, node


def _string_issue(path: str, value: str) -> Issue:
    if NUL in value:
        return Issue("error", "invalid", path, "a NUL character (U+0000) is not allowed in a FHIR string")
    return Issue(
        "error", "too-long", path,
        f"the string has {len(value)} characters; this server takes at most {settings.HUB_MAX_STRING_CHARS}",
    )


def check_query(pairs: list[tuple[str, str]]) -> None:
    """400 for a search parameter or value that carries a NUL (PostgreSQL cannot even compare with one), and for
    more values than ``HUB_SEARCH_MAX_VALUES`` in all (each repeat of a parameter is ANDed and each comma-separated
    value ORed into one SQL expression: near a thousand, SQLite refuses the statement, "Expression tree is too
    large", where PostgreSQL answers; a limit well below that answers the same on both). Names the parameter with
    the most values."""
    values: dict[str, int] = {}
    for name, value in pairs:
        if NUL in name or NUL in value:
            raise error(400, "invalid", "a NUL character (U+0000) is not allowed in a search", expression=name)
        values[name] = values.get(name, 0) + value.count(",") + 1
    total = sum(values.values())
    if total > settings.HUB_SEARCH_MAX_VALUES:
        most = max(values, key=values.__getitem__)
        raise error(
            400, "too-costly",
            f"the request has {total} search values ({most} has {values[most]}); this server takes at most "
            f"{settings.HUB_SEARCH_MAX_VALUES} in one request, counting each repeat and each comma-separated value",
            expression=most,
        )


def check_conditional_query(query: str, key: str, *, expression: str) -> None:
    """400 for an If-None-Exist query the hub cannot keep as its unique key (``key`` is the stored form)."""
    if NUL in query or NUL in key:
        raise error(400, "invalid", "a NUL character (U+0000) is not allowed in If-None-Exist", expression=expression)
    if len(key) > CONDITIONAL_QUERY_CHARS:
        raise error(
            400, "too-long",
            f"the If-None-Exist query has {len(key)} characters; this server keeps at most {CONDITIONAL_QUERY_CHARS}",
            expression=expression,
        )


def key_issues(resource: dict, *, path: str, identified: bool) -> list[Issue]:
    """Issues for business identifiers longer than the unique key that keeps them (``identified``: the type's
    identifiers are unique per client)."""
    if not identified or not isinstance(resource, dict) or not isinstance(resource.get("identifier"), list):
        return []
    issues = []
    for index, item in enumerate(resource["identifier"]):
        if not isinstance(item, dict):
            continue
        for element in ("system", "value"):
            value = item.get(element)
            if isinstance(value, str) and len(value) > KEY_CHARS:
                issues.append(Issue(
                    "error", "too-long", f"{path}.identifier[{index}].{element}",
                    f"a business identifier's {element} may have at most {KEY_CHARS} characters here "
                    f"(it has {len(value)})",
                ))
    return issues


def limits_described() -> list[tuple[str, str]]:
    """(name, text) of each limit, for the CapabilityStatement."""
    return [
        ("body", f"request body: at most {settings.HUB_MAX_BODY_BYTES} bytes (else 413)"),
        ("depth", f"JSON depth: at most {settings.HUB_MAX_JSON_DEPTH} levels of objects and arrays (else 400)"),
        ("entries", f"Bundle entries: at most {settings.HUB_MAX_BUNDLE_ENTRIES} (else 413)"),
        ("string", f"string length: at most {settings.HUB_MAX_STRING_CHARS} characters, no U+0000 (else 400)"),
        ("_count", f"_count: 0 to {settings.HUB_SEARCH_MAX_COUNT} (else 400)"),
        ("_offset", f"_offset: 0 to {settings.HUB_SEARCH_MAX_OFFSET} (else 400)"),
        ("values", f"search values: at most {settings.HUB_SEARCH_MAX_VALUES} in one request, each repeat of a "
                   "parameter and each comma-separated value counted (else 400)"),
        ("parameters", f"query or form parameters: at most {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} (else 400)"),
        ("identifier", f"Task and ServiceRequest identifier system and value: at most {KEY_CHARS} characters "
                       "(else 422)"),
        ("If-None-Exist", f"If-None-Exist: at most {CONDITIONAL_QUERY_CHARS} characters (else 400)"),
    ]
