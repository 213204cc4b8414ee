"""The console in a real browser (headless Chromium through chromedriver, the portal's setup): a clinic admin
signs in, sees only their clinic's referrals, filters the funnel (the filter lands in the URL) and opens a
referral's timeline. Takes screenshots of the overview and the timeline at desktop and phone width; with
HUB_SCREENSHOT_DIR=docs/screenshots they refresh the ones the README links."""

import datetime as dt
from importlib import import_module

from django.apps import apps
from django.utils import timezone

from console.history import history_generate
from console.models import ConsoleRole
from network.demo import demo_network_load
from referrals import records
from referrals.cases import case_discharge
from referrals.funnel import milestones_refresh
from referrals.models import Referral, Report
from referrals.reports import report_sign
from tests.console.conftest import PASSWORD, console_user_make
from tests.factories import ClinicFactory
# The portal's browser setup: Chromium and chromedriver, the skip when they are missing, the screenshot widths.
from tests.portal.test_browser import _screenshots, _wait, browser, pytestmark, screenshots  # noqa: F401
from tests.referrals.report_cases import accepted_referral, received_before


THERAPIST = "user:therapist"


def _delivered_case(clinic) -> Referral:
    """A referral through the domain services: routed, accepted, two sessions, a check-in, discharged, and its
    discharge report signed and sent (so its timeline has every kind of entry and a PDF)."""
    referral = accepted_referral(clinic)
    first = timezone.now() - dt.timedelta(days=30)
    received_before(referral, first.date())  # a session is not dated before its referral came in
    for when in (first, first + dt.timedelta(days=16)):
        referral.refresh_from_db()
        records.session_record(referral=referral, attendance="attended", starts_at=when, duration_minutes=45,
                               actor=THERAPIST, expected_version=referral.version)
    referral.refresh_from_db()
    records.checkin_record(referral=referral, date=timezone.localdate() - dt.timedelta(days=1), days_per_week=4,
                           minutes_per_day=30, actor=THERAPIST, expected_version=referral.version)
    referral.refresh_from_db()
    case_discharge(referral=referral, actor=THERAPIST, expected_version=referral.version)  # drafts the report
    report = Report.objects.get(referral=referral, kind="discharge")
    report_sign(report=report, actor=THERAPIST, expected_version=report.version)
    return referral


def test_a_clinic_admin_sees_their_clinic_filters_the_funnel_and_opens_a_timeline(live_server, browser, screenshots, clinic):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    # The qualification data the fill migration seeds, again: a transactional test before this one flushed it.
    import_module("network.migrations.0003_fill_qualification").fill(apps, None)
    demo_network_load()
    other = ClinicFactory(name="Riverside Family Medicine", slug="riverside")
    history_generate(referrals=240, weeks=26, clinics=[clinic, other], now=timezone.now(), seed=3)
    case = _delivered_case(clinic)
    milestones_refresh()
    console_user_make("clinicadmin", role=ConsoleRole.Role.CLINIC_ADMIN, clinic=clinic)
    mine = Referral.objects.filter(clinic=clinic).count()
    base = live_server.url

    browser.get(f"{base}/console/")
    _wait(browser, lambda d: "/console/login" in d.current_url)
    browser.find_element(By.NAME, "username").send_keys("clinicadmin")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(browser, lambda d: d.find_elements(By.ID, "step-received"))

    # Only their clinic: the received count is theirs, and the other clinic is named nowhere.
    browser.find_element(By.NAME, "received_from").send_keys("01012020")  # the whole history, not the default window
    browser.find_element(By.CSS_SELECTOR, "form.filters button.primary").click()
    _wait(browser, lambda d: "received_from=2020-01-01" in d.current_url)
    received = browser.find_element(By.CSS_SELECTOR, "#step-received .count-cell").text
    assert int(received) == mine
    assert "Riverside" not in browser.page_source
    _screenshots(browser, "console-overview", screenshots)

    # Filter by condition group: the funnel narrows, and the filter is in the URL to share.
    Select(browser.find_element(By.NAME, "condition_group")).select_by_value("cardiovascular")
    browser.find_element(By.CSS_SELECTOR, "form.filters button.primary").click()
    _wait(browser, lambda d: "condition_group=cardiovascular" in d.current_url)
    narrowed = int(browser.find_element(By.CSS_SELECTOR, "#step-received .count-cell").text)
    assert 0 < narrowed < mine

    # The referral list, then one referral's timeline.
    browser.get(f"{base}/console/referrals?received_from=2020-01-01")
    link = browser.find_element(By.CSS_SELECTOR, f"a[href='/console/referrals/{case.pk}']")
    link.click()
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "ol.timeline"))
    timeline = browser.find_element(By.CSS_SELECTOR, "ol.timeline").text
    report = case.reports.get()
    assert "Referral Task" in timeline and report.get_kind_display() in timeline and "Offer" in timeline
    assert browser.find_element(By.LINK_TEXT, "PDF").get_attribute("href").endswith(".pdf")
    _screenshots(browser, "console-referral", screenshots)

    # Another clinic's referral is not there for them.
    theirs = Referral.objects.filter(clinic=other).first()
    browser.get(f"{base}/console/referrals/{theirs.pk}")
    assert "Not Found" in browser.page_source or "404" in browser.title or "not found" in browser.page_source.lower()
