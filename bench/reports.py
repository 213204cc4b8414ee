"""Reports benchmark: 1,000 reports fall due at once and 2 worker processes draft, render and send them, on
PostgreSQL. Prints reports per second, the p50/p99 of one PDF render, and each worker's memory after its first
100 reports and after its last.

    .venv/bin/python -m bench.reports [--reports 1000] [--workers 2] [--database hub_bench_reports]

It drops and re-creates ``--database`` on 127.0.0.1:5432 (user postgres; BENCH_PG_URL to change the server),
migrates it, and opens ``--reports`` accepted referrals through the domain (referral_create, routing, the offer
accepted), each with its FHIR Task, Patient and ServiceRequest and a four-week record (bench_record below), which
the drafts read from the database (reports.report_recorded). Then
each worker process takes its share of the referrals and, for each, does what the schedule does when a
progress report falls due and nobody signs it: ``report_draft`` (the draft from the record) then
``report_send_unsigned`` (the PDF, the DiagnosticReport and its Binary stored, the referral Task's next version
with its output and note), each in its own transaction. One render is ``report_pdf`` alone.

Memory is each worker's resident set (VmRSS) after its 100th report and after its last: it must not grow.

Targets: >= 20 reports/s with 2 workers, a render under 500 ms at p99.
"""

import argparse
import datetime as dt
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.routing import SERVER, database_fresh  # noqa: E402 (after the path is set)
START = dt.date(2026, 9, 7)
END = START + dt.timedelta(days=27)


def django_start(database: str) -> None:
    os.environ["DATABASE_URL"] = f"{SERVER}/{database}"
    os.environ["DEBUG"] = "false"  # no query log kept in memory
    os.environ.setdefault("SECRET_KEY", "bench-reports-not-a-secret-" + "x" * 32)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def bench_record(referral_ids: list[int]) -> None:
    """The record each report is drafted from, written in bulk (the rows referrals/records.py writes, without
    the services' checks, events and FHIR Observations, which setting up 1,000 cases one write at a time would
    spend minutes on): a program of aerobic 3 x 40 min/wk, twelve sessions over four weeks (one missed), weekly
    PAVS check-ins, two assessments (6-minute walk, blood pressure) and an adverse event; the same as the tests'
    four weeks (tests/referrals/report_cases.py)."""
    from django.utils import timezone

    from referrals.models import (
        AdverseEvent, Assessment, ExerciseProgram, Measurement, PavsCheckIn, ProgramComponent, Session,
    )

    tz = dt.timezone(dt.timedelta(hours=-5))
    now = timezone.now()
    at = lambda day, hour=10: dt.datetime.combine(day, dt.time(hour), tzinfo=tz)  # noqa: E731
    later = START + dt.timedelta(days=25)
    programs = ExerciseProgram.objects.bulk_create(
        ExerciseProgram(referral_id=pk, version=1, starts_on=START, recorded_by="bench", recorded_at=now)
        for pk in referral_ids)
    ProgramComponent.objects.bulk_create(
        ProgramComponent(program=p, kind="aerobic", frequency_per_week=3, minutes=40) for p in programs)
    sessions, checkins, assessments, events = [], [], [], []
    for pk in referral_ids:
        for week in range(4):
            monday = START + dt.timedelta(days=7 * week)
            for day in (0, 2, 4):
                missed = week == 2 and day == 2
                sessions.append(Session(referral_id=pk, starts_at=at(monday + dt.timedelta(days=day)),
                                        attendance="no-show" if missed else "attended",
                                        duration_minutes=None if missed else 40, recorded_by="bench",
                                        recorded_at=now))
            minutes = (60, 90, 110, 135)[week]
            checkins.append(PavsCheckIn(referral_id=pk, date=monday + dt.timedelta(days=6), days_per_week=5,
                                        minutes_per_day=minutes // 5, minutes_per_week=minutes,
                                        strength_days_per_week=(0, 1, 2, 2)[week], recorded_by="bench",
                                        recorded_at=now))
        for day in (START, later):
            assessments.append(Assessment(referral_id=pk, kind="static", assessed_at=at(day, 9),
                                          recorded_by="bench", recorded_at=now))
        events.append(AdverseEvent(referral_id=pk, occurred_at=at(START + dt.timedelta(days=10)), kind="fall",
                                   severity="mild", action_taken="Checked, no injury", recorded_by="bench",
                                   recorded_at=now))
    Session.objects.bulk_create(sessions, batch_size=2000)
    PavsCheckIn.objects.bulk_create(checkins, batch_size=2000)
    AdverseEvent.objects.bulk_create(events, batch_size=2000)
    assessments = Assessment.objects.bulk_create(assessments, batch_size=2000)
    measures = []
    for a in assessments:
        first = a.assessed_at.date() == START
        for code, value, unit in (("six-minute-walk", 380 if first else 430, "m"),
                                  ("bp-systolic", 138 if first else 128, "mm[Hg]"),
                                  ("bp-diastolic", 88 if first else 82, "mm[Hg]")):
            measures.append(Measurement(referral_id=a.referral_id, assessment=a, code=code, value=value,
                                        unit=unit, measured_at=a.assessed_at, recorded_by="bench",
                                        recorded_at=now))
    Measurement.objects.bulk_create(measures, batch_size=2000)


