"""Synthetic months of referral history, so that the console has something to show: referrals at every stage
of the funnel, with their routing decisions, offers and offer events, sessions, PAVS check-ins, discharge
reports and status events, spread over the weeks before today.

Written in bulk (COPY on PostgreSQL, executemany on SQLite, 5,000 referrals a transaction), not through the
domain services: the services
stamp every row with the present, and history needs the past. What is written is what the services would have
left behind, with these limits, said here so that nobody mistakes it for real traffic:
- no FHIR resources are rendered for these referrals (EHR clients do not see them; the console does);
- their events are marked as already fanned out (``notified_at``), so no subscriber is told of them;
- no follow-ups are scheduled: offers still waiting are at most a day old, and open cases are kept few per role,
  so that they do not use up the network's capacity for new referrals.

Used by ``manage.py load_console_history`` (the demo: a few hundred referrals) and bench/console.py (100,000).
Deterministic for a seed and a ``now``.
"""

import datetime as dt
import json
import random
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import JSONField

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
    tables = {m: _Rows(m) for m in (Referral, ClinicalFacts, RoutingDecision, Offer, OfferEvent, ReferralEvent,
                                    Session, PavsCheckIn, Report)}
    for start in range(0, referrals, BATCH):
        stories = [_story(rng, now, weeks, groups) for _ in range(min(BATCH, referrals - start))]
        with transaction.atomic():
            _write(stories, rng=rng, clinics=clinics, roles=roles, now=now, counts=counts, tables=tables)
        if progress:
            progress(start + len(stories))
    return counts


class _Rows:
    """Rows for one table, inserted in one go: COPY on PostgreSQL, executemany elsewhere. Ids are taken up front
    (from the table's sequence on PostgreSQL), so that rows of other tables can point at them before either is
    written. Columns a row does not give take the field's default; JSON is serialized here."""

    def __init__(self, model):
        self.model, self.rows = model, []
        self.fields = model._meta.concrete_fields
        self.next_id = None
        self.pool: list[int] = []

    def reserve(self, n: int) -> None:
        """Take ``n`` ids at once (one statement); ``take`` hands them out."""
        self.pool = self.ids(n)[::-1]

    def take(self, n: int) -> list[int]:
        return [self.pool.pop() for _ in range(n)]

    def ids(self, n: int) -> list[int]:
        table = self.model._meta.db_table
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)", [table, n])
                return [row[0] for row in cursor.fetchall()]
            if self.next_id is None:
                cursor.execute(f'SELECT COALESCE(MAX("id"), 0) FROM "{table}"')  # noqa: S608 - a model's own table
                self.next_id = cursor.fetchone()[0] + 1
        taken = list(range(self.next_id, self.next_id + n))
        self.next_id += n
        return taken

    def add(self, **values) -> dict:
        self.rows.append(values)
        return values

    def write(self) -> int:
        if not self.rows:
            return 0
        # every column but an id the database assigns (the tables whose rows nobody points at)
        columns = [f for f in self.fields if not f.primary_key or f.attname in self.rows[0]]
        names = [f.column for f in columns]

        copying = connection.vendor == "postgresql"

        def value(f, row):
            v = row[f.attname] if f.attname in row else f.get_default()
            if isinstance(f, JSONField):
                return json.dumps(v)
            return v if copying else f.get_db_prep_save(v, connection)

        table = connection.ops.quote_name(self.model._meta.db_table)
        quoted = ", ".join(connection.ops.quote_name(n) for n in names)
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                with cursor.cursor.copy(f"COPY {table} ({quoted}) FROM STDIN") as copy:
                    for row in self.rows:
                        copy.write_row([value(f, row) for f in columns])
            else:
                marks = ", ".join(["%s"] * len(names))
                cursor.executemany(
                    f"INSERT INTO {table} ({quoted}) VALUES ({marks})",  # noqa: S608 - names from the model
                    [[value(f, row) for f in columns] for row in self.rows],
                )
        written, self.rows = len(self.rows), []
        return written


