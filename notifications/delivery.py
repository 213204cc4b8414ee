"""The delivery step: send one Delivery's fixed content to its receiver and say how it went.

Rest-hooks go out through notifications/http.py's ``http_post`` (the outbound policy: address checks, https,
timeouts, a size limit, no redirects), with every ``channel.header`` of the subscription; e-mail through
Django's e-mail backend."""

import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.mail import EmailMessage

from notifications.http import http_post
from notifications.models import Delivery, Subscription

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class DeliveryResult:
    ok: bool
    detail: str = ""  # the HTTP status or the error, for the row and the admin
    permanent: bool = False  # trying again cannot help (refused by policy, a bad URL, a 4xx): dead at once


def deliver(delivery: Delivery) -> DeliveryResult:
    """Send ``delivery`` once. Never raises for a receiver's failure (refused, timed out, non-2xx): that is a
    result, which the outbox turns into a retry or a dead letter."""
    if delivery.channel == Subscription.Channel.EMAIL:
        return _send_email(delivery)
    return _post(delivery)


def _send_email(delivery: Delivery) -> DeliveryResult:
    message = EmailMessage(
        subject=delivery.subject, body=delivery.content, from_email=settings.DEFAULT_FROM_EMAIL, to=[delivery.endpoint]
    )
    try:
        message.send(fail_silently=False)
    except Exception as exc:  # noqa: BLE001 - smtplib, socket and backend errors all mean "try again later"
        return DeliveryResult(False, f"e-mail not sent: {exc}"[:500])
    return DeliveryResult(True, "sent")


def _post(delivery: Delivery) -> DeliveryResult:
    headers = {}
    subscription = delivery.subscription
    for line in (subscription.headers if subscription else []) or []:
        name, sep, value = str(line).partition(":")
        if sep and name.strip():
            headers[name.strip()] = value.strip()
    # The hub's own headers last: a channel.header cannot replace them (the parser refuses them too).
    headers.update({"Content-Type": FHIR_JSON, "Accept": FHIR_JSON})
    result = http_post(
        delivery.endpoint,
        body=delivery.content.encode(),
        headers=headers,
        timeout=(min(5.0, settings.HUB_DELIVERY_TIMEOUT_SECONDS), float(settings.HUB_DELIVERY_TIMEOUT_SECONDS)),
    )
    if result.ok:
        return DeliveryResult(True, f"HTTP {result.status}")
    detail = f"HTTP {result.status}" if result.status else f"{result.reason}: {result.detail}"
    return DeliveryResult(False, detail[:500], permanent=result.permanent)
