"""Part B of the console in a real browser (headless Chromium, as tests/portal/test_browser.py): a clinic admin
replays a dead-lettered delivery from the work queues; a network admin pauses a professional and sees routing
skip them. Screenshots of a queue and of the scorecards at desktop and phone width (HUB_SCREENSHOT_DIR to keep
them, as the portal's test does)."""

import datetime as dt

import pytest
from django.core.cache import cache
from django.utils import timezone

from console.models import ConsoleRole
from notifications.models import Delivery, Subscription
from referrals.models import BusinessStatus
from referrals.offers import referral_route
from tests.console.conftest import PASSWORD, console_user_make
from tests.network.factories import km_north, referral_make, role_make
from tests.portal.conftest import qualification_data
from tests.portal.test_browser import _screenshots, _wait, browser, screenshots  # noqa: F401 - fixtures
from tests.referrals.conftest import CARDIAC_PATIENT
from tests.referrals.scorecard_cases import closed_case_make

pytestmark = pytest.mark.browser


def _sign_in(driver, base: str, username: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/console/login")
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(driver, lambda d: "/console/login" not in d.current_url)


@pytest.mark.django_db(transaction=True)
def test_a_clinic_admin_replays_a_dead_lettered_delivery(live_server, browser, screenshots, clinic):  # noqa: F811
    from selenium.webdriver.common.by import By

    qualification_data()
    console_user_make("clinicadmin", role=ConsoleRole.Role.CLINIC_ADMIN, clinic=clinic)
    subscription = Subscription.objects.create(clinic=clinic, channel="rest-hook", endpoint="https://ehr.test/hook")
    dead = Delivery.objects.create(channel="rest-hook", subscription=subscription, endpoint=subscription.endpoint,
                                   notification_type="event-notification", event_number=3, content="{}",
                                   state="dead", attempts=10, last_error="HTTP 503 from the receiver")
    waiting = referral_make(clinic, patient=CARDIAC_PATIENT)  # nobody near: waits for a coordinator
    referral_route(referral=waiting, patient=CARDIAC_PATIENT)

    _sign_in(browser, live_server.url, "clinicadmin")
    browser.get(f"{live_server.url}/console/queues")
    item = browser.find_element(By.ID, f"dead-letters-{dead.pk}")
    assert "HTTP 503" in item.text
    _screenshots(browser, "console-queues", screenshots)

    item.find_element(By.CSS_SELECTOR, "button.primary").click()
    _wait(browser, lambda d: "replayed" in d.find_element(By.CSS_SELECTOR, "[role=status]").text)

    dead.refresh_from_db()
    assert (dead.state, dead.round) == (Delivery.State.PENDING, 2)
    assert not browser.find_elements(By.ID, f"dead-letters-{dead.pk}")


@pytest.mark.django_db(transaction=True)
def test_a_network_admin_pauses_a_professional_and_sees_routing_skip_them(
    live_server, browser, screenshots, clinic  # noqa: F811
):
    from selenium.webdriver.common.by import By

    qualification_data()
    console_user_make("networkadmin", role=ConsoleRole.Role.NETWORK_ADMIN)
    near = role_make(at=km_north(1))

    _sign_in(browser, live_server.url, "networkadmin")
    browser.get(f"{live_server.url}/console/network?q={near.fhir_id}")
    until = timezone.localdate() + dt.timedelta(days=10)
    field = browser.find_element(By.ID, f"until-{near.pk}")
    # A date input takes the date as typed in the browser's locale (en-US: month, day, year).
    field.send_keys(until.strftime("%m%d%Y"))
    browser.find_element(By.CSS_SELECTOR, f"#role-{near.pk} form[action$='/pause'] button").click()
    _wait(browser, lambda d: "paused until" in d.find_element(By.ID, f"role-{near.pk}").text)
    near.refresh_from_db()
    assert near.paused_until == until

    referral = referral_make(clinic, patient=CARDIAC_PATIENT)
    outcome = referral_route(referral=referral, patient=CARDIAC_PATIENT)
    assert outcome.offer is None  # the only qualified professional is paused
    referral.refresh_from_db()
    assert referral.business_status == BusinessStatus.AWAITING_MANUAL_ROUTING

    browser.get(f"{live_server.url}/console/queues")
    item = browser.find_element(By.ID, f"manual-routing-{referral.pk}")
    item.find_element(By.TAG_NAME, "summary").click()
    assert f"{near.fhir_id}" in item.text and f"paused (role paused until {until.isoformat()})" in item.text


@pytest.mark.django_db(transaction=True)
def test_the_scorecards_page_in_the_browser(live_server, browser, screenshots, clinic):  # noqa: F811
    from selenium.webdriver.common.by import By

    qualification_data()
    cache.clear()
    console_user_make("networkadmin", role=ConsoleRole.Role.NETWORK_ADMIN)
    for latests in ((150, 120, 90, 60, 45), (60, 40, 35, 30, 90)):
        role = role_make()
        for latest in latests * 3:
            closed_case_make(clinic, role, baseline=30, latest=latest)

    _sign_in(browser, live_server.url, "networkadmin")
    browser.get(f"{live_server.url}/console/scorecards")
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart.interval")) == 4  # two professionals, two programs
    _screenshots(browser, "console-scorecards", screenshots)
    cache.clear()
