"""Outcome scorecards: how the patients of each program and each professional did, within condition group.

A **case** is a referral whose offer was accepted; it counts for the organization that accepted it (the program:
``Offer.organization``, as it was when offered) and for the professional whose role it was. Its condition groups
are the ones routing mapped when the accepted offer was made (``RoutingDecision.condition_groups``); a patient in
two groups counts in both, so that a cardiac program is compared with cardiac programs. A case with no mapped
group counts under ``""`` ("no mapped condition").

Per program or professional and condition group:

- **completion**: completed / (completed + failed). A cancelled referral (the clinic withdrew it) or one entered
  in error says nothing of the program and is left out; open cases are not counted yet. Wilson score interval.
- **gained 30**: the share of completed patients whose PAVS rose by at least ``GAIN_MINUTES_PER_WEEK`` minutes of
  moderate-to-vigorous activity per week, from the referral's baseline (LOINC 82290-8, else 89555-7 days/week x
  68516-4 min/day) to their latest PAVS check-in. Only completed patients with both values count. Wilson interval.
- **median change** in PAVS minutes per week over the same patients, with a distribution-free interval for the
  median (the binomial order-statistic ranks n/2 +- z*sqrt(n)/2; Conover, Practical Nonparametric Statistics).

A scorecard is **shown** only from ``MIN_COMPLETED`` completed patients up: below that, an interval says little and
a single patient could be recognised. Intervals are 95 %.

``scorecards_compute`` reads the database in two queries, whatever the number of cases; ``scorecards_current``
keeps the result in Django's cache for ``SCORECARD_MAX_AGE`` (the console shows its age, and routing reads it when
``HUB_ROUTING_OUTCOME_WEIGHT_PERCENT`` is set), as ready ``ScorecardSummary`` figures sorted as shown: a reader
unpickles a few numbers per card, never the patients' changes, and computes no interval.
"""

import datetime as dt
import math
import statistics
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from django.core.cache import cache
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from network.models import ConditionGroup
from referrals.models import Offer, OfferStatus, PavsCheckIn, ReferralStatus

MIN_COMPLETED = 10
GAIN_MINUTES_PER_WEEK = 30
CONFIDENCE = 0.95
SCORECARD_MAX_AGE = dt.timedelta(minutes=5)
_CACHE_KEY = "referrals:scorecards:v2"  # v2: ScorecardSummary cards
# (token, computed_at) of the kept scorecards: a reader unpickles the cards only when the token changes (once per
# refresh and process); unpickling 800+ cards on every request made the garbage collector's full passes land on
# the console's requests (p95 ~240 ms against p50 ~25 ms).
_STAMP_KEY = "referrals:scorecards:v2:stamp"
_memo: dict[str, "Scorecards"] = {}  # this process's copy: {token: scorecards}, one entry
_Z = statistics.NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)  # 1.96

