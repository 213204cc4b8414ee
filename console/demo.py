"""The demo's console users (`make run` loads them through fhir_bridge's load_demo): a clinic admin of the demo
clinic and a network admin. Demo only: the passwords are their user names."""

from django.contrib.auth import get_user_model
from django.db import transaction

from console.models import ConsoleRole
from referrals.models import Clinic

DEMO_CLINIC_ADMIN = "clinicadmin"
DEMO_NETWORK_ADMIN = "networkadmin"


@transaction.atomic
def demo_console_roles_load(*, clinic: Clinic) -> list[str]:
    """Create the demo clinic admin (of ``clinic``) and network admin, once; return a line per user for the demo's
    banner."""
    User = get_user_model()
    lines = []
    for username, fields in (
        (DEMO_CLINIC_ADMIN, {"role": ConsoleRole.Role.CLINIC_ADMIN, "clinic": clinic}),
        (DEMO_NETWORK_ADMIN, {"role": ConsoleRole.Role.NETWORK_ADMIN, "clinic": None}),
    ):
        user = User.objects.filter(username=username).first() or User.objects.create_user(
            username, f"{username}@example.org", username
        )
        role, _ = ConsoleRole.objects.get_or_create(user=user, defaults=fields)
        lines.append(f"{username} / {username}   ({role.get_role_display()}{f' of {role.clinic}' if role.clinic_id else ''})")
    return lines
