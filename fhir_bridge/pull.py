"""Notify and pull (issue 8 §5; the PA IG's "fetch" workflow, its Scenario 2 steps 8-10): an EHR posted a Task
whose focus is a ServiceRequest on its own FHIR server, and the hub fetches what the referral needs from there.

The path of one pull:
1. ``intake.task_intake`` opens the referral from the Task alone, in BusinessStatus.WAITING_FOR_DATA (the Task's
   businessStatus says so), and stores the Task as sent (its focus and for stay the EHR's absolute URLs).
2. ``notifications.receivers`` schedules a ``pull-referral`` follow-up, due at once (notifications/kinds.py).
3. Its handler calls ``referral_pull``: a SMART Backend Services token from the EHR's token URL (client_credentials
   with a private_key_jwt signed by the hub's key, fhir_bridge.hub_client), then reads of the ServiceRequest, the
   Patient, the Conditions it gives as reason and the Observations and Goals it gives as supporting info. Each
   read goes through notifications/http.py (the outbound policy) and leaves one audit row (audit.Access, channel
   ``pull``). Nothing is read outside the client's registered FHIR base.
4. What came is checked and mapped exactly as a pushed referral is (``intake.validate``, ``intake.referral_facts``),
   stored (``store.resources_create``) and handed to the domain (``referral_facts_complete``), in one savepoint;
   then the referral is routed (intake's ``route_referral`` message, and the routing safety net).

Outcomes: a failure that may pass (the EHR down, a 5xx, 429, a timeout) is tried again: the handler schedules
the next attempt as a new follow-up row with backoff, until HUB_PULL_GIVE_UP_HOURS after the Task came; then, or
at once for a failure that will not pass (404, 401, a refusal by policy, data that breaks the PA profiles), the
referral is rejected with a statusReason that says why, in the words of an OperationOutcome (element: problem).
A rejected pull stores none of what it fetched.
"""

import datetime as dt
import logging
import re
from dataclasses import dataclass
from urllib.parse import urlencode

import orjson
from django.conf import settings
from django.db import transaction

from audit.models import Access
from audit.services import access_record
from config.queue import enqueue_on_commit
from fhir_bridge.hub_client import hub_client_key
from fhir_bridge.intake import walk_references, referral_facts, under_base, validate
from fhir_bridge.models import EhrClient, InboundMessage, StoredResource
from fhir_bridge.outcomes import FhirError
from fhir_bridge.smart_keys import client_assertion, token_request_form
from fhir_bridge.store import DuplicateResource, new_id, resources_create
from notifications.http import HttpResult, http_get, http_post
from referrals.errors import DomainError
from referrals.models import BusinessStatus, Referral, ReferralStatus
from referrals.offers import HUB_ACTOR
from referrals.services import referral_facts_complete, referral_update
from referrals.tasks import route_referral

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
# What the hub asks the EHR for: reads of the four types it fetches (SMART v1 system scopes, which v2 servers
# take too).
PULL_SCOPES = "system/ServiceRequest.read system/Patient.read system/Condition.read system/Observation.read system/Goal.read"
_RELATIVE = re.compile(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}(/_history/[A-Za-z0-9\-.]{1,64})?")
# What a rejection's reason may hold of the issues (the rest is counted): the statusReason is for a person.
_REASON_ISSUES = 8


@dataclass(frozen=True)
class PullOutcome:
    """What one attempt came to: ``text`` for the follow-up row; ``retry_until`` set when the attempt failed for
    a reason that may pass and the hub should try again (no later than that time)."""

    text: str
    retry_until: dt.datetime | None = None


class _Failed(Exception):
    """A fetch that did not give what the referral needs. ``transient``: trying again later may help."""

    def __init__(self, reason: str, *, transient: bool):
        super().__init__(reason)
        self.transient = transient


