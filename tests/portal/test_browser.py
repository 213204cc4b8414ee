"""The portal in a real browser: Debian's headless Chromium through its chromedriver (Selenium), against
pytest-django's live server. Sign in, see an offer with the least PHI, decline one and accept another (htmx),
open the case and see the referral Task's version move. Takes screenshots of the main pages at desktop and phone
width; with HUB_SCREENSHOT_DIR=docs/screenshots they refresh the ones the README links (otherwise they go to a
temporary directory, so that a test run leaves the checkout as it was).

Skipped, with the reason, where Chromium or chromedriver is missing; .ci/run installs both."""

import os
import shutil
import zoneinfo
from pathlib import Path

import pytest

from fhir_bridge.models import StoredResource
from referrals.models import Offer, OfferStatus, Referral, ReferralStatus
from tests.portal.conftest import PASSWORD, PATIENT, offer_make, qualification_data

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}  # a current iPhone's CSS viewport

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
        reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
    ),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never fetch a driver: we give ours
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.set_window_size(*WIDTHS["desktop"])
    yield driver
    driver.quit()


def _wait(driver, condition, timeout=15):
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def polled(d):
        # An element read while htmx swaps it (or the page reloads) is stale: read it again on the next poll.
        # Chromium says so in two ways: a stale reference, or, when the node goes between finding it and
        # reading it, "Node with given id does not belong to the document" (a plain WebDriverException; seen
        # in CI on a loaded machine). Any other error still fails the test at once.
        try:
            return condition(d)
        except WebDriverException as exc:
            if isinstance(exc, StaleElementReferenceException) or "does not belong to the document" in str(exc):
                return False
            raise

    return WebDriverWait(driver, timeout).until(polled)


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get("HUB_SCREENSHOT_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _screenshots(driver, name: str, folder: Path) -> None:
    for width_name, (width, height) in WIDTHS.items():
        driver.set_window_size(width, height)
        # the whole page, not only the first screen
        full = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, max(height, min(full + 140, 4000)))
        assert driver.save_screenshot(str(folder / f"{name}-{width_name}.png"))
        if width_name == "phone":  # usable at phone width: nothing wider than the screen
            scroll = driver.execute_script("return document.documentElement.scrollWidth")
            assert scroll <= width, f"{name} scrolls sideways at phone width ({scroll} > {width})"
    driver.set_window_size(*WIDTHS["desktop"])


def test_a_therapist_signs_in_declines_one_offer_accepts_another_and_opens_the_case(
    live_server, browser, screenshots, clinic, practice
):
    from selenium.webdriver.common.by import By

    qualification_data()
    practice.roles[1].accepting = False
    practice.roles[1].save(update_fields=["accepting"])
    declined = offer_make(clinic, practice.roles[0])
    offer = offer_make(clinic, practice.roles[0])
    base = live_server.url  # plain HTTP: the test settings leave the HTTPS redirect and Secure cookies off

    browser.get(f"{base}/portal/login")
    _screenshots(browser, "login", screenshots)
    browser.find_element(By.NAME, "username").send_keys("therapist")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(browser, lambda d: d.current_url.endswith("/portal/offers"))

    card = browser.find_element(By.ID, f"offer-{offer.pk}")
    assert card.find_element(By.CSS_SELECTOR, ".age-band").text == "60-69"
    assert "Cardiovascular" in card.text
    page = browser.page_source
    assert PATIENT["patient_name"] not in page and PATIENT["patient_birth_date"] not in page
    _screenshots(browser, "offers", screenshots)

    # Decline the first: htmx brings the reasons into its card, and the answer goes back to the list.
    first = browser.find_element(By.ID, f"offer-{declined.pk}")
    first.find_element(By.LINK_TEXT, "Decline…").click()
    _wait(browser, lambda d: d.find_element(By.ID, f"offer-{declined.pk}").find_elements(By.CSS_SELECTOR, "form.decline"))
    assert browser.current_url.endswith("/portal/offers")  # swapped in place, no page load
    browser.find_element(By.CSS_SELECTOR, f"#offer-{declined.pk} input[value=schedule]").click()
    browser.find_element(By.CSS_SELECTOR, f"#offer-{declined.pk} button.danger").click()
    _wait(browser, lambda d: not d.find_elements(By.ID, f"offer-{declined.pk}"))
    assert Offer.objects.get(pk=declined.pk).status == OfferStatus.REJECTED

    referral_task = StoredResource.objects.get(referral_id=offer.referral_id, resource_type="Task")
    offer_task = StoredResource.objects.get(resource_type="Task", fhir_id=f"offer-{offer.pk}")
    browser.find_element(By.CSS_SELECTOR, f"#offer-{offer.pk} button[name=accept]").click()
    _wait(browser, lambda d: d.current_url.endswith(f"/portal/cases/{offer.referral_id}"))

    assert Referral.objects.get(pk=offer.referral_id).status == ReferralStatus.ACCEPTED
    referral_task.refresh_from_db()
    offer_task.refresh_from_db()
    assert offer_task.version_id == 2 and offer_task.content["status"] == "accepted"
    assert referral_task.content["status"] == "accepted"
    shown = int(browser.find_element(By.ID, "task-version").text)
    assert shown == referral_task.version_id > 1
    assert PATIENT["patient_name"] in browser.find_element(By.TAG_NAME, "h1").text
    if browser.find_elements(By.ID, "action-session"):  # the case records are on this branch
        _session_and_checkin(browser, offer.referral_id, shown)
    _screenshots(browser, "case", screenshots)

    browser.find_element(By.LINK_TEXT, "Cases").click()
    _wait(browser, lambda d: d.current_url.endswith("/portal/cases"))
    assert PATIENT["patient_name"] in browser.page_source
    _screenshots(browser, "cases", screenshots)

    browser.find_element(By.LINK_TEXT, "Account").click()
    _wait(browser, lambda d: d.current_url.endswith("/portal/account"))
    browser.find_element(By.CSS_SELECTOR, "#two-factor button[type=submit]").click()  # start TOTP enrolment
    _wait(browser, lambda d: d.find_elements(By.ID, "totp-key"))
    _screenshots(browser, "account", screenshots)


