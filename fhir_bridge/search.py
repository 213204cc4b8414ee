"""Search, per R4's search page (https://hl7.org/fhir/R4/search.html), over what the route table publishes.

``search_plan`` reads a query once against the route table (route_table.py): each filter's parameter, modifier and
values, and each result parameter (_count, _offset, _sort, _total, _summary, _elements, _include, _revinclude).
What it cannot apply is a 400 OperationOutcome naming every such parameter, or, under ``Prefer: handling=lenient``,
left out; the self link then lists exactly what was applied. ``search`` runs a plan over stored resources as SQL on
the indexed ``SearchToken`` rows and ``last_updated``; network_fhir.py runs the same plan over the network's tables.
"""

import calendar
import contextlib
import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from fhir_bridge.codes import SUBSETTED_TAG
from fhir_bridge.models import SearchToken, StoredResource
from fhir_bridge.outcomes import FhirError, error
from fhir_bridge.profiles import Issue
from fhir_bridge.route_table import SERVED
from fhir_bridge.search_params import date_token, search_param, text_key

_DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_SUMMARIES = ("count", "data", "false")
_TOTALS = ("none", "estimate", "accurate")
_SORT_COLUMNS = {"_lastUpdated": "last_updated", "_id": "fhir_id"}
# YYYY, YYYY-MM, YYYY-MM-DD, and a time to the minute, second or fraction, with or without a zone.
_DATE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d{1,6})?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_ELEMENT = re.compile(r"[a-z][A-Za-z0-9]*(\[x\])?")
_MANDATORY_ELEMENTS = ("resourceType", "id", "meta")


@contextlib.contextmanager
def custom_plans():
    """Run a search's queries planned for their values. The hub prepares statements it repeats (settings,
    DATABASE_PREPARE_THRESHOLD), and PostgreSQL may then reuse one generic plan for every value; for a search
    that plan is blind to how many rows a value selects (``status=on-hold`` finds 1 %, ``code=system|`` them all)
    and can be orders of magnitude slower. SET LOCAL keeps this to the search's own transaction, so routing keeps
    its generic plans."""
    if connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        yield


def visible(clinic_id: int | None, resource_type: str) -> QuerySet:
    """Resources of one type that a client of ``clinic_id`` may see: its clinic's, and the shared ones."""
    return StoredResource.objects.filter(resource_type=resource_type, is_deleted=False).filter(
        Q(clinic_id=clinic_id) | Q(clinic_id__isnull=True)
    )


def lenient(headers: dict[str, str]) -> bool:
    """Whether the request asks ``Prefer: handling=lenient`` (strict is the default)."""
    return any(part.strip() == "handling=lenient" for part in headers.get("prefer", "").replace(";", ",").split(","))


@dataclass
class Criterion:
    name: str  # the parameter as the route table names it
    modifier: str  # "" or a modifier the table lists for it
    type: str  # its FHIR search-parameter type
    raw: str  # the value as sent


@dataclass
class SearchPlan:
    """What a search will apply, each part already checked against the route table."""

    resource_type: str
    criteria: list[Criterion] = field(default_factory=list)
    includes: list[str] = field(default_factory=list)
    revincludes: list[str] = field(default_factory=list)
    sort: list[str] = field(default_factory=list)  # keys, "-" for descending
    count: int = 0
    offset: int = 0
    summary: str = ""  # "", "count", "data" or "false"
    total: str = "accurate"
    elements: list[str] = field(default_factory=list)
    applied: list[tuple[str, str]] = field(default_factory=list)  # (name, value) as the self link lists them

    @property
    def wants_entries(self) -> bool:
        return self.count > 0 and self.summary != "count"

    @property
    def wants_total(self) -> bool:
        return self.total != "none" or self.summary == "count"


def _whole_number(name: str, raw: str, *, limit: int) -> int:
    try:
        number = int(raw)
    except ValueError:
        raise error(400, "invalid", f"{name} must be a whole number, not {raw!r}", expression=name) from None
    if number < 0:
        raise error(400, "invalid", f"{name} cannot be negative", expression=name)
    # Over the limit is refused rather than cut: a client paging with a large _offset would otherwise make the
    # database skip that many rows on every page, and one asking for more than _count allows should know.
    if number > limit:
        raise error(400, "too-costly", f"{name} may be at most {limit}", expression=name)
    return number