def _write(stories, *, rng, clinics, roles, now, counts, tables) -> None:
    referrals, facts, decisions, offers, offer_events, events, sessions, checkins, reports = (
        tables[m] for m in (Referral, ClinicalFacts, RoutingDecision, Offer, OfferEvent, ReferralEvent, Session,
                            PavsCheckIn, Report)
    )
    ids = referrals.ids(len(stories))
    runs = [s.declines + 1 if s.routed else 1 for s in stories]
    decisions.reserve(sum(runs))
    offers.reserve(sum(r for r, s in zip(runs, stories) if s.routed))
    for pk, s in zip(ids, stories):
        status, reason, business = _status(s)
        referrals.add(
            id=pk, clinic_id=rng.choice(clinics).pk, status=status, status_reason=reason, business_status=business,
            owner_reference="Organization/hub", patient_name=f"{rng.choice(_GIVEN)} {rng.choice(_FAMILY)}",
            patient_birth_date=str(rng.randint(1940, 1995)), patient_postal_code=rng.choice(_ZIPS),
            service_display="Exercise referral", requester_reference=HISTORY_REQUESTER,
            requester_display="Dr Demo History", authored_on=s.received, created_at=s.received,
            updated_at=s.ended or s.first_session or s.accepted or s.routed or s.received,
        )
        facts.add(
            referral_id=pk, condition_codes=[s.code], clearance="moderate",
            pavs_baseline=[{"code": "82290-8", "value": s.baseline, "unit": "min/wk", "date": s.received.date().isoformat()}],
        )
        events.add(referral_id=pk, kind=ReferralEvent.Kind.CREATED, to_status="requested", actor=ACTOR,
                   at=s.received, notified_at=s.received)
        routed_at = s.routed or s.received + dt.timedelta(minutes=2)
        decision_ids = decisions.take(s.declines + 1 if s.routed else 1)
        for n, decision in enumerate(decision_ids):
            decisions.add(
                id=decision, referral_id=pk, trigger="initial" if n == 0 else "declined",
                outcome="offered" if s.routed else "manual", actor=ACTOR, condition_groups=[s.group],
                mapped_codes=[{**s.code, "groups": [s.group]}],
                gist="Offered to the best-ranked qualified professional with room." if s.routed
                else "Nobody eligible: waiting for a coordinator.",
                created_at=routed_at + dt.timedelta(hours=n),
            )
        if s.routed:
            _offers_add(s, pk, decision_ids, rng=rng, roles=roles, now=now, offers=offers, offer_events=offer_events)
        if s.accepted:
            events.add(referral_id=pk, kind=ReferralEvent.Kind.STATUS_CHANGED, from_status="requested",
                       to_status="accepted", actor=THERAPIST, at=s.accepted, notified_at=s.accepted)
        if s.first_session:
            _case_add(s, pk, rng=rng, now=now, events=events, sessions=sessions, checkins=checkins, reports=reports)
    for name, table in (("referrals", referrals), ("clinical facts", facts), ("routing decisions", decisions),
                        ("offers", offers), ("offer events", offer_events), ("events", events),
                        ("sessions", sessions), ("check-ins", checkins), ("reports", reports)):
        counts[name] = counts.get(name, 0) + table.write()


