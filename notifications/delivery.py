"""The delivery step: send one Delivery's fixed content to its receiver and say how it went.

Rest-hooks go out through notifications/http.py's ``http_post`` (the outbound policy: address checks, https,
timeouts, a size limit, no redirects), with every ``channel.header`` of the subscription; e-mail through
Django's e-mail backend.

Every send that may put PHI in a receiver's hands leaves one audit row (``_disclosure``)."""

import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.mail import EmailMessage

from audit.models import Access
from audit.services import access_record
from notifications import bundles
from notifications.http import Connections, http_post
from notifications.models import Delivery, Subscription

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class DeliveryResult:
    ok: bool
    detail: str = ""  # the HTTP status or the error, for the row and the admin
    permanent: bool = False  # trying again cannot help (refused by policy, a bad URL, a 4xx): dead at once
    # Whether the content may have reached the receiver: an answer came, or the connection was lost or timed out
    # after sending began. False when nothing left the hub (refused by policy, DNS, connect, TLS, a bad URL).
    sent: bool = False
    status: int | None = None  # the receiver's HTTP status, when it answered


def deliver(
    delivery: Delivery, *, disclosures: list[dict] | None = None, connections: Connections | None = None
) -> DeliveryResult:
    """Send ``delivery`` once. Never raises for a receiver's failure (refused, timed out, non-2xx): that is a
    result, which the outbox turns into a retry or a dead letter. A rest-hook goes over one of ``connections``
    (http.Connections) when given, kept open for the caller's next delivery to the same receiver.

    A send that may have put PHI in a receiver's hands is audited (``_disclosure``): its row is written now, or,
    given ``disclosures``, appended there (``audit.services.accesses_record``'s entries) for the caller to write
    with the others of its transaction, before that commits."""
    if delivery.channel == Subscription.Channel.EMAIL:
        result = _send_email(delivery)
    else:
        result = _post(delivery, connections)
    if result.sent and _discloses(delivery):
        entry = _disclosure(delivery, result)
        if disclosures is None:
            access_record(**entry)
        else:
            disclosures.append(entry)
    return result


# The HttpResult reasons after which the body may have reached the receiver although no status came back.
_SENT_WITHOUT_ANSWER = {"connection": 502, "timeout": 504, "protocol": 502}


def _discloses(delivery: Delivery) -> bool:
    """Whether this message is a disclosure to audit. A rest-hook event-notification with ``id-only`` or
    ``full-resource`` content names (or carries) a patient's referral Task. Every e-mail counts too: it carries
    no PHI, but it tells an outside address that a referral or an offer exists. A handshake, a heartbeat and an
    ``empty`` notification name no resource, only the subscription and a count, so they leave no row: a
    heartbeat every minute would otherwise bury the disclosures in rows that disclose nothing."""
    if delivery.channel == Subscription.Channel.EMAIL:
        return True
    subscription = delivery.subscription
    return (
        delivery.notification_type == bundles.EVENT_NOTIFICATION
        and subscription is not None
        and subscription.payload != Subscription.Payload.EMPTY
    )


def _disclosure(delivery: Delivery, result: DeliveryResult) -> dict:
    """The audit row (``access_record``'s arguments) of one attempt that sent ``delivery``: to whom (``path``, the
    URL or the address), what (the Task and its version; the content level in ``query``; an e-mail's text is not
    kept), when, and the receiver's answer (``status``: its HTTP status; 502 or 504 when the connection was lost or
    timed out after sending; 200 for an e-mail the mail server took). Each attempt is a disclosure of its own: a
    receiver that answered 500 or timed out may still have read the bytes. Written in the delivery attempt's
    transaction."""
    subscription = delivery.subscription
    email = delivery.channel == Subscription.Channel.EMAIL
    query = [f"delivery={delivery.pk}", f"attempt={delivery.attempts + 1}"]
    if subscription is not None:
        query += [f"subscription={subscription.fhir_id or subscription.pk}", f"content={subscription.payload}"]
    if delivery.event_number is not None:
        query.append(f"event-number={delivery.event_number}")
    return dict(
        channel=Access.Channel.DISCLOSURE,
        interaction="email" if email else "notify",
        method="EMAIL" if email else "POST",
        path=delivery.endpoint,
        status=result.status or 502,
        source_ip=None,
        clinic_id=subscription.clinic_id if subscription is not None else None,
        entity_type="Task" if delivery.task_id else "",
        entity_id=f"{delivery.task_id}/_history/{delivery.task_version}" if delivery.task_version else delivery.task_id,
        query="&".join(query),
    )


def _send_email(delivery: Delivery) -> DeliveryResult:
    message = EmailMessage(
        subject=delivery.subject, body=delivery.content, from_email=settings.DEFAULT_FROM_EMAIL, to=[delivery.endpoint]
    )
    try:
        message.send(fail_silently=False)
    except Exception as exc:  # noqa: BLE001 - smtplib, socket and backend errors all mean "try again later"
        # The mail server did not take it: nothing was disclosed.
        return DeliveryResult(False, f"e-mail not sent: {exc}"[:500])
    return DeliveryResult(True, "sent", sent=True, status=200)


def _post(delivery: Delivery, connections: Connections | None) -> DeliveryResult:
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
        connections=connections,
    )
    status = result.status or _SENT_WITHOUT_ANSWER.get(result.reason)
    if result.ok:
        return DeliveryResult(True, f"HTTP {result.status}", sent=True, status=result.status)
    detail = f"HTTP {result.status}" if result.status else f"{result.reason}: {result.detail}"
    return DeliveryResult(False, detail[:500], permanent=result.permanent, sent=status is not None, status=status)
