"""The work queues page and its one-click actions. Each action finds its item through the console user's scope
(404 outside it), calls one domain service and returns to the queue; a refusal re-renders the page with the
error in place, beside the item (409 for a race, 422 for a rule)."""

from django import forms
from django.contrib import messages
from django.db import transaction
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from console.access import console_view, referrals_visible
from console.queues import work_queues
from network.models import ProfessionalRole
from notifications.models import Delivery
from notifications.outbox import deliveries_replay
from referrals.errors import DomainError, ErrorCode
from referrals.models import AdverseEvent, Offer, Report
from referrals.offers import offer_accept, referral_route, referral_route_manually
from referrals.records import adverse_event_acknowledge
from referrals.reports import report_send_unsigned
from referrals.routing import referral_patient_facts

_STATUS = {ErrorCode.CONFLICT: 409, ErrorCode.STALE: 409, ErrorCode.NOT_FOUND: 404}


class ManualRouteForm(forms.Form):
    role = forms.SlugField(max_length=64, label="Offer it to (PractitionerRole id)")
    override_reason = forms.CharField(
        required=False, max_length=1000, label="Reason to override the hard constraints (only if you must)",
        widget=forms.Textarea(attrs={"rows": 2}),
    )


def _page(request, *, status: int = 200, errors: dict | None = None, forms_by_item: dict | None = None):
    """The queues, with ``errors`` ({"<queue>-<id>": message}) and bound forms shown beside their items."""
    queues = work_queues(request.console_role, now=timezone.now())
    return render(request, "console/queues/index.html", {
        "queues": queues, "errors": errors or {}, "route_forms": forms_by_item or {},
        # Said at the top too: the item may have left its queue (someone else acted first).
        "problems": list((errors or {}).values()),
    }, status=status)


@console_view
def queues(request):
    return _page(request)


def _refused(request, key: str, exc: DomainError, form=None):
    forms_by_item = {key: form} if form is not None else None
    return _page(request, status=_STATUS.get(exc.code, 422), errors={key: str(exc)}, forms_by_item=forms_by_item)


def _done(request, message: str, anchor: str):
    messages.success(request, message)
    return redirect(f"{reverse('console:queues')}#{anchor}")


@require_POST
@console_view
def referral_route_by_hand(request, referral_id: int):
    referral = get_object_or_404(referrals_visible(request.console_role), pk=referral_id)
    key = f"manual-routing-{referral.pk}"
    form = ManualRouteForm(request.POST)
    if not form.is_valid():
        return _page(request, status=422, forms_by_item={key: form})
    role = ProfessionalRole.objects.filter(fhir_id=form.cleaned_data["role"]).first()
    if role is None:
        form.add_error("role", "No professional role has this id.")
        return _page(request, status=422, forms_by_item={key: form})
    try:
        outcome = referral_route_manually(referral=referral, role=role, admin=request.user,
                                          override_reason=form.cleaned_data["override_reason"])
    except DomainError as exc:
        return _refused(request, key, exc, form)
    return _done(request, f"Referral {referral.pk}: {outcome.gist}", "manual-routing")


@require_POST
@console_view
def referral_reroute(request, referral_id: int):
    referral = get_object_or_404(referrals_visible(request.console_role).select_related("facts"), pk=referral_id)
    try:
        outcome = referral_route(referral=referral, patient=referral_patient_facts(referral=referral),
                                 actor=request.console_role.actor)
    except DomainError as exc:
        return _refused(request, f"manual-routing-{referral.pk}", exc)
    return _done(request, f"Referral {referral.pk}: {outcome.gist}", "manual-routing")


@require_POST
@console_view
def offer_accept_by_phone(request, offer_id: int):
    offer = get_object_or_404(
        Offer.objects.select_related("role").filter(referral__in=referrals_visible(request.console_role)), pk=offer_id
    )
    try:
        offer_accept(offer=offer, actor=f"{request.console_role.actor} for practitioner-role:{offer.role.fhir_id}")
    except DomainError as exc:
        return _refused(request, f"near-deadline-{offer.pk}", exc)
    return _done(request, f"Offer {offer.pk} recorded as accepted.", "near-deadline")


@require_POST
@console_view
def report_send_now(request, report_id: int):
    report = get_object_or_404(Report.objects.filter(referral__in=referrals_visible(request.console_role)),
                               pk=report_id)
    try:
        report_send_unsigned(report=report, actor=request.console_role.actor)
    except DomainError as exc:
        return _refused(request, f"reports-{report.pk}", exc)
    return _done(request, f"Report {report.pk} sent as preliminary (not reviewed by the therapist).", "reports")


@require_POST
@console_view
def adverse_event_ack(request, event_id: int):
    event = get_object_or_404(
        AdverseEvent.objects.select_related("referral").filter(referral__in=referrals_visible(request.console_role)),
        pk=event_id,
    )
    adverse_event_acknowledge(adverse_event=event, actor=request.console_role.actor)
    return _done(request, f"Adverse event {event.pk} acknowledged.", "adverse-events")


@require_POST
@console_view
def delivery_replay(request, delivery_id: int):
    deliveries = Delivery.objects.filter(pk=delivery_id)
    if not request.console_role.is_network_admin:
        deliveries = deliveries.filter(subscription__clinic_id=request.console_role.clinic_id)
    if not deliveries.exists():
        raise Http404
    with transaction.atomic():
        replayed = deliveries_replay(delivery_ids=[delivery_id])
    if not replayed:
        messages.info(request, f"Delivery {delivery_id} is no longer dead: nothing to replay.")
        return redirect(f"{reverse('console:queues')}#dead-letters")
    return _done(request, f"Delivery {delivery_id} replayed: a new round of attempts starts now.", "dead-letters")
