"""The kinds of follow-up: one handler each, and the table that names them.

Adding a kind is one function here and one entry in KINDS. A handler runs in its row's transaction, holding its
lock (see followups.followup_run); it checks that what it follows up is still so ("still requested", "still
accepted") before acting, because the world moves on between scheduling and the due time."""

import datetime as dt
import logging
import time

from django.conf import settings

from referrals.errors import DomainError
from referrals.models import (
    HUB_ORGANIZATION_REFERENCE,
    TERMINAL_STATUSES,
    BusinessStatus,
    Offer,
    OfferStatus,
    Referral,
    ReferralStatus,
    Report,
    ReportKind,
    ReportStatus,
    RoutingDecision,
)
from referrals.offers import HUB_ACTOR, offer_expire, referral_route_first
from referrals.records import RECORDABLE_STATUSES
from referrals.reports import (
    DISCHARGE_KINDS,
    ReportDue,
    report_draft,
    report_next_due,
    report_period_discharge,
    report_send_unsigned,
)
from referrals.services import NoteFacts, referral_update
from fhir_bridge import pull
from notifications.followups import DELIVERY, ROUTING, SWEEPS, Kind, Planned, Staged, backoff, followup_schedule
from notifications import outbox, subscriptions
from notifications.models import FollowUp
from notifications.outbox import DELIVERY_ATTEMPT, delivery_attempt, emails_queue, link
from notifications.selectors import coordinator_emails

log = logging.getLogger(__name__)

PULL_REFERRAL = "pull-referral"


def route_referral(row: FollowUp, now: dt.datetime) -> str:
    """The safety net under intake's route message: a referral still unrouted when this falls due is routed
    now (a lost broker message is swept up); one routed meanwhile is left alone."""
    if RoutingDecision.objects.filter(referral_id=row.referral_id).exists():
        return "routed already"
    outcome = referral_route_first(referral_id=row.referral_id)
    return "routed by the safety net" if outcome is not None else "not routable"


def offer_deadline(row: FollowUp, now: dt.datetime) -> str:
    """The offer's deadline: unanswered, it expires and the next candidate gets an offer (offer_expire)."""
    offer = Offer.objects.select_related("role").filter(pk=row.offer_id).first()
    if offer is None or offer.status != OfferStatus.REQUESTED:
        return f"offer is {offer.status if offer else 'gone'}"
    try:
        outcome = offer_expire(offer=offer, now=now)
    except DomainError as lost:  # answered first, or moved on
        return f"not expired: {lost}"
    if outcome is None:
        return "expired"
    return "expired; " + ("nobody left" if outcome.awaiting_manual_routing else f"offered on ({outcome.offer.pk})")


def _admin_tell(subject: str, body: str, now: dt.datetime) -> str:
    """E-mail the coordinators (no PHI: ids and links); the outcome for the row."""
    to = coordinator_emails()
    if not to:
        return "no coordinator has an e-mail address"
    emails_queue(to=to, subject=subject, body=body, now=now)
    return f"told {len(to)} coordinators"


def manual_routing_alert(row: FollowUp, now: dt.datetime) -> str:
    """Tell the coordinators that a referral waits for them (nobody eligible, or every candidate declined or
    let the offer expire)."""
    referral = Referral.objects.filter(pk=row.referral_id).first()
    if referral is None or referral.business_status != BusinessStatus.AWAITING_MANUAL_ROUTING:
        return "no longer waiting"
    return _admin_tell(
        f"Referral {referral.pk} needs manual routing",
        f"Referral {referral.pk} waits for a coordinator: the hub found nobody eligible with room.\n"
        f"Routing queue: {link('api/admin/routing/queue')}\n"
        f"Why: {link(f'api/admin/referrals/{referral.pk}/routing')}\n",
        now,
    )


def manual_routing_physician(row: FollowUp, now: dt.datetime) -> str:
    """A referral still waits for manual routing HUB_MANUAL_ROUTING_PHYSICIAN_HOURS after it began to: the
    physician is told through the referral Task's next version (its businessStatus text and a note), which the
    outbox turns into one notification per subscription. A referral routed or closed meanwhile is left alone."""
    referral = Referral.objects.select_for_update().filter(pk=row.referral_id).first()
    if referral is None or referral.business_status != BusinessStatus.AWAITING_MANUAL_ROUTING:
        return "no longer waiting"
    if referral.status != ReferralStatus.REQUESTED:
        return f"referral is {referral.status}"
    hours = settings.HUB_MANUAL_ROUTING_PHYSICIAN_HOURS
    text = (
        f"Still waiting for manual routing after {hours} h: nobody eligible had room, and a coordinator is "
        "finding an exercise professional by hand."
    )
    referral_update(
        referral=referral,
        status=referral.status,
        business_status_text=text,  # the business status stays: its event names none, so nothing reschedules this
        notes=[
            NoteFacts(
                author_reference=HUB_ORGANIZATION_REFERENCE,
                author_display="Exercise referral hub",
                text=text,
                time=now,
            )
        ],
        actor=HUB_ACTOR,
    )
    return "physician told"


