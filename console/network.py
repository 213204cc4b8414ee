"""Reads of the console's network page: each professional's role and each program (organization) with its load
against its capacity, acceptance rate and median time to accept, and the credentials that expire soon. A page of
rows costs a fixed number of queries (the rows, then one grouped query for their load); the answers come from a
rollup (``network_answers_refresh``: two grouped queries over the window's offers, run by the console's beat task
and kept in Django's cache), at most ``NETWORK_ANSWERS_MAX_AGE`` old, its age shown.

- **load**: live cases (referrals.selectors.active_cases_sql: requested offers and accepted ones still open)
  against ``max_active_cases``;
- **acceptance rate**: accepted / (accepted + declined + expired) over offers made in the last ``STATS_WINDOW``
  (routing's window), None without any;
- **median time to accept**: the median of ``response_seconds`` of the accepted ones in that window.
"""

import datetime as dt
from dataclasses import dataclass

from django.core.cache import cache
from django.core.paginator import Page, Paginator
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from network.models import Credential, Organization, ProfessionalRole
from referrals.funnel import Median
from referrals.models import Offer, OfferStatus
from referrals.routing import STATS_WINDOW
from referrals.selectors import role_active_case_counts

PAGE_SIZE = 50
EXPIRING_WITHIN = dt.timedelta(days=60)
EXPIRING_LIMIT = 100
_ANSWERED = [OfferStatus.ACCEPTED, OfferStatus.REJECTED, OfferStatus.EXPIRED]
NETWORK_ANSWERS_MAX_AGE = dt.timedelta(minutes=5)
NETWORK_ANSWERS_CACHE_KEY = "console:network:answers:v1"


@dataclass(frozen=True)
class Answers:
    accepted: int = 0
    answered: int = 0
    median_accept_seconds: float | None = None

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.answered if self.answered else None

    @property
    def median_accept_hours(self) -> float | None:
        return None if self.median_accept_seconds is None else self.median_accept_seconds / 3600


def _answers(offers: QuerySet, by: str, *, since: dt.datetime) -> dict[int, Answers]:
    rows = (
        offers.filter(created_at__gte=since, status__in=_ANSWERED)
        .order_by()
        .values(by)
        .annotate(
            accepted=Count("id", filter=Q(status=OfferStatus.ACCEPTED)),
            answered=Count("id"),
            median=Median("response_seconds", filter=Q(status=OfferStatus.ACCEPTED)),
        )
    )
    return {r[by]: Answers(r["accepted"], r["answered"], r["median"]) for r in rows}


@dataclass(frozen=True)
class NetworkAnswers:
    """Every role's and organization's Answers (by primary key; one without answered offers is absent) over the
    offers made in the ``STATS_WINDOW`` before ``computed_at``."""

    computed_at: dt.datetime
    roles: dict[int, Answers]
    organizations: dict[int, Answers]


def network_answers_compute(*, now: dt.datetime) -> NetworkAnswers:
    """Answers of every role and organization: two grouped queries over the window's answered offers."""
    since = now - STATS_WINDOW
    return NetworkAnswers(computed_at=now, roles=_answers(Offer.objects.all(), "role_id", since=since),
                          organizations=_answers(Offer.objects.all(), "organization_id", since=since))


def network_answers_refresh(*, now: dt.datetime | None = None) -> NetworkAnswers:
    """Compute the answers and keep them in the cache (the console's beat task, console.rollup_refresh, runs it
    every HUB_ROLLUP_SECONDS)."""
    fresh = network_answers_compute(now=now or timezone.now())
    cache.set(NETWORK_ANSWERS_CACHE_KEY, fresh, timeout=int(NETWORK_ANSWERS_MAX_AGE.total_seconds()) * 2)
    return fresh


def network_answers_current(*, now: dt.datetime) -> NetworkAnswers:
    """The answers as computed at most ``NETWORK_ANSWERS_MAX_AGE`` before ``now`` (one cache read), computed now
    when the beat has not kept any that recent."""
    kept = cache.get(NETWORK_ANSWERS_CACHE_KEY)
    if kept is not None and dt.timedelta(0) <= now - kept.computed_at <= NETWORK_ANSWERS_MAX_AGE:
        return kept
    return network_answers_refresh(now=now)


def _with_load(roles: list[ProfessionalRole]) -> list[ProfessionalRole]:
    """Set ``active_cases`` on each role (one grouped query for them all, however many)."""
    counts = role_active_case_counts(role_ids=sorted({r.pk for r in roles}))
    for role in roles:
        role.active_cases = counts.get(role.pk, 0)
    return roles


@dataclass
class Program:
    organization: Organization
    roles: int
    taking: int  # roles taking referrals now: active, accepting, not paused
    capacity: int
    active_cases: int
    answers: Answers


@dataclass
class NetworkPage:
    roles: Page  # of ProfessionalRole, each with ``active_cases``
    role_answers: dict[int, Answers]  # by role id; a role without answered offers is absent
    programs: Page  # of Organization
    program_rows: list[Program]  # the programs page's organizations, in its order


def network_page(
    *, search: str = "", roles_number: int = 1, programs_number: int = 1, now: dt.datetime, answers: NetworkAnswers
) -> NetworkPage:
    """A page of roles (by organization, then professional) and a page of organizations (by name), both narrowed
    by ``search``, with their live load (the roles of both pages counted in one grouped query), capacity and the
    ``answers`` rollup's acceptance. Six queries: each page's count and rows, the programs' roles, the load."""
    today = now.date()
    roles = ProfessionalRole.objects.select_related("professional", "organization", "site")
    orgs = Organization.objects.all()
    if search:
        roles = roles.filter(Q(professional__family_name__icontains=search)
                             | Q(professional__given_name__icontains=search)
                             | Q(organization__name__icontains=search) | Q(fhir_id__icontains=search))
        orgs = orgs.filter(name__icontains=search)
    role_page = Paginator(roles.order_by("organization__name", "professional__family_name", "id"),
                          PAGE_SIZE).get_page(roles_number)
    role_page.object_list = list(role_page.object_list)
    org_page = Paginator(orgs.order_by("name", "id"), PAGE_SIZE).get_page(programs_number)
    ids = [o.pk for o in org_page.object_list]
    program_roles = list(ProfessionalRole.objects.filter(organization_id__in=ids).only(
        "organization_id", "active", "accepting", "paused_until", "max_active_cases"
    ))
    _with_load(role_page.object_list + program_roles)
    roles_by_org: dict[int, list] = {i: [] for i in ids}
    for role in program_roles:
        roles_by_org[role.organization_id].append(role)
    programs = []
    for org in org_page.object_list:
        held = roles_by_org[org.pk]
        programs.append(Program(
            organization=org, roles=len(held),
            taking=sum(1 for r in held if r.active and r.accepting and not r.is_paused(today)),
            capacity=sum(r.max_active_cases for r in held if r.active),
            active_cases=sum(r.active_cases for r in held),
            answers=answers.organizations.get(org.pk, Answers()),
        ))
    return NetworkPage(
        roles=role_page,
        role_answers={r.pk: answers.roles[r.pk] for r in role_page.object_list if r.pk in answers.roles},
        programs=org_page, program_rows=programs,
    )


def credentials_expiring(*, today: dt.date) -> list[Credential]:
    """Credentials that lapse within EXPIRING_WITHIN (from today on), soonest first: routing stops counting each
    the day after it expires."""
    return list(
        Credential.objects.filter(expires_on__gte=today, expires_on__lte=today + EXPIRING_WITHIN)
        .select_related("professional", "type")
        .order_by("expires_on", "id")[:EXPIRING_LIMIT]
    )