def referral_pull(*, referral_id: int, now: dt.datetime) -> PullOutcome:
    """One attempt to fetch a waiting referral's data from its EHR and complete it (the module docstring).

    Call inside a transaction (a follow-up's): the referral is locked for the attempt, so two workers never
    complete it twice. A referral that no longer waits (completed, cancelled) is left alone."""
    referral = Referral.objects.select_for_update().filter(pk=referral_id).first()
    if referral is None or referral.business_status != BusinessStatus.WAITING_FOR_DATA:
        return PullOutcome("no longer waiting for data")
    if referral.status != ReferralStatus.REQUESTED:
        return PullOutcome(f"referral is {referral.status}")
    task_row = StoredResource.objects.filter(referral_id=referral.pk, resource_type="Task").first()
    message = InboundMessage.objects.select_related("client").filter(referral_id=referral.pk).first()
    if task_row is None or message is None:
        return _reject(referral, "The hub lost track of where to fetch this referral's data; please send it again.")
    give_up_at = referral.created_at + dt.timedelta(hours=settings.HUB_PULL_GIVE_UP_HOURS)
    client = message.client
    try:
        fetched = _fetch(client=client, clinic_id=referral.clinic_id, task=task_row.content)
    except _Failed as failure:
        if failure.transient and now < give_up_at:
            log.info("pull of referral %s failed, will retry: %s", referral.pk, failure)
            return PullOutcome(f"retry: {failure}", retry_until=give_up_at)
        if failure.transient:
            hours = settings.HUB_PULL_GIVE_UP_HOURS
            return _reject(
                referral,
                f"The hub could not read this referral's data from the clinic's FHIR server for {hours} h "
                f"(last: {failure}). Send a new Task once the server answers again.",
            )
        return _reject(referral, f"The hub could not read this referral's data from the clinic's FHIR server: {failure}.")
    try:
        with transaction.atomic():  # a savepoint: a refusal stores none of what was fetched
            _complete(referral=referral, client=client, task=task_row.content, fetched=fetched, now=now)
    except FhirError as refused:
        return _reject(referral, "The referral's data on the clinic's FHIR server breaks the PA profiles: "
                       + _issues_text(refused))
    except DuplicateResource:
        return _reject(referral, "The ServiceRequest on the clinic's FHIR server carries a business identifier of "
                       "a referral the hub already has; send a Task for that referral instead.")
    except DomainError as refused:  # the referral is locked and waiting: only a rule of the domain refuses
        return _reject(referral, f"The referral's data on the clinic's FHIR server was refused: {refused}")
    return PullOutcome(f"fetched {len(fetched.resources)} resources; routing")


@dataclass
class _Fetched:
    service_request: dict
    patient: dict
    conditions: list[dict]
    observations: list[dict]
    goals: list[dict]
    urls: dict[str, dict]  # every URL a resource was read from (absolute) -> the resource

    @property
    def resources(self) -> list[dict]:
        return [self.service_request, self.patient, *self.conditions, *self.observations, *self.goals]


def _fetch(*, client: EhrClient, clinic_id: int, task: dict) -> _Fetched:
    base = client.fhir_base_url.rstrip("/")
    token = _access_token(client)
    reader = _Reader(client=client, clinic_id=clinic_id, base=base, token=token)
    service_request = reader.read((task.get("focus") or {}).get("reference", ""), "ServiceRequest", "Task.focus")
    patient_url = (task.get("for") or {}).get("reference", "")
    subject = reader.absolute((service_request.get("subject") or {}).get("reference", ""))
    if subject.split("/_history/")[0] != patient_url.split("/_history/")[0]:
        raise _Failed(
            f"ServiceRequest.subject ({subject or 'none'}) is not the Task's patient ({patient_url})", transient=False
        )
    patient = reader.read(patient_url, "Patient", "Task.for")
    conditions = reader.read_all(service_request.get("reasonReference"), "Condition", "ServiceRequest.reasonReference")
    supporting = service_request.get("supportingInfo")
    observations = reader.read_all(supporting, "Observation", "ServiceRequest.supportingInfo")
    goals = reader.read_all(supporting, "Goal", "ServiceRequest.supportingInfo")
    return _Fetched(service_request, patient, conditions, observations, goals, reader.urls)


