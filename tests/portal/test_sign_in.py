"""Sign-in: password, reset by e-mail (real SMTP), and the optional TOTP second factor."""

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from tests.portal.conftest import PASSWORD, account_make, signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def therapist(practice):
    return practice.therapist


def _code(device: TOTPDevice, *, shift: int = 0) -> str:
    return f"{totp(device.bin_key, device.step, device.t0, device.digits, device.drift + shift):06d}"


def test_a_page_needs_sign_in(db):
    response = Client().get(reverse("portal:offers"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("portal:login"))


def test_sign_in_with_the_password_then_out(therapist):
    client = Client()
    response = client.post(reverse("portal:login"), {"username": "therapist", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == reverse("portal:offers")
    assert client.get(reverse("portal:offers")).status_code == 200
    assert client.post(reverse("portal:logout")).status_code == 302
    assert client.get(reverse("portal:offers")).status_code == 302


def test_a_wrong_password_is_a_form_error(therapist):
    response = Client().post(reverse("portal:login"), {"username": "therapist", "password": "nope"})
    assert response.status_code == 200
    assert "correct username and password" in response.content.decode()


def test_repeated_wrong_passwords_lock_the_portal_sign_in_too(therapist, settings):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(reverse("portal:login"), {"username": "therapist", "password": "nope"})
    response = client.post(reverse("portal:login"), {"username": "therapist", "password": PASSWORD})
    assert response.status_code == 429  # django-axes, as for the admin: even the right password waits
    assert client.get(reverse("portal:offers")).status_code == 302


def test_a_user_without_an_account_is_told_why(db):
    client = Client()
    client.force_login(User.objects.create_user("staffer", password=PASSWORD))
    response = client.get(reverse("portal:offers"))
    assert response.status_code == 403
    assert "not linked" in response.content.decode()


def test_a_password_reset_goes_by_email_and_sets_a_new_password(therapist, smtp_backend):
    client = Client()
    response = client.post(reverse("portal:password_reset"), {"email": "therapist@example.org"})
    assert response.status_code == 302
    assert len(smtp_backend.messages) == 1
    mail = smtp_backend.messages[0]
    assert mail.rcpt_tos == ["therapist@example.org"]
    body = mail.message.get_content()
    link = re.search(r"http://testserver(/portal/password-reset/\S+)", body).group(1)
    form = client.get(link, follow=True)
    assert form.status_code == 200
    response = client.post(form.redirect_chain[-1][0], {"new_password1": "a new long pass 1", "new_password2": "a new long pass 1"})
    assert response.status_code == 302
    signed = Client().post(reverse("portal:login"), {"username": "therapist", "password": "a new long pass 1"})
    assert signed.status_code == 302 and signed["Location"] == reverse("portal:offers")


def test_an_unknown_address_gets_no_mail_and_the_same_answer(therapist, smtp_backend):
    response = Client().post(reverse("portal:password_reset"), {"email": "nobody@example.org"})
    assert response.status_code == 302
    assert smtp_backend.messages == []


def test_enrolling_totp_then_it_is_required_at_sign_in(therapist, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 0  # the wrong codes below would otherwise make the right one wait
    client = signed_in(therapist)
    assert client.post(reverse("portal:account"), {"action": "enrol"}).status_code == 302
    device = TOTPDevice.objects.get(user=therapist.user, confirmed=False)
    page = client.get(reverse("portal:account")).content.decode()
    assert "<svg" in page  # the QR code, inline
    wrong = client.post(reverse("portal:account"), {"action": "confirm", "token": "000000" if _code(device) != "000000" else "111111"})
    assert "not right" in wrong.content.decode()
    assert client.post(reverse("portal:account"), {"action": "confirm", "token": _code(device)}).status_code == 302
    device.refresh_from_db()
    assert device.confirmed

    fresh = Client()
    fresh.post(reverse("portal:login"), {"username": "therapist", "password": PASSWORD})
    response = fresh.get(reverse("portal:offers"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("portal:verify"))
    assert fresh.post(reverse("portal:verify"), {"token": "12ab56"}).status_code == 200  # refused, in place
    device.refresh_from_db()
    # a code the device has not used yet (django-otp refuses a replay of the one that confirmed it)
    response = fresh.post(reverse("portal:verify"), {"token": _code(device, shift=1), "next": reverse("portal:cases")})
    assert response.status_code == 302 and response["Location"] == reverse("portal:cases")
    assert fresh.get(reverse("portal:offers")).status_code == 200


def test_a_wrong_code_slows_the_next_try_down(therapist):
    device = TOTPDevice.objects.create(user=therapist.user, name="app", confirmed=True)
    client = Client()
    client.force_login(therapist.user)
    client.post(reverse("portal:verify"), {"token": "000000" if _code(device) != "000000" else "111111"})
    response = client.post(reverse("portal:verify"), {"token": _code(device)})
    assert response.status_code == 200 and "Wait a few seconds" in response.content.decode()
    assert client.get(reverse("portal:offers")).status_code == 302


def test_turning_totp_off_needs_a_code(therapist, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    device = TOTPDevice.objects.create(user=therapist.user, name="app", confirmed=True)
    client = Client()
    client.force_login(therapist.user)
    assert client.get(reverse("portal:account")).status_code == 302  # the second factor first
    client.post(reverse("portal:verify"), {"token": _code(device)})
    response = client.post(reverse("portal:account"), {"action": "disable", "token": "999999"})
    assert TOTPDevice.objects.filter(user=therapist.user).exists()
    device.refresh_from_db()
    client.post(reverse("portal:account"), {"action": "disable", "token": _code(device, shift=1)})
    assert not TOTPDevice.objects.filter(user=therapist.user).exists()
    assert response.status_code == 200
