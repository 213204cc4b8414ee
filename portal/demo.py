"""The demo's portal accounts (`make run` loads them through fhir_bridge's load_demo): a therapist who holds a
demo offer, and the manager of that therapist's practice. Demo only: the passwords are their user names."""

from django.contrib.auth import get_user_model
from django.db import transaction

from network.models import Account
from referrals.models import LIVE_OFFER_STATUSES, Offer

DEMO_THERAPIST = "therapist"
DEMO_MANAGER = "manager"


@transaction.atomic
def demo_accounts_load(*, referral_ids: list[int]) -> list[str]:
    """Create the demo therapist and manager (once), linked to whoever holds the first demo referral's offer
    that routing made; return a line per account for the demo's banner ([] when no offer was made)."""
    User = get_user_model()
    if not Account.objects.filter(user__username=DEMO_THERAPIST).exists():
        offer = (
            Offer.objects.filter(referral_id__in=referral_ids, status__in=sorted(LIVE_OFFER_STATUSES))
            .select_related("role__professional", "organization")
            .order_by("referral_id")
            .first()
        )
        if offer is None:
            return []
        for username, fields in (
            (DEMO_THERAPIST, {"role": Account.Role.THERAPIST, "professional": offer.role.professional}),
            (DEMO_MANAGER, {"role": Account.Role.MANAGER, "organization": offer.organization}),
        ):
            user = User.objects.filter(username=username).first() or User.objects.create_user(
                username, f"{username}@example.org", username
            )
            Account.objects.get_or_create(user=user, defaults=fields)
    lines = []
    for account in Account.objects.filter(user__username__in=[DEMO_THERAPIST, DEMO_MANAGER]).select_related(
        "user", "professional", "organization"
    ).order_by("role"):
        who = account.professional or account.organization
        lines.append(f"{account.user.username} / {account.user.username}   ({account.role} for {who})")
    return lines
