"""The Subscription handlers: create, read, update, delete, search, ``$status`` and ``$events`` (R4
Subscriptions Backport 1.1.0 with the Task topic). Each clinic sees and changes only its own subscriptions
(another's, or none, is a 404).

A Subscription is a row of notifications.Subscription; what is served is the resource the client posted (or last
put), with the hub's id, ``meta`` and ``status`` (requested until the handshake is delivered, then active, or
error; off when the clinic switched it off or its ``end`` came) laid over it. ``meta.versionId`` counts the writes
of the resource (notifications.models.Subscription.version_id), and an update's If-Match names it. A deleted one
is switched off and kept with its deliveries, and answered 410 Gone. Parsing and checking are
fhir_bridge/subscriptions.py's; whether the endpoint may be reached is notifications/http.py's policy, checked here
before anything is stored.
"""

import datetime as dt

from django.db.models import QuerySet
from django.utils import timezone
from django.utils.http import http_date

from fhir_bridge.outcomes import FhirError, error, information, not_found
from fhir_bridge.profiles import Issue
from fhir_bridge.search import Criterion
from fhir_bridge.store import http_date_iso
from fhir_bridge.subscriptions import SubscriptionRequest, events_range, status_bundle, subscription_parse
from notifications import bundles
from notifications.http import outbound_refusal
from notifications.models import Subscription
from notifications.subscriptions import (
    CLIENT_STATUSES,
    subscription_create,
    subscription_delete,
    subscription_events,
    subscription_update,
    subscriptions_of,
)


def _last_updated(subscription: Subscription) -> dt.datetime:
    return subscription.updated_at or subscription.created_at


def subscription_render(subscription: Subscription) -> dict:
    """The Subscription as served: as posted, with the hub's id, meta and status (and why, when in error)."""
    resource = {
        "resourceType": "Subscription",
        "id": subscription.fhir_id,
        "meta": {"versionId": str(subscription.version_id),
                 "lastUpdated": http_date_iso(_last_updated(subscription))},
    }
    hub_owned = ("resourceType", "id", "meta", "error")
    resource.update((key, value) for key, value in subscription.resource.items() if key not in hub_owned)
    resource["status"] = subscription.status
    if subscription.status == Subscription.Status.ERROR:
        resource["error"] = f"Notifications are failing ({subscription.error_count} in a row); the hub keeps trying."
    return resource


def _location(request, subscription: Subscription) -> str:
    return f"{request.base_url}/Subscription/{subscription.fhir_id}"


def version_headers(subscription: Subscription) -> dict[str, str]:
    """ETag (the version an If-Match names) and Last-Modified of a Subscription. No Content-Location: its
    versions are counted, not kept (no vread)."""
    return {
        "ETag": f'W/"{subscription.version_id}"',
        "Last-Modified": http_date(_last_updated(subscription).timestamp()),
    }


def _checked(request, now: dt.datetime) -> SubscriptionRequest:
    """The body as a SubscriptionRequest, checked as a create and an update both check it: 400 for a shape that
    cannot be read, 422 for what the hub cannot honour (a filter, channel or content it does not support, an
    endpoint it will not post to, an end already past)."""
    parsed = subscription_parse(request.body)
    if isinstance(parsed, list):
        structural = any(issue.code in ("structure", "required") for issue in parsed)
        raise FhirError(400 if structural else 422, parsed)
    issues = []
    if parsed.channel_type == Subscription.Channel.REST_HOOK:
        refusal = outbound_refusal(parsed.endpoint)
        if refusal is not None:
            issues.append(Issue("error", "business-rule", "Subscription.channel.endpoint",
                                f"The hub will not post to this endpoint: {refusal.detail}"))
    if parsed.end_at is not None and parsed.end_at <= now:
        # The backport (conformance, Subscription.criteria): a server that "will not honor the subscription
        # otherwise" SHALL reject it. One whose end has passed would be off before its handshake.
        issues.append(Issue("error", "business-rule", "Subscription.end",
                            f"end ({parsed.end}) has passed: the subscription would be off before it starts; "
                            "leave end out, or give a time to come."))
    if issues:
        raise FhirError(422, issues)
    return parsed