def search_plan(resource_type: str, params: list[tuple[str, str]], *, lenient: bool = False) -> SearchPlan:
    """Check every parameter of a search on ``resource_type`` against the route table.

    A malformed value is a 400 at once. An unknown parameter, an unsupported modifier, _include, _revinclude or
    _sort key, or an unsupported _summary is a 400 naming all of them together, unless ``lenient``: then it is left
    out of the plan, and so of the self link. Raises FhirError.
    """
    served = SERVED[resource_type]
    plan = SearchPlan(resource_type, count=settings.HUB_SEARCH_DEFAULT_COUNT)
    unsupported: list[Issue] = []

    def refuse(name: str, diagnostics: str) -> None:
        unsupported.append(Issue("error", "not-supported", name, diagnostics))

    for name, raw in params:
        if name == "_count":
            plan.count = _whole_number(name, raw, limit=settings.HUB_SEARCH_MAX_COUNT)
        elif name == "_offset":
            plan.offset = _whole_number(name, raw, limit=settings.HUB_SEARCH_MAX_OFFSET)
        elif name == "_pretty":
            # R4 http.html's general parameter: how the JSON is laid out, which changes nothing found.
            continue
        elif name in ("_include", "_revinclude"):
            answered = served.includes if name == "_include" else served.revincludes
            if raw not in answered:
                refuse(name, f"{name}={raw} is not supported for {resource_type} (supported: {', '.join(answered) or 'none'})")
                continue
            (plan.includes if name == "_include" else plan.revincludes).append(raw)
            plan.applied.append((name, raw))
        elif name == "_sort":
            keys = [key.strip() for key in raw.split(",") if key.strip()]
            bad = [key for key in keys if key.lstrip("-") not in served.sorts]
            if bad or not keys:
                refuse(name, f"_sort={raw} is not supported for {resource_type} (keys: {', '.join(served.sorts) or 'none'})")
                continue
            plan.sort = keys
            plan.applied.append((name, ",".join(keys)))
        elif name == "_summary":
            if raw not in _SUMMARIES:
                refuse(name, f"_summary={raw} is not supported (supported: {', '.join(_SUMMARIES)})")
                continue
            plan.summary = raw
            plan.applied.append((name, raw))
        elif name == "_total":
            if raw not in _TOTALS:
                raise error(400, "invalid", f"_total must be one of {', '.join(_TOTALS)}", expression=name)
            plan.total = raw
            plan.applied.append((name, raw))
        elif name == "_elements":
            elements = [e.strip() for e in raw.split(",") if e.strip()]
            if not elements or not all(_ELEMENT.fullmatch(e) for e in elements):
                raise error(400, "invalid", f"_elements={raw!r} must list element names, e.g. status,for", expression=name)
            plan.elements = elements
            plan.applied.append((name, ",".join(elements)))
        else:
            base, colon, modifier = name.partition(":")
            param = served.param(base)
            if param is None:
                refuse(name, f"search parameter {base!r} is not supported for {resource_type}")
                continue
            if colon and modifier not in param.modifiers:
                allowed = ", ".join(f":{m}" for m in param.modifiers) or "none"
                refuse(name, f"modifier :{modifier} is not supported on {base} (supported: {allowed})")
                continue
            if modifier == "missing" and raw not in ("true", "false"):
                raise error(400, "invalid", f"{name} must be true or false", expression=name)
            if param.type == "date":
                for value in raw.split(","):
                    date_range(name, value)  # refuses a malformed date before anything runs
            plan.criteria.append(Criterion(base, modifier, param.type, raw))
            plan.applied.append((name, raw))
    if unsupported and not lenient:
        raise FhirError(400, unsupported)
    return plan


_KIND_TYPES = {"token": "token", "identifier": "token", "reference": "reference", "date": "date"}


