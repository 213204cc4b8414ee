"""FHIR Subscriptions as the PA IG uses them: R4 Subscriptions Backport 1.1.0 with the SDOH Clinical Care Task topic.

Pure functions on JSON dicts, no database:

* ``subscription_parse(resource)``: a Subscription a client posts, as a ``SubscriptionRequest`` or the list of
  ``Issue``s that refuse it (each with the FHIRPath of the offending element, as profiles.py reports them);
* ``task_matches(filters, task)``: does a Task, as the hub stores it, belong to a subscription's stream;
* ``notification_bundle(...)``: the notification Bundle (type ``history``; first entry the SubscriptionStatus
  ``Parameters``) for a handshake, a heartbeat, event notifications, and ``$events`` (``query-event``);
* ``status_parameters(...)`` and ``status_bundle(...)`` for ``$status``; ``events_range(...)`` reads the
  ``$events`` operation's ``eventsSinceNumber``/``eventsUntilNumber``.

Sources: http://hl7.org/fhir/uv/subscriptions-backport/ 1.1.0 (profiles BackportSubscription,
BackportSubscriptionNotificationR4, BackportSubscriptionStatusR4; the payloads and channels pages; the
OperationDefinitions of ``$status`` and ``$events``), and ``shared/reference/pa-ig-workflow.md`` (the Task topic
and its filters, ``_lastUpdated``, ``code``, ``owner``, ``requester`` and ``status``; ``_id`` is ours too).

Two ways to ask for the Task topic are taken:

* the backport's: ``criteria`` = the topic's canonical URL, with ``backport-filter-criteria`` extensions on
  ``criteria`` (``Task?status=requested``, each ANDed);
* the PA IG's own example ``Subscription-Scen2SubscriptionEhr``: a plain R4 query in ``criteria``
  (``Task?requester=...``), read as the Task topic with that filter.

Channels: ``rest-hook`` (an http(s) endpoint, ``header``s, payload ``application/fhir+json``) and ``email``
(``mailto:``, body ``text/plain`` or ``text/html``, never ``full-resource``: e-mail carries no PHI). Whether an
endpoint may be reached (https, internal addresses) is notifications/http.py's policy, checked by the caller.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fhir_bridge.fhir import structural_issues
from fhir_bridge.profiles import R4_TASK_STATUSES, Issue, _parse_datetime

TASK_TOPIC = "http://hl7.org/fhir/us/sdoh-clinicalcare/SubscriptionTopic/Task"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
FILTER_CRITERIA_URL = f"{BACKPORT}/backport-filter-criteria"
PAYLOAD_CONTENT_URL = f"{BACKPORT}/backport-payload-content"
HEARTBEAT_PERIOD_URL = f"{BACKPORT}/backport-heartbeat-period"
TIMEOUT_URL = f"{BACKPORT}/backport-timeout"
MAX_COUNT_URL = f"{BACKPORT}/backport-max-count"
CHANNEL_TYPE_URL = f"{BACKPORT}/backport-channel-type"
NOTIFICATION_PROFILE = f"{BACKPORT}/backport-subscription-notification-r4"
STATUS_PROFILE = f"{BACKPORT}/backport-subscription-status-r4"
SUBSCRIPTION_ERROR_SYSTEM = "http://terminology.hl7.org/CodeSystem/subscription-error"

CHANNEL_TYPES = ("rest-hook", "email")
PAYLOAD_CONTENTS = ("empty", "id-only", "full-resource")
SUBSCRIPTION_STATUSES = ("requested", "active", "error", "off")
NOTIFICATION_TYPES = ("handshake", "heartbeat", "event-notification", "query-status", "query-event")
REST_HOOK_MIME_TYPES = ("application/fhir+json", "application/json")
EMAIL_MIME_TYPES = ("text/plain", "text/html")
# Shorter heartbeats would be a way to make the hub post to a receiver as often as a client likes.
MIN_HEARTBEAT_SECONDS = 60
MAX_TIMEOUT_SECONDS = 60
# The HTTP headers the hub writes itself; a channel.header cannot replace them.
RESERVED_HEADERS = frozenset(
    {"host", "content-type", "content-length", "transfer-encoding", "connection", "te", "upgrade", "expect",
     "keep-alive", "trailer", "proxy-authorization", "proxy-connection"}
)

# The Task topic's filters (SDOH Clinical Care), with _id, and what kind of search parameter each one is.
TASK_FILTERS = {
    "_id": "token",
    "_lastUpdated": "date",
    "code": "token",
    "owner": "reference",
    "requester": "reference",
    "status": "token",
}
_MODIFIERS = {"token": ("", "not"), "reference": ("", "missing"), "date": ("",)}
_DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_MAILTO = re.compile(r"^mailto:([^@\s?,;<>\"]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})$", re.IGNORECASE)


@dataclass(frozen=True)
class Filter:
    """One search-style filter on the topic's Task stream: ``name:modifier=value,value`` (values ORed; filters
    ANDed). For ``_lastUpdated`` each value keeps its prefix (``ge2024-01-01``)."""

    name: str
    modifier: str
    values: tuple[str, ...]

    def as_query(self) -> str:
        return f"{self.name}{':' + self.modifier if self.modifier else ''}={','.join(self.values)}"


def filters_to_json(filters: Iterable[Filter]) -> list[dict]:
    """A JSON form to store (and to pass to tasks); ``filters_from_json`` reads it back."""
    return [{"name": f.name, "modifier": f.modifier, "values": list(f.values)} for f in filters]


def filters_from_json(data: Iterable[dict]) -> tuple[Filter, ...]:
    return tuple(Filter(item["name"], item.get("modifier", ""), tuple(item["values"])) for item in data)


@dataclass(frozen=True)
class SubscriptionRequest:
    """What a client asked for, checked. Times are seconds."""

    topic: str
    filters: tuple[Filter, ...]
    channel_type: str  # "rest-hook" | "email"
    endpoint: str  # an http(s) URL, or "mailto:..." for email
    headers: tuple[tuple[str, str], ...]  # (name, value) to send with each rest-hook POST
    payload_mime: str  # "application/fhir+json", or for email "text/plain" | "text/html"
    payload_content: str  # "empty" | "id-only" | "full-resource"
    status: str  # what the client wrote; the server sets it ("requested" until the handshake succeeds)
    heartbeat_period: int | None = None  # None: no heartbeats
    timeout: int | None = None  # the longest the client wants a delivery attempt to take
    max_count: int | None = None  # most events in one notification
    end: str | None = None  # FHIR instant after which the subscription is off, as sent
    end_at: dt.datetime | None = None  # ``end`` read (aware)
    reason: str | None = None
    criteria_form: str = "topic"  # "topic" (the backport's) or "query" (a plain R4 query, as the PA IG's example)
    email_address: str | None = field(default=None)  # the address of a mailto: endpoint

    def filter_criteria(self) -> list[str]:
        """The filters as backport-filter-criteria values (``Task?status=requested``), one per filter."""
        return [f"Task?{f.as_query()}" for f in self.filters]


# --- Parsing a Subscription ------------------------------------------------------------------------------------


class _Issues:
    def __init__(self) -> None:
        self.items: list[Issue] = []

    def add(self, code: str, expression: str, diagnostics: str) -> None:
        self.items.append(Issue("error", code, expression, diagnostics))


def _extensions(holder: Any, path: str, issues: _Issues) -> list[tuple[str, dict]]:
    """(FHIRPath, extension) of each extension object of an element (or of a primitive's ``_element``)."""
    if not isinstance(holder, dict):
        return []
    found = []
    value = holder.get("extension")
    if isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, dict):
                found.append((f"{path}.extension[{index}]", item))
    if holder.get("modifierExtension"):
        issues.add("not-supported", f"{path}.modifierExtension",
                   "The hub does not support any modifier extension here, so it cannot honour this Subscription.")
    return found


