"""The delivery step: send one Delivery's fixed content to its receiver and say how it went.

``deliver`` is the seam: the safe outbound HTTP client (notifications/http.py: address checks, size limit) and
the real FHIR notification Bundle plug in behind it without the outbox changing."""

import logging
import urllib.error
import urllib.request
from dataclasses import dataclass

from django.conf import settings
from django.core.mail import EmailMessage

from notifications.models import Delivery, Subscription

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
_READ_AT_MOST = 64 * 1024  # of a receiver's answer: only its status matters


@dataclass(frozen=True)
class DeliveryResult:
    ok: bool
    detail: str = ""  # the HTTP status or the error, for the row and the admin


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
    headers = {"Content-Type": FHIR_JSON, "User-Agent": "exercise-referral-hub"}
    subscription = delivery.subscription
    for line in (subscription.headers if subscription else []) or []:
        name, sep, value = str(line).partition(":")
        if sep and name.strip():
            headers[name.strip()] = value.strip()
    request = urllib.request.Request(
        delivery.endpoint, data=delivery.content.encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=settings.HUB_DELIVERY_TIMEOUT_SECONDS) as response:  # noqa: S310
            response.read(_READ_AT_MOST)
            return DeliveryResult(True, f"HTTP {response.status}")
    except urllib.error.HTTPError as exc:
        return DeliveryResult(False, f"HTTP {exc.code}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return DeliveryResult(False, f"not delivered: {exc}"[:500])