def conditional_criteria(resource_type: str, params: list[tuple[str, str]]) -> list[Criterion]:
    """The criteria of a conditional query (If-None-Exist, a conditional reference ``Patient?identifier=...``),
    on any type search_params.py indexes, searchable or not: _id, _lastUpdated and its indexed parameters, with
    no result parameters. Raises a 400 FhirError naming each parameter it cannot apply."""
    criteria, issues = [], []
    for name, raw in params:
        base, colon, modifier = name.partition(":")
        if base in ("_id", "_lastUpdated"):
            kind = "token" if base == "_id" else "date"
        else:
            param = search_param(resource_type, base)
            kind = _KIND_TYPES[param.kind] if param else ""
        if not kind or (colon and modifier not in ("missing", "not")) or (colon and kind != "token" and modifier == "not"):
            issues.append(Issue("error", "not-supported", name, f"{name!r} cannot select a {resource_type} here"))
            continue
        if kind == "date":
            for value in raw.split(","):
                date_range(name, value)
        criteria.append(Criterion(base, modifier, kind, raw))
    if issues:
        raise FhirError(400, issues)
    return criteria


# --- dates -------------------------------------------------------------------------------------------------------


def date_range(name: str, raw: str) -> tuple[str, dt.datetime, dt.datetime]:
    """(prefix, start, end) of a date search value: the value is the range [start, end) its precision spans
    (``2026`` is the whole year; a time without a zone is UTC). Raises a 400 FhirError when malformed."""
    prefix, value = (raw[:2], raw[2:]) if raw[:2] in _DATE_PREFIXES else ("eq", raw)
    value = value.replace(" ", "+")  # a "+hh:mm" zone sent unencoded arrives as a space
    match = _DATE.fullmatch(value)
    try:
        if not match:
            raise ValueError
        parts = match.groupdict()
        zone = dt.UTC
        if parts["tz"] and parts["tz"] != "Z":
            sign = 1 if parts["tz"][0] == "+" else -1
            hours, minutes = int(parts["tz"][1:3]), int(parts["tz"][4:6])
            zone = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
        year = int(parts["y"])
        start = dt.datetime(
            year, int(parts["m"] or 1), int(parts["d"] or 1), int(parts["H"] or 0), int(parts["M"] or 0),
            int(parts["S"] or 0), int(round(float(parts["f"] or 0) * 1_000_000)), tzinfo=zone,
        )
    except ValueError:
        raise error(400, "invalid", f"{name}={raw!r} is not a FHIR date, dateTime or instant", expression=name) from None
    try:
        if parts["f"]:
            end = start + dt.timedelta(microseconds=10 ** (6 - (len(parts["f"]) - 1)))
        elif parts["S"]:
            end = start + dt.timedelta(seconds=1)
        elif parts["M"]:
            end = start + dt.timedelta(minutes=1)
        elif parts["d"]:
            end = start + dt.timedelta(days=1)
        elif parts["m"]:
            end = start + dt.timedelta(days=calendar.monthrange(year, start.month)[1])
        else:
            end = start.replace(year=year + 1)
        if prefix == "ap":
            # ap: within 10% of the gap between now and the value, as R4 recommends
            slack = abs(timezone.now() - start) / 10
            start, end = start - slack, end + slack
    except (ValueError, OverflowError):  # the range runs past year 9999 or before year 1
        raise error(400, "invalid", f"{name}={raw!r} is out of the range of dates searched", expression=name) from None
    return prefix, start, end


def date_filter(column: str, name: str, raw: str) -> Q:
    """The condition for one date parameter on an instant column (a point in time): each comma-separated value
    ORed, each prefix with R4's range semantics (search.html#prefix)."""
    condition = Q(pk__in=[])
    for value in raw.split(","):
        prefix, start, end = date_range(name, value)
        if prefix == "eq":
            this = Q(**{f"{column}__gte": start, f"{column}__lt": end})
        elif prefix == "ne":
            this = Q(**{f"{column}__lt": start}) | Q(**{f"{column}__gte": end})
        elif prefix in ("gt", "sa"):
            this = Q(**{f"{column}__gte": end})
        elif prefix in ("lt", "eb"):
            this = Q(**{f"{column}__lt": start})
        elif prefix == "ge":
            this = Q(**{f"{column}__gte": start})
        elif prefix == "le":
            this = Q(**{f"{column}__lt": end})
        else:  # ap: date_range widened the range
            this = Q(**{f"{column}__gte": start, f"{column}__lt": end})
        condition |= this
    return condition