def _by_url(extensions: list[tuple[str, dict]], url: str) -> list[tuple[str, dict]]:
    return [(path, ext) for path, ext in extensions if ext.get("url") == url]


def _one_value(found: list[tuple[str, dict]], key: str, issues: _Issues, label: str) -> tuple[str, Any] | None:
    if not found:
        return None
    if len(found) > 1:
        issues.add("structure", found[1][0], f"{label} may be given once only.")
    path, ext = found[0]
    if key not in ext:
        issues.add("structure", f"{path}.{key}", f"{label} needs a {key}.")
        return None
    return f"{path}.{key}", ext[key]


def _mime_type(value: str) -> tuple[str, dict[str, str]]:
    kind, *params = [part.strip() for part in value.split(";")]
    parsed = {}
    for param in params:
        name, _, param_value = param.partition("=")
        parsed[name.strip().lower()] = param_value.strip()
    return kind.lower(), parsed


def subscription_parse(resource: object) -> SubscriptionRequest | list[Issue]:
    """A client's Subscription as a ``SubscriptionRequest``, or every issue that refuses it (never raises).

    Structure and datatypes are checked by fhir.resources (R4B); then the topic, filters, channel type, endpoint,
    headers, payload type and content level, heartbeat period, timeout and max count, as the module says.
    """
    structure = structural_issues(resource, path="Subscription")
    if structure:
        return structure
    if resource.get("resourceType") != "Subscription":
        return [Issue("error", "structure", "Subscription.resourceType",
                      f"Expected a Subscription, not a {resource.get('resourceType')}.")]
    issues = _Issues()
    _extensions(resource, "Subscription", issues)  # a modifierExtension on the resource refuses it

    status = resource.get("status")
    if status not in SUBSCRIPTION_STATUSES:
        issues.add("code-invalid", "Subscription.status",
                   f"status {status!r} is not one of {', '.join(SUBSCRIPTION_STATUSES)}.")

    topic, filters, form = _parse_criteria(resource, issues)
    channel = _parse_channel(resource.get("channel"), issues)
    end_at = None
    if isinstance(resource.get("end"), str):
        span = _parse_datetime(resource["end"])  # an instant (checked by fhir.resources): always with its zone
        end_at = span.start if span is not None and span.zoned else None
        if end_at is None:
            issues.add("value", "Subscription.end", "end must be an instant with its time zone.")
    if issues.items:
        return issues.items
    return SubscriptionRequest(
        topic=topic,
        filters=tuple(filters),
        status=status,
        end=resource.get("end"),
        end_at=end_at,
        reason=resource.get("reason"),
        criteria_form=form,
        **channel,
    )