def _offers_add(s: _Story, referral_id: int, decision_ids: list[int], *, rng, roles, now, offers, offer_events):
    for n, (decision, offer_id) in enumerate(zip(decision_ids, offers.take(len(decision_ids)))):
        role = rng.choice(roles)
        made_at = s.routed + dt.timedelta(hours=45 * n)
        if n == s.declines and s.accepted:
            state, answered = OfferStatus.ACCEPTED, s.accepted
        elif n == s.declines:
            # still waiting when it is recent; otherwise declined, and the referral waits for a coordinator
            waiting = made_at > now - dt.timedelta(days=1)
            state, answered = (OfferStatus.REQUESTED, None) if waiting else (OfferStatus.REJECTED, made_at + dt.timedelta(hours=20))
        else:
            state = rng.choice([OfferStatus.REJECTED, OfferStatus.EXPIRED])
            answered = made_at + dt.timedelta(hours=48 if state == OfferStatus.EXPIRED else rng.uniform(1, 30))
        reason = "No room in the schedule" if state == OfferStatus.REJECTED else ""
        offers.add(
            id=offer_id, referral_id=referral_id, role_id=role.pk, organization_id=role.organization_id,
            decision_id=decision, status=state, delivery="in-person", created_at=made_at,
            deadline=made_at + dt.timedelta(hours=48), responded_at=answered,
            response_seconds=int((answered - made_at).total_seconds()) if answered else None, decline_reason=reason,
        )
        offer_events.add(offer_id=offer_id, from_status="", to_status="requested", actor=ACTOR, at=made_at)
        if answered:
            offer_events.add(offer_id=offer_id, from_status="requested", to_status=state,
                             actor=ACTOR if state == OfferStatus.EXPIRED else THERAPIST, at=answered,
                             detail={"reason": reason} if reason else {})


def _case_add(s: _Story, referral_id: int, *, rng, now, events, sessions, checkins, reports):
    events.add(referral_id=referral_id, kind=ReferralEvent.Kind.STATUS_CHANGED, from_status="accepted",
               to_status="in-progress", actor=THERAPIST, at=s.first_session, notified_at=s.first_session)
    for week in range(s.weeks_attended):
        for day in (0, 3):
            at = s.first_session + dt.timedelta(days=7 * week + day)
            if at <= now:
                sessions.add(referral_id=referral_id, starts_at=at, attendance=Attendance.ATTENDED,
                             duration_minutes=rng.choice([40, 45, 50, 60]), recorded_by=THERAPIST, recorded_at=at)
    gain = rng.choice([-10, 0, 15, 30, 45, 60, 90, 120]) if s.weeks_attended > 3 else rng.choice([-10, 0, 10])
    for k in range(1, s.weeks_attended // 4 + 2):
        day = (s.first_session + dt.timedelta(weeks=4 * k - 1)).date()
        if day > now.date():
            break
        minutes = max(0, s.baseline + gain * k // max(1, s.weeks_attended // 4 + 1))
        per_day = 30 if minutes >= 30 else 10
        days = min(7, max(0, round(minutes / per_day)))
        checkins.add(referral_id=referral_id, date=day, days_per_week=days, minutes_per_day=per_day,
                     minutes_per_week=days * per_day, recorded_by=THERAPIST,
                     recorded_at=dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC))
    if s.ended:
        events.add(referral_id=referral_id, kind=ReferralEvent.Kind.STATUS_CHANGED, from_status="in-progress",
                   to_status=s.outcome, actor=THERAPIST, at=s.ended, notified_at=s.ended)
        reports.add(
            referral_id=referral_id, kind=ReportKind.DISCHARGE, status=ReportStatus.SIGNED,
            period_start=s.first_session.date(), period_end=s.ended.date(), due_at=s.ended,
            outcome_status=s.outcome, signed_by=THERAPIST, signed_at=s.ended, sent_at=s.ended, created_at=s.ended,
        )


_GIVEN = ["Ana", "Ben", "Carla", "Dev", "Ewa", "Femi", "Grace", "Hugo", "Ines", "Jon", "Kira", "Luis", "Mei", "Nils"]
_FAMILY = ["Adams", "Baker", "Cruz", "Diaz", "Evans", "Fischer", "Garcia", "Hughes", "Ito", "Jones", "Kowalski", "Lee"]
_ZIPS = ["62701", "62702", "62703", "62704", "62707", "62711", "62712"]
