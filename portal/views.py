"""The therapists' web app: each view parses, calls one domain service (or selector) and renders.

Who may see what is decided once, in ``portal_view``: a signed-in user with a portal Account, past the second
factor when they enrolled one. Everything an account reaches is scoped in portal/selectors.py; an id that is
not theirs is a 404.
"""

import functools
import logging

import segno
from django.contrib.auth import views as auth_views
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect
from django_otp import login as otp_login
from django_otp import user_has_device
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal import selectors
from portal.forms import (
    AdverseEventForm,
    CheckinForm,
    DynamicAssessmentForm,
    ProgramForm,
    PromAssessmentForm,
    StaticAssessmentForm,
    DeclineForm,
    FirstContactForm,
    ReasonForm,
    ReportForm,
    ScheduleForm,
    SessionForm,
    TokenForm,
    VersionForm,
)
from referrals import cases as case_services
from referrals import records as record_services
from referrals.errors import DomainError, ErrorCode
from referrals.models import Referral, ReportStatus
from referrals.offers import offer_accept, offer_decline
from referrals.reports import ReportDraft, report_edit, report_sign

logger = logging.getLogger(__name__)


def _safe_next(request, fallback: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return fallback


def portal_view(view):
    """Sign-in, then the portal account, then (when the user enrolled one) the second factor."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect(f"{reverse('portal:login')}?next={request.path}")
        if user_has_device(request.user) and not request.user.is_verified():
            return redirect(f"{reverse('portal:verify')}?next={request.path}")
        account = selectors.account_get(user=request.user)
        if account is None:
            return render(request, "portal/no_account.html", status=403)
        request.account = account
        return view(request, *args, **kwargs)

    return wrapped


# --- Sign-in ----------------------------------------------------------------------------------------------------


class LoginView(auth_views.LoginView):
    template_name = "portal/login.html"
    redirect_authenticated_user = True


def verify(request):
    """The second factor, after the password, for a user who enrolled a TOTP device."""
    if not request.user.is_authenticated:
        return redirect("portal:login")
    device = TOTPDevice.objects.devices_for_user(request.user, confirmed=True).first()
    if device is None or request.user.is_verified():
        return redirect(_safe_next(request, reverse("portal:offers")))
    form = TokenForm(request.POST or None, device=device)
    if request.method == "POST" and form.is_valid():
        otp_login(request, device)
        return redirect(_safe_next(request, reverse("portal:offers")))
    return render(request, "portal/verify.html", {"form": form, "next": _safe_next(request, "")})


password_reset = auth_views.PasswordResetView.as_view(
    template_name="registration/password_reset_form.html",
    email_template_name="registration/password_reset_email.txt",
    subject_template_name="registration/password_reset_subject.txt",
    success_url=reverse_lazy("portal:password_reset_done"),
)
password_reset_done = auth_views.PasswordResetDoneView.as_view(template_name="registration/password_reset_done.html")
password_reset_confirm = auth_views.PasswordResetConfirmView.as_view(
    template_name="registration/password_reset_confirm.html", success_url=reverse_lazy("portal:password_reset_complete")
)
password_reset_complete = auth_views.PasswordResetCompleteView.as_view(
    template_name="registration/password_reset_complete.html"
)


@portal_view
def account(request):
    """The account page: who this is, whom they act for, and the second factor (enrol, confirm, turn off)."""
    user = request.user
    confirmed = TOTPDevice.objects.devices_for_user(user, confirmed=True).first()
    pending = TOTPDevice.objects.devices_for_user(user, confirmed=False).first()
    form = None
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "enrol" and confirmed is None:
            TOTPDevice.objects.filter(user=user, confirmed=False).delete()
            TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)
            return redirect("portal:account")
        if action == "confirm" and pending is not None:
            form = TokenForm(request.POST, device=pending)
            if form.is_valid():
                pending.confirmed = True
                pending.save(update_fields=["confirmed"])
                otp_login(request, pending)  # this session has just proved the factor
                return redirect("portal:account")
        elif action == "disable" and confirmed is not None:
            form = TokenForm(request.POST, device=confirmed)
            if form.is_valid():
                TOTPDevice.objects.filter(user=user).delete()
                return redirect("portal:account")
    qr = None
    if pending is not None:
        qr = segno.make(pending.config_url, error="m").svg_inline(scale=4, dark="#111", light="#fff")
    return render(
        request,
        "portal/account.html",
        {
            "account": request.account,
            "confirmed": confirmed,
            "pending": pending,
            "qr_svg": qr,
            "secret": pending and _base32(pending.bin_key),
            "form": form or TokenForm(device=None),
        },
    )


def _base32(key: bytes) -> str:
    import base64

    return base64.b32encode(key).decode().rstrip("=")


# --- Offers -----------------------------------------------------------------------------------------------------


@portal_view
def offers(request):
    return render(request, "portal/offers.html", {"cards": selectors.offers_for_account(account=request.account)})


def _answered(request, offer, *, status=409):
    answer = selectors.offer_answer_get(offer=offer)
    template = "portal/_offer_answered.html" if request.htmx else "portal/offer_answered.html"
    # htmx swaps only 2xx answers into the page; a plain form post gets the honest status.
    return render(request, template, {"offer": offer, "answer": answer}, status=200 if request.htmx else status)


@portal_view
@require_POST
def offer_accept_view(request, offer_id: int):
    offer = selectors.offer_for_account(account=request.account, offer_id=offer_id)
    if offer is None:
        raise Http404("No such offer")
    try:
        offer_accept(offer=offer, actor=request.account.actor)
    except DomainError:
        # Someone answered first (their manager, or the deadline): say who and when, change nothing.
        return _answered(request, offer)
    target = reverse("portal:case", args=[offer.referral_id])
    return HttpResponseClientRedirect(target) if request.htmx else redirect(target)


@portal_view
def offer_decline_view(request, offer_id: int):
    offer = selectors.offer_for_account(account=request.account, offer_id=offer_id)
    if offer is None:
        raise Http404("No such offer")
    if request.method not in ("GET", "POST"):
        return HttpResponseNotAllowed(["GET", "POST"])
    form = DeclineForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            offer_decline(offer=offer, reason=form.reason_text(), actor=request.account.actor)
        except DomainError:
            return _answered(request, offer)
        target = reverse("portal:offers")
        return HttpResponseClientRedirect(target) if request.htmx else redirect(target)
    card = selectors.offer_card(account=request.account, offer_id=offer_id)
    if card.status != "requested":
        return _answered(request, offer)
    template = "portal/_decline_form.html" if request.htmx else "portal/offer_decline.html"
    status = 400 if form.errors and not request.htmx else 200  # htmx swaps only 2xx answers
    return render(request, template, {"card": card, "form": form}, status=status)


# --- Cases ------------------------------------------------------------------------------------------------------


@portal_view
def cases(request):
    show_closed = request.GET.get("closed") == "1"
    paginator = Paginator(selectors.cases_for_account(account=request.account, open_only=not show_closed), selectors.CASES_PER_PAGE)
    page = paginator.get_page(request.GET.get("page"))
    return render(request, "portal/cases.html", {"page": page, "show_closed": show_closed})


# What the case page may do: (the domain module, its service, the form, the button). Recording a session comes
# first: on a phone at the gym it is the form a therapist opens most.
CASE_ACTIONS = {
    "session": ("records", "session_record", SessionForm, "Record session"),
    "checkin": ("records", "checkin_record", CheckinForm, "Record PAVS check-in"),
    "schedule": ("records", "session_schedule", ScheduleForm, "Book a session"),
    "adverse-event": ("records", "adverse_event_record", AdverseEventForm, "Report an adverse event or red flag"),
    "assess-static": ("records", "assessment_record", StaticAssessmentForm, "Assessment: static (vitals, body)"),
    "assess-dynamic": ("records", "assessment_record", DynamicAssessmentForm, "Assessment: dynamic (function)"),
    "assess-prom": ("records", "assessment_record", PromAssessmentForm, "Assessment: PROMs"),
    "program": ("records", "program_set", ProgramForm, "Set the exercise program (FITT)"),
    "first-contact": ("cases", "case_first_contact", FirstContactForm, "Record first contact"),
    "start": ("cases", "case_start", VersionForm, "Mark in progress"),
    "hold": ("cases", "case_hold", ReasonForm, "Put on hold"),
    "resume": ("cases", "case_resume", VersionForm, "Resume"),
    "discharge": ("cases", "case_discharge", VersionForm, "Discharge (completed when its report is sent)"),
    "fail": ("cases", "case_fail", ReasonForm, "Close as failed"),
}
# Which of them a case in each status offers (the PA state machine, as referrals/cases.py enforces it).
_RECORDS = ["assess-static", "assess-dynamic", "assess-prom", "program", "adverse-event"]
ACTIONS_BY_STATUS = {
    "accepted": ["session", "schedule", "first-contact", "checkin", *_RECORDS, "start", "discharge", "fail"],
    "in-progress": ["session", "checkin", "schedule", *_RECORDS, "hold", "discharge", "fail"],
    "on-hold": ["resume", "checkin", "assess-static", "assess-dynamic", "assess-prom", "adverse-event", "fail"],
}


def _service(action: str):
    module_name, name, _, _ = CASE_ACTIONS[action]
    return getattr({"cases": case_services, "records": record_services}[module_name], name)


def _initial(action: str, *, time_zone, program, version) -> dict:
    """What a fresh form shows: the version, now (in the site's time zone), and the current program's usual
    dose (``program``, with its components prefetched, or None)."""
    initial = {"expected_version": version}
    now = timezone.now().astimezone(time_zone).replace(tzinfo=None, second=0, microsecond=0)
    initial.update(starts_at=now, contacted_at=now, occurred_at=now, assessed_at=now, date=now.date(),
                   starts_on=now.date())
    if action == "program" and program is not None:  # a new version starts from the current one
        for c in program.components.all():
            initial.update({f"{c.kind}_frequency": c.frequency_per_week, f"{c.kind}_minutes": c.minutes,
                            f"{c.kind}_intensity_kind": c.intensity_kind, f"{c.kind}_intensity_low": c.intensity_low,
                            f"{c.kind}_intensity_high": c.intensity_high, f"{c.kind}_type": c.type})
    if action == "session" and program is not None:
        minutes = 0
        for component in program.components.all():
            minutes += component.minutes or 0
            initial[f"{component.kind}_minutes"] = component.minutes
        initial["duration_minutes"] = minutes or None
    return initial


def _case_page(request, offer, *, action_errors=None, status=200):
    """The case page. Only its first form (recording a session, when the case takes one) is built with it: the
    others come when opened (htmx), or on a page of their own, so that the page stays fast on a phone."""
    view = selectors.case_view(offer=offer)
    version = view.referral.version
    actions = []
    for key in ACTIONS_BY_STATUS.get(view.referral.status, []):
        _, _, form_class, label = CASE_ACTIONS[key]
        form = (action_errors or {}).get(key)
        if form is None and not actions:
            form = form_class(initial=_initial(key, time_zone=view.time_zone, program=view.program, version=version),
                              tz=view.time_zone)
        actions.append({"key": key, "label": label, "form": form})
    context = {"case": view, "actions": actions, "version": version, "referral_id": view.referral.pk}
    return render(request, "portal/case.html", context, status=status)


@portal_view
def case(request, referral_id: int):
    offer = selectors.case_for_account(account=request.account, referral_id=referral_id)
    if offer is None:
        raise Http404("No such case")
    return _case_page(request, offer)


@portal_view
def case_action(request, referral_id: int, action: str):
    """GET: the form alone (the fragment for htmx, else a page); POST: the change, then back to the case."""
    if request.method not in ("GET", "POST"):
        return HttpResponseNotAllowed(["GET", "POST"])
    offer = selectors.case_for_account(account=request.account, referral_id=referral_id)
    if offer is None or action not in CASE_ACTIONS:
        raise Http404("No such case or action")
    service = _service(action)
    if request.method == "GET":
        # One form, opened from the case page on a phone: what it needs only, not the whole case again.
        time_zone = selectors.case_time_zone(referral=offer.referral, offer=offer)
        program = selectors.case_program(referral=offer.referral) if action in ("program", "session") else None
        _, _, form_class, label = CASE_ACTIONS[action]
        form = form_class(
            initial=_initial(action, time_zone=time_zone, program=program, version=offer.referral.version),
            tz=time_zone,
        )
        context = {"action": {"key": action, "label": label, "form": form}, "referral_id": referral_id}
        return render(request, "portal/_case_form.html" if request.htmx else "portal/case_form.html", context)
    form = CASE_ACTIONS[action][2](request.POST, tz=selectors.case_time_zone(referral=offer.referral, offer=offer))
    stale = False
    if form.is_valid():
        try:
            service(referral=offer.referral, actor=request.account.actor, **form.values())
        except DomainError as error:
            if error.code in (ErrorCode.STALE, ErrorCode.CONFLICT):
                stale = True
                form.add_error(None, "Someone changed this case while you had it open, so nothing was saved. "
                                     "Here it is as it is now: check it, then send your form again.")
                # the form again, on the current version, with what was typed
                data = request.POST.copy()
                data["expected_version"] = str(Referral.objects.values_list("version", flat=True).get(pk=referral_id))
                errors = form.errors
                form = CASE_ACTIONS[action][2](data, tz=form.tz)
                form.is_valid()
                form._errors = errors
            else:
                form.add_error(error.field if error.field in form.fields else None, str(error))
        else:
            return redirect(f"{reverse('portal:case', args=[referral_id])}#case-actions")
    # Refused: the page as it is now, with the form's errors in place.
    offer = selectors.case_for_account(account=request.account, referral_id=referral_id)
    return _case_page(request, offer, action_errors={action: form}, status=409 if stale else 400)


# --- Reports to the physician -----------------------------------------------------------------------------------

_REPORT_OPEN = (ReportStatus.DRAFT, ReportStatus.SENT_UNSIGNED)


@portal_view
def case_report(request, referral_id: int, report_id: int):
    """One report: its figures as drafted, and, while it is a draft or went out unsigned, the form of its four
    answers. POST ``do=save`` keeps the edits (report_edit); ``do=sign`` signs and sends it, final
    (report_sign). A stale form (the report changed meanwhile) is shown again with what was typed (409)."""
    if request.method not in ("GET", "POST"):
        return HttpResponseNotAllowed(["GET", "POST"])
    offer = selectors.case_for_account(account=request.account, referral_id=referral_id)
    report = selectors.report_for_case(offer=offer, report_id=report_id) if offer is not None else None
    if report is None:
        raise Http404("No such report")
    status = 200
    if request.method == "POST" and report.status in _REPORT_OPEN:
        form = ReportForm(request.POST)
        if form.is_valid():
            values = dict(report=report, answers=form.answers(), actor=request.account.actor,
                          expected_version=form.cleaned_data["expected_version"])
            try:
                (report_sign if request.POST.get("do") == "sign" else report_edit)(**values)
            except DomainError as error:
                status = 409 if error.code in (ErrorCode.STALE, ErrorCode.CONFLICT, ErrorCode.TRANSITION) else 400
                form.add_error(error.field if error.field.startswith("answer_") else None, str(error))
            else:
                return redirect(reverse("portal:case_report", args=[referral_id, report_id]))
        else:
            status = 400
        if status == 409:  # the form again on the report as it is now, with what was typed
            report.refresh_from_db()
            data = request.POST.copy()
            data["expected_version"] = str(report.version)
            errors = form.non_field_errors()
            form = ReportForm(data)
            form.is_valid()
            for error in errors:
                form.add_error(None, error)
    elif report.status in _REPORT_OPEN:
        form = ReportForm(initial={"expected_version": report.version, "answer_goals": report.answer_goals,
                                   "answer_barriers": report.answer_barriers,
                                   "answer_participation": report.answer_participation,
                                   "answer_plan": report.answer_plan})
    else:
        form = None
        if request.method == "POST":  # signed (or superseded) meanwhile: nothing to change any more
            status = 409
    context = {"report": report, "draft": ReportDraft.from_json(report.draft), "form": form,
               "referral_id": referral_id, "patient": offer.referral.patient_name}
    return render(request, "portal/report.html", context, status=status)


@portal_view
def case_report_pdf(request, referral_id: int, report_id: int):
    """The report's PDF: as it was sent; a draft's as it would be sent now (its banner says "Draft")."""
    offer = selectors.case_for_account(account=request.account, referral_id=referral_id)
    report = selectors.report_for_case(offer=offer, report_id=report_id) if offer is not None else None
    if report is None:
        raise Http404("No such report")
    if report.pdf is not None and report.status != ReportStatus.DRAFT:
        pdf = bytes(report.pdf)
    else:
        from referrals.report_pdf import report_pdf  # ReportLab loads only where a PDF is drawn

        pdf = report_pdf(report=report)
    response = HttpResponse(pdf, content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="report-{referral_id}-{report.period_start}.pdf"'
    return response
