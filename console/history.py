"""Synthetic months of referral history, so that the console has something to show: referrals at every stage
of the funnel, with their routing decisions, offers and offer events, sessions, PAVS check-ins, discharge
reports and status events, spread over the weeks before today.

Written in bulk (bulk_create, a few thousand rows a statement), not through the domain services: the services
stamp every row with the present, and history needs the past. What is written is what the services would have
left behind, with these limits, said here so that nobody mistakes it for real traffic:
- no FHIR resources are rendered for these referrals (EHR clients do not see them; the console does);
- their events are marked as already fanned out (``notified_at``), so no subscriber is told of them;
- no follow-ups are scheduled: offers still waiting are at most a day old, and open cases are kept few per role,
  so that they do not use up the network's capacity for new referrals.

Used by ``manage.py load_console_history`` (the demo: a few hundred referrals) and bench/console.py (100,000).
Deterministic for a seed and a ``now``.
"""

import contextlib
import datetime as dt
import random
from dataclasses import dataclass

from django.db import transaction

from network.models import ConditionCodeMap, ConditionGroup, ProfessionalRole
from referrals.models import (
    Attendance,
    BusinessStatus,
    ClinicalFacts,
    Clinic,
    Offer,
    OfferEvent,
    OfferStatus,
    PavsCheckIn,
    Referral,
    ReferralEvent,
    ReferralStatus,
    Report,
    ReportKind,
    ReportStatus,
    RoutingDecision,
    Session,
)

HISTORY_REQUESTER = "Practitioner/demo-history"  # marks the synthetic referrals (and so makes loading idempotent)
ACTOR = "hub"
THERAPIST = "user:history"
BATCH = 5000


@contextlib.contextmanager
def _timestamps_kept(*fields):
    """Let bulk_create keep the given auto_now(_add) fields' values (history is in the past)."""
    saved = [(f, f.auto_now, f.auto_now_add) for f in fields]
    for f, _, _ in saved:
        f.auto_now = f.auto_now_add = False
    try:
        yield
    finally:
        for f, now, add in saved:
            f.auto_now, f.auto_now_add = now, add


@dataclass
class _Story:
    """One referral's path, decided up front: when each step happened (None: not reached)."""

    received: dt.datetime
    group: str
    code: dict
    baseline: int
    routed: dt.datetime | None = None
    declines: int = 0
    accepted: dt.datetime | None = None
    first_session: dt.datetime | None = None
    weeks_attended: int = 0
    ended: dt.datetime | None = None
    outcome: str = ""  # completed | failed | ""


def _story(rng: random.Random, now: dt.datetime, weeks: int, groups: list[tuple[str, dict]]) -> _Story:
    received = now - dt.timedelta(seconds=rng.uniform(0, weeks * 7 * 86400))
    group, code = rng.choice(groups)
    story = _Story(received=received, group=group, code=code, baseline=rng.choice([0, 0, 10, 20, 30, 45, 60, 90, 120]))
    if rng.random() < 0.06:  # nobody eligible: waits for a coordinator
        return story
    story.routed = received + dt.timedelta(minutes=rng.uniform(1, 45))
    story.declines = rng.choice([0, 0, 0, 1, 1, 2])
    # each declined or expired offer took up to its 48 h deadline; the next went out 45 h after the one before
    answer = story.routed + dt.timedelta(hours=45 * story.declines + rng.uniform(1, 40))
    if answer > now or rng.random() < 0.12:
        return story  # still waiting for an answer (the recent ones), or declined by everyone so far
    story.accepted = answer
    first = answer + dt.timedelta(days=rng.uniform(2, 12))
    if first > now or rng.random() < 0.15:
        return story  # accepted, never started (or not yet)
    story.first_session = first
    keeps_coming = rng.random() < 0.72
    program_weeks = 12
    story.weeks_attended = min(program_weeks if keeps_coming else rng.randint(1, 3), int((now - first).days / 7) + 1)
    end = first + dt.timedelta(weeks=program_weeks)
    if end <= now:
        story.ended = end
        story.outcome = "completed" if keeps_coming and rng.random() < 0.9 else "failed"
    return story


def _status(story: _Story) -> tuple[str, str, str]:
    """(status, reason, business status) where the story ends."""
    if story.outcome == "completed":
        return ReferralStatus.COMPLETED, "", BusinessStatus.DISCHARGE_REPORT_SENT
    if story.outcome == "failed":
        return ReferralStatus.FAILED, "Stopped attending", BusinessStatus.CLOSED
    if story.first_session:
        return ReferralStatus.IN_PROGRESS, "", BusinessStatus.FIRST_SESSION_ATTENDED
    if story.accepted:
        return ReferralStatus.ACCEPTED, "", BusinessStatus.ACCEPTED
    if story.routed:
        return ReferralStatus.REQUESTED, "", BusinessStatus.OFFERED
    return ReferralStatus.REQUESTED, "", BusinessStatus.AWAITING_MANUAL_ROUTING


