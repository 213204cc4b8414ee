"""Reads of the referral workflow: capacity (the live offers of a role), offers, and the stored routing
decisions. Nothing here writes."""

import datetime as dt

from django.db import connection
from django.db.models import OuterRef, QuerySet, Subquery

from network.models import Organization, Professional, ProfessionalRole
from referrals.models import (
    LIVE_OFFER_STATUSES,
    OPEN_STATUSES,
    Offer,
    OfferStatus,
    Referral,
    RoutingDecision,
)


# --- Capacity -----------------------------------------------------------------------------------------------


def active_cases_sql(role: str) -> str:
    """SQL for the number of active cases of the role whose id is the SQL expression ``role``: its requested
    offers (each holds a slot until answered) and its accepted ones whose referral is still open. The one
    definition of capacity use: the locked count below and the routing pool query both read it."""
    open_statuses = ", ".join(f"'{s}'" for s in sorted(OPEN_STATUSES))  # our own constants, not input
    return (
        f"SELECT COUNT(*) FROM {Offer._meta.db_table} c"
        f" JOIN {Referral._meta.db_table} rr ON rr.id = c.referral_id"
        f" WHERE c.role_id = {role} AND (c.status = '{OfferStatus.REQUESTED}'"
        f" OR (c.status = '{OfferStatus.ACCEPTED}' AND rr.status IN ({open_statuses})))"
    )


def role_for_update(*, role_id: int) -> ProfessionalRole | None:
    """Lock the role's row until the transaction ends (call inside one) and return the role with its
    professional and organization, or None when it is gone. One plain query: it runs for every offer, and the
    ORM's select_for_update().select_related() cost several times more to build than to run."""
    tables = {ProfessionalRole: "r", Professional: "p", Organization: "o"}
    columns = [(model, column) for model in tables for column in model._meta.concrete_fields]
    lock = ""
    if connection.features.has_select_for_update:
        lock = " FOR UPDATE OF r" if connection.features.has_select_for_update_of else " FOR UPDATE"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(f'{tables[model]}.{column.column}' for model, column in columns)}"
            f" FROM {ProfessionalRole._meta.db_table} r"
            f" JOIN {Professional._meta.db_table} p ON p.id = r.professional_id"
            f" JOIN {Organization._meta.db_table} o ON o.id = r.organization_id"
            f" WHERE r.id = %s{lock}",
            [role_id],
        )
        values = cursor.fetchone()
    if values is None:
        return None
    made = {}
    for model in tables:
        names, row = [], []
        for (owner, column), value in zip(columns, values):
            if owner is model:
                names.append(column.attname)
                # What the ORM does with the raw value (a JSON column comes back as text).
                if hasattr(column, "from_db_value"):
                    value = column.from_db_value(value, None, connection)
                row.append(value)
        made[model] = model.from_db(ProfessionalRole.objects.db, names, row)
    role = made[ProfessionalRole]
    role.professional, role.organization = made[Professional], made[Organization]
    return role


def role_active_case_count(*, role_id: int) -> int:
    """Active cases of one role, counted in the database. Hold the role's row lock to act on the count."""
    with connection.cursor() as cursor:
        cursor.execute(active_cases_sql("%s"), [role_id])
        return cursor.fetchone()[0]


# --- Offers and decisions -----------------------------------------------------------------------------------


def offer_live_get(*, referral_id: int) -> Offer | None:
    """The referral's requested or accepted offer, if any (there is at most one)."""
    return (
        Offer.objects.filter(referral_id=referral_id, status__in=sorted(LIVE_OFFER_STATUSES))
        .select_related("role")
        .first()
    )


def routing_decision_latest(*, referral_id: int) -> RoutingDecision | None:
    return RoutingDecision.objects.filter(referral_id=referral_id).order_by("-id").first()


def referrals_with_routing() -> QuerySet[Referral]:
    """Referrals with their clinic, each annotated with its latest routing decision's ``routing_gist`` and
    ``routing_flags`` (None before the first): a list of them costs one query, not one per referral."""
    latest = RoutingDecision.objects.filter(referral_id=OuterRef("pk")).order_by("-id")
    return Referral.objects.select_related("clinic").annotate(
        routing_gist=Subquery(latest.values("gist")[:1]), routing_flags=Subquery(latest.values("flags")[:1])
    )


def routing_decision_explain(*, decision: RoutingDecision) -> dict:
    """One decision as plain JSON for the admin API."""
    return {
        "id": decision.pk,
        "referral": decision.referral_id,
        "at": decision.created_at.isoformat() if decision.created_at else None,
        "trigger": decision.trigger,
        "outcome": decision.outcome,
        "actor": decision.actor,
        "chosen_role": decision.candidates
        and next((c["role"] for c in decision.candidates if c.get("chosen")), None),
        "gist": decision.gist,
        "location_source": decision.location_source,
        "condition_groups": decision.condition_groups,
        "mapped_codes": decision.mapped_codes,
        "unmapped_codes": decision.unmapped_codes,
        "risk": decision.risk,
        "flags": decision.flags,
        "summary": decision.summary,
        "candidates": decision.candidates,
        "overrides": decision.overrides,
        "override_reason": decision.override_reason,
    }


def routing_explain(*, referral_id: int) -> list[dict]:
    """Every routing run of a referral, oldest first, each with its candidates, exclusions and scores."""
    return [
        routing_decision_explain(decision=d)
        for d in RoutingDecision.objects.filter(referral_id=referral_id).order_by("id")
    ]