def _parse_criteria(resource: dict, issues: _Issues) -> tuple[str, list[Filter], str]:
    criteria = resource.get("criteria")
    path = "Subscription.criteria"
    filters: list[Filter] = []
    if not isinstance(criteria, str) or not criteria.strip():
        issues.add("required", path, "criteria is required: the Task topic's URL, or a Task query.")
        return TASK_TOPIC, filters, "topic"
    criteria = criteria.strip()
    canonical = criteria.split("|", 1)[0]  # a canonical may carry |version
    if canonical == TASK_TOPIC:
        form = "topic"
    elif re.match(r"^[A-Z][A-Za-z]+\?", criteria) or re.match(r"^[A-Z][A-Za-z]+$", criteria):
        resource_type, _, query = criteria.partition("?")
        form = "query"
        if resource_type != "Task":
            issues.add("not-supported", path,
                       f"Only Task can be subscribed to (the Task topic, {TASK_TOPIC}), not {resource_type}.")
        else:
            filters.extend(_parse_filters(query, path, issues))
    else:
        issues.add("not-supported", path,
                   f"The topic {criteria!r} is not known to this server; it offers {TASK_TOPIC} only.")
        return TASK_TOPIC, filters, "topic"

    for ext_path, value in _filter_criteria_values(resource, issues):
        resource_type, question, query = value.partition("?")
        if not question:  # the backport's later form: just the query
            resource_type, query = "Task", value
        if resource_type != "Task":
            issues.add("not-supported", ext_path,
                       f"The Task topic is filtered on Task, not {resource_type}: write 'Task?{query}'.")
            continue
        filters.extend(_parse_filters(query, ext_path, issues))
    return TASK_TOPIC, filters, form


def _filter_criteria_values(resource: dict, issues: _Issues) -> list[tuple[str, str]]:
    found = []
    for ext_path, ext in _by_url(_extensions(resource.get("_criteria"), "Subscription.criteria", issues),
                                 FILTER_CRITERIA_URL):
        value = ext.get("valueString")
        if not isinstance(value, str) or not value.strip():
            issues.add("required", f"{ext_path}.valueString", "A filter criteria extension needs a valueString.")
            continue
        found.append((f"{ext_path}.valueString", value.strip()))
    return found