def _session_and_checkin(browser, referral_id: int, version_before: int) -> None:
    """Record the first session from the case page (its form is open, Attended chosen: the minutes and one tap),
    then a PAVS check-in; the referral Task moves to in-progress with a new version each time."""
    from selenium.webdriver.common.by import By

    session = browser.find_element(By.ID, "action-session")
    assert session.get_attribute("open") is not None
    assert session.find_element(By.CSS_SELECTOR, "input[value=attended]").is_selected()
    minutes = session.find_element(By.NAME, "duration_minutes")
    minutes.clear()
    minutes.send_keys("40")
    session.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(browser, lambda d: int(d.find_element(By.ID, "task-version").text) > version_before)
    referral = Referral.objects.get(pk=referral_id)
    assert referral.status == ReferralStatus.IN_PROGRESS
    task = StoredResource.objects.get(referral_id=referral_id, resource_type="Task")
    assert task.content["status"] == "in-progress"
    assert "40 min/week on average" in browser.find_element(By.ID, "dose").text
    after_session = int(browser.find_element(By.ID, "task-version").text)

    checkin = browser.find_element(By.ID, "action-checkin")
    checkin.find_element(By.TAG_NAME, "summary").click()  # htmx brings the form in when it opens
    _wait(browser, lambda d: d.find_element(By.ID, "action-checkin").find_elements(By.NAME, "days_per_week"))
    checkin = browser.find_element(By.ID, "action-checkin")
    checkin.find_element(By.NAME, "days_per_week").send_keys("3")
    checkin.find_element(By.NAME, "minutes_per_day").send_keys("30")
    checkin.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(browser, lambda d: "90 min/week" in d.find_element(By.ID, "latest-checkin").text)
    assert int(browser.find_element(By.ID, "task-version").text) >= after_session


def _open_action(browser, key: str):
    """Open one of the case page's forms (htmx brings it in on the first toggle) and return its <details>."""
    from selenium.webdriver.common.by import By

    details = browser.find_element(By.ID, f"action-{key}")
    if details.get_attribute("open") is None:
        details.find_element(By.TAG_NAME, "summary").click()
    _wait(browser, lambda d: d.find_element(By.ID, f"action-{key}").find_elements(By.CSS_SELECTOR, "form button[type=submit]"))
    return browser.find_element(By.ID, f"action-{key}")


def _submit(browser, details, referral_id: int) -> None:
    """Send an opened case form and wait for the case page to come back with the new version."""
    from selenium.webdriver.common.by import By

    version = Referral.objects.get(pk=referral_id).version
    details.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    _wait(browser, lambda d: Referral.objects.get(pk=referral_id).version > version
          and d.find_elements(By.ID, "task-version"))
    scroll = browser.execute_script("return document.documentElement.scrollWidth")
    assert scroll <= WIDTHS["phone"][0], f"the case page scrolls sideways at phone width ({scroll})"


