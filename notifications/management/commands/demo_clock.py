"""Demo only: move the demo's cases forward in time, so that `make run`'s demo shows reports to the physician.

    .venv/bin/python manage.py demo_clock [--weeks 4] [--clinic good-health] [--keep-drafts]

A live server's clock cannot jump, so the command moves the cases instead: each open case of the demo clinic
(accepted, in progress or on hold) that has no session yet is played as if it had started ``--weeks`` weeks ago
(the Monday of that week): its exercise program, three sessions a week (Monday, Wednesday and Friday at 10:00 in
the site's time zone; one no-show in the third week), the patient's PAVS check-in every Sunday and an assessment
every four weeks, all recorded through referrals/records.py up to now, as its therapist would have. A case
with sessions already goes on from the day after its last one. When no demo case is open, the first live offer
of the clinic's referrals is accepted first, as its therapist would in the portal.

Then the follow-ups of those cases that fell due are run at once (notifications' report-due and friends: the
progress reports every 4 weeks, the discharge report at the end of the program), and the drafts nobody signed
go out as preliminary, as they would when the wait ends (``--keep-drafts`` leaves them for the therapist). The
EHR then finds each report through FHIR: ``DiagnosticReport?based-on=ServiceRequest/<id>`` and its PDF,
``Binary/<id>-pdf``. The notifications and e-mails go out through the running worker.

Refused unless DEBUG is on: it writes made-up records.
"""

import datetime as dt

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Max
from django.utils import timezone

from fhir_bridge.models import StoredResource
from notifications.followups import followup_run
from notifications.models import FollowUp
from referrals.models import (
    Attendance,
    Clinic,
    ExerciseProgram,
    Offer,
    OfferStatus,
    Referral,
    ReferralStatus,
    Report,
    ReportStatus,
    Session,
)
from referrals.offers import offer_accept
from referrals.records import (
    RECORDABLE_STATUSES,
    ComponentPlan,
    MeasureValue,
    assessment_record,
    checkin_record,
    program_set,
    session_record,
)
from referrals.reports import report_send_unsigned
from referrals.selectors import case_time_zone

ACTOR = "demo-clock"


def _version(referral: Referral) -> int:
    referral.refresh_from_db(fields=["version", "status", "status_reason", "business_status"])
    return referral.version


