"""Which values of a resource are searchable, and how each is indexed as a SearchToken.

Each R4 token form is one indexed lookup on a stored value (search.html#token): a coding or identifier is stored
as bare ``code`` (``code=fulfill``) and either ``system|code`` or, when it has no system, ``|code``. ``system|`` (any
code of the system) is not stored: search.py reads it as the prefix range ``>= 'system|' AND < 'system}'`` on the
``system|code`` forms ('}' follows '|'), exact in code-point order, which is SearchToken.value's collation on both
databases (migration 0016_search_token_value_collation_c). References are stored as ``Type/id``, and an absolute reference also as the URL it was sent
as; a parameter that can point at several types (``owner``) also stores the bare id, so that ``owner=hub`` is one
equality too, while ``patient=123`` is read as ``patient=Patient/123``.

A CodeableConcept parameter that takes ``:text`` (``text=True``) also stores its words under ``<name>:text``: the
concept's text and each coding's display, case-folded, with runs of whitespace made one space, once from each word
start (``"Exercise  therapy"`` gives ``exercise therapy`` and ``therapy``), for the first TEXT_WORDS_MAX words.
``code:text=ther`` is then one indexed prefix range on those rows (search.py), whether the words sent are the
text's first or a later one's start.
"""

import datetime as dt
import re
from dataclasses import dataclass

TOKEN_MAX = 255  # SearchToken.value's length
# The word starts indexed per text: a concept's text is a few words, but nothing stops an EHR from sending a
# paragraph (the PA IG's own ServiceRequest example does), and each word start is a row written at every intake:
# eight keep the words a person searches by (the first ones) and bound the cost.
TEXT_WORDS_MAX = 8
# A word starts at a letter or digit that follows neither (Unicode-aware: \w less the underscore).
_WORD_START = re.compile(r"(?<![^\W_])[^\W_]")


@dataclass(frozen=True)
class SearchParam:
    name: str
    kind: str  # "token", "reference", "identifier" or "date"
    element: str  # the top-level element the values come from
    target: str = ""  # for a reference: the resource type it points to, as _include resolves it
    text: bool = False  # a CodeableConcept token that answers :text (R4 search.html#token)


# The element name of a date parameter over Observation.effective[x] (dateTime, instant or Period.start).
EFFECTIVE = "effective[x]"

SEARCH_PARAMS: dict[str, tuple[SearchParam, ...]] = {
    "Task": (
        SearchParam("status", "token", "status"),
        SearchParam("code", "token", "code", text=True),
        SearchParam("business-status", "token", "businessStatus", text=True),
        SearchParam("owner", "reference", "owner"),
        SearchParam("requester", "reference", "requester"),
        SearchParam("patient", "reference", "for", "Patient"),
        SearchParam("focus", "reference", "focus", "ServiceRequest"),
        SearchParam("part-of", "reference", "partOf", "Task"),
        SearchParam("identifier", "identifier", "identifier"),
    ),
    "ServiceRequest": (
        SearchParam("status", "token", "status"),
        SearchParam("code", "token", "code", text=True),
        SearchParam("category", "token", "category", text=True),
        SearchParam("patient", "reference", "subject", "Patient"),
        SearchParam("requester", "reference", "requester"),
        SearchParam("performer", "reference", "performer"),
        SearchParam("identifier", "identifier", "identifier"),
    ),
    "Patient": (SearchParam("identifier", "identifier", "identifier"),),
    # Types without a search interaction index only what If-None-Exist asks of them: their identifiers. Every
    # token is a row written at intake, so none is written that nothing reads.
    "Condition": (SearchParam("identifier", "identifier", "identifier"),),
    # Served with search: the PAVS an EHR sent, and the case records the hub renders (records_fhir.py).
    "Observation": (
        SearchParam("identifier", "identifier", "identifier"),
        SearchParam("patient", "reference", "subject", "Patient"),
        SearchParam("category", "token", "category"),
        SearchParam("code", "token", "code"),
        SearchParam("date", "date", EFFECTIVE),
        SearchParam("based-on", "reference", "basedOn", "ServiceRequest"),
    ),
    "AdverseEvent": (
        SearchParam("patient", "reference", "subject", "Patient"),
        SearchParam("date", "date", "date"),
    ),
    "Goal": (SearchParam("identifier", "identifier", "identifier"),),
    # The reports the hub sends (reports_fhir.py): the PA Full Service Provider's DiagnosticReport search.
    "DiagnosticReport": (
        SearchParam("based-on", "reference", "basedOn", "ServiceRequest"),
        SearchParam("patient", "reference", "subject", "Patient"),
        SearchParam("category", "token", "category"),
        SearchParam("code", "token", "code"),
        SearchParam("status", "token", "status"),
        SearchParam("result", "reference", "result", "Observation"),
    ),
    "Practitioner": (SearchParam("identifier", "identifier", "identifier"),),
    "PractitionerRole": (SearchParam("identifier", "identifier", "identifier"),),
}


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _tokens(value) -> list[str]:
    out = []
    for item in _as_list(value):
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            codings = item.get("coding") if "coding" in item else [item]
            for coding in _as_list(codings):
                if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                    out.extend(_token_forms(coding.get("system"), coding["code"]))
    return out


