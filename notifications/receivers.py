"""How the domain's changes reach this edge: signal receivers that run inside the change's transaction, so
that what they schedule commits or rolls back with it. They only write rows and enqueue on commit; the work
happens in the follow-ups' handlers."""

import datetime as dt
import logging

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.dispatch import receiver
from django.utils import timezone

from notifications.followups import Planned, followup_schedule
from notifications.outbox import emails_queue, link
from referrals.models import BusinessStatus, Offer, Referral, ReferralStatus, Report
from referrals.offers import offer_changed
from referrals.records import RECORDABLE_STATUSES
from referrals.reports import report_drafted, report_next_due
from referrals.services import referral_changed, referral_created

log = logging.getLogger(__name__)


def _fan_out_on_commit() -> None:
    """Have the outbox fan out once the current transaction commits: once per transaction, however many
    changes it made (the sweep fans out too, so a lost message only delays).

    With HUB_FAN_OUT_COALESCE (a cache all processes share), not when a fan-out message is queued and its task
    has not started yet: that task takes this transaction's events too (it forgets the mark before it reads the
    events, notifications.tasks.fan_out). At 300 changes a second, a message each kept the workers busier with
    fan-outs of one or two events than with the deliveries (bench/followups.py)."""
    from notifications.tasks import FAN_OUT_QUEUED, FAN_OUT_QUEUED_SECONDS, fan_out  # (imports these senders)

    connection = transaction.get_connection()
    if any(getattr(func, "hub_fan_out", False) for _, func, _ in connection.run_on_commit):
        return

    def send():
        coalesce = settings.HUB_FAN_OUT_COALESCE
        try:
            if coalesce and not cache.add(FAN_OUT_QUEUED, True, timeout=FAN_OUT_QUEUED_SECONDS):
                return  # queued, not started: it will read this transaction's events
            fan_out.delay()
        except Exception:  # a broker that is down: the sweep fans out within HUB_SWEEP_SECONDS
            log.exception("could not enqueue the outbox's fan-out; the sweep will do it")
            if coalesce:
                try:
                    cache.delete(FAN_OUT_QUEUED)  # no message is queued: the next change sends one
                except Exception:  # noqa: BLE001 - the cache down too: the mark expires on its own
                    log.exception("could not clear the fan-out mark")

    send.hub_fan_out = True
    transaction.on_commit(send)


@receiver(referral_created, dispatch_uid="notifications.referral_created")
def _referral_created(sender, referral: Referral, **kwargs):
    """A new requested referral gets the routing safety net: a follow-up that routes it if the route message
    is lost (runs in the creation's transaction).

    A new requested referral sends no fan-out message of its own: the route message its intake enqueues (or
    this safety net) changes it next, always (an offer, or "awaiting manual routing", each a referral_update),
    and that change's fan-out takes the creation's event with it, in order. One broker message per referral
    intake, not two: a publish costs the intake request about as much as an INSERT.

    One that waits for its data (notify and pull) gets the pull instead, due at once, and the safety net when the
    data comes (_referral_changed). Its next change may be hours away (an EHR that is down), so its creation
    ("waiting for data") is fanned out now."""
    if referral.business_status == BusinessStatus.WAITING_FOR_DATA:
        from notifications.kinds import PULL_REFERRAL

        followup_schedule(
            plans=[Planned(kind=PULL_REFERRAL, key=f"{PULL_REFERRAL}:{referral.pk}:1", due_at=timezone.now(),
                           referral_id=referral.pk)],
        )
        _fan_out_on_commit()
    elif referral.status == ReferralStatus.REQUESTED:
        _routing_safety_net(referral)
    else:  # created in another state (a referral the hub itself opens): nothing routes it, so fan out now
        _fan_out_on_commit()


def _routing_safety_net(referral: Referral) -> None:
    from notifications.kinds import KINDS

    now = timezone.now()
    followup_schedule(
        plans=[
            Planned(
                kind="route-referral",
                key=f"route-referral:{referral.pk}",
                due_at=now + KINDS["route-referral"].delay,
                referral_id=referral.pk,
            )
        ],
        now=now,
    )