def history_generate(
    *, referrals: int, weeks: int, clinics: list[Clinic], now: dt.datetime, seed: int = 13, progress=None
) -> dict[str, int]:
    """Write ``referrals`` synthetic referrals received over the last ``weeks`` weeks, spread over ``clinics`` and
    the network's active roles; return the rows written per model. Needs the network (roles, condition groups
    and their code map). ``progress(done)`` is called after each batch of referrals."""
    rng = random.Random(seed)
    # Not the roles of anybody with a portal account (the demo's therapist and practice would find these cases in
    # their lists), nor the small ones (history must not fill the room new referrals need).
    roles = list(
        ProfessionalRole.objects.filter(active=True, max_active_cases__gte=5)
        .exclude(professional__accounts__isnull=False)
        .exclude(organization__accounts__isnull=False)
        .order_by("id")
    )
    if not roles:
        raise ValueError("the network has no active roles: load it first (manage.py load_network_demo)")
    codes = {}
    for m in ConditionCodeMap.objects.select_related("group").order_by("id"):
        codes.setdefault(m.group.slug, {"system": m.system, "code": m.code, "display": m.display})
    groups = [(g, codes[g]) for g in ConditionGroup.objects.order_by("slug").values_list("slug", flat=True) if g in codes]
    counts: dict[str, int] = {}
    for start in range(0, referrals, BATCH):
        stories = [_story(rng, now, weeks, groups) for _ in range(min(BATCH, referrals - start))]
        with transaction.atomic():
            _write(stories, rng=rng, clinics=clinics, roles=roles, now=now, counts=counts)
        if progress:
            progress(start + len(stories))
    return counts