def subscription_post(request):
    """``POST [base]/Subscription``: 201 with the stored Subscription (status ``requested``; the handshake
    follows), or 400/422 with an OperationOutcome naming the element that is refused."""
    parsed = _checked(request, timezone.now())
    subscription = subscription_create(
        clinic_id=request.clinic_id, request=parsed, resource=request.body, base_url=request.base_url
    )
    headers = {"Location": _location(request, subscription), **version_headers(subscription)}
    return 201, subscription_render(subscription), headers


# What an update may not change: how the hub talks to the receiver, fixed when it was created (a new one is a new
# Subscription). (the FHIRPath, the SubscriptionRequest field, and the stored value's field)
_FIXED = (
    ("Subscription.channel.type", "channel_type", "channel"),
    ("Subscription.channel.payload", "payload_content", "payload"),
    ("Subscription.channel.extension", "heartbeat_period", "heartbeat_seconds"),
)


def subscription_put(request, *, expected_version: int | None) -> tuple[int, dict, dict]:
    """``PUT [base]/Subscription/<id>``: the clinic changes its subscription (notifications.subscriptions.
    subscription_update says what each change does): status ``off`` stops it, ``requested`` or ``active`` turns
    it on again with a new handshake; ``end``, ``channel.endpoint``, ``channel.header`` and the filters may change,
    checked as a create checks them. The channel type, payload content and heartbeat period are fixed (422).
    ``expected_version`` is If-Match's (a stale one is a 412). 200 with the Subscription as now served; 404 for
    one that is not the clinic's, 410 for one it deleted."""
    now = timezone.now()
    subscription = _one(request, lock=True)  # another clinic's is a 404 before its body is looked at
    if expected_version is not None and expected_version != subscription.version_id:
        raise error(412, "conflict", f"Subscription/{subscription.fhir_id} is at version {subscription.version_id}, "
                    f"not {expected_version}: read it again and re-apply the change")
    parsed = _checked(request, now)
    issues = []
    # `error` as read is taken back unchanged: a client that reads a failing subscription, fixes its endpoint and
    # PUTs it back means no status of its own.
    if parsed.status not in CLIENT_STATUSES and parsed.status != subscription.status:
        issues.append(Issue("error", "business-rule", "Subscription.status",
                            f"a client writes off, requested or active; {parsed.status!r} is the hub's to set"))
    email = parsed.channel_type == Subscription.Channel.EMAIL
    for path, field, stored in _FIXED:
        sent = None if email and field == "heartbeat_period" else getattr(parsed, field)
        if sent != getattr(subscription, stored):
            issues.append(Issue("error", "business-rule", path,
                                f"{path} is fixed when the subscription is made ({getattr(subscription, stored)!r}); "
                                "post a new Subscription for another"))
    if issues:
        raise FhirError(422, issues)
    subscription = subscription_update(subscription=subscription, request=parsed, resource=request.body, now=now)
    headers = {"Location": _location(request, subscription), **version_headers(subscription)}
    return 200, subscription_render(subscription), headers


def subscription_remove(request) -> tuple[int, dict, dict]:
    """``DELETE [base]/Subscription/<id>``: the subscription is switched off and no longer served (a read is
    then 410 Gone); its row, numbers and deliveries are kept (notifications.subscriptions.subscription_delete).
    200 with an OperationOutcome, again for one deleted already (R4 http.html#delete); 404 for one that is not
    the clinic's."""
    subscription = subscriptions_of(request.clinic_id, deleted=True).select_for_update().filter(
        fhir_id=request.params["id"]).first()
    if subscription is None:
        raise not_found("Subscription", request.params["id"])
    already = subscription.deleted_at is not None
    subscription = subscription_delete(subscription=subscription)
    said = "was deleted already" if already else "is deleted: switched off, no longer served"
    return 200, information(f"Subscription/{subscription.fhir_id} {said}; its notifications and their delivery "
                            "record are kept"), {"ETag": f'W/"{subscription.version_id}"'}


def _statuses(raw: str) -> list[str]:
    """A ``status`` parameter's values (comma-separated alternatives); one that is no Subscription status is a
    400 naming the parameter, not a search that silently finds nothing."""
    values = raw.split(",")
    unknown = [value for value in values if value not in Subscription.Status.values]
    if unknown:
        raise error(400, "value", f"status is one of {', '.join(Subscription.Status.values)}, not {unknown[0]!r}",
                    expression="status")
    return values