PROGRAM, PROFESSIONAL = "program", "professional"
NO_GROUP = ""


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def wilson_interval(successes: int, n: int, z: float = _Z) -> Interval | None:
    """The Wilson score interval of the proportion ``successes``/``n`` (Wilson 1927; Brown, Cai & DasGupta 2001
    recommend it over the Wald interval for small n and proportions near 0 or 1). None when n is 0."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


def median_interval(values: list[float], z: float = _Z) -> Interval | None:
    """A distribution-free interval for the median of ``values``: the order statistics at ranks
    n/2 - z*sqrt(n)/2 and 1 + n/2 + z*sqrt(n)/2 (1-based, clipped to the sample). None for an empty sample."""
    if not values:
        return None
    ordered = sorted(values)
    n = len(ordered)
    low = max(1, math.floor(n / 2 - z * math.sqrt(n) / 2))
    high = min(n, math.ceil(1 + n / 2 + z * math.sqrt(n) / 2))
    return Interval(float(ordered[low - 1]), float(ordered[high - 1]))


def pavs_baseline_minutes(baseline: list[dict]) -> float | None:
    """Minutes per week of moderate-to-vigorous activity in a referral's PAVS baseline (ClinicalFacts.pavs_baseline):
    LOINC 82290-8 when sent, else 89555-7 (days/week) x 68516-4 (minutes/day); None when neither is there."""
    values = {m.get("code"): m.get("value") for m in baseline or [] if isinstance(m, dict)}
    if isinstance(values.get("82290-8"), (int, float)):
        return float(values["82290-8"])
    days, minutes = values.get("89555-7"), values.get("68516-4")
    if isinstance(days, (int, float)) and isinstance(minutes, (int, float)):
        return float(days * minutes)
    return None


@dataclass
class Scorecard:
    """One program's or professional's outcomes within one condition group. Shares are in [0, 1]; changes are
    PAVS minutes per week."""

    kind: str  # PROGRAM or PROFESSIONAL
    subject_id: int  # the Organization's or the Professional's primary key
    name: str
    condition_group: str  # a ConditionGroup slug, or NO_GROUP
    condition_group_name: str
    completed: int = 0
    failed: int = 0
    changes: list[float] = field(default_factory=list, repr=False)  # completed patients with baseline and check-in

    @property
    def closed(self) -> int:
        return self.completed + self.failed

    @property
    def shown(self) -> bool:
        return self.completed >= MIN_COMPLETED

    @property
    def completion(self) -> float | None:
        return self.completed / self.closed if self.closed else None

    @property
    def completion_interval(self) -> Interval | None:
        return wilson_interval(self.completed, self.closed)

    @property
    def measured(self) -> int:
        return len(self.changes)

    @property
    def gained(self) -> int:
        return sum(1 for c in self.changes if c >= GAIN_MINUTES_PER_WEEK)

    @property
    def gain_share(self) -> float | None:
        return self.gained / self.measured if self.changes else None

    @property
    def gain_interval(self) -> Interval | None:
        return wilson_interval(self.gained, self.measured)

    @property
    def median_change(self) -> float | None:
        return float(statistics.median(self.changes)) if self.changes else None

    @property
    def median_change_interval(self) -> Interval | None:
        return median_interval(self.changes)


    def summary(self) -> "ScorecardSummary":
        """The card's figures, computed once, without the per-patient changes (what the cache keeps)."""
        return ScorecardSummary(
            kind=self.kind, subject_id=self.subject_id, name=self.name, condition_group=self.condition_group,
            condition_group_name=self.condition_group_name, completed=self.completed, failed=self.failed,
            closed=self.closed, shown=self.shown, completion=self.completion,
            completion_interval=self.completion_interval, measured=self.measured, gained=self.gained,
            gain_share=self.gain_share, gain_interval=self.gain_interval, median_change=self.median_change,
            median_change_interval=self.median_change_interval,
        )


@dataclass(frozen=True)
class ScorecardSummary:
    """A Scorecard's figures as numbers (the same names, shares in [0, 1], changes in PAVS minutes per week),
    without the per-patient changes: what ``scorecards_refresh`` keeps for the console and routing."""

    kind: str
    subject_id: int
    name: str
    condition_group: str
    condition_group_name: str
    completed: int
    failed: int
    closed: int
    shown: bool
    completion: float | None
    completion_interval: Interval | None
    measured: int
    gained: int
    gain_share: float | None
    gain_interval: Interval | None
    median_change: float | None
    median_change_interval: Interval | None


def _shown_order(card) -> tuple:
    return (card.condition_group, card.kind, -(card.gain_interval.low if card.gain_interval else -1.0), card.name)


@dataclass
class Scorecards:
    """Every scorecard, shown or not, as computed at ``computed_at``."""

    computed_at: dt.datetime
    cards: list[Scorecard] | list[ScorecardSummary]

    def shown(self, kind: str | None = None, condition_group: str | None = None) -> list[Scorecard]:
        """The shown scorecards, by condition group, then best Wilson lower bound of the gain share first."""
        cards = [c for c in self.cards if c.shown and (kind is None or c.kind == kind)
                 and (condition_group is None or c.condition_group == condition_group)]
        return sorted(cards, key=_shown_order)  # linear when the cards come sorted already (the kept ones)

    def hidden_count(self) -> int:
        return sum(1 for c in self.cards if not c.shown)

    def summarized(self) -> "Scorecards":
        """The same scorecards as ``ScorecardSummary`` figures, in the order ``shown`` gives."""
        return Scorecards(computed_at=self.computed_at,
                          cards=sorted((c.summary() if isinstance(c, Scorecard) else c for c in self.cards),
                                       key=_shown_order))

    def lookup(self) -> dict[tuple[str, int, str], Scorecard]:
        """The shown scorecards by (kind, subject id, condition group)."""
        return {(c.kind, c.subject_id, c.condition_group): c for c in self.cards if c.shown}