def _access_token(client: EhrClient) -> str:
    """A SMART Backend Services access token from the EHR (RFC 7523 client assertion signed by the hub's key)."""
    assertion = client_assertion(key=hub_client_key(), kid=None, client_id=client.hub_client_id, token_url=client.token_url)
    form = token_request_form(assertion=assertion, scopes=PULL_SCOPES)
    result = http_post(
        client.token_url, body=urlencode(form).encode(), timeout=_timeout(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
    )
    if not result.ok:
        raise _Failed(f"its token endpoint answered {_said(result)}", transient=result.transient)
    try:
        token = orjson.loads(result.body).get("access_token")
    except (orjson.JSONDecodeError, AttributeError):
        token = None
    if not isinstance(token, str) or not token:
        raise _Failed("its token endpoint answered without an access_token", transient=False)
    return token


def _timeout() -> tuple[float, float]:
    seconds = float(settings.HUB_PULL_TIMEOUT_SECONDS)
    return min(5.0, seconds), seconds


def _said(result: HttpResult) -> str:
    return f"HTTP {result.status}" if result.status else f"{result.reason} ({result.detail})"


# A read that got no answer is audited as a gateway error, 504 for a timeout and 502 otherwise (the connection
# refused or lost): the status column holds what came back, and nothing did.
_NO_ANSWER_STATUS = {"timeout": 504}


@dataclass
class _Reader:
    client: EhrClient
    clinic_id: int
    base: str
    token: str

    def __post_init__(self):
        self.urls: dict[str, dict] = {}

    def absolute(self, ref: str) -> str:
        """A reference in the EHR's resources, as the URL it names: relative ones are on the EHR's base."""
        if not ref or ref.startswith(("http://", "https://", "#", "urn:")):
            return ref
        return f"{self.base}/{ref}"

    def read(self, ref: str, resource_type: str, expression: str) -> dict:
        url = self.absolute(ref)
        if not under_base(url, self.base, resource_type):
            raise _Failed(f"{expression} {ref!r} is not a {resource_type} on the registered server {self.base}",
                          transient=False)
        if url in self.urls:
            return self.urls[url]
        result = http_get(url, headers={"Accept": FHIR_JSON, "Authorization": f"Bearer {self.token}"},
                          timeout=_timeout())
        self._audit(url, resource_type, result)
        if not result.ok:
            raise _Failed(f"GET {url} answered {_said(result)}", transient=result.transient)
        try:
            resource = orjson.loads(result.body)
        except orjson.JSONDecodeError:
            raise _Failed(f"GET {url} answered something that is not JSON", transient=False) from None
        if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
            kind = resource.get("resourceType") if isinstance(resource, dict) else type(resource).__name__
            raise _Failed(f"GET {url} answered a {kind!r}, not a {resource_type}", transient=False)
        wanted = url[len(self.base) + 1:].split("/")[1]
        if resource.get("id") != wanted:
            raise _Failed(f"GET {url} answered {resource_type}/{resource.get('id')}, not {resource_type}/{wanted}",
                          transient=False)
        self.urls[url] = resource
        return resource

    def read_all(self, references, resource_type: str, expression: str) -> list[dict]:
        """The ``resource_type`` resources among ``references`` (a list of Reference), each read once."""
        out = []
        for i, reference in enumerate(references if isinstance(references, list) else []):
            ref = reference.get("reference") if isinstance(reference, dict) else None
            if not isinstance(ref, str) or ref.startswith(("#", "urn:")):
                continue  # contained or logical: nothing to fetch
            parts = ref.split("/_history/")[0].split("/")
            if len(parts) < 2 or parts[-2] != resource_type:
                continue  # another type (read by another call, or not needed)
            resource = self.read(ref, resource_type, f"{expression}[{i}]")
            if resource not in out:
                out.append(resource)
        return out

    def _audit(self, url: str, resource_type: str, result: HttpResult) -> None:
        """One row per read of PHI from the EHR: who (the EHR's client), what (the URL and the resource), when,
        and the answer (its HTTP status; 502 when none came, 504 for a timeout)."""
        access_record(
            channel=Access.Channel.PULL,
            interaction="read",
            method="GET",
            path=url,
            status=result.status or _NO_ANSWER_STATUS.get(result.reason, 502),
            source_ip=None,  # the hub asked; the peer is in path
            agent_client=self.client.client_id,
            clinic_id=self.clinic_id,
            entity_type=resource_type,
            entity_id=url.rstrip("/").split(f"/{resource_type}/")[-1].split("/")[0],
        )


def _complete(*, referral: Referral, client: EhrClient, task: dict, fetched: _Fetched, now: dt.datetime) -> None:
    """Check, map and store what was fetched, and hand the facts to the domain. Raises FhirError (the data
    breaks a profile rule), DuplicateResource or DomainError; the caller's savepoint then keeps nothing."""
    originals = fetched.resources
    validate([(_path(r), r) for r in originals])
    # Each resource gets the hub's id; references between them (relative on the EHR, or absolute URLs) are
    # rewritten to the hub's copies. What came is kept as it came; the Task keeps the EHR's URLs, as sent.
    resources = [orjson.loads(orjson.dumps(r)) | {"id": new_id()} for r in originals]
    base = client.fhir_base_url.rstrip("/")
    local: dict[str, str] = {}
    for url, original in fetched.urls.items():
        copy = resources[next(i for i, r in enumerate(originals) if r is original)]
        target = f"{copy['resourceType']}/{copy['id']}"
        for alias in (url, url.split("/_history/")[0], url[len(base) + 1:].split("/_history/")[0]):
            local[alias] = target
    # A relative reference to what was not fetched (the requester's PractitionerRole) names the EHR's resource:
    # made absolute, so that it does not point at the hub's own server.
    for copy in resources:
        walk_references(copy, lambda ref: local.get(ref) or (f"{base}/{ref}" if _RELATIVE.fullmatch(ref) else ref))
    service_request, patient, *rest = resources
    n_conditions, n_observations = len(fetched.conditions), len(fetched.observations)
    conditions = rest[:n_conditions]
    observations = rest[n_conditions:n_conditions + n_observations]
    goals = rest[n_conditions + n_observations:]
    facts = referral_facts(
        task=task, service_request=service_request, patient=patient, conditions=conditions,
        observations=observations, goal_resources=goals,
    )
    referral_facts_complete(referral=referral, facts=facts, actor=HUB_ACTOR)
    resources_create(contents=resources, clinic_id=referral.clinic_id, referral_id=referral.pk, client=client, now=now)
    enqueue_on_commit(route_referral, referral.pk)


def _path(resource: dict) -> str:
    return f"{resource['resourceType']}/{resource.get('id')}"


def _issues_text(refused: FhirError) -> str:
    """The issues as one sentence: "element: problem; element: problem; and N more." A diagnostics that is a
    sentence of its own (the profiles' end with a period) loses its period, so that the text has one, at its end."""
    issues = [f"{issue.expression or 'the resource'}: {issue.diagnostics.rstrip().removesuffix('.')}"
              for issue in refused.issues]
    more = len(issues) - _REASON_ISSUES
    text = "; ".join(issues[:_REASON_ISSUES])
    return text + (f"; and {more} more" if more > 0 else "") + "."


def _reject(referral: Referral, reason: str) -> PullOutcome:
    """Reject the waiting referral with ``reason`` (the Task's statusReason, which the physician reads)."""
    referral_update(
        referral=referral, status=ReferralStatus.REJECTED, reason=reason[:2000], business_status=BusinessStatus.CLOSED,
        actor=HUB_ACTOR,
    )
    log.info("pull of referral %s: rejected: %s", referral.pk, reason)
    return PullOutcome(f"rejected: {reason}")
