"""Notify and pull (issue 8 §5; the PA IG's "fetch" workflow, its Scenario 2 steps 8-10): an EHR posted a Task
whose focus is a ServiceRequest on its own FHIR server, and the hub fetches what the referral needs from there.

The path of one pull:
1. ``intake.task_intake`` opens the referral from the Task alone, in BusinessStatus.WAITING_FOR_DATA (the Task's
   businessStatus says so), and stores the Task as sent (its focus and for stay the EHR's absolute URLs).
2. ``notifications.receivers`` schedules a ``pull-referral`` follow-up, due at once (notifications/kinds.py).
3. Its handler calls ``referral_pull``, which reads the referral without locking it and fetches, with no lock
   on the referral: a SMART Backend Services token (client_credentials with a private_key_jwt signed by the hub's
   key, fhir_bridge.hub_client), taken from the cache while it lives (``_Token``); then reads of the
   ServiceRequest, the Patient, the Conditions it gives as reason and the Observations and Goals it gives as
   supporting info; then the searches the PA IG's fetch workflow names (Scenario 2 steps 9-10):
   ``Condition?patient=<id>&category=<PA>`` and ``Observation?patient=<id>&category=<PA>``, of which the hub keeps
   the patient's Conditions and PAVS Observations (one that breaks the PA profiles is left out: the physician did
   not name it, and it does not reject the referral). Each request goes through notifications/http.py (the outbound
   policy) and leaves one audit row (audit.Access, channel ``pull``). Nothing is read outside the client's
   registered FHIR base: a search's next page elsewhere is not followed, and its entries from elsewhere are
   ignored, each with an audit row that says so.
4. Only then is the referral locked and checked again (still waiting for data?): what came is checked and mapped
   exactly as a pushed referral is (``intake.validate``, ``intake.referral_facts``), stored
   (``store.resources_create``) and handed to the domain (``referral_facts_complete``), in one savepoint; then the
   referral is routed (intake's ``route_referral`` message, and the routing safety net). A slow EHR so never
   holds the referral's lock: a cancellation or any other change to it waits only for that short write.

The referral Task keeps the ``focus`` and ``for`` the EHR wrote, its own absolute URLs, and never points at the
hub's copies. The ServiceRequest lives and is maintained on the Care Manager's server (PA IG, "Order and Referral
Management"); what the hub stores is a copy as of the pull, and the Task says which one it acts on. The EHR
reading its Task back (a read, a search, a subscription's full-resource notification) sees what it wrote, and
finds it by its own references (``Task?focus=<its ServiceRequest's URL>``, ``Task?patient=<its Patient's URL>``),
as ``projection`` keeps every element of an EHR's Task the hub does not own. Each copy says where it was read
from in ``meta.source`` (R4: "the source system of the resource"), so that ``_include=Task:focus`` and
``Task:patient`` give the hub's copy of an EHR resource the Task names (R4 search, "External References": a
server may include a resource referenced on another server), matched by that ``meta.source`` among the
referral's own resources (fhir_bridge.search); ``_revinclude=Task:focus`` from a copy gives the Task back. What
the hub writes for the clinic from the Task (a report's basedOn, a record's subject) names the EHR's resources
too. An offer's child Task, which a professional reads and who cannot read the EHR, names the hub's copies
instead (projection.hub_copies), as every other offer does.

Outcomes: a failure that may pass (the EHR down, a 5xx, 429, a timeout) is tried again: the handler schedules
the next attempt as a new follow-up row with backoff, until HUB_PULL_GIVE_UP_HOURS after the Task came; then, or
at once for a failure that will not pass (404, 401, a refusal by policy, data that breaks the PA profiles), the
referral is rejected with a statusReason that says why, in the words of an OperationOutcome (element: problem).
A rejected pull stores none of what it fetched; a referral that stopped waiting while its data came (cancelled
by the clinic) keeps none of it either.
"""

