"""Who sees what in the console, decided once: ``console_view`` on every page, ``referrals_visible`` under every
query of referrals (``clinics_visible``, the same rule as clinic ids, under the rollups that carry the clinic).
A clinic admin sees their clinic's referrals; a network admin sees all of them."""

import functools

from django.db.models import QuerySet
from django.shortcuts import redirect, render
from django.urls import reverse
from django_otp import user_has_device

from console.models import ConsoleRole
from referrals.models import Referral


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


def console_view(view=None, *, network_admin: bool = False):
    """Sign-in (the portal's), the second factor when enrolled, then a console role; sets ``request.console_role``.

    ``@console_view`` for every console user, ``@console_view(network_admin=True)`` for network admins only (a
    clinic admin gets 403). Not signed in: a redirect to the sign-in page with ``next``."""

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
            return view(request, *args, **kwargs)

        return wrapped

    return decorate(view) if view is not None else decorate
