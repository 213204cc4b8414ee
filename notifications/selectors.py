"""Reads for the follow-up engine."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db.models import Q


def coordinator_emails() -> list[str]:
    """The e-mail addresses of active staff who hold ``notifications.coordinator`` (directly, through a group, or
    as superusers), sorted and without duplicates; users without an address are left out."""
    perm = Permission.objects.filter(content_type__app_label="notifications", codename="coordinator").first()
    holders = Q(is_superuser=True)
    if perm is not None:
        holders |= Q(user_permissions=perm) | Q(groups__permissions=perm)
    users = get_user_model().objects.filter(holders, is_active=True, is_staff=True).exclude(email="")
    return sorted(set(users.values_list("email", flat=True)))