import datetime as dt
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import orjson
from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from audit.models import Access
from audit.services import access_record
from config.queue import enqueue_on_commit
from fhir_bridge.clinical_facts import PAVS_CODES
from fhir_bridge.codes import PA_CATEGORY_SYSTEM
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
# What the hub asks the EHR for: reads (and searches) of the five types it fetches (SMART v1 system scopes, which
# v2 servers take too).
PULL_SCOPES = "system/ServiceRequest.read system/Patient.read system/Condition.read system/Observation.read system/Goal.read"
# The PA IG's category of its Conditions and Observations, as the fetch workflow's searches name it.
PA_CATEGORY = f"{PA_CATEGORY_SYSTEM}|PhysicalActivity"
_RELATIVE = re.compile(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}(/_history/[A-Za-z0-9\-.]{1,64})?")
# What a rejection's reason may hold of the issues (the rest is counted): the statusReason is for a person.
_REASON_ISSUES = 8
# The most one fetch may take, every request included: well inside the soft time limit of the follow-up task that
# runs it (100 s, notifications/tasks.py), so that an EHR slow to answer a dozen requests ends as a retry of the
# pull, not as a task killed in the middle.
FETCH_SECONDS = 60
# A cached token is dropped this long before the EHR said it expires (at most a tenth of its life), so that a read
# never goes out with one about to lapse.
_TOKEN_MARGIN_SECONDS = 60


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

    The HTTP requests go out with no lock on the referral; only the write that follows takes it (in a
    savepoint, or a transaction of its own when called outside one), after checking that the referral still
    waits, so that two workers never complete it twice and a referral cancelled meanwhile is left as it is."""
    referral = Referral.objects.filter(pk=referral_id).first()
    if (moved_on := _not_waiting(referral)) is not None:
        return PullOutcome(moved_on)
    task_row = StoredResource.objects.filter(referral_id=referral.pk, resource_type="Task").first()
    message = InboundMessage.objects.select_related("client").filter(referral_id=referral.pk).first()
    if task_row is None or message is None:
        return _reject(referral_id, "The hub lost track of where to fetch this referral's data; please send it again.")
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
                referral_id,
                f"The hub could not read this referral's data from the clinic's FHIR server for {hours} h "
                f"(last: {failure}). Send a new Task once the server answers again.",
            )
        return _reject(
            referral_id, f"The hub could not read this referral's data from the clinic's FHIR server: {failure}."
        )
    left_out = _searched_invalid_drop(fetched)
    outcome = _store(referral_id=referral_id, client=client, fetched=fetched, now=now)
    if left_out and outcome.text.startswith("fetched "):
        return PullOutcome(f"{outcome.text}; left out, found by search but breaking the PA profiles: "
                           + ", ".join(left_out))
    return outcome


def _not_waiting(referral: Referral | None) -> str | None:
    """Why ``referral`` no longer waits for its data (the follow-up's outcome), or None while it does."""
    if referral is not None and referral.status != ReferralStatus.REQUESTED:
        return f"referral is {referral.status}"
    if referral is None or referral.business_status != BusinessStatus.WAITING_FOR_DATA:
        return "no longer waiting for data"
    return None


def _store(*, referral_id: int, client: EhrClient, fetched: "_Fetched", now: dt.datetime) -> PullOutcome:
    with transaction.atomic():
        referral = Referral.objects.select_for_update().filter(pk=referral_id).first()
        if (moved_on := _not_waiting(referral)) is not None:  # changed while the EHR answered: keep nothing
            return PullOutcome(f"{moved_on}; nothing fetched is kept")
        task = StoredResource.objects.get(referral_id=referral.pk, resource_type="Task").content
        try:
            with transaction.atomic():  # a savepoint: a refusal stores none of what was fetched
                _complete(referral=referral, client=client, task=task, fetched=fetched, now=now)
        except FhirError as refused:
            return _reject_locked(referral, "The referral's data on the clinic's FHIR server breaks the PA profiles: "
                                  + _issues_text(refused))
        except DuplicateResource:
            return _reject_locked(
                referral, "The ServiceRequest on the clinic's FHIR server carries a business identifier of a "
                "referral the hub already has; send a Task for that referral instead.")
        except DomainError as refused:  # the referral is locked and waiting: only a rule of the domain refuses
            return _reject_locked(referral, f"The referral's data on the clinic's FHIR server was refused: {refused}")
    return PullOutcome(f"fetched {len(fetched.resources)} resources; routing")


@dataclass
class _Fetched:
    service_request: dict
    patient: dict
    conditions: list[dict]
    observations: list[dict]
    goals: list[dict]
    urls: dict[str, dict]  # every URL a resource was read from (absolute) -> the resource
    found: list[str]  # the URLs of those that a search found (the ServiceRequest did not name them)

    @property
    def resources(self) -> list[dict]:
        return [self.service_request, self.patient, *self.conditions, *self.observations, *self.goals]


def _fetch(*, client: EhrClient, clinic_id: int, task: dict) -> _Fetched:
    base = client.fhir_base_url.rstrip("/")
    deadline = time.monotonic() + FETCH_SECONDS
    reader = _Reader(client=client, clinic_id=clinic_id, base=base, token=_Token(client, deadline), deadline=deadline)
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
    # The PA IG's fetch workflow (Scenario 2 steps 9-10) finds the rest of the patient's PA record by search: her
    # PA Conditions, and of her PA Observations the PAVS ones (what the hub reads a baseline from; the latest of
    # each code counts, clinical_facts.pavs_baseline).
    patient_url = patient_url.split("/_history/")[0]
    query = {"patient": patient["id"], "category": PA_CATEGORY}
    conditions += reader.search("Condition", query, patient_url=patient_url)
    observations += reader.search("Observation", query, patient_url=patient_url, codes=PAVS_CODES)
    return _Fetched(service_request, patient, conditions, observations, goals, reader.urls, reader.found)


def _searched_invalid_drop(fetched: _Fetched) -> list[str]:
    """Leave out what a search found that breaks the PA profiles, and say what (``Type/id`` on the EHR). The
    physician named the rest (the ServiceRequest, its reasons and supporting info), and a fault there rejects
    the referral; an old Observation on the EHR that the referral never named must not."""
    left_out = []
    for url in fetched.found:
        resource = fetched.urls[url]
        try:
            validate([(_path(resource), resource)])
        except FhirError as refused:
            log.info("pull: %s left out: %s", url, _issues_text(refused))
            del fetched.urls[url]
            for kept in (fetched.conditions, fetched.observations):
                if resource in kept:
                    kept.remove(resource)
            left_out.append(_path(resource))
    return left_out


class _Token:
    """The SMART Backend Services access token the hub holds for one EHR client, from the cache while the EHR says
    it lives (less _TOKEN_MARGIN_SECONDS), else from the EHR's token endpoint (an RFC 7523 client assertion signed
    by the hub's key). The cache (Django's: local memory in one process, Redis shared by the workers) holds the
    token under the client, its token URL and the id the EHR knows the hub by, so that a registration changed
    since asks again. ``renew`` drops it and asks for a new one, once per pull (a 401 on a read: the EHR has
    forgotten or revoked it before its time)."""

    def __init__(self, client: EhrClient, deadline: float):
        self.client = client
        self.deadline = deadline
        fingerprint = hashlib.sha256(f"{client.token_url}\n{client.hub_client_id}\n{PULL_SCOPES}".encode()).hexdigest()
        self.key = f"pull-token:{client.pk}:{fingerprint[:24]}"
        self.value: str | None = None
        self.renewed = False

    def get(self) -> str:
        if self.value is None:
            cached = cache.get(self.key)
            self.value = cached if isinstance(cached, str) and cached else self._request()
        return self.value

    def renew(self) -> str | None:
        """A new token in place of the one refused, or None when this pull has renewed it already."""
        if self.renewed:
            return None
        self.renewed = True
        cache.delete(self.key)
        self.value = self._request()
        return self.value

    def _request(self) -> str:
        client = self.client
        assertion = client_assertion(key=hub_client_key(), kid=None, client_id=client.hub_client_id,
                                     token_url=client.token_url)
        form = token_request_form(assertion=assertion, scopes=PULL_SCOPES)
        result = http_post(
            client.token_url, body=urlencode(form).encode(), timeout=_timeout(self.deadline),
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        )
        if not result.ok:
            raise _Failed(f"its token endpoint answered {_said(result)}", transient=result.transient)
        answer = _json_object(result)
        token = answer.get("access_token") if answer is not None else None
        if not isinstance(token, str) or not token:
            raise _Failed("its token endpoint answered without an access_token", transient=False)
        lifetime = answer.get("expires_in")
        if isinstance(lifetime, int) and not isinstance(lifetime, bool):  # SMART requires it; without it, no reuse
            seconds = lifetime - min(_TOKEN_MARGIN_SECONDS, lifetime // 10) - int(result.elapsed + 1)
            if seconds > 0:
                cache.set(self.key, token, timeout=seconds)
        return token


def _timeout(deadline: float) -> tuple[float, float]:
    """(connect, whole answer) for the next request: HUB_PULL_TIMEOUT_SECONDS, or what is left of the fetch's
    FETCH_SECONDS if less. Raises _Failed (transient) when less than a second is left."""
    left = deadline - time.monotonic()
    if left < 1:
        raise _Failed(f"the EHR took more than {FETCH_SECONDS} s to answer the fetch's requests", transient=True)
    seconds = min(float(settings.HUB_PULL_TIMEOUT_SECONDS), left)
    return min(5.0, seconds), seconds


def _json_object(result: HttpResult) -> dict | None:
    """The answer's body as a JSON object, or None when it is not JSON or not an object."""
    try:
        body = orjson.loads(result.body)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


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
    token: _Token
    deadline: float  # time.monotonic() by which the fetch must be done (FETCH_SECONDS)

    def __post_init__(self):
        self.urls: dict[str, dict] = {}
        self.found: list[str] = []

    def absolute(self, ref: str) -> str:
        """A reference in the EHR's resources, as the URL it names: relative ones are on the EHR's base."""
        if not ref or ref.startswith(("http://", "https://", "#", "urn:")):
            return ref
        return f"{self.base}/{ref}"

    def _get(self, url: str, *, audit) -> HttpResult:
        """GET ``url`` with the token (a new one once, after a 401), each request audited by ``audit(result)``."""
        result = http_get(url, headers={"Accept": FHIR_JSON, "Authorization": f"Bearer {self.token.get()}"},
                          timeout=_timeout(self.deadline))
        audit(result)
        if result.status == 401 and self.token.renew() is not None:
            result = http_get(url, headers={"Accept": FHIR_JSON, "Authorization": f"Bearer {self.token.get()}"},
                              timeout=_timeout(self.deadline))
            audit(result)
        return result

    def read(self, ref: str, resource_type: str, expression: str) -> dict:
        url = self.absolute(ref)
        if not under_base(url, self.base, resource_type):
            raise _Failed(f"{expression} {ref!r} is not a {resource_type} on the registered server {self.base}",
                          transient=False)
        if url in self.urls:
            return self.urls[url]
        wanted = url[len(self.base) + 1:].split("/")[1]
        result = self._get(url, audit=lambda answer: self._audit("read", url, resource_type, wanted, answer))
        if not result.ok:
            raise _Failed(f"GET {url} answered {_said(result)}", transient=result.transient)
        try:
            resource = orjson.loads(result.body)
        except orjson.JSONDecodeError:
            raise _Failed(f"GET {url} answered something that is not JSON", transient=False) from None
        if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
            kind = resource.get("resourceType") if isinstance(resource, dict) else type(resource).__name__
            raise _Failed(f"GET {url} answered a {kind!r}, not a {resource_type}", transient=False)
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

    def search(self, resource_type: str, query: dict[str, str], *, patient_url: str, codes=None) -> list[dict]:
        """The patient's ``resource_type`` resources that ``query`` finds on the EHR and not read already (with
        one of ``codes``, when given), at most HUB_PULL_SEARCH_MAX_PAGES pages of HUB_PULL_SEARCH_COUNT.

        A next page is followed only on the registered base. An entry is kept when it is a match of that type,
        its URL (fullUrl, else base/type/id) lies under the base and its subject is the patient; one outside the
        base or about someone else is ignored, with an audit row saying so (its PHI reached the hub). A request
        that fails fails the fetch as a read does."""
        url = f"{self.base}/{resource_type}?" + urlencode({**query, "_count": settings.HUB_PULL_SEARCH_COUNT})
        out = []
        for page in range(settings.HUB_PULL_SEARCH_MAX_PAGES):
            result = self._get(url, audit=lambda answer: self._audit("search", url, resource_type, "", answer))
            if not result.ok:
                raise _Failed(f"GET {url} answered {_said(result)}", transient=result.transient)
            bundle = _json_object(result)
            if bundle is None or bundle.get("resourceType") != "Bundle":
                raise _Failed(f"GET {url} answered something that is not a Bundle", transient=False)
            for entry in bundle.get("entry") if isinstance(bundle.get("entry"), list) else []:
                resource = self._entry(entry, resource_type, patient_url, result, codes)
                if resource is not None:
                    out.append(resource)
            url = next((link.get("url") for link in bundle.get("link") or []
                        if isinstance(link, dict) and link.get("relation") == "next"), None)
            if not isinstance(url, str) or not self._on_base(url):
                if url:
                    log.info("pull from %s: %s search's next page %r is off the registered base; not followed",
                             self.base, resource_type, url)
                return out
        log.info("pull from %s: %s search stopped after %s pages", self.base, resource_type, page + 1)
        return out

    def _entry(self, entry, resource_type: str, patient_url: str, result: HttpResult, codes) -> dict | None:
        """The resource of one searchset entry if it is kept (``search``), else None."""
        resource = entry.get("resource") if isinstance(entry, dict) else None
        search = entry.get("search") if isinstance(entry, dict) else None
        mode = search.get("mode", "match") if isinstance(search, dict) else "match"
        if not isinstance(resource, dict) or resource.get("resourceType") != resource_type or mode != "match":
            return None  # an OperationOutcome, an include: not what was searched for
        if codes and not _has_code(resource, codes):
            return None  # a PA measure the hub does not read (steps a day, exercise duration)
        fhir_id = resource.get("id")
        full_url = entry.get("fullUrl") or (
            f"{self.base}/{resource_type}/{fhir_id}" if isinstance(fhir_id, str) else ""
        )
        if not isinstance(full_url, str) or not under_base(full_url, self.base, resource_type) \
                or full_url.rsplit("/", 1)[-1] != fhir_id:
            self._audit("search", str(full_url)[:2000], resource_type, str(fhir_id or "")[:64], result,
                        query=f"ignored: not a {resource_type} on the registered server {self.base}")
            return None
        if full_url in self.urls:
            return None  # read already (a reason Condition, a supporting Observation)
        subject = self.absolute((resource.get("subject") or {}).get("reference", "")
                                if isinstance(resource.get("subject"), dict) else "")
        if subject.split("/_history/")[0] != patient_url:
            self._audit("search", full_url, resource_type, fhir_id, result,
                        query=f"ignored: its subject is not the Task's patient {patient_url}")
            return None
        self.urls[full_url] = resource
        self.found.append(full_url)
        return resource

    def _on_base(self, url: str) -> bool:
        """Whether a search's page link asks the registered server: its scheme, host and port, and a path at or
        under the base's, with no step out of it."""
        link, base = urlsplit(url), urlsplit(self.base)
        path = link.path.rstrip("/")
        return (
            (link.scheme, link.netloc) == (base.scheme, base.netloc)
            and (path == base.path or path.startswith(base.path + "/"))
            and ".." not in path.split("/") and "%" not in link.path and not link.fragment
        )

    def _audit(self, interaction: str, url: str, resource_type: str, entity_id: str, result: HttpResult,
               query: str = "") -> None:
        """One row per request for PHI to the EHR (a read, a search page) and per search entry ignored: who (the
        EHR's client), what (the URL, and the resource or type), when, and the answer (its HTTP status; 502 when
        none came, 504 for a timeout). A search's query is in its path, as sent; ``query`` says why an entry was
        ignored."""
        access_record(
            channel=Access.Channel.PULL,
            interaction=interaction,
            method="GET",
            path=url,
            status=result.status or _NO_ANSWER_STATUS.get(result.reason, 502),
            source_ip=None,  # the hub asked; the peer is in path
            agent_client=self.client.client_id,
            clinic_id=self.clinic_id,
            entity_type=resource_type,
            entity_id=entity_id,
            query=query,
        )


def _has_code(resource: dict, codes) -> bool:
    code = resource.get("code")
    codings = code.get("coding") if isinstance(code, dict) else None
    return any(isinstance(c, dict) and c.get("code") in codes for c in codings or [])


def _complete(*, referral: Referral, client: EhrClient, task: dict, fetched: _Fetched, now: dt.datetime) -> None:
    """Check, map and store what was fetched, and hand the facts to the domain. Raises FhirError (the data
    breaks a profile rule), DuplicateResource or DomainError; the caller's savepoint then keeps nothing."""
    originals = fetched.resources
    validate([(_path(r), r) for r in originals])
    # Each resource gets the hub's id, and says in meta.source which URL it is a copy of (what search's includes
    # match a Task's absolute focus and for by); references between them (relative on the EHR, or absolute URLs)
    # are rewritten to the hub's copies. What came is kept as it came otherwise; the Task keeps the EHR's URLs, as
    # sent (the module docstring says why).
    resources = [orjson.loads(orjson.dumps(r)) | {"id": new_id()} for r in originals]
    base = client.fhir_base_url.rstrip("/")
    local: dict[str, str] = {}
    for url, original in fetched.urls.items():
        copy = resources[next(i for i, r in enumerate(originals) if r is original)]
        copy["meta"] = (copy.get("meta") if isinstance(copy.get("meta"), dict) else {}) | {"source": url}
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


def _reject(referral_id: int, reason: str) -> PullOutcome:
    """Reject the referral with ``reason`` if it still waits for its data, locking it for the write (a pull that
    failed before anything was stored)."""
    with transaction.atomic():
        referral = Referral.objects.select_for_update().filter(pk=referral_id).first()
        if (moved_on := _not_waiting(referral)) is not None:
            return PullOutcome(moved_on)
        return _reject_locked(referral, reason)


def _reject_locked(referral: Referral, reason: str) -> PullOutcome:
    """Reject the waiting referral, locked by the caller, with ``reason`` (the Task's statusReason, which the
    physician reads)."""
    referral_update(
        referral=referral, status=ReferralStatus.REJECTED, reason=reason[:2000], business_status=BusinessStatus.CLOSED,
        actor=HUB_ACTOR,
    )
    log.info("pull of referral %s: rejected: %s", referral.pk, reason)
    return PullOutcome(f"rejected: {reason}")