def _parse_filters(query: str, path: str, issues: _Issues) -> list[Filter]:
    if not query:
        return []
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        issues.add("value", path, f"{query!r} is not a query string (name=value&name=value).")
        return []
    filters = []
    for raw_name, raw_value in pairs:
        name, _, modifier = raw_name.partition(":")
        kind = TASK_FILTERS.get(name)
        if kind is None:
            issues.add("not-supported", path,
                       f"{name!r} is not a filter of the Task topic; use {', '.join(sorted(TASK_FILTERS))}.")
            continue
        if modifier not in _MODIFIERS[kind]:
            issues.add("not-supported", path, f"The modifier ':{modifier}' is not supported on {name!r}.")
            continue
        values = tuple(v.strip() for v in raw_value.split(","))
        if not raw_value.strip() or any(not v for v in values):
            issues.add("value", path, f"The filter {raw_name!r} has an empty value.")
            continue
        if modifier == "missing" and values not in (("true",), ("false",)):
            issues.add("value", path, f"{raw_name} takes true or false, not {raw_value!r}.")
            continue
        if name == "status":
            unknown = [v for v in values if v not in R4_TASK_STATUSES]
            if unknown:  # a filter no Task can match would keep the subscription silent for ever
                issues.add("value", path, f"{raw_name}={raw_value!r}: {', '.join(map(repr, unknown))} is not a Task "
                           f"status (http://hl7.org/fhir/task-status: {', '.join(sorted(R4_TASK_STATUSES))}).")
                continue
        if kind == "date":
            bad = [v for v in values if _date_bound(v) is None]
            if len(values) > 1 or bad:
                issues.add("value", path,
                           f"{raw_name}={raw_value!r} is not one FHIR date with an optional prefix "
                           f"({', '.join(_DATE_PREFIXES)}), e.g. ge2024-01-01T00:00:00Z.")
                continue
        filters.append(Filter(name, modifier, values))
    return filters


