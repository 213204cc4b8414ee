"""Search over stored resources: the parameters of search_params.py, _lastUpdated, _id, _include and paging."""

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from django.conf import settings
from django.db.models import Q, QuerySet

from fhir_bridge.models import SearchToken, StoredResource
from fhir_bridge.outcomes import FhirError, error
from fhir_bridge.profiles import Issue
from fhir_bridge.route_table import SERVED
from fhir_bridge.search_params import search_param

_PREFIXES = {"eq": "exact", "gt": "gt", "ge": "gte", "lt": "lt", "le": "lte"}
# Parameters that shape the result rather than filter it.
_RESULT_PARAMS = {"_count", "_offset", "_include", "_format", "_total", "_sort", "_summary", "_elements"}


def visible(clinic_id: int | None, resource_type: str) -> QuerySet:
    """Resources of one type that a client of ``clinic_id`` may see: its clinic's, and the shared ones."""
    return StoredResource.objects.filter(resource_type=resource_type, is_deleted=False).filter(
        Q(clinic_id=clinic_id) | Q(clinic_id__isnull=True)
    )


def _parse_instant(name: str, raw: str) -> tuple[str, dt.datetime]:
    prefix, value = (raw[:2], raw[2:]) if raw[:2] in _PREFIXES else ("eq", raw)
    try:
        if len(value) == 10:
            moment = dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
        else:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
    except ValueError:
        raise error(400, "invalid", f"{name}={raw!r} is not a FHIR date or instant", expression=name) from None
    return _PREFIXES[prefix], moment


def _normalise_reference(value: str) -> str:
    # An absolute reference to this server or another one is searched by its relative tail.
    if value.startswith(("http://", "https://")):
        return "/".join(value.rstrip("/").split("/")[-2:])
    return value


def filtered(queryset: QuerySet, resource_type: str, criteria: list[tuple[str, str]]) -> QuerySet:
    """Apply search criteria ((name, raw value) pairs, repeated names ANDed, commas ORed)."""
    issues = []
    for name, raw in criteria:
        base, _, modifier = name.partition(":")
        if base in _RESULT_PARAMS:
            continue
        values = [v for v in raw.split(",") if v != ""]
        if base == "_id":
            queryset = queryset.filter(fhir_id__in=values)
        elif base == "_lastUpdated":
            lookup, moment = _parse_instant(name, raw)
            queryset = queryset.filter(**{f"last_updated__{lookup}": moment})
        elif (param := search_param(resource_type, base)) is not None and modifier in ("", "missing"):
            if modifier == "missing":
                has = SearchToken.objects.filter(resource_type=resource_type, param=base).values("resource_id")
                queryset = queryset.exclude(pk__in=has) if raw == "true" else queryset.filter(pk__in=has)
                continue
            if param.kind == "reference":
                values = [_normalise_reference(v) for v in values]
                if param.target:  # a bare id of a one-type parameter is stored as Type/id
                    values = [v if "/" in v else f"{param.target}/{v}" for v in values]
            tokens = SearchToken.objects.filter(resource_type=resource_type, param=base, value__in=values)
            queryset = queryset.filter(pk__in=tokens.values("resource_id"))
        else:
            issues.append(
                Issue("error", "not-supported", name, f"search parameter {name!r} is not supported for {resource_type}")
            )
    if issues:
        raise FhirError(400, issues)
    return queryset


@dataclass
class SearchPage:
    matches: list[StoredResource]
    included: list[StoredResource]
    total: int
    offset: int
    count: int


def search_page_params(params: list[tuple[str, str]]) -> SearchPage:
    """The paging a search asks for (_count, _offset), as an empty page; _include is checked by ``search``."""
    page = SearchPage([], [], 0, 0, settings.HUB_SEARCH_DEFAULT_COUNT)
    for name, raw in params:
        if name in ("_count", "_offset"):
            try:
                number = int(raw)
            except ValueError:
                raise error(400, "invalid", f"{name} must be a whole number", expression=name) from None
            if number < 0:
                raise error(400, "invalid", f"{name} cannot be negative", expression=name)
            if name == "_count":
                page.count = min(number, settings.HUB_SEARCH_MAX_COUNT)
            else:
                page.offset = number
    return page


def search(
    *,
    clinic_id: int | None,
    resource_type: str,
    params: list[tuple[str, str]],
    rows: Callable[[str], QuerySet] | None = None,
) -> SearchPage:
    """One page of ``resource_type`` matching ``params``. ``rows`` gives, per type, what the caller may see (the
    matches and _include both come from it); by default a clinic's and the shared resources (``visible``)."""
    rows = rows or (lambda type_name: visible(clinic_id, type_name))
    page = search_page_params(params)
    count, offset = page.count, page.offset
    includes = []
    answered = SERVED[resource_type].includes
    for name, raw in params:
        if name == "_include":
            if raw not in answered:
                supported = ", ".join(answered) or "none"
                raise error(400, "not-supported", f"_include={raw} is not supported (supported: {supported})", "_include")
            includes.append(raw)
    queryset = filtered(rows(resource_type), resource_type, params)
    total = queryset.count()
    matches = list(queryset.order_by("-last_updated", "-id")[offset : offset + count]) if count else []
    return SearchPage(matches, _included(rows, matches, includes), total, offset, count)


def _included(rows: Callable[[str], QuerySet], matches: list[StoredResource], includes: list[str]) -> list[StoredResource]:
    if not includes or not matches:
        return []
    wanted: dict[str, set[str]] = {}
    for include in includes:
        resource_type, param_name = include.split(":")
        param = search_param(resource_type, param_name)
        for match in matches:
            element = match.content.get(param.element)
            for item in element if isinstance(element, list) else [element]:
                ref = _normalise_reference((item or {}).get("reference", "")) if isinstance(item, dict) else ""
                target_type, _, target_id = ref.partition("/")
                if target_type == param.target and target_id:
                    wanted.setdefault(target_type, set()).add(target_id)
    included = []
    for target_type, ids in wanted.items():
        included.extend(rows(target_type).filter(fhir_id__in=ids))
    return included


def page_links(base_url: str, resource_type: str, params: list[tuple[str, str]], page: SearchPage) -> list[dict]:
    kept = [(k, v) for k, v in params if k not in ("_offset", "_count")]

    def url(offset: int) -> str:
        return f"{base_url}/{resource_type}?" + urlencode(kept + [("_count", page.count), ("_offset", offset)])

    links = [{"relation": "self", "url": url(page.offset)}]
    if page.count and page.offset + page.count < page.total:
        links.append({"relation": "next", "url": url(page.offset + page.count)})
    if page.offset > 0:
        links.append({"relation": "previous", "url": url(max(page.offset - page.count, 0))})
    return links