# --- stored resources --------------------------------------------------------------------------------------------


def _reference_values(value: str, param, base_url: str) -> list[str]:
    """The stored forms a reference search value matches: Type/id, a bare id read as the parameter's one target
    type, and an absolute URL read as Type/id only when it is this server's."""
    if value.startswith(("http://", "https://")):
        if base_url and value.startswith(base_url.rstrip("/") + "/"):
            value = value[len(base_url.rstrip("/")) + 1 :]
        else:
            return [value]  # another server's resource: stored as the URL it was sent as
    if "/" not in value and param.target:
        return [f"{param.target}/{value}"]
    return [value]


def _date_tokens(resource_type: str, name: str, raw: str) -> QuerySet:
    """The ids of resources whose stored date parameter ``name`` (a fixed-width UTC instant string,
    search_params.date_token) falls in what ``raw`` asks, with R4's prefixes as date_filter applies them."""
    condition = Q(pk__in=[])
    for value in raw.split(","):
        prefix, start, end = date_range(name, value)
        start, end = date_token(start.isoformat()), date_token(end.isoformat())
        condition |= {
            "ne": Q(value__lt=start) | Q(value__gte=end),
            "gt": Q(value__gte=end), "sa": Q(value__gte=end),
            "lt": Q(value__lt=start), "eb": Q(value__lt=start),
            "ge": Q(value__gte=start),
            "le": Q(value__lt=end),
        }.get(prefix, Q(value__gte=start, value__lt=end))  # eq, and ap (whose range date_range widened)
    return SearchToken.objects.filter(condition, resource_type=resource_type, param=name).values("resource_id")


def _tokens(resource_type: str, name: str, values: list[str]) -> QuerySet:
    return SearchToken.objects.filter(resource_type=resource_type, param=name, value__in=values).values("resource_id")


def _token_values(values: list[str]) -> Q:
    """The stored token values that token search values match: each value as it is, except ``system|`` (any code
    of the system: a value that ends in '|'), which is the range of the ``system|code`` forms, ``>= 'system|' AND
    < 'system}'`` ('}' follows '|'), since search_params stores no ``system|`` form. The range is exactly the
    prefix in code-point order, SearchToken.value's collation (SQLite's BINARY, PostgreSQL's "C"), and one index
    range scan on search_token_lookup. It holds the value itself, so it finds all the stored ``system|`` form
    found (a system holding a '|' too), and a stored code that is or starts with that text (a code or identifier
    value holding a '|'), as equalities always did: the stored forms do not tell a '|' of a value from the
    separator."""
    exact = [value for value in values if not value.endswith("|") or value == "|"]
    match = Q(value__in=exact) if exact else Q(pk__in=[])
    for system_bar in values:
        if system_bar not in exact:
            match |= _prefix_range(system_bar)
    return match


def _prefix_range(prefix: str) -> Q:
    """The token values that begin with ``prefix`` (not empty), as the range ``>= 'ther' AND < 'thes'``: exact in
    code-point order, SearchToken.value's collation on both databases (SQLite's BINARY; PostgreSQL's "C", migration
    0016_search_token_value_collation_c), and one range scan on search_token_lookup. A prefix ending in the last
    code point has no next one: then a LIKE bounds it."""
    last = ord(prefix[-1])
    if last < 0x10FFFF:
        return Q(value__gte=prefix, value__lt=prefix[:-1] + chr(last + 1))
    return Q(value__gte=prefix, value__startswith=prefix)


def _text_tokens(resource_type: str, name: str, values: list[str]) -> QuerySet:
    """``name:text``: the indexed word-start forms (search_params._texts) that begin with any value, case aside
    (both sides case-folded by text_key), each a _prefix_range."""
    match = Q(pk__in=[])
    for value in values:
        key = text_key(value)
        if key:  # only whitespace: no words to start with
            match |= _prefix_range(key)
    return SearchToken.objects.filter(match, resource_type=resource_type, param=f"{name}:text").values("resource_id")