def scorecards_compute(*, now: dt.datetime | None = None) -> Scorecards:
    """Every program's and professional's scorecard, per condition group, from the closed cases (two queries:
    the accepted offers with their referral, groups and latest check-in; the condition groups' names)."""
    latest_checkin = PavsCheckIn.objects.filter(referral_id=OuterRef("referral_id")).order_by("-date", "-id")
    rows = (
        Offer.objects.filter(
            status=OfferStatus.ACCEPTED, referral__status__in=[ReferralStatus.COMPLETED, ReferralStatus.FAILED]
        )
        .annotate(latest_minutes=Subquery(latest_checkin.values("minutes_per_week")[:1]))
        .values_list(
            "referral__status", "organization_id", "organization__name", "role__professional_id",
            "role__professional__given_name", "role__professional__family_name", "decision__condition_groups",
            "referral__facts__pavs_baseline", "latest_minutes",
        )
    )
    names = dict(ConditionGroup.objects.values_list("slug", "name"))
    cards: dict[tuple[str, int, str], Scorecard] = {}

    def card(kind: str, subject_id: int, name: str, group: str) -> Scorecard:
        key = (kind, subject_id, group)
        if key not in cards:
            cards[key] = Scorecard(kind, subject_id, name, group, names.get(group, "No mapped condition"))
        return cards[key]

    for status, org_id, org_name, pro_id, given, family, groups, baseline, latest in rows.iterator(chunk_size=2000):
        subjects = [(PROGRAM, org_id, org_name), (PROFESSIONAL, pro_id, f"{given} {family}".strip())]
        change = None
        if status == ReferralStatus.COMPLETED and latest is not None:
            start = pavs_baseline_minutes(baseline)
            change = None if start is None else float(latest) - start
        for group in sorted(set(groups or [])) or [NO_GROUP]:
            for kind, subject_id, name in subjects:
                c = card(kind, subject_id, name, group)
                if status == ReferralStatus.COMPLETED:
                    c.completed += 1
                    if change is not None:
                        c.changes.append(change)
                else:
                    c.failed += 1
    return Scorecards(computed_at=now or timezone.now(), cards=list(cards.values()))


def scorecards_current(*, now: dt.datetime | None = None) -> Scorecards:
    """The scorecards as computed at most ``SCORECARD_MAX_AGE`` ago (Django's cache), computed now if none are."""
    now = now or timezone.now()
    stamp = cache.get(_STAMP_KEY)
    if stamp is not None and now - stamp[1] <= SCORECARD_MAX_AGE:
        token = stamp[0]
        kept = _memo.get(token)
        if kept is None:
            kept = cache.get(_CACHE_KEY)
            if kept is not None and kept.computed_at == stamp[1]:
                _memo.clear()
                _memo[token] = kept
        if kept is not None:
            return kept
    return scorecards_refresh(now=now)


def scorecards_refresh(*, now: dt.datetime | None = None) -> Scorecards:
    """Compute the scorecards and keep them in the cache as summaries (Celery beat's referrals.scorecards_refresh
    calls it); returns the summaries."""
    fresh = scorecards_compute(now=now).summarized()
    token = uuid.uuid4().hex
    cache.set_many({_CACHE_KEY: fresh, _STAMP_KEY: (token, fresh.computed_at)},
                   timeout=int(SCORECARD_MAX_AGE.total_seconds()) * 2)
    _memo.clear()
    _memo[token] = fresh
    return fresh


def outcome_component(
    *, scorecards: Scorecards | dict, professional_id: int, organization_id: int, condition_groups: list[str],
    neutral: float
) -> tuple[float, str]:
    """Routing's ``outcomes`` score component for one candidate, in [0, 1], and where it came from: the Wilson
    lower bound of the share of patients gaining >= 30 PAVS min/week, averaged over the referral's condition
    groups, from the professional's shown scorecards, else the program's; ``neutral`` when neither has one.
    The lower bound, not the share: a small sample with a lucky streak does not outrank a long record."""
    lookup = scorecards if isinstance(scorecards, dict) else scorecards.lookup()
    groups = sorted(set(condition_groups)) or [NO_GROUP]
    for kind, subject_id in ((PROFESSIONAL, professional_id), (PROGRAM, organization_id)):
        bounds = [c.gain_interval.low for g in groups
                  if (c := lookup.get((kind, subject_id, g))) is not None and c.gain_interval is not None]
        if bounds:
            return sum(bounds) / len(bounds), kind
    return neutral, ""