def demo_case_play(referral: Referral, *, start: dt.date, now: dt.datetime) -> int:
    """Record the case's days from ``start`` to ``now`` (see the module's docstring). Returns the sessions
    recorded. An on-hold case gets its check-ins only (it takes no attended session)."""
    tz = case_time_zone(referral)
    if not ExerciseProgram.objects.filter(referral=referral).exists():
        program_set(referral=referral, starts_on=start, components=[
            ComponentPlan("aerobic", 3, 30, intensity_kind="rpe", intensity_low=3, intensity_high=5,
                          type="treadmill walk"),
            ComponentPlan("resistance", 2, 15, type="machines, 2 x 12"),
        ], actor=ACTOR, expected_version=_version(referral))
    sessions = 0
    day = start
    while day <= timezone.localdate(now, tz):
        week = (day - start).days // 7
        at = dt.datetime.combine(day, dt.time(10), tzinfo=tz)
        if day.weekday() in (0, 2, 4) and at <= now:
            missed = week == 2 and day.weekday() == 2
            if referral.status != ReferralStatus.ON_HOLD:
                session_record(referral=referral, attendance="no-show" if missed else "attended", starts_at=at,
                               duration_minutes=None if missed else 45 + 5 * (week % 3),
                               rpe=None if missed else 4,
                               actor=ACTOR, expected_version=_version(referral))
                sessions += 1
            if day.weekday() == 4 and week % 4 == 0:
                assessment_record(referral=referral, kind="dynamic", assessed_at=at + dt.timedelta(hours=1),
                                  measurements=[MeasureValue("six-minute-walk", 380 + 12 * week),
                                                MeasureValue("chair-stand-30s", 10 + week // 2)],
                                  actor=ACTOR, expected_version=_version(referral))
                assessment_record(referral=referral, kind="static", assessed_at=at + dt.timedelta(hours=1),
                                  measurements=[MeasureValue("bp-systolic", 138 - week),
                                                MeasureValue("bp-diastolic", 88 - week // 2)],
                                  actor=ACTOR, expected_version=_version(referral))
        if day.weekday() == 6:
            checkin_record(referral=referral, date=day, days_per_week=min(3 + week // 3, 6),
                           minutes_per_day=min(20 + 3 * week, 60), strength_days_per_week=min(week // 2, 3),
                           actor=ACTOR, expected_version=_version(referral))
        day += dt.timedelta(days=1)
    return sessions


def demo_followups_run(*, referral_ids: list[int], now: dt.datetime) -> list[str]:
    """Run the cases' follow-ups due by ``now`` here rather than wait for the sweep, until none is left (each
    one drafted may schedule the next, due already). The worker finds them done."""
    outcomes = []
    for _ in range(50):
        due = list(FollowUp.objects.filter(referral_id__in=referral_ids, state=FollowUp.State.PENDING,
                                           due_at__lte=now).order_by("due_at", "id").values_list("id", flat=True))
        if not due:
            break
        outcomes += [followup_run(followup_id=pk, now=now) for pk in due]
    return outcomes


class Command(BaseCommand):
    help = "Demo only: play the demo's open cases forward N weeks, so that their reports fall due and go out."

    def add_arguments(self, parser):
        parser.add_argument("--weeks", type=int, default=4, help="How long ago a case without sessions started "
                            "(1 to 26; 4 gives one progress report, 12 the discharge).")
        parser.add_argument("--clinic", default="good-health", help="The demo clinic's slug.")
        parser.add_argument("--keep-drafts", action="store_true",
                            help="Leave the drafted reports for the therapist to sign instead of sending them.")

    def handle(self, *args, weeks: int, clinic: str, keep_drafts: bool, **options):
        if not settings.DEBUG:
            raise CommandError("demo_clock writes made-up case records: it runs only on the demo (DEBUG on)")
        if not 1 <= weeks <= 26:
            raise CommandError(f"--weeks must be between 1 and 26, not {weeks}")
        demo = Clinic.objects.filter(slug=clinic).first()
        if demo is None:
            raise CommandError(f"no clinic {clinic!r}: run `make run` (or manage.py load_demo) first")
        # The demo's referrals that came in over FHIR (a stored Task): load_console_history's synthetic history
        # has no FHIR resources for a record's Observations or a report to attach to, and is left as it is.
        sent = StoredResource.objects.filter(resource_type="Task", referral__clinic=demo).values("referral_id")
        cases = list(Referral.objects.filter(clinic=demo, status__in=sorted(RECORDABLE_STATUSES), pk__in=sent)
                     .order_by("id"))
        if not cases:
            offer = (Offer.objects.filter(referral__clinic=demo, status=OfferStatus.REQUESTED, referral_id__in=sent)
                     .select_related("role").order_by("referral_id").first())
            if offer is None:
                raise CommandError("no demo case is open and no offer waits: nothing to move forward")
            offer_accept(offer=offer, actor=ACTOR)
            self.stdout.write(f"accepted offer {offer.pk} (referral {offer.referral_id}) for {offer.role}")
            cases = [Referral.objects.get(pk=offer.referral_id)]
        now = timezone.now()
        for case in cases:
            tz = case_time_zone(case)
            last = Session.objects.filter(referral=case).exclude(attendance=Attendance.SCHEDULED).aggregate(
                last=Max("starts_at"))["last"]
            if last is None:
                today = timezone.localdate(now, tz)
                start = today - dt.timedelta(days=today.weekday() + 7 * weeks)
            else:
                start = last.astimezone(tz).date() + dt.timedelta(days=1)
            # A record may not be dated before its referral came in (referrals.records.RecordWindow): the case
            # played from ``start`` came in the week before.
            received = dt.datetime.combine(start - dt.timedelta(days=7), dt.time(9), tzinfo=tz)
            Referral.objects.filter(pk=case.pk, created_at__gt=received).update(created_at=received)
            case.refresh_from_db(fields=["created_at"])
            recorded = demo_case_play(case, start=start, now=now)
            self.stdout.write(f"referral {case.pk} ({case.patient_name}): {recorded} sessions recorded from "
                              f"{start.isoformat()}" if recorded else f"referral {case.pk}: up to date")
        ids = [c.pk for c in cases]
        demo_followups_run(referral_ids=ids, now=now)
        if not keep_drafts:
            for report in Report.objects.filter(referral_id__in=ids, status=ReportStatus.DRAFT).order_by("id"):
                report_send_unsigned(report=report, actor=ACTOR)
        for case in Referral.objects.filter(pk__in=ids).order_by("id"):
            service_request = StoredResource.objects.filter(
                referral=case, resource_type="ServiceRequest").values_list("fhir_id", flat=True).first()
            self.stdout.write(f"\nreferral {case.pk}: {case.status} ({case.get_business_status_display()}); "
                              f"ServiceRequest/{service_request}")
            for report in Report.objects.filter(referral=case).exclude(status=ReportStatus.SUPERSEDED):
                where = (f"DiagnosticReport/{report.public_id}, PDF Binary/{report.public_id}-pdf"
                         if report.is_sent else "waits for the therapist's signature")
                self.stdout.write(f"  {report.get_kind_display()} {report.period_start} to {report.period_end}: "
                                  f"{report.status}; {where}")
        self.stdout.write(
            "\nAs the demo EHR (a token as `make run` printed it):\n"
            "  curl -H \"Authorization: Bearer $TOKEN\" "
            "'http://127.0.0.1:8000/fhir/DiagnosticReport?based-on=ServiceRequest/<id>"
            "&_include=DiagnosticReport:result'\n"
            "  curl -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:8000/fhir/Binary/<id>-pdf "
            "| jq -r .data | base64 -d > report.pdf\n"
        )