def filtered(queryset: QuerySet, resource_type: str, criteria: list[Criterion], *, base_url: str = "") -> QuerySet:
    """Apply a plan's criteria (repeated parameters ANDed, comma-separated values ORed), each as an indexed
    subquery on SearchToken or a range on last_updated."""
    for criterion in criteria:
        name, raw = criterion.name, criterion.raw
        values = [v for v in raw.split(",") if v != ""]
        if name == "_id":
            queryset = queryset.filter(fhir_id__in=values)
        elif name == "_lastUpdated":
            queryset = queryset.filter(date_filter("last_updated", name, raw))
        elif criterion.modifier == "text":
            queryset = queryset.filter(pk__in=_text_tokens(resource_type, name, values))
        elif criterion.type == "date" and not criterion.modifier:
            queryset = queryset.filter(pk__in=_date_tokens(resource_type, name, raw))
        elif criterion.modifier == "missing":
            # EXISTS, not IN: NOT IN cannot be planned as an anti-join, and hashes every token of the parameter.
            has = Exists(SearchToken.objects.filter(resource_id=OuterRef("pk"), param=name))
            queryset = queryset.filter(~has if raw == "true" else has)
        else:
            if criterion.type == "reference":
                param = search_param(resource_type, name)
                values = [form for v in values for form in _reference_values(v, param, base_url)]
            match = Q(value__in=values) if criterion.type == "reference" else _token_values(values)
            if criterion.modifier == "not":
                queryset = queryset.filter(~Exists(SearchToken.objects.filter(match, resource_id=OuterRef("pk"), param=name)))
            else:
                tokens = SearchToken.objects.filter(match, resource_type=resource_type, param=name)
                queryset = queryset.filter(pk__in=tokens.values("resource_id"))
    return queryset


def ordered(queryset: QuerySet, sort: list[str]) -> QuerySet:
    """``_sort`` keys as ORDER BY, with the primary key last so that pages never overlap; newest first when no
    key is given."""
    if not sort:
        return queryset.order_by("-last_updated", "-id")
    columns = [("-" if key.startswith("-") else "") + _SORT_COLUMNS[key.lstrip("-")] for key in sort]
    return queryset.order_by(*columns, "-id" if sort[-1].startswith("-") else "id")


@dataclass
class SearchPage:
    matches: list[StoredResource]
    included: list[StoredResource]
    total: int | None
    offset: int
    count: int


def search(
    *, clinic_id: int | None, plan: SearchPlan, base_url: str = "", rows: Callable[[str], QuerySet] | None = None
) -> SearchPage:
    """One page of stored resources for a checked plan, with what its _include and _revinclude bring in (each
    resource once: a match is never repeated as an include). ``rows`` gives, per type, what the caller may see
    (matches and includes alike); by default a clinic's and the shared resources (``visible``)."""
    rows = rows or (lambda type_name: visible(clinic_id, type_name))
    resource_type = plan.resource_type
    queryset = filtered(rows(resource_type), resource_type, plan.criteria, base_url=base_url)
    total = queryset.count() if plan.wants_total else None
    matches = []
    if plan.wants_entries:
        matches = list(ordered(queryset, plan.sort)[plan.offset : plan.offset + plan.count])
    included = _included(rows, matches, plan.includes) + _revincluded(rows, matches, plan.revincludes)
    seen = {(r.resource_type, r.fhir_id) for r in matches}
    unique = []
    for row in included:
        if (row.resource_type, row.fhir_id) not in seen:
            seen.add((row.resource_type, row.fhir_id))
            unique.append(row)
    return SearchPage(matches, unique, total, plan.offset, plan.count)


