"""The network page (network admins only): professionals and programs with their load, acceptance and time to
accept, credentials expiring soon; pause, resume and capacity through network/services.py; and the network import
with its dry-run preview (the importer of network/importing, as the Django admin's import page uses it)."""

from django import forms
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from console.access import console_view
from console.network import (
    EXPIRING_WITHIN,
    NETWORK_ANSWERS_MAX_AGE,
    credentials_expiring,
    network_answers_current,
    network_page,
)
from network.admin_import import network_import_step
from network.models import ProfessionalRole
from network.services import MAX_ACTIVE_CASES_LIMIT, NetworkError, role_capacity_set, role_pause, role_resume


class PauseForm(forms.Form):
    until = forms.DateField(label="Paused until", widget=forms.DateInput(attrs={"type": "date"}))


class CapacityForm(forms.Form):
    max_active_cases = forms.IntegerField(label="Capacity (active cases)", min_value=0,
                                          max_value=MAX_ACTIVE_CASES_LIMIT)


def _page_number(value) -> int:
    return int(value) if str(value).isdigit() else 1


def _page(request, *, status: int = 200, role_forms: dict | None = None):
    now = timezone.now()
    search = request.GET.get("q", "")[:100]
    answers = network_answers_current(now=now)
    page = network_page(search=search, roles_number=_page_number(request.GET.get("page", 1)),
                        programs_number=_page_number(request.GET.get("org_page", 1)), now=now, answers=answers)
    return render(request, "console/network/index.html", {
        "roles": page.roles, "role_answers": page.role_answers, "programs": page.programs,
        "program_rows": page.program_rows,
        "expiring": credentials_expiring(today=now.date()), "expiring_days": EXPIRING_WITHIN.days,
        "search": search, "today": now.date(), "role_forms": role_forms or {},
        "answers_at": answers.computed_at,
        "answers_age_minutes": int((now - answers.computed_at).total_seconds() // 60),
        "answers_max_minutes": int(NETWORK_ANSWERS_MAX_AGE.total_seconds() // 60),
    }, status=status)


@console_view(network_admin=True)
def network(request):
    return _page(request)


def _role_refused(request, role: ProfessionalRole, form):
    return _page(request, status=422, role_forms={role.pk: form})


def _back(request, message: str, role: ProfessionalRole):
    messages.success(request, message)
    return redirect(f"{reverse('console:network')}?q={role.fhir_id}#role-{role.pk}")


@require_POST
@console_view(network_admin=True)
def role_pause_view(request, role_id: int):
    role = get_object_or_404(ProfessionalRole.objects.select_related("professional"), pk=role_id)
    form = PauseForm(request.POST)
    if not form.is_valid():
        return _role_refused(request, role, form)
    try:
        role_pause(role=role, until=form.cleaned_data["until"], today=timezone.localdate())
    except NetworkError as exc:
        form.add_error(exc.field or None, str(exc))
        return _role_refused(request, role, form)
    return _back(request, f"{role.professional} paused until {role.paused_until:%d %b %Y}.", role)


@require_POST
@console_view(network_admin=True)
def role_resume_view(request, role_id: int):
    role = get_object_or_404(ProfessionalRole.objects.select_related("professional"), pk=role_id)
    role_resume(role=role)
    return _back(request, f"{role.professional} takes referrals again.", role)


@require_POST
@console_view(network_admin=True)
def role_capacity_view(request, role_id: int):
    role = get_object_or_404(ProfessionalRole.objects.select_related("professional"), pk=role_id)
    form = CapacityForm(request.POST)
    if not form.is_valid():
        return _role_refused(request, role, form)
    role_capacity_set(role=role, max_active_cases=form.cleaned_data["max_active_cases"])
    return _back(request, f"{role.professional}'s capacity is {role.max_active_cases} active cases.", role)


@console_view(network_admin=True)
def network_import_view(request):
    """The network import with its dry-run preview: the admin import page's steps (network/admin_import.py), in
    the console, as the network admin."""
    context = network_import_step(request, actor=request.console_role.actor)
    status = 422 if context.get("problem") or (request.method == "POST" and not context.get("report")) else 200
    return render(request, "console/network/import.html", context, status=status)