def _parse_channel(channel: object, issues: _Issues) -> dict:
    path = "Subscription.channel"
    empty = {"channel_type": "", "endpoint": "", "headers": (), "payload_mime": "", "payload_content": ""}
    if not isinstance(channel, dict):
        issues.add("required", path, "channel is required.")
        return empty
    channel_extensions = _extensions(channel, path, issues)
    type_extensions = _extensions(channel.get("_type"), f"{path}.type", issues)
    channel_type = channel.get("type")
    if _by_url(type_extensions, CHANNEL_TYPE_URL):
        issues.add("not-supported", _by_url(type_extensions, CHANNEL_TYPE_URL)[0][0],
                   f"Custom channel types are not supported; use {' or '.join(CHANNEL_TYPES)}.")
    if channel_type not in CHANNEL_TYPES:
        issues.add("not-supported", f"{path}.type",
                   f"The channel type {channel_type!r} is not supported; use {' or '.join(CHANNEL_TYPES)}.")
        return empty

    endpoint = channel.get("endpoint")
    email_address = None
    if not isinstance(endpoint, str) or not endpoint:
        issues.add("required", f"{path}.endpoint", f"A {channel_type} channel needs an endpoint.")
    elif channel_type == "rest-hook":
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or any(
            ord(c) < 33 for c in endpoint
        ):
            issues.add("value", f"{path}.endpoint", "A rest-hook endpoint must be an absolute http(s) URL.")
    else:
        match = _MAILTO.match(endpoint)
        if not match:
            issues.add("value", f"{path}.endpoint",
                       "An email endpoint must be one mailto: address (mailto:clinic@example.org), with no headers.")
        else:
            email_address = match.group(1)

    headers = []
    for index, header in enumerate(channel.get("header") or []):
        where = f"{path}.header[{index}]"
        if channel_type != "rest-hook":
            issues.add("not-supported", where, "channel.header is for rest-hook channels only.")
            break
        name, colon, value = header.partition(":")
        name, value = name.strip(), value.strip()
        if not colon or not _HEADER_NAME.match(name) or any(c in value for c in "\r\n\0"):
            issues.add("value", where, "A header must read 'Name: value' on one line.")
        elif name.lower() in RESERVED_HEADERS:
            issues.add("not-supported", where, f"The hub sets the {name} header itself.")
        else:
            headers.append((name, value))

    payload = channel.get("payload")
    content_found = _one_value(
        _by_url(_extensions(channel.get("_payload"), f"{path}.payload", issues), PAYLOAD_CONTENT_URL),
        "valueCode", issues, "The payload content extension",
    )
    if payload is None:
        # R4: no payload means notifications carry nothing but the notice itself.
        mime, content = ("application/fhir+json" if channel_type == "rest-hook" else "text/plain"), "empty"
    else:
        mime, params = _mime_type(payload)
        allowed = REST_HOOK_MIME_TYPES if channel_type == "rest-hook" else EMAIL_MIME_TYPES
        if mime not in allowed:
            issues.add("not-supported", f"{path}.payload",
                       f"The payload type {payload!r} is not supported on {channel_type}; use {' or '.join(allowed)}.")
        if "attach" in params:
            issues.add("not-supported", f"{path}.payload", "E-mail carries no attachments (no PHI by e-mail).")
        # Backport 1.1.0 makes the content extension required; a client that leaves it out gets the PA IG's
        # required level (task-6), which carries no resource content.
        content = "id-only"
    if content_found is not None:
        where, content = content_found
        if content not in PAYLOAD_CONTENTS:
            issues.add("code-invalid", where,
                       f"The payload content {content!r} is not one of {', '.join(PAYLOAD_CONTENTS)}.")
    if channel_type == "email" and content == "full-resource":
        issues.add("not-supported", content_found[0] if content_found else f"{path}.payload",
                   "E-mail carries no PHI: use the empty or id-only payload content.")

    heartbeat = _unsigned(channel_extensions, HEARTBEAT_PERIOD_URL, "valueUnsignedInt", issues, "The heartbeat period")
    if heartbeat == 0:
        heartbeat = None
    elif heartbeat is not None and heartbeat < MIN_HEARTBEAT_SECONDS:
        issues.add("value", _by_url(channel_extensions, HEARTBEAT_PERIOD_URL)[0][0] + ".valueUnsignedInt",
                   f"The heartbeat period must be at least {MIN_HEARTBEAT_SECONDS} seconds.")
    timeout = _unsigned(channel_extensions, TIMEOUT_URL, "valueUnsignedInt", issues, "The timeout")
    if timeout is not None and not 1 <= timeout <= MAX_TIMEOUT_SECONDS:
        issues.add("value", _by_url(channel_extensions, TIMEOUT_URL)[0][0] + ".valueUnsignedInt",
                   f"The timeout must be from 1 to {MAX_TIMEOUT_SECONDS} seconds.")
    max_count = _unsigned(channel_extensions, MAX_COUNT_URL, "valuePositiveInt", issues, "The max count")
    if max_count is not None and max_count < 1:
        issues.add("value", _by_url(channel_extensions, MAX_COUNT_URL)[0][0] + ".valuePositiveInt",
                   "The max count must be at least 1.")
    return {
        "channel_type": channel_type,
        "endpoint": endpoint if isinstance(endpoint, str) else "",
        "headers": tuple(headers),
        "payload_mime": mime,
        "payload_content": content,
        "heartbeat_period": heartbeat,
        "timeout": timeout,
        "max_count": max_count,
        "email_address": email_address,
    }


def _unsigned(extensions, url, key, issues: _Issues, label: str) -> int | None:
    found = _one_value(_by_url(extensions, url), key, issues, label)
    if found is None:
        return None
    where, value = found
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        issues.add("value", where, f"{label} must be a whole number of seconds.")
        return None
    return value


# --- Matching a Task -------------------------------------------------------------------------------------------


def _reference_tail(reference: str) -> str:
    """``Type/id`` of a literal reference, relative or absolute, without ``_history``; as search.py reads them."""
    parts = reference.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return "/".join(parts[-2:])


