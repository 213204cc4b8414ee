"""The Subscription handlers: create, read, search, ``$status`` and ``$events`` (R4 Subscriptions Backport
1.1.0 with the Task topic). Each clinic sees only its own subscriptions.

A Subscription is a row of notifications.Subscription; what is served is the resource the client posted, with
the hub's id, ``meta`` and ``status`` (requested until the handshake is delivered, then active, or error)
laid over it. Parsing and checking are fhir_bridge/subscriptions.py's; whether the endpoint may be reached is
notifications/http.py's policy, checked here before anything is stored.
"""

from django.utils import timezone

from fhir_bridge.outcomes import FhirError, error, not_found
from fhir_bridge.profiles import Issue
from fhir_bridge.search import search_plan
from fhir_bridge.store import http_date_iso
from fhir_bridge.subscriptions import events_range, status_bundle, subscription_parse
from notifications import bundles
from notifications.http import outbound_refusal
from notifications.models import Subscription
from notifications.subscriptions import subscription_create, subscription_events, subscriptions_of

SEARCH_PARAMS = ("_id", "url", "status", "_count", "_offset")


def subscription_render(subscription: Subscription) -> dict:
    """The Subscription as served: as posted, with the hub's id, meta and status (and why, when in error)."""
    resource = {
        "resourceType": "Subscription",
        "id": subscription.fhir_id,
        "meta": {"versionId": "1", "lastUpdated": http_date_iso(subscription.created_at)},
    }
    hub_owned = ("resourceType", "id", "meta", "error")
    resource.update((key, value) for key, value in subscription.resource.items() if key not in hub_owned)
    resource["status"] = subscription.status
    if subscription.status == Subscription.Status.ERROR:
        resource["error"] = f"Notifications are failing ({subscription.error_count} in a row); the hub keeps trying."
    return resource


def _location(request, subscription: Subscription) -> str:
    return f"{request.base_url}/Subscription/{subscription.fhir_id}"


def subscription_post(request):
    """``POST [base]/Subscription``: 201 with the stored Subscription (status ``requested``; the handshake
    follows), or 400/422 with an OperationOutcome naming the element that is refused."""
    parsed = subscription_parse(request.body)
    if isinstance(parsed, list):
        structural = any(issue.code in ("structure", "required") for issue in parsed)
        raise FhirError(400 if structural else 422, parsed)
    if parsed.channel_type == Subscription.Channel.REST_HOOK:
        refusal = outbound_refusal(parsed.endpoint)
        if refusal is not None:
            raise FhirError(422, [Issue(
                "error", "business-rule", "Subscription.channel.endpoint",
                f"The hub will not post to this endpoint: {refusal.detail}",
            )])
    subscription = subscription_create(
        clinic_id=request.clinic_id, request=parsed, resource=request.body, base_url=request.base_url
    )
    return 201, subscription_render(subscription), {"Location": _location(request, subscription)}


def _statuses(raw: str) -> list[str]:
    """A ``status`` parameter's values (comma-separated alternatives); one that is no Subscription status is a
    400 naming the parameter, not a search that silently finds nothing."""
    values = raw.split(",")
    unknown = [value for value in values if value not in Subscription.Status.values]
    if unknown:
        raise error(400, "value", f"status is one of {', '.join(Subscription.Status.values)}, not {unknown[0]!r}",
                    expression="status")
    return values


def _one(request) -> Subscription:
    subscription = subscriptions_of(request.clinic_id).filter(fhir_id=request.params["id"]).first()
    if subscription is None:
        raise not_found("Subscription", request.params["id"])
    return subscription


def subscription_read(request) -> dict:
    return subscription_render(_one(request))


def subscription_search(request) -> dict:
    """Search by ``_id``, ``url`` (the channel endpoint) and ``status``; a parameter's values comma-separated
    are alternatives, parameters are ANDed."""
    rows = subscriptions_of(request.clinic_id).order_by("created_at", "pk")
    params = list(request.query)
    for name, raw in params:
        values = [v for v in raw.split(",") if v]
        if name in ("_count", "_offset"):
            continue
        if name not in SEARCH_PARAMS:
            raise error(400, "not-supported", f"Subscription has no search parameter {name!r}; "
                        f"use {', '.join(SEARCH_PARAMS)}", expression=name)
        if name == "_id":
            rows = rows.filter(fhir_id__in=values)
        elif name == "url":
            rows = rows.filter(endpoint__in=[v.removeprefix("mailto:") for v in values])
        elif name == "status":
            rows = rows.filter(status__in=_statuses(raw))
    page = search_plan("Subscription", [(n, v) for n, v in params if n in ("_count", "_offset")])
    total = rows.count()
    window = rows[page.offset : page.offset + page.count]
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": [{"relation": "self", "url": f"{request.base_url}/Subscription"}],
        "entry": [
            {
                "fullUrl": _location(request, s),
                "resource": subscription_render(s),
                "search": {"mode": "match"},
            }
            for s in window
        ],
    }


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
