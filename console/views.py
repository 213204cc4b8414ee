"""The admin console's pages. Each one is wrapped in ``console_view`` (console/access.py) and reads referrals only
through ``referrals_visible``: a referral a clinic admin may not see is a 404, never a 403 that confirms it exists.
Each view parses, calls selectors and renders."""

import hashlib

from django.core.cache import cache
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse_lazy
from django.utils import timezone

from console import charts
from console.access import clinics_visible, console_audit, console_view, referrals_visible
from console.export import EXPORT_COLUMNS, export_rows
from console.forms import ExportForm, FunnelFilterForm
from console.timeline import referral_timeline
from portal.views import LoginView
from referrals import funnel as funnel_selectors
from referrals.models import Referral, Report
from referrals.selectors import routing_explain

# The portal's sign-in (same form, same lockout, same second factor), landing on the console.
login = LoginView.as_view(next_page=reverse_lazy("console:overview"))


def _filters(request):
    form = FunnelFilterForm(request.GET or None, network_admin=request.console_role.is_network_admin)
    return form, form.filters()


def _overview_figures(clinic_ids, filters):
    """The overview's figures, computed once per rollup refresh for each scope and filters: they cannot change
    until the rollup does, so later requests read them from the cache (shared across processes on Redis)."""
    refreshed = funnel_selectors.milestones_refreshed_at()
    key = "console:overview:" + hashlib.sha256(
        repr((clinic_ids, filters, refreshed and refreshed.isoformat())).encode()
    ).hexdigest()
    figures = cache.get(key)
    if figures is None:
        figures = (
            funnel_selectors.funnel_compute(clinic_ids, filters),
            funnel_selectors.referrals_per_week(clinic_ids, filters),
            funnel_selectors.pavs_grid(clinic_ids, filters),
        )
        cache.set(key, figures, timeout=OVERVIEW_CACHE_SECONDS)
    return (*figures, refreshed)


def overview_warm(scopes) -> None:
    """Compute and cache the default overview (no filters) of each scope (None: the network; [clinic id])."""
    filters = FunnelFilterForm(network_admin=True).filters()
    for clinic_ids in scopes:
        _overview_figures(clinic_ids, filters)


OVERVIEW_CACHE_SECONDS = 15 * 60  # a newer refresh makes a new key long before this; it only bounds the memory


@console_view
def overview(request):
    """The exercise funnel, median times and charts for the filtered referrals (no PHI on this page)."""
    form, filters = _filters(request)
    funnel, weeks, grid, refreshed = _overview_figures(clinics_visible(request.console_role), filters)
    return render(request, "console/overview.html", {
        "form": form,
        "funnel": funnel,
        "query": request.GET.urlencode(),
        "refreshed_at": refreshed,
        "age_seconds": (timezone.now() - refreshed).total_seconds() if refreshed else None,
        "weeks_chart": charts.bar_chart(
            [(charts.week_label(w), n) for w, n in weeks], label="Referrals received per week",
            every=max(1, len(weeks) // 8), width=1200,
        ),
        "funnel_chart": charts.funnel_chart(funnel.steps, label="The exercise funnel"),
        "accept_chart": charts.bar_chart(funnel.accept_histogram, label="Time from receipt to acceptance"),
        "pavs_chart": charts.pavs_grid_chart(
            grid, bins=funnel_selectors.PAVS_BINS, bin_minutes=funnel_selectors.PAVS_BIN_MINUTES,
            label="PAVS minutes per week: baseline against latest check-in",
        ),
        "gain_minutes": funnel_selectors.PAVS_GAIN_MINUTES,
        "target_minutes": funnel_selectors.PAVS_TARGET_MINUTES,
    })


PAGE_SIZE = 50


@console_view
def referral_list(request):
    """The filtered referrals, newest first, 50 a page, each linking its timeline; and the CSV export."""
    form, filters = _filters(request)
    rows = funnel_selectors.milestones_filtered(clinics_visible(request.console_role), filters).select_related(
        "referral", "clinic", "organization"
    ).order_by("-received_at", "-referral_id")
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    params = request.GET.copy()
    params.pop("page", None)
    return render(request, "console/referrals.html", {
        "form": form, "page": page, "query": params.urlencode(), "export_form": ExportForm(),
        "columns": EXPORT_COLUMNS,
    })


@console_view
def referral_export(request):
    """The filtered referral list as CSV (columns: console/export.py), PHI only with ``phi=on``; audited."""
    _, filters = _filters(request)
    export = ExportForm(request.GET)
    phi = export.is_valid() and export.cleaned_data["phi"]
    rows = funnel_selectors.milestones_filtered(clinics_visible(request.console_role), filters)
    with transaction.atomic():  # fail closed: no export leaves without its audit row
        console_audit(request, interaction="export-phi" if phi else "export", entity_type="Referral")
    response = StreamingHttpResponse(export_rows(rows, phi=phi), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="referrals-{stamp}{"-phi" if phi else ""}.csv"'
    return response


def _visible_referral(request, referral_id: int) -> Referral:
    referral = referrals_visible(request.console_role).select_related("clinic").filter(pk=referral_id).first()
    if referral is None:
        raise Http404("No such referral")
    return referral


@console_view
def referral_detail(request, referral_id: int):
    """One referral: who, where it stands, its routing explanation and its timeline (audited: it shows PHI)."""
    referral = _visible_referral(request, referral_id)
    decisions = routing_explain(referral_id=referral.pk)
    console_audit(request, interaction="read", entity_type="Referral", entity_id=str(referral.pk))
    return render(request, "console/referral.html", {
        "referral": referral,
        "timeline": referral_timeline(referral),
        "decision": decisions[-1] if decisions else None,
        "decisions": decisions,
    })


@console_view
def report_pdf(request, referral_id: int, report_id: str):
    """A sent report's PDF as it went to the physician (audited)."""
    referral = _visible_referral(request, referral_id)
    report = Report.objects.filter(referral=referral, public_id=report_id, pdf__isnull=False).first()
    if report is None:
        raise Http404("No such report")
    console_audit(request, interaction="read", entity_type="DiagnosticReport", entity_id=str(report.public_id))
    response = HttpResponse(bytes(report.pdf), content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="report-{report.public_id}.pdf"'
    return response