def _token_forms(system, code: str) -> list[str]:
    if isinstance(system, str):
        return [code, f"{system}|{code}"]
    return [code, f"|{code}"]


def _references(value, with_bare_id: bool) -> list[str]:
    out = []
    for item in _as_list(value):
        ref = item.get("reference") if isinstance(item, dict) else None
        if isinstance(ref, str) and "/" in ref and not ref.startswith(("#", "urn:")):
            relative = "/".join(ref.rstrip("/").split("/")[-2:])
            out.append(relative)
            if ref.startswith(("http://", "https://")):
                out.append(ref)
            if with_bare_id:
                out.append(relative.split("/")[1])
    return out


def _identifiers(value) -> list[str]:
    out = []
    for item in _as_list(value):
        if isinstance(item, dict) and isinstance(item.get("value"), str):
            out.extend(_token_forms(item.get("system"), item["value"]))
    return out


def date_token(value: str) -> str | None:
    """A FHIR date, dateTime or instant as the UTC instant it starts at, "YYYY-MM-DDTHH:MM:SSZ": a fixed width,
    so that a range search compares the stored strings. None for what is not one (or is less than a full
    date)."""
    try:
        if len(value) == 10:
            moment = dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
        else:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
    except (TypeError, ValueError):
        return None
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dates(value) -> list[str]:
    token = date_token(value) if isinstance(value, str) else None
    return [token] if token else []


def _effective(resource: dict):
    for name in ("effectiveDateTime", "effectiveInstant"):
        if isinstance(resource.get(name), str):
            return resource[name]
    period = resource.get("effectivePeriod")
    return period.get("start") if isinstance(period, dict) else None


def _values(param: SearchParam, element) -> list[str]:
    if param.kind == "date":
        return _dates(element)
    if param.kind == "reference":
        return _references(element, with_bare_id=not param.target)
    return _tokens(element) if param.kind == "token" else _identifiers(element)


def text_key(text: str) -> str:
    """A text as the :text index keeps it and a :text search value is read: case-folded, each run of whitespace one
    space, trimmed, cut to the column. Both sides go through this, so that a prefix of one is a prefix of the
    other."""
    return " ".join(text.casefold().split())[:TOKEN_MAX]


def _texts(value) -> list[str]:
    """The :text forms of CodeableConcepts: from each word start of the text and of each coding's display."""
    out = []
    for item in _as_list(value):
        if not isinstance(item, dict):
            continue
        texts = [item.get("text")] + [c.get("display") for c in _as_list(item.get("coding")) if isinstance(c, dict)]
        for text in texts:
            if isinstance(text, str) and (key := text_key(text)):
                starts = [m.start() for m in _WORD_START.finditer(key)][:TEXT_WORDS_MAX]
                out.extend(key[start:] for start in starts)
    return out


def _element(resource: dict, param: SearchParam):
    return _effective(resource) if param.element == EFFECTIVE else resource.get(param.element)


def _param_values(param: SearchParam, element) -> list[tuple[str, str]]:
    pairs = [(param.name, value) for value in dict.fromkeys(_values(param, element)) if len(value) <= TOKEN_MAX]
    if param.text:
        pairs.extend((f"{param.name}:text", value) for value in dict.fromkeys(_texts(element)))
    return pairs


def search_values(resource: dict) -> list[tuple[str, str]]:
    """(param, value) pairs to index for one resource; values longer than the column are left out (a :text form is
    cut to it instead, which keeps its prefixes)."""
    return [
        pair
        for param in SEARCH_PARAMS.get(resource["resourceType"], ())
        for pair in _param_values(param, _element(resource, param))
    ]


def search_values_changed(old: dict, new: dict) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(gone, added): the pairs of search_values(old) that search_values(new) lacks, and the reverse, each in
    search_values' order, for two versions of one resource. Only the parameters whose element differs are worked
    out: a version mostly moves one or two searched elements (a Task's status and businessStatus) and leaves the
    rest (code, owner, requester, focus, ...) as they were."""
    gone, added = [], []
    for param in SEARCH_PARAMS.get(new["resourceType"], ()):
        before, after = _element(old, param), _element(new, param)
        if before == after:
            continue
        old_pairs, new_pairs = _param_values(param, before), _param_values(param, after)
        gone.extend(pair for pair in old_pairs if pair not in new_pairs)
        added.extend(pair for pair in new_pairs if pair not in old_pairs)
    return gone, added


def search_param(resource_type: str, name: str) -> SearchParam | None:
    for param in SEARCH_PARAMS.get(resource_type, ()):
        if param.name == name:
            return param
    return None


def business_identifiers(resource: dict) -> list[tuple[str, str]]:
    """(system, value) of each identifier that carries both; those are unique per client for Task and
    ServiceRequest."""
    return [
        (item["system"], item["value"])
        for item in _as_list(resource.get("identifier"))
        if isinstance(item, dict) and isinstance(item.get("system"), str) and isinstance(item.get("value"), str)
    ]