def _write(stories, *, rng, clinics, roles, now, counts) -> None:
    made = []
    for s in stories:
        status, reason, business = _status(s)
        made.append(Referral(
            clinic=rng.choice(clinics), status=status, status_reason=reason, business_status=business,
            owner_reference="Organization/hub", patient_name=f"{rng.choice(_GIVEN)} {rng.choice(_FAMILY)}",
            patient_birth_date=str(rng.randint(1940, 1995)), patient_postal_code=rng.choice(_ZIPS),
            service_display="Exercise referral", requester_reference=HISTORY_REQUESTER,
            requester_display="Dr Demo History", authored_on=s.received, created_at=s.received,
            updated_at=s.ended or s.first_session or s.accepted or s.routed or s.received,
        ))
    with _timestamps_kept(Referral._meta.get_field("created_at"), Referral._meta.get_field("updated_at")):
        made = Referral.objects.bulk_create(made, batch_size=BATCH)
    facts, decisions, events = [], [], []
    for r, s in zip(made, stories):
        facts.append(ClinicalFacts(
            referral=r, condition_codes=[s.code], clearance="moderate",
            pavs_baseline=[{"code": "82290-8", "value": s.baseline, "unit": "min/wk", "date": s.received.date().isoformat()}],
        ))
        events.append(ReferralEvent(referral=r, kind=ReferralEvent.Kind.CREATED, to_status="requested", actor=ACTOR,
                                    at=s.received, notified_at=s.received))
        routed_at = s.routed or s.received + dt.timedelta(minutes=2)
        for n in range(s.declines + 1 if s.routed else 1):
            decisions.append(RoutingDecision(
                referral=r, trigger="initial" if n == 0 else "declined",
                outcome="offered" if s.routed else "manual", actor=ACTOR, condition_groups=[s.group],
                mapped_codes=[{**s.code, "groups": [s.group]}],
                gist="Offered to the best-ranked qualified professional with room." if s.routed
                else "Nobody eligible: waiting for a coordinator.",
                created_at=routed_at + dt.timedelta(hours=n),
            ))
    ClinicalFacts.objects.bulk_create(facts, batch_size=BATCH)
    with _timestamps_kept(RoutingDecision._meta.get_field("created_at")):
        decisions = RoutingDecision.objects.bulk_create(decisions, batch_size=BATCH)
    by_referral: dict[int, list[RoutingDecision]] = {}
    for d in decisions:
        by_referral.setdefault(d.referral_id, []).append(d)
    offers, plans = [], []
    for r, s in zip(made, stories):
        if not s.routed:
            continue
        for n, decision in enumerate(by_referral[r.pk]):
            role = rng.choice(roles)
            last = n == s.declines
            made_at = s.routed + dt.timedelta(hours=45 * n)
            if last and s.accepted:
                state, answered = OfferStatus.ACCEPTED, s.accepted
            elif last:
                # still waiting when it is recent; otherwise declined, and the referral waits for a coordinator
                waiting = made_at > now - dt.timedelta(days=1)
                state, answered = (OfferStatus.REQUESTED, None) if waiting else (OfferStatus.REJECTED, made_at + dt.timedelta(hours=20))
            else:
                state = rng.choice([OfferStatus.REJECTED, OfferStatus.EXPIRED])
                answered = made_at + dt.timedelta(hours=48 if state == OfferStatus.EXPIRED else rng.uniform(1, 30))
            offers.append(Offer(
                referral=r, role=role, organization_id=role.organization_id, decision=decision, status=state,
                created_at=made_at, deadline=made_at + dt.timedelta(hours=48), responded_at=answered,
                response_seconds=int((answered - made_at).total_seconds()) if answered else None,
                decline_reason="No room in the schedule" if state == OfferStatus.REJECTED else "",
            ))
            plans.append((state, answered))
    offers = Offer.objects.bulk_create(offers, batch_size=BATCH)
    offer_events = [
        OfferEvent(offer=o, from_status="", to_status="requested", actor=ACTOR, at=o.created_at) for o in offers
    ] + [
        OfferEvent(offer=o, from_status="requested", to_status=state, actor=THERAPIST if state != "expired" else ACTOR,
                   at=answered, detail={"reason": o.decline_reason} if o.decline_reason else {})
        for o, (state, answered) in zip(offers, plans) if answered
    ]
    OfferEvent.objects.bulk_create(offer_events, batch_size=BATCH)
    sessions, checkins, reports = [], [], []
    for r, s in zip(made, stories):
        if s.accepted:
            events.append(ReferralEvent(referral=r, kind=ReferralEvent.Kind.STATUS_CHANGED, from_status="requested",
                                        to_status="accepted", actor=THERAPIST, at=s.accepted, notified_at=s.accepted))
        if not s.first_session:
            continue
        events.append(ReferralEvent(referral=r, kind=ReferralEvent.Kind.STATUS_CHANGED, from_status="accepted",
                                    to_status="in-progress", actor=THERAPIST, at=s.first_session,
                                    notified_at=s.first_session))
        for week in range(s.weeks_attended):
            for day in (0, 3):
                at = s.first_session + dt.timedelta(days=7 * week + day)
                if at <= now:
                    sessions.append(Session(referral=r, starts_at=at, attendance=Attendance.ATTENDED,
                                            duration_minutes=rng.choice([40, 45, 50, 60]), recorded_by=THERAPIST,
                                            recorded_at=at))
        gain = rng.choice([-10, 0, 15, 30, 45, 60, 90, 120]) if s.weeks_attended > 3 else rng.choice([-10, 0, 10])
        for k in range(1, s.weeks_attended // 4 + 2):
            day = (s.first_session + dt.timedelta(weeks=4 * k - 1)).date()
            if day > now.date():
                break
            minutes = max(0, s.baseline + gain * k // max(1, s.weeks_attended // 4 + 1))
            per_day = 30 if minutes >= 30 else 10
            days = min(7, max(0, round(minutes / per_day)))
            checkins.append(PavsCheckIn(referral=r, date=day, days_per_week=days, minutes_per_day=per_day,
                                        minutes_per_week=days * per_day, recorded_by=THERAPIST,
                                        recorded_at=dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)))
        if s.ended:
            events.append(ReferralEvent(referral=r, kind=ReferralEvent.Kind.STATUS_CHANGED, from_status="in-progress",
                                        to_status=s.outcome, actor=THERAPIST, at=s.ended, notified_at=s.ended))
            reports.append(Report(
                referral=r, kind=ReportKind.DISCHARGE, status=ReportStatus.SIGNED, period_start=s.first_session.date(),
                period_end=s.ended.date(), due_at=s.ended, outcome_status=s.outcome, signed_by=THERAPIST,
                signed_at=s.ended, sent_at=s.ended, created_at=s.ended,
            ))
    with _timestamps_kept(ReferralEvent._meta.get_field("at")):
        ReferralEvent.objects.bulk_create(events, batch_size=BATCH)
    Session.objects.bulk_create(sessions, batch_size=BATCH)
    PavsCheckIn.objects.bulk_create(checkins, batch_size=BATCH)
    with _timestamps_kept(Report._meta.get_field("created_at")):
        Report.objects.bulk_create(reports, batch_size=BATCH)
    for name, n in (("referrals", len(made)), ("routing decisions", len(decisions)), ("offers", len(offers)),
                    ("offer events", len(offer_events)), ("events", len(events)), ("sessions", len(sessions)),
                    ("check-ins", len(checkins)), ("reports", len(reports))):
        counts[name] = counts.get(name, 0) + n


_GIVEN = ["Ana", "Ben", "Carla", "Dev", "Ewa", "Femi", "Grace", "Hugo", "Ines", "Jon", "Kira", "Luis", "Mei", "Nils"]
_FAMILY = ["Adams", "Baker", "Cruz", "Diaz", "Evans", "Fischer", "Garcia", "Hughes", "Ito", "Jones", "Kowalski", "Lee"]
_ZIPS = ["62701", "62702", "62703", "62704", "62707", "62711", "62712"]