def _token_matches(value: str, codings: list[tuple[str | None, str | None]]) -> bool:
    """A token search value against (system, code) pairs: ``code``, ``system|code``, ``system|`` (any code of the
    system) or ``|code`` (a code without a system)."""
    if "|" not in value:
        return any(code == value for _, code in codings)
    system, _, code = value.partition("|")
    return any(
        (s == system if system else not s) and (c == code if code else True) for s, c in codings
    )


def _date_bound(value: str) -> tuple[str, dt.datetime, dt.datetime] | None:
    prefix = value[:2] if value[:2] in _DATE_PREFIXES else "eq"
    text = value[2:] if value[:2] in _DATE_PREFIXES else value
    span = _parse_datetime(text)
    if span is None:
        return None
    start, end = span.start, span.end
    if start.tzinfo is None:  # a date without a zone is read as UTC, as the hub's search does
        start, end = start.replace(tzinfo=dt.UTC), end.replace(tzinfo=dt.UTC)
    return prefix, start, end


def _date_matches(value: str, moment: dt.datetime) -> bool:
    prefix, start, end = _date_bound(value)
    return {
        "eq": start <= moment < end,
        "ne": not start <= moment < end,
        "gt": moment >= end,
        "sa": moment >= end,
        "ge": moment >= start,
        "lt": moment < start,
        "eb": moment < start,
        "le": moment < end,
    }[prefix]


def task_in_topic(task: dict) -> bool:
    """The Task topic's own trigger (SDOH Clinical Care): a Task with intent ``order`` that is not a draft."""
    return isinstance(task, dict) and task.get("intent") == "order" and task.get("status") != "draft"


def task_matches(filters: Iterable[Filter], task: dict) -> bool:
    """True when ``task`` (a Task as the hub stores it: with ``id`` and ``meta.lastUpdated``) is in the topic and
    meets every filter. References compare by their ``Type/id`` tail (relative or absolute, as the hub's search
    reads them); a bare id matches that id of any type."""
    if not task_in_topic(task):
        return False
    return all(_filter_matches(f, task) for f in filters)


def _filter_matches(f: Filter, task: dict) -> bool:
    if f.name == "_id":
        return task.get("id") in f.values
    if f.name == "_lastUpdated":
        last_updated = (task.get("meta") or {}).get("lastUpdated")
        span = _parse_datetime(last_updated) if isinstance(last_updated, str) else None
        if span is None:
            return False
        moment = span.start if span.zoned else span.start.replace(tzinfo=dt.UTC)
        return all(_date_matches(value, moment) for value in f.values)
    if f.name == "status":
        hit = task.get("status") in f.values
        return not hit if f.modifier == "not" else hit
    if f.name == "code":
        concept = task.get("code") if isinstance(task.get("code"), dict) else {}
        codings = [
            (c.get("system"), c.get("code")) for c in concept.get("coding") or [] if isinstance(c, dict)
        ]
        hit = any(_token_matches(value, codings) for value in f.values)
        return not hit if f.modifier == "not" else hit
    # owner, requester
    element = task.get(f.name)
    reference = element.get("reference") if isinstance(element, dict) else None
    if f.modifier == "missing":
        return (reference is None) == (f.values == ("true",))
    if not isinstance(reference, str):
        return False
    tail = _reference_tail(reference)
    for value in f.values:
        wanted = _reference_tail(value) if "/" in value else value
        if wanted == tail or ("/" not in wanted and tail.rsplit("/", 1)[-1] == wanted):
            return True
    return False


# --- Rendering notifications -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NotificationEvent:
    """One numbered event of a subscription: its Task as it was then (``task``: with ``id``, and the whole
    resource for ``full-resource``), when it happened, and whether it created the Task."""

    number: int
    timestamp: dt.datetime  # aware
    task: dict
    created: bool = False