@receiver(referral_changed, dispatch_uid="notifications.referral_changed")
def _referral_changed(sender, referral: Referral, events, **kwargs):
    from notifications.kinds import KINDS, report_plan

    now = timezone.now()
    plans = []
    for event in events:
        if (event.detail or {}).get("facts") == "completed":  # a pulled referral's data came: route it
            _routing_safety_net(referral)
        if event.to_status == ReferralStatus.ACCEPTED and event.from_status != ReferralStatus.ACCEPTED:
            for kind in ("first-session-nudge", "first-session-admin"):
                plans.append(
                    Planned(kind=kind, key=f"{kind}:{referral.pk}", due_at=now + KINDS[kind].delay, referral_id=referral.pk)
                )
        if event.to_status != event.from_status and event.to_status in (ReferralStatus.ACCEPTED,
                                                                         ReferralStatus.IN_PROGRESS):
            # Accepted: the "did not start" report at the program's end; started: the first progress report. A
            # row falling due on a schedule that moved meanwhile schedules the right one (report_due).
            plans += report_plan(referral.pk, report_next_due(referral=referral))
        if (event.to_status in (ReferralStatus.COMPLETED, ReferralStatus.FAILED)
                and event.from_status in RECORDABLE_STATUSES
                and (event.detail or {}).get("business_status") != BusinessStatus.DISCHARGE_REPORT_SENT):
            # Closed other than by its discharge report (failed by the therapist, moved by a provider's system):
            # the discharge report is drafted now.
            plans.append(Planned(kind="report-due", key=f"report-due:{referral.pk}:closed", due_at=now,
                                 referral_id=referral.pk))
        if (event.detail or {}).get("business_status") == BusinessStatus.AWAITING_MANUAL_ROUTING:
            cause = event.pk or int(now.timestamp() * 1e6)
            plans.append(
                Planned(kind="manual-routing-alert", key=f"manual-routing-alert:{referral.pk}:{cause}", due_at=now,
                        referral_id=referral.pk)
            )
            # Past the policy's limit the physician is told as well (DESIGN.md §5).
            plans.append(
                Planned(
                    kind="manual-routing-physician",
                    key=f"manual-routing-physician:{referral.pk}:{cause}",
                    due_at=now + dt.timedelta(hours=settings.HUB_MANUAL_ROUTING_PHYSICIAN_HOURS),
                    referral_id=referral.pk,
                )
            )
    followup_schedule(plans=plans, now=now)
    _fan_out_on_commit()


@receiver(report_drafted, dispatch_uid="notifications.report_drafted")
def _report_drafted(sender, report: Report, **kwargs):
    """A report drafted (by the schedule, the therapist's discharge, an EHR's $report): nudge the therapist now,
    and send it as preliminary once HUB_REPORT_UNSIGNED_WAIT_HOURS have passed unsigned."""
    now = timezone.now()
    followup_schedule(
        plans=[
            Planned(kind="report-nudge", key=f"report-nudge:{report.pk}", due_at=now,
                    referral_id=report.referral_id),
            Planned(kind="report-unsigned", key=f"report-unsigned:{report.pk}",
                    due_at=now + dt.timedelta(hours=settings.HUB_REPORT_UNSIGNED_WAIT_HOURS),
                    referral_id=report.referral_id),
        ],
        now=now,
    )


@receiver(offer_changed, dispatch_uid="notifications.offer_changed")
def _offer_changed(sender, offer: Offer, from_status: str, **kwargs):
    if from_status:  # an answer, expiry or withdrawal: the deadline's handler sees the offer is no longer open
        return
    now = timezone.now()
    followup_schedule(
        plans=[
            Planned(
                kind="offer-deadline",
                key=f"offer-deadline:{offer.pk}",
                due_at=offer.deadline,
                offer_id=offer.pk,
                referral_id=offer.referral_id,
            )
        ],
        now=now,
    )
    if offer.role.email:
        # No PHI: the offer's number, its deadline and a link; the therapist reads the case after logging in.
        emails_queue(
            to=[offer.role.email],
            subject="New referral offer",
            body=(
                f"You have a new referral offer (offer {offer.pk}).\n"
                f"Please answer by {offer.deadline.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC.\n"
                f"{link(f'portal/offers#offer-{offer.pk}')}\n"
            ),
            now=now,
        )
