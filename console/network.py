"""Reads of the console's network page: each professional's role and each program (organization) with its load
against its capacity, acceptance rate and median time to accept, and the credentials that expire soon. A page of
rows costs a fixed number of queries (the rows, then one grouped query over their offers).

- **load**: live cases (referrals.selectors.active_cases_sql: requested offers and accepted ones still open)
  against ``max_active_cases``;
- **acceptance rate**: accepted / (accepted + declined + expired) over offers made in the last ``STATS_WINDOW``
  (routing's window), None without any;
- **median time to accept**: the median of ``response_seconds`` of the accepted ones in that window.
"""

import datetime as dt
from dataclasses import dataclass

from django.core.paginator import Page, Paginator
from django.db.models import Count, Q, QuerySet

from network.models import Credential, Organization, ProfessionalRole
from referrals.funnel import Median
from referrals.models import Offer, OfferStatus
from referrals.routing import STATS_WINDOW
from referrals.selectors import role_active_case_counts

PAGE_SIZE = 50
EXPIRING_WITHIN = dt.timedelta(days=60)
EXPIRING_LIMIT = 100
_ANSWERED = [OfferStatus.ACCEPTED, OfferStatus.REJECTED, OfferStatus.EXPIRED]


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


def _with_load(roles: list[ProfessionalRole]) -> list[ProfessionalRole]:
    """Set ``active_cases`` on each role (one grouped query for them all)."""
    counts = role_active_case_counts(role_ids=[r.pk for r in roles])
    for role in roles:
        role.active_cases = counts.get(role.pk, 0)
    return roles


def roles_page(*, search: str = "", number: int = 1, now: dt.datetime) -> tuple[Page, dict[int, Answers]]:
    """A page of roles (by organization, then professional), each with ``active_cases``, and their answers by
    role id. Four queries (the count, the page, the load, the answers)."""
    roles = ProfessionalRole.objects.select_related("professional", "organization", "site")
    if search:
        roles = roles.filter(Q(professional__family_name__icontains=search) | Q(professional__given_name__icontains=search)
                             | Q(organization__name__icontains=search) | Q(fhir_id__icontains=search))
    page = Paginator(roles.order_by("organization__name", "professional__family_name", "id"), PAGE_SIZE).get_page(number)
    page.object_list = _with_load(list(page.object_list))
    ids = [r.pk for r in page.object_list]
    return page, _answers(Offer.objects.filter(role_id__in=ids), "role_id", since=now - STATS_WINDOW)


@dataclass
class Program:
    organization: Organization
    roles: int
    taking: int  # roles taking referrals now: active, accepting, not paused
    capacity: int
    active_cases: int
    answers: Answers


def programs_page(*, search: str = "", number: int = 1, now: dt.datetime) -> tuple[Page, list[Program]]:
    """A page of organizations with their roles' load and capacity and their answers. Five queries."""
    today = now.date()
    orgs = Organization.objects.all()
    if search:
        orgs = orgs.filter(name__icontains=search)
    page = Paginator(orgs.order_by("name", "id"), PAGE_SIZE).get_page(number)
    ids = [o.pk for o in page.object_list]
    roles_by_org: dict[int, list] = {i: [] for i in ids}
    for role in _with_load(list(ProfessionalRole.objects.filter(organization_id__in=ids).only(
        "organization_id", "active", "accepting", "paused_until", "max_active_cases"
    ))):
        roles_by_org[role.organization_id].append(role)
    answers = _answers(Offer.objects.filter(organization_id__in=ids), "organization_id", since=now - STATS_WINDOW)
    programs = []
    for org in page.object_list:
        roles = roles_by_org[org.pk]
        programs.append(Program(
            organization=org, roles=len(roles),
            taking=sum(1 for r in roles if r.active and r.accepting and not r.is_paused(today)),
            capacity=sum(r.max_active_cases for r in roles if r.active),
            active_cases=sum(r.active_cases for r in roles),
            answers=answers.get(org.pk, Answers()),
        ))
    return page, programs


def credentials_expiring(*, today: dt.date) -> list[Credential]:
    """Credentials that lapse within EXPIRING_WITHIN (from today on), soonest first: routing stops counting each
    the day after it expires."""
    return list(
        Credential.objects.filter(expires_on__gte=today, expires_on__lte=today + EXPIRING_WITHIN)
        .select_related("professional", "type")
        .order_by("expires_on", "id")[:EXPIRING_LIMIT]
    )