def _included(rows: Callable[[str], QuerySet], matches: list[StoredResource], includes: list[str]) -> list[StoredResource]:
    # The targets are read from the page's own search tokens (Type/id), not from the documents. A reference to a
    # resource on another server (a notify-and-pull Task's focus and for, the EHR's own URLs) includes the hub's
    # copy of it, as R4 lets a server include a resource referenced elsewhere ("External References"): the
    # resource stored with the same referral whose meta.source is that URL (fhir_bridge/pull.py).
    if not includes or not matches:
        return []
    referral_of = {m.pk: m.referral_id for m in matches}
    wanted: dict[str, set[str]] = {}
    copied: dict[str, set[tuple[int, str]]] = {}  # target type -> (referral, URL without its version)
    for include in includes:
        resource_type, param_name = include.split(":")
        param = search_param(resource_type, param_name)
        refs = SearchToken.objects.filter(resource_id__in=list(referral_of), param=param_name).filter(
            Q(value__startswith=f"{param.target}/") | Q(value__startswith="http://") | Q(value__startswith="https://")
        ).values_list("resource_id", "value")
        for resource_id, ref in refs:
            if ref.startswith(("http://", "https://")):
                if referral_of[resource_id] is not None and f"/{param.target}/" in ref:
                    copied.setdefault(param.target, set()).add((referral_of[resource_id], _unversioned(ref)))
                continue
            target_type, _, target_id = ref.partition("/")
            if target_type == param.target and target_id and "/" not in target_id:
                wanted.setdefault(target_type, set()).add(target_id)
    included = []
    for target_type, ids in wanted.items():
        included.extend(rows(target_type).filter(fhir_id__in=ids).order_by("id"))
    for target_type, sources in copied.items():
        for row in rows(target_type).filter(referral_id__in={r for r, _ in sources}).order_by("id"):
            source = _source(row.content)
            if source and (row.referral_id, _unversioned(source)) in sources:
                included.append(row)
    return included


def _source(content: dict) -> str:
    """The URL on another server that a stored resource is a copy of (its meta.source), or ""."""
    meta = content.get("meta")
    source = meta.get("source") if isinstance(meta, dict) else None
    return source if isinstance(source, str) and source.startswith(("http://", "https://")) else ""


def _unversioned(url: str) -> str:
    return url.split("/_history/")[0]


def _revincluded(rows: Callable[[str], QuerySet], matches: list[StoredResource], revincludes: list[str]) -> list[StoredResource]:
    if not revincludes or not matches:
        return []
    # A copy of another server's resource is what references to that server's URL name (as in _included).
    refs = [m.reference for m in matches]
    refs += [source for m in matches if m.referral_id is not None and (source := _source(m.content))]
    included = []
    for revinclude in revincludes:
        source_type, param_name = revinclude.split(":")
        has = _tokens(source_type, param_name, refs)
        included.extend(rows(source_type).filter(pk__in=has).order_by("id"))
    return included


def subsetted(resource: dict, plan: SearchPlan) -> dict:
    """The resource as the plan's _elements or _summary=data asks for it, tagged SUBSETTED (R4 search.html#elements)
    so that nobody takes it for the whole resource; the resource itself when neither applies."""
    if plan.elements:
        keep = set(_MANDATORY_ELEMENTS) | set(plan.elements)
        out = {key: value for key, value in resource.items() if key in keep or key.removesuffix("[x]") in keep}
    elif plan.summary == "data":
        out = {key: value for key, value in resource.items() if key != "text"}
    else:
        return resource
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*(meta.get("tag") or []), SUBSETTED_TAG]
    out["meta"] = meta
    return out


def page_links(base_url: str, resource_type: str, plan: SearchPlan, more: bool) -> list[dict]:
    """self, and next (when ``more`` matches follow this page) and previous; each lists exactly the parameters
    applied."""

    def url(offset: int) -> str:
        return f"{base_url}/{resource_type}?" + urlencode(plan.applied + [("_count", plan.count), ("_offset", offset)])

    links = [{"relation": "self", "url": url(plan.offset)}]
    if plan.wants_entries and more:
        links.append({"relation": "next", "url": url(plan.offset + plan.count)})
    if plan.offset > 0 and plan.count:
        links.append({"relation": "previous", "url": url(max(plan.offset - plan.count, 0))})
    return links