def test_a_therapist_runs_a_case_on_a_phone(live_server, browser, screenshots, clinic, practice):
    """At phone width, from the offer to a case on hold and back: accept, record a static assessment, set the
    program, record a session and a PAVS check-in, put the case on hold and resume it. Each form is opened from
    the case page and sent with one tap; each leaves its row, and the page shows it."""
    from selenium.webdriver.common.by import By

    from referrals.models import Assessment, ExerciseProgram, PavsCheckIn, Session

    qualification_data()
    practice.roles[1].accepting = False
    practice.roles[1].save(update_fields=["accepting"])
    offer = offer_make(clinic, practice.roles[0])
    referral_id = offer.referral_id
    browser.set_window_size(*WIDTHS["phone"])
    browser.get(f"{live_server.url}/portal/login")
    browser.find_element(By.NAME, "username").send_keys("therapist")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(browser, lambda d: d.current_url.endswith("/portal/offers"))
    browser.find_element(By.CSS_SELECTOR, f"#offer-{offer.pk} button[name=accept]").click()
    _wait(browser, lambda d: d.current_url.endswith(f"/portal/cases/{referral_id}"))

    assessment = _open_action(browser, "assess-static")
    assessment.find_element(By.NAME, "m_bp-systolic").send_keys("128")
    assessment.find_element(By.NAME, "m_bp-diastolic").send_keys("82")
    assessment.find_element(By.NAME, "m_weight").send_keys("81.5")
    _submit(browser, assessment, referral_id)
    assert set(Assessment.objects.get(referral_id=referral_id).measurements.values_list("code", flat=True)) == {
        "bp-systolic", "bp-diastolic", "weight"}
    assert "81.5 kg" in browser.find_element(By.ID, "sessions").text

    program = _open_action(browser, "program")
    program.find_element(By.NAME, "aerobic_frequency").send_keys("3")
    program.find_element(By.NAME, "aerobic_minutes").send_keys("30")
    program.find_element(By.NAME, "resistance_frequency").send_keys("2")
    program.find_element(By.NAME, "resistance_minutes").send_keys("20")
    _submit(browser, program, referral_id)
    assert ExerciseProgram.objects.get(referral_id=referral_id, is_current=True).components.count() == 2
    assert "130 min/week" in browser.find_element(By.ID, "dose").text  # 3 × 30 + 2 × 20 prescribed

    session = _open_action(browser, "session")  # open with the page, the program's minutes filled in
    assert session.find_element(By.NAME, "duration_minutes").get_attribute("value") == "50"
    _submit(browser, session, referral_id)
    recorded = Session.objects.get(referral_id=referral_id)
    assert recorded.duration_minutes == 50
    # shown in the site's time zone, the one the form took it in, not the server's UTC
    shown = browser.find_element(By.CSS_SELECTOR, "#sessions li").text
    local = recorded.starts_at.astimezone(zoneinfo.ZoneInfo(practice.roles[0].site.time_zone))
    assert local.strftime("%a %-d %b %H:%M") in shown, shown
    assert Referral.objects.get(pk=referral_id).status == ReferralStatus.IN_PROGRESS

    checkin = _open_action(browser, "checkin")
    checkin.find_element(By.NAME, "days_per_week").send_keys("4")
    checkin.find_element(By.NAME, "minutes_per_day").send_keys("25")
    _submit(browser, checkin, referral_id)
    assert PavsCheckIn.objects.get(referral_id=referral_id).minutes_per_week == 100
    assert "100 min/week" in browser.find_element(By.ID, "latest-checkin").text

    hold = _open_action(browser, "hold")
    hold.find_element(By.NAME, "reason").send_keys("Knee injury, two weeks off")
    _submit(browser, hold, referral_id)
    referral = Referral.objects.get(pk=referral_id)
    assert (referral.status, referral.status_reason) == (ReferralStatus.ON_HOLD, "Knee injury, two weeks off")
    assert "Knee injury" in browser.find_element(By.CSS_SELECTOR, ".status-line").text
    task = StoredResource.objects.get(referral_id=referral_id, resource_type="Task").content
    assert (task["status"], task["statusReason"]["text"]) == ("on-hold", "Knee injury, two weeks off")

    resume = _open_action(browser, "resume")  # the first form of an on-hold case: open with the page
    _submit(browser, resume, referral_id)
    assert Referral.objects.get(pk=referral_id).status == ReferralStatus.IN_PROGRESS
    assert browser.find_elements(By.ID, "action-session")  # back to recording sessions
    _screenshots(browser, "case-records", screenshots)