def _instant(moment: dt.datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("notification timestamps must be timezone-aware")
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _subscription_reference(base_url: str, subscription_id: str) -> str:
    return f"{base_url.rstrip('/')}/Subscription/{subscription_id}"


def status_parameters(
    *,
    base_url: str,
    subscription_id: str,
    status: str,
    type: str,  # noqa: A002 - the parameter's name in the backport
    events_since_start: int,
    content: str = "id-only",
    events: Sequence[NotificationEvent] = (),
    errors: Sequence[str] = (),
    topic: str = TASK_TOPIC,
    parameters_id: str | None = None,
) -> dict:
    """The SubscriptionStatus, R4 form: a ``Parameters`` (profile backport-subscription-status-r4).

    ``status``: the subscription's (requested | active | error | off); ``type``: handshake | heartbeat |
    event-notification | query-status | query-event; ``events_since_start``: events counted so far (not
    handshakes or heartbeats); ``errors``: codes of http://terminology.hl7.org/CodeSystem/subscription-error
    (e.g. ``no-response``). With ``content`` ``empty`` the topic and every focus are left out (backport payloads
    page: an empty notification names no resource).
    """
    if status not in SUBSCRIPTION_STATUSES:
        raise ValueError(f"unknown subscription status {status!r}")
    if type not in NOTIFICATION_TYPES:
        raise ValueError(f"unknown notification type {type!r}")
    if content not in PAYLOAD_CONTENTS:
        raise ValueError(f"unknown payload content {content!r}")
    parameters: list[dict] = [
        {"name": "subscription", "valueReference": {"reference": _subscription_reference(base_url, subscription_id)}}
    ]
    if content != "empty":
        parameters.append({"name": "topic", "valueCanonical": topic})
    parameters += [
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": type},
        {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
    ]
    for event in events:
        parts = [
            {"name": "event-number", "valueString": str(event.number)},
            {"name": "timestamp", "valueInstant": _instant(event.timestamp)},
        ]
        if content != "empty":
            parts.append({"name": "focus", "valueReference": {"reference": _task_url(base_url, event.task)}})
        parameters.append({"name": "notification-event", "part": parts})
    for code in errors:
        parameters.append(
            {"name": "error", "valueCodeableConcept": {"coding": [{"system": SUBSCRIPTION_ERROR_SYSTEM, "code": code}]}}
        )
    return {
        "resourceType": "Parameters",
        "id": parameters_id or str(uuid.uuid4()),
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": parameters,
    }


def _task_url(base_url: str, task: dict) -> str:
    task_id = task.get("id") if isinstance(task, dict) else None
    if not isinstance(task_id, str) or not task_id:
        raise ValueError("an event's Task needs its id")
    return f"{base_url.rstrip('/')}/Task/{task_id}"


def notification_bundle(
    *,
    base_url: str,
    subscription_id: str,
    status: str,
    type: str,  # noqa: A002 - the backport's name
    events_since_start: int,
    content: str,
    events: Sequence[NotificationEvent] = (),
    errors: Sequence[str] = (),
    timestamp: dt.datetime,
    topic: str = TASK_TOPIC,
    bundle_id: str | None = None,
) -> dict:
    """A notification Bundle (profile backport-subscription-notification-r4, type ``history``).

    The first entry is the SubscriptionStatus ``Parameters`` (``status_parameters``), with a ``request`` (GET
    ``.../Subscription/<id>/$status``) and a ``response`` (200), as the backport's examples show. Then one entry
    per event: none for ``empty``; for ``id-only`` the Task's ``fullUrl``, ``request`` and ``response`` only;
    for ``full-resource`` the Task too. ``events`` are in event-number order; handshakes and heartbeats have
    none. ``base_url`` is the hub's FHIR base (absolute); ``timestamp`` is aware.
    """
    if type in ("handshake", "heartbeat") and events:
        raise ValueError(f"a {type} carries no events")
    if type == "event-notification" and not events:
        raise ValueError("an event notification carries at least one event")
    numbers = [event.number for event in events]
    if numbers != sorted(set(numbers)):
        raise ValueError("events must be in event-number order, each once")
    status_id = str(uuid.uuid4())
    base = base_url.rstrip("/")
    entries = [
        {
            "fullUrl": f"urn:uuid:{status_id}",
            "resource": status_parameters(
                base_url=base, subscription_id=subscription_id, status=status, type=type,
                events_since_start=events_since_start, content=content, events=events, errors=errors, topic=topic,
                parameters_id=status_id,
            ),
            "request": {"method": "GET", "url": f"{_subscription_reference(base, subscription_id)}/$status"},
            "response": {"status": "200"},
        }
    ]
    if content != "empty":
        for event in events:
            entries.append(_event_entry(base, event, full=content == "full-resource"))
    return {
        "resourceType": "Bundle",
        "id": bundle_id or str(uuid.uuid4()),
        "meta": {"profile": [NOTIFICATION_PROFILE]},
        "type": "history",
        "timestamp": _instant(timestamp),
        "entry": entries,
    }


def _event_entry(base: str, event: NotificationEvent, *, full: bool) -> dict:
    task = event.task
    url = _task_url(base, task)
    if event.created:
        request, response = {"method": "POST", "url": "Task"}, {"status": "201"}
    else:
        request, response = {"method": "PUT", "url": f"Task/{task['id']}"}, {"status": "200"}
    meta = task.get("meta") if isinstance(task.get("meta"), dict) else {}
    if isinstance(meta.get("versionId"), str):
        response["etag"] = f'W/"{meta["versionId"]}"'
    if isinstance(meta.get("lastUpdated"), str):
        response["lastModified"] = meta["lastUpdated"]
    entry: dict = {"fullUrl": url}
    if full:
        if task.get("resourceType") != "Task":
            raise ValueError("a full-resource notification needs the whole Task")
        entry["resource"] = task
    entry["request"] = request
    entry["response"] = response
    return entry


def status_bundle(statuses: Sequence[dict], *, timestamp: dt.datetime) -> dict:
    """``$status``'s answer: a ``searchset`` Bundle of SubscriptionStatus ``Parameters`` (type
    ``query-status``), one per subscription asked about."""
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "searchset",
        "timestamp": _instant(timestamp),
        "total": len(statuses),
        "entry": [
            {"fullUrl": f"urn:uuid:{parameters['id']}", "resource": parameters, "search": {"mode": "match"}}
            for parameters in statuses
        ],
    }


def events_range(
    since: str | None, until: str | None, *, events_since_start: int, max_count: int | None = None
) -> tuple[int, int] | list[Issue]:
    """The event numbers ``$events`` replays, first and last inclusive, from its ``eventsSinceNumber`` and
    ``eventsUntilNumber`` (strings, both optional), clipped to the events there are (1 to
    ``events_since_start``) and to ``max_count`` events from the first. An empty range is ``(n, n - 1)``. Issues
    (each naming its parameter) for a bound that is no whole number, or a since after the until given.""" 
    issues = []
    bounds = []
    for name, value, default in (("eventsSinceNumber", since, 1), ("eventsUntilNumber", until, events_since_start)):
        if value is None or value == "":
            bounds.append(default)
        elif not (value.isascii() and value.isdigit()):  # int() refuses other scripts' digits ("²")
            issues.append(Issue("error", "value", name, f"{name} must be a whole event number, not {value!r}."))
        else:
            bounds.append(int(value))
    if not issues and since and until and bounds[0] > bounds[1]:
        issues.append(Issue("error", "value", "eventsSinceNumber",
                            f"eventsSinceNumber ({bounds[0]}) is after eventsUntilNumber ({bounds[1]})."))
    if issues:
        return issues
    first, last = max(bounds[0], 1), min(bounds[1], events_since_start)
    if max_count is not None:
        last = min(last, first + max_count - 1)
    return first, max(last, first - 1)


def notification_issues(resource: dict) -> list[Issue]:
    """Problems in a rendered notification or status resource, for tests and as a guard before sending: the R4B
    structure, and the backport's rules fhir.resources does not check (a history Bundle whose first entry is the
    SubscriptionStatus, every entry with a request)."""
    issues = structural_issues(resource, path=resource.get("resourceType", "Resource"))
    if resource.get("resourceType") == "Bundle" and resource.get("type") == "history":
        entries = resource.get("entry") or []
        if not entries or (entries[0].get("resource") or {}).get("resourceType") != "Parameters":
            issues.append(Issue("error", "invariant", "Bundle.entry[0]",
                                "backport-notification-bundle-r4-1: the first entry must be the Parameters."))
        for index, entry in enumerate(entries):
            if "request" not in entry:
                issues.append(Issue("error", "required", f"Bundle.entry[{index}].request",
                                    "Every entry of a history Bundle has a request."))
    return issues