def _accepted_offer(referral_id: int):
    return (
        Offer.objects.select_related("role")
        .filter(referral_id=referral_id, status=OfferStatus.ACCEPTED)
        .order_by("-id")
        .first()
    )


def first_session_nudge(row: FollowUp, now: dt.datetime) -> str:
    """Seven days after acceptance with no first session (the referral is still 'accepted', not in progress):
    remind the therapist who took it."""
    referral = Referral.objects.filter(pk=row.referral_id).first()
    if referral is None or referral.status != ReferralStatus.ACCEPTED:
        return "first session happened, or the referral closed"
    offer = _accepted_offer(referral.pk)
    if offer is None or not offer.role.email:
        return "nobody to remind"
    emails_queue(
        to=[offer.role.email],
        subject="A referral you accepted has no first session yet",
        body=f"You accepted offer {offer.pk} a week ago; please schedule the first session.\n{link(f'portal/cases/{referral.pk}')}\n",
        now=now,
    )
    return "therapist reminded"


def first_session_admin(row: FollowUp, now: dt.datetime) -> str:
    """Fourteen days after acceptance with no first session: the coordinators are told."""
    referral = Referral.objects.filter(pk=row.referral_id).first()
    if referral is None or referral.status != ReferralStatus.ACCEPTED:
        return "first session happened, or the referral closed"
    return _admin_tell(
        f"Referral {referral.pk}: no first session two weeks after acceptance",
        f"Referral {referral.pk} was accepted two weeks ago and has no first session yet.\n"
        f"{link(f'api/admin/referrals/{referral.pk}/routing')}\n",
        now,
    )


def report_plan(referral_id: int, due: ReportDue | None) -> list[Planned]:
    """The report-due follow-up of the case's next scheduled report (none once its discharge report exists),
    keyed by its due day so that scheduling it again changes nothing."""
    if due is None:
        return []
    return [Planned(kind="report-due", key=f"report-due:{referral_id}:{due.period_end.isoformat()}",
                    due_at=due.due_at, referral_id=referral_id)]


def report_due(row: FollowUp, now: dt.datetime) -> str:
    """A scheduled report falls due (referrals.reports.report_next_due says which), or the case was closed.

    - An open case whose report is due: the report is drafted from the record (report_draft, which nudges the
      therapist and schedules its preliminary send through ``report_drafted``). One with nothing recorded in its
      period ("no update") or that never started ("did not start") has nothing to review: it goes out at once,
      unsigned, and the coordinators are told. Then the next period's report-due is scheduled.
    - Not due yet (the schedule moved: a report asked for in between, a first session recorded late): the row
      for the real due day is scheduled.
    - A case closed (completed or failed by whoever) without a discharge report: the discharge report is drafted
      now, for the period since the last report sent; it keeps the case's status and reason."""
    referral = Referral.objects.select_for_update().select_related("clinic").filter(pk=row.referral_id).first()
    if referral is None:
        return "referral gone"
    if referral.status in (ReferralStatus.COMPLETED, ReferralStatus.FAILED):
        if Report.objects.filter(referral=referral, kind__in=sorted(DISCHARGE_KINDS)).exclude(
                status=ReportStatus.SUPERSEDED).exists():
            return "discharge reported already"
        start, end = report_period_discharge(referral=referral)
        report = report_draft(referral=referral, period_start=start, period_end=end, kind=ReportKind.DISCHARGE,
                              due_at=now)
        return f"{report.kind} report {report.pk} drafted for the closed case"
    if referral.status not in RECORDABLE_STATUSES:
        return f"referral is {referral.status}"
    due = report_next_due(referral=referral)
    if due is None:
        return "discharge reported already"
    if due.due_at > now:
        followup_schedule(plans=report_plan(referral.pk, due), now=now)
        return f"next report due {due.period_end.isoformat()}"
    report = report_draft(referral=referral, period_start=due.period_start, period_end=due.period_end,
                          kind=due.kind, due_at=now)
    outcome = f"{report.kind} report {report.pk} drafted"
    if report.kind in (ReportKind.NO_UPDATE, ReportKind.DID_NOT_START) and report.status == ReportStatus.DRAFT:
        report_send_unsigned(report=report, actor=HUB_ACTOR)
        what = "nothing was recorded in its period" if report.kind == ReportKind.NO_UPDATE else (
            "the patient attended no session")
        told = _admin_tell(
            f"Referral {referral.pk}: a '{ReportKind(report.kind).label}' report went to the physician",
            f"The report due for referral {referral.pk} went out at once, unsigned: {what}.\n"
            f"{link(f'api/admin/referrals/{referral.pk}/routing')}\n",
            now,
        )
        outcome += f"; sent at once, {told}"
    referral.refresh_from_db()
    if referral.status not in TERMINAL_STATUSES:
        followup_schedule(plans=report_plan(referral.pk, report_next_due(referral=referral)), now=now)
    return outcome


