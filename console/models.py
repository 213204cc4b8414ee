"""Who may use the admin console, and as what: a clinic admin for one referring clinic, or a network admin for
the whole hub. The role lives here, at the edge, because it names a clinic (referrals) and ``network`` may not
import referrals."""

from django.db import models
from django.db.models import Q


class ConsoleRole(models.Model):
    """A user's role in the console. One per user; a user without one is refused (403) by ``console_view``."""

    class Role(models.TextChoices):
        CLINIC_ADMIN = "clinic-admin", "Clinic admin"  # sees only their clinic's referrals
        NETWORK_ADMIN = "network-admin", "Network admin"  # sees every referral and manages the network

    user = models.OneToOneField("auth.User", on_delete=models.CASCADE, related_name="console_role")
    role = models.CharField(max_length=20, choices=Role.choices)
    clinic = models.ForeignKey(
        "referrals.Clinic", on_delete=models.CASCADE, null=True, blank=True, related_name="console_roles"
    )

    class Meta:
        constraints = [
            # Exactly the link the role acts through, as network.Account's: a clinic admin without a clinic would
            # otherwise see nothing or (worse, by a careless filter) everything.
            models.CheckConstraint(
                name="console_role_clinic_matches_role",
                condition=Q(role="clinic-admin", clinic__isnull=False) | Q(role="network-admin", clinic__isnull=True),
            )
        ]

    def __str__(self):
        return f"{self.user} ({self.get_role_display()}{f' of {self.clinic}' if self.clinic_id else ''})"

    @property
    def is_network_admin(self) -> bool:
        return self.role == self.Role.NETWORK_ADMIN

    @property
    def actor(self) -> str:
        """The actor string the domain's events record (as ReferralEvent.actor)."""
        return f"user:{self.user.get_username()}"
