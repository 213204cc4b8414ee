"""Who sees what in the console, decided once: ``console_view`` on every page, ``referrals_visible`` under every
query of referrals (``clinics_visible``, the same rule as clinic ids, under the rollups that carry the clinic).
A clinic admin sees their clinic's referrals; a network admin sees all of them."""

import functools

from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django_otp import user_has_device

from audit.models import Access
from audit.services import access_record, client_ip
from console.models import ConsoleRole
from referrals.models import Referral

# The URL argument that names a console POST's target, and the entity type its audit row records.
_AUDITED_TARGETS = {
    "referral_id": "Referral", "offer_id": "Offer", "report_id": "Report", "event_id": "AdverseEvent",
    "delivery_id": "Delivery", "role_id": "ProfessionalRole",
}


def console_role_get(*, user) -> ConsoleRole | None:
    """The user's console role (with its clinic), or None for an anonymous user or one without a role."""
    if not user.is_authenticated:
        return None
    return ConsoleRole.objects.select_related("clinic").filter(user=user).first()


def referrals_visible(user_or_role) -> QuerySet[Referral]:
    """The referrals this console user may see: their clinic's for a clinic admin, every one for a network admin,
    none for anybody else. Takes a ``ConsoleRole`` (as ``request.console_role``) or a user (one query more)."""
    role = user_or_role if isinstance(user_or_role, ConsoleRole) else console_role_get(user=user_or_role)
    if role is None:
        return Referral.objects.none()
    if role.is_network_admin:
        return Referral.objects.all()
    return Referral.objects.filter(clinic_id=role.clinic_id)


def clinics_visible(role: ConsoleRole) -> list[int] | None:
    """The same rule as ``referrals_visible``, as clinic ids for the rollups that carry the clinic (None: every
    clinic, for a network admin)."""
    return None if role.is_network_admin else [role.clinic_id]


def console_audit(
    request, *, interaction: str, entity_type: str = "", entity_id: str = "", status: int = 200
) -> None:
    """Write the audit row (audit.services.access_record, channel console) of one console request by
    ``request.console_role``: ``interaction`` is "read", "export", "export-phi" or a POST's URL name (as
    "role-pause"); ``status`` the HTTP status answered. Inside a transaction a failed write raises (fail closed)."""
    role = request.console_role
    access_record(
        channel=Access.Channel.CONSOLE, interaction=interaction, method=request.method, path=request.path,
        status=status, source_ip=client_ip(request.META), agent_user=request.user.get_username(),
        clinic_id=role.clinic_id, entity_type=entity_type, entity_id=entity_id, query=request.GET.urlencode(),
    )


def _posted(view, request, *args, **kwargs):
    """Run a console POST and write its one audit row in the same transaction (the action and its record commit
    together; a refusal, answered 4xx, is recorded with its status; a target outside the user's scope, 404, after
    the rollback). The target is the URL's ``*_id``."""
    name, value = next(((k, v) for k, v in kwargs.items() if k in _AUDITED_TARGETS), ("", ""))
    match = request.resolver_match

    def audit(status: int) -> None:
        console_audit(request, interaction=match.url_name if match and match.url_name else "post",
                      entity_type=_AUDITED_TARGETS.get(name, ""), entity_id=str(value), status=status)

    try:
        with transaction.atomic():
            response = view(request, *args, **kwargs)
            audit(response.status_code)
    except Http404:
        audit(404)
        raise
    return response


def console_view(view=None, *, network_admin: bool = False):
    """Sign-in (the portal's), the second factor when enrolled, then a console role; sets ``request.console_role``.

    ``@console_view`` for every console user, ``@console_view(network_admin=True)`` for network admins only (a
    clinic admin gets 403). Not signed in: a redirect to the sign-in page with ``next``. Every POST leaves one
    audit row (``console_audit``), committed with what it did."""

    def decorate(view):
        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect(f"{reverse('console:login')}?next={request.get_full_path()}")
            if user_has_device(request.user) and not request.user.is_verified():
                return redirect(f"{reverse('portal:verify')}?next={request.get_full_path()}")
            role = console_role_get(user=request.user)
            if role is None or (network_admin and not role.is_network_admin):
                return render(request, "console/forbidden.html", {"role": role}, status=403)
            request.console_role = role
            if request.method == "POST":
                return _posted(view, request, *args, **kwargs)
            return view(request, *args, **kwargs)

        return wrapped

    return decorate(view) if view is not None else decorate