def report_nudge(row: FollowUp, now: dt.datetime) -> str:
    """A report was drafted and is due: ask the therapist who holds the case to review and sign it. Nothing when
    every draft of the case was signed or sent meanwhile."""
    drafts = Report.objects.filter(referral_id=row.referral_id, status=ReportStatus.DRAFT).count()
    if not drafts:
        return "no draft waits"
    offer = _accepted_offer(row.referral_id)
    if offer is None or not offer.role.email:
        return "nobody to remind"
    hours = settings.HUB_REPORT_UNSIGNED_WAIT_HOURS
    emails_queue(
        to=[offer.role.email],
        subject="A report to the referring physician waits for your signature",
        body=(f"A report on referral {row.referral_id} is due: please review and sign it. Unsigned, it goes to "
              f"the physician in {hours} h marked 'not reviewed by the therapist'.\n"
              f"{link(f'portal/cases/{row.referral_id}')}\n"),
        now=now,
    )
    return "therapist reminded"


def report_unsigned(row: FollowUp, now: dt.datetime) -> str:
    """The wait for the therapist's signature is over: every draft of the case drafted at least
    HUB_REPORT_UNSIGNED_WAIT_HOURS ago goes out as preliminary ("not reviewed by the therapist"), and the
    coordinators are told. A draft signed meanwhile is left alone (signing sent it, final)."""
    wait = dt.timedelta(hours=settings.HUB_REPORT_UNSIGNED_WAIT_HOURS)
    late = list(
        Report.objects.filter(referral_id=row.referral_id, status=ReportStatus.DRAFT, created_at__lte=now - wait)
        .order_by("period_start")
    )
    if not late:
        return "signed or sent already"
    for report in late:
        report_send_unsigned(report=report, actor=HUB_ACTOR)
    told = _admin_tell(
        f"Referral {row.referral_id}: a report went out unsigned",
        f"{len(late)} report(s) on referral {row.referral_id} went to the physician as preliminary: nobody "
        f"signed them within {settings.HUB_REPORT_UNSIGNED_WAIT_HOURS} h.\n"
        f"{link(f'api/admin/referrals/{row.referral_id}/routing')}\n",
        now,
    )
    return f"{len(late)} sent unsigned; {told}"


def subscription_heartbeat(row: FollowUp, now: dt.datetime) -> str:
    """A subscription's heartbeat falls due: notifications.subscriptions.subscription_heartbeat."""
    return subscriptions.subscription_heartbeat(subscription_id=row.subscription_id, now=now)


def subscription_end(row: FollowUp, now: dt.datetime) -> str:
    """A subscription's end falls due: notifications.subscriptions.subscription_end switches it off."""
    return subscriptions.subscription_end(subscription_id=row.subscription_id, now=now)


def referral_pull(row: FollowUp, now: dt.datetime) -> str:
    """Notify and pull: fetch a waiting referral's data from its EHR (fhir_bridge.pull.referral_pull). A failure
    that may pass is tried again as the next row of this kind (key ``pull-referral:<referral>:<attempt>``), due
    after a backoff and never after the time the hub gives up; the row is the schedule, not a broker countdown."""
    return _pull_next(row, pull.referral_pull(referral_id=row.referral_id, now=now), now)


def _pull_next(row: FollowUp, outcome: "pull.PullOutcome", now: dt.datetime) -> str:
    """Schedule the next attempt of a pull that may pass (``outcome.retry_until``); the outcome's text."""
    if outcome.retry_until is not None:
        prefix, _, attempt = row.key.rpartition(":")
        attempt = int(attempt) if attempt.isdigit() else 1
        due = min(
            now + backoff(attempt, base=settings.HUB_RETRY_BASE_SECONDS, cap=settings.HUB_RETRY_MAX_SECONDS),
            outcome.retry_until,
        )
        followup_schedule(
            plans=[Planned(kind=PULL_REFERRAL, key=f"{prefix}:{attempt + 1}", due_at=due, referral_id=row.referral_id)],
            now=now,
        )
    return outcome.text


def delivery_attempt_run(row: FollowUp, now: dt.datetime) -> str:
    """One attempt of one Delivery (its first, a retry, or a replay's): see outbox.delivery_attempt."""
    return delivery_attempt(delivery_id=row.delivery_id, subscription_id=row.subscription_id, now=now)