def setup(count: int) -> list[int]:
    from django.core.management import call_command

    from referrals.models import Clinic
    from referrals.offers import offer_accept, referral_route_first
    from referrals.services import ReferralFacts, referral_create
    from tests.network.factories import CARDIAC, ZIP_10001, role_make
    from tests.referrals.report_cases import GOALS

    call_command("migrate", verbosity=0)
    clinic = Clinic.objects.create(name="Bench Cardiology", slug="bench")
    for _ in range(max(1, count // 20)):  # 20 cases a professional
        role_make(at=ZIP_10001, max_active_cases=40)
    ids = []
    for i in range(count):
        referral = referral_create(clinic=clinic, actor="bench", facts=ReferralFacts(
            patient_name=f"Patient {i}", patient_birth_date="1958-04-02", patient_postal_code="10001",
            latitude=ZIP_10001[0], longitude=ZIP_10001[1], state="NY", requester_display="Dr Ana Lopez",
            condition_codes=list(CARDIAC), clearance="moderate",
            pavs_baseline=[{"code": "82290-8", "value": 30, "unit": "min/wk", "date": "2026-08-20"}], goals=GOALS,
        ))
        offer_accept(offer=referral_route_first(referral_id=referral.pk).offer)
        ids.append(referral.pk)
    bench_record(ids)
    return ids


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def worker(database: str, ids: list[int], queue) -> None:
    django_start(database)
    from django import db

    from referrals import reports
    from referrals.models import Referral, ReportKind
    from referrals import report_pdf as pdf_module

    renders = []
    real_render = pdf_module.report_pdf

    def timed_render(*, report):
        started = time.perf_counter()
        try:
            return real_render(report=report)
        finally:
            renders.append(time.perf_counter() - started)

    pdf_module.report_pdf = timed_render
    db.connections.close_all()
    rss_100 = None
    started = time.perf_counter()
    for n, referral_id in enumerate(ids, 1):
        referral = Referral.objects.get(pk=referral_id)
        report = reports.report_draft(referral=referral, period_start=START, period_end=END,
                                      kind=ReportKind.PROGRESS)
        reports.report_send_unsigned(report=report)
        if n == 100:
            rss_100 = _rss_kib()
    elapsed = time.perf_counter() - started
    queue.put({"pid": os.getpid(), "reports": len(ids), "seconds": elapsed, "renders": renders,
               "rss_100": rss_100, "rss_last": _rss_kib()})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database", default="hub_bench_reports")
    args = parser.parse_args()

    database_fresh(args.database)
    django_start(args.database)
    t0 = time.perf_counter()
    ids = setup(args.reports)
    print(f"setup: {len(ids)} accepted referrals in {time.perf_counter() - t0:.1f} s")
    from django import db

    db.connections.close_all()

    queue = multiprocessing.get_context("fork").Queue()
    shares = [ids[i :: args.workers] for i in range(args.workers)]
    processes = [multiprocessing.get_context("fork").Process(target=worker, args=(args.database, share, queue))
                 for share in shares]
    started = time.perf_counter()
    for p in processes:
        p.start()
    results = [queue.get() for _ in processes]
    for p in processes:
        p.join()
    wall = time.perf_counter() - started

    from fhir_bridge.models import StoredResource
    from referrals.models import Report

    sent = Report.objects.filter(status="sent-unsigned").count()
    stored = StoredResource.objects.filter(resource_type="DiagnosticReport").count()
    renders = sorted(r for result in results for r in result["renders"])
    p50 = statistics.median(renders) * 1000
    p99 = renders[min(len(renders) - 1, int(len(renders) * 0.99))] * 1000
    rate = len(ids) / wall
    print(f"reports: {len(ids)} drafted and sent by {args.workers} workers in {wall:.1f} s: {rate:.1f} reports/s")
    print(f"stored: {sent} reports sent, {stored} DiagnosticReports")
    print(f"render (report_pdf): p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {renders[-1] * 1000:.1f} ms")
    for r in results:
        print(f"worker {r['pid']}: {r['reports']} reports in {r['seconds']:.1f} s; RSS after 100: "
              f"{(r['rss_100'] or 0) / 1024:.1f} MiB, after the last: {r['rss_last'] / 1024:.1f} MiB")
    grew = max((r["rss_last"] - (r["rss_100"] or r["rss_last"])) / 1024 for r in results)
    checks = [
        (rate >= 20, f"throughput {rate:.1f} reports/s >= 20"),
        (p99 < 500, f"render p99 {p99:.1f} ms < 500 ms"),
        (grew < 10, f"worker memory from report 100 to the last grew {grew:.1f} MiB (< 10 MiB)"),
        (sent == stored == len(ids), "every report sent and stored once"),
    ]
    for ok, text in checks:
        print(("PASS " if ok else "FAIL ") + text)
    return 0 if all(ok for ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