def _one(request, *, lock: bool = False) -> Subscription:
    """The clinic's subscription the URL names: 404 when it has none by that id, 410 Gone when it deleted it.
    ``lock`` takes its row lock (inside the request's transaction)."""
    rows = subscriptions_of(request.clinic_id, deleted=True).filter(fhir_id=request.params["id"])
    subscription = (rows.select_for_update() if lock else rows).first()
    if subscription is None:
        raise not_found("Subscription", request.params["id"])
    if subscription.deleted_at is not None:
        raise error(410, "deleted", f"Subscription/{subscription.fhir_id} was deleted "
                    f"({http_date_iso(subscription.deleted_at)})")
    return subscription


def subscription_read(request) -> tuple[dict, dict]:
    """The Subscription and its version headers."""
    subscription = _one(request)
    return subscription_render(subscription), version_headers(subscription)


def subscriptions_found(clinic_id: int, criteria: list[Criterion]) -> QuerySet:
    """The clinic's subscriptions a search plan's criteria select (fhir_bridge.search.search_plan has checked
    them against the route table): ``_id``, ``url`` (the channel endpoint; a mailto: address as the e-mail
    address) and ``status``; a parameter's values comma-separated are alternatives, parameters ANDed. Oldest
    first."""
    rows = subscriptions_of(clinic_id).order_by("created_at", "pk")
    for criterion in criteria:
        values = [v for v in criterion.raw.split(",") if v]
        if criterion.name == "_id":
            rows = rows.filter(fhir_id__in=values)
        elif criterion.name == "url":
            rows = rows.filter(endpoint__in=[v.removeprefix("mailto:") for v in values])
        elif criterion.name == "status":
            rows = rows.filter(status__in=_statuses(criterion.raw))
    return rows


def _params(request) -> list[tuple[str, str]]:
    """Query parameters, and for a POST the Parameters resource's ``valueX`` parameters."""
    params = list(request.query)
    body = request.body
    if request.method == "POST" and request.raw_body.strip():  # an empty body: no parameters; JSON null is a body
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise error(400, "structure", "the body of an operation must be a Parameters resource",
                        expression="Parameters")
        for parameter in body.get("parameter") or []:
            if isinstance(parameter, dict):
                value = next((v for k, v in parameter.items() if k.startswith("value")), None)
                if isinstance(parameter.get("name"), str) and value is not None:
                    params.append((parameter["name"], str(value)))
    return params


def subscription_status(request) -> dict:
    """``$status``, on one subscription or server-wide (``id`` and ``status`` narrow it): a searchset of
    SubscriptionStatus Parameters (type query-status)."""
    rows = subscriptions_of(request.clinic_id).order_by("created_at", "pk")
    for name, raw in _params(request):  # checked on one subscription too: a bogus one is never ignored
        if name == "id":
            rows = rows.filter(fhir_id__in=[v.rsplit("/", 1)[-1] for v in raw.split(",")])
        elif name == "status":
            rows = rows.filter(status__in=_statuses(raw))
        else:
            raise error(400, "not-supported", f"$status takes id and status, not {name!r}", expression=name)
    if "id" in request.params:
        _one(request)  # a 404 for an id that is not the clinic's
        rows = rows.filter(fhir_id=request.params["id"])
    return status_bundle([bundles.query_status(s) for s in rows], timestamp=timezone.now())


def subscription_events_operation(request) -> dict:
    """``$events``: the events numbered ``eventsSinceNumber`` to ``eventsUntilNumber`` (both optional,
    inclusive), as a history Bundle of type query-event."""
    subscription = _one(request)
    params = dict(_params(request))
    unknown = sorted(set(params) - {"eventsSinceNumber", "eventsUntilNumber"})
    if unknown:  # the backport's content parameter too: replays come at the subscription's own payload level
        raise error(400, "not-supported", f"$events takes eventsSinceNumber and eventsUntilNumber, "
                    f"not {unknown[0]!r}", expression=unknown[0])
    bounds = events_range(
        params.get("eventsSinceNumber"), params.get("eventsUntilNumber"),
        events_since_start=subscription.events_since_start,
    )
    if isinstance(bounds, list):
        raise FhirError(400, bounds)
    events = subscription_events(subscription, *bounds)
    return bundles.query_event(subscription, events, now=timezone.now())