def delivery_attempts_claim(rows: list[FollowUp], now: dt.datetime, lease_until: dt.datetime):
    """A chunk's delivery attempts, step (a) (Kind.staged): outbox.deliveries_claim. The work is the rows with
    what the claim decided (its indexes are the rows')."""
    outgoing = outbox.deliveries_claim(
        attempts=[(r.delivery_id, r.subscription_id) for r in rows], now=now, lease_until=lease_until
    )
    settled: dict[int, str | None] = {rows[index].pk: outcome for index, outcome in outgoing.outcomes.items()}
    settled.update({rows[index].pk: None for index in outgoing.elsewhere})
    return (rows, outgoing), settled


def delivery_attempts_send(work, until: float):
    """Step (b), no transaction open: outbox.deliveries_send."""
    return outbox.deliveries_send(work[1], until=until)


def delivery_attempts_record(rows: list[FollowUp], work, sent, now: dt.datetime) -> dict:
    """Step (c): outbox.deliveries_record, by follow-up id."""
    claimed, outgoing = work
    outcomes = outbox.deliveries_record(outgoing, sent, now=now)
    return {claimed[index].pk: outcome for index, outcome in outcomes.items()}


def referral_pulls_claim(rows: list[FollowUp], now: dt.datetime, lease_until: dt.datetime):
    """Notify and pull, step (a) (Kind.staged): nothing to decide; the rows' lease keeps the sweep off them. (A
    duplicate message pulls twice, harmlessly: the write after the fetch locks the referral and finds it no
    longer waiting.)"""
    return (rows, now), {}


def referral_pulls_send(work: tuple[list[FollowUp], dt.datetime], until: float) -> dict:
    """Step (b): the fetch, with no transaction open (fhir_bridge.pull.referral_pull writes what it fetched in a
    short transaction of its own, the referral locked). Each row's PullOutcome, or what it raised."""
    rows, now = work
    outcomes: dict[int, object] = {}
    for position, row in enumerate(rows):
        if position and time.monotonic() > until:
            break
        try:
            outcomes[row.pk] = pull.referral_pull(referral_id=row.referral_id, now=now)
        except Exception as exc:  # noqa: BLE001 - retried with backoff, as a handler that raises
            outcomes[row.pk] = exc
    return outcomes


def referral_pulls_record(rows: list[FollowUp], work, sent: dict, now: dt.datetime) -> dict:
    """Step (c): each pull's next attempt, when one is due (referral_pull_next), and its outcome."""
    recorded: dict[int, object] = {}
    for row in rows:
        outcome = sent.get(row.pk)
        if outcome is None or isinstance(outcome, Exception):
            recorded[row.pk] = outcome
        else:
            recorded[row.pk] = _pull_next(row, outcome, now)
    return recorded


KINDS: dict[str, Kind] = {
    "route-referral": Kind(route_referral, dt.timedelta(minutes=5), ROUTING),
    "offer-deadline": Kind(offer_deadline, dt.timedelta(0), ROUTING),  # due at Offer.deadline
    "manual-routing-alert": Kind(manual_routing_alert, dt.timedelta(0), DELIVERY),
    "manual-routing-physician": Kind(manual_routing_physician, dt.timedelta(0), ROUTING),  # delay: the setting
    "first-session-nudge": Kind(first_session_nudge, dt.timedelta(days=7), SWEEPS),
    "first-session-admin": Kind(first_session_admin, dt.timedelta(days=14), SWEEPS),
    "report-due": Kind(report_due, dt.timedelta(0), SWEEPS),  # due: referrals.reports.report_next_due
    "report-nudge": Kind(report_nudge, dt.timedelta(0), SWEEPS),  # when a report is drafted
    "report-unsigned": Kind(report_unsigned, dt.timedelta(0), SWEEPS),  # delay: HUB_REPORT_UNSIGNED_WAIT_HOURS
    "subscription-heartbeat": Kind(subscription_heartbeat, dt.timedelta(0), DELIVERY),
    subscriptions.END_KIND: Kind(subscription_end, dt.timedelta(0), SWEEPS),  # due at Subscription.end
    # The outside world with no transaction open (Kind.staged): a slow receiver or EHR holds no lock.
    DELIVERY_ATTEMPT: Kind(delivery_attempt_run, dt.timedelta(0), DELIVERY, staged=Staged(
        delivery_attempts_claim, delivery_attempts_send, delivery_attempts_record,
        step_seconds=lambda: float(settings.HUB_DELIVERY_TIMEOUT_SECONDS))),
    # Outbound HTTP that may be slow, as deliveries are: on their queue, not routing's.
    PULL_REFERRAL: Kind(referral_pull, dt.timedelta(0), DELIVERY, staged=Staged(
        referral_pulls_claim, referral_pulls_send, referral_pulls_record, step_seconds=lambda: pull.FETCH_SECONDS)),
}
