"""Reads of the network: members by reference, condition-code mapping and qualification. Nothing here writes.
Reads of offers, capacity and routing decisions are the referral workflow's (referrals/selectors.py)."""

import datetime as dt
import json
from collections import defaultdict
from dataclasses import dataclass, field

from django.db import connection
from django.db.models import QuerySet

from network.models import (
    ConditionCodeMap,
    ConditionGroup,
    Credential,
    CredentialType,
    Organization,
    Professional,
    ProfessionalRole,
)

# The FHIR resource types that name a member of the network, and the model behind each.
_MEMBER_MODELS = {
    "Organization": Organization,
    "Practitioner": Professional,
    "PractitionerRole": ProfessionalRole,
}


@dataclass(frozen=True)
class NetworkMember:
    reference: str  # "PractitionerRole/<fhir_id>"
    display: str
    active: bool


def _split_reference(reference: str) -> tuple[str, str] | None:
    resource_type, _, fhir_id = (reference or "").partition("/")
    if resource_type not in _MEMBER_MODELS or not fhir_id or "/" in fhir_id:
        return None
    return resource_type, fhir_id


def network_member_get(*, reference: str) -> NetworkMember | None:
    """The network member that a relative FHIR reference names, or None when it names no member."""
    split = _split_reference(reference)
    if split is None:
        return None
    resource_type, fhir_id = split
    member = _MEMBER_MODELS[resource_type].objects.filter(fhir_id=fhir_id).first()
    if member is None:
        return None
    return NetworkMember(reference=f"{resource_type}/{fhir_id}", display=str(member), active=member.active)


def network_member_roles(*, reference: str) -> QuerySet[ProfessionalRole]:
    """The roles a reference names: the role itself, every role of a Practitioner, or of an Organization."""
    split = _split_reference(reference)
    if split is None:
        return ProfessionalRole.objects.none()
    resource_type, fhir_id = split
    lookup = {
        "PractitionerRole": "fhir_id",
        "Practitioner": "professional__fhir_id",
        "Organization": "organization__fhir_id",
    }[resource_type]
    return ProfessionalRole.objects.filter(**{lookup: fhir_id})


# --- Condition codes ----------------------------------------------------------------------------------------


@dataclass
class ConditionMapping:
    groups: list[ConditionGroup] = field(default_factory=list)  # distinct, in slug order
    mapped: list[dict] = field(default_factory=list)  # [{system, code, display, groups: [slug]}]
    unmapped: list[dict] = field(default_factory=list)  # [{system, code, display, why}]: kept and flagged

    @property
    def group_slugs(self) -> list[str]:
        return [g.slug for g in self.groups]


def sql_json(*expressions: str, aggregate: bool = False) -> str:
    """SQL for a JSON array of the expressions; with ``aggregate``, for a JSON list of the rows (of the value
    itself when there is one expression). PostgreSQL and SQLite spell it differently; both write a date as ISO
    8601, and over no rows PostgreSQL gives NULL and SQLite []. Plain reads that bring many facts back in one
    row use it (condition codes and credential types here, routing's pool)."""
    postgresql = connection.vendor == "postgresql"
    item = f"{'json_build_array' if postgresql else 'json_array'}({', '.join(expressions)})"
    if not aggregate:
        return item
    if len(expressions) == 1:
        item = expressions[0]
    return f"{'json_agg' if postgresql else 'json_group_array'}({item})"


def sql_json_value(value):
    """A JSON value as the database driver returns it: parsed (psycopg) or text (SQLite)."""
    return json.loads(value) if isinstance(value, str) else value


# The condition groups' columns, in the order the reads below bring them back.
_GROUP_FIELDS = ("id", "slug", "name", "description", "cardiometabolic_renal", "min_risk_tier")


def _codes_wanted(codes: list[dict]) -> dict[str, set[str]]:
    wanted: dict[str, set[str]] = defaultdict(set)
    for coding in codes:
        system, code = coding.get("system") or "", ConditionCodeMap.normalise(coding.get("code") or "")
        if system in ConditionCodeMap.SYSTEMS and code:
            # Every prefix of the code, so that one indexed IN finds exact rows and prefix rows alike.
            wanted[system].update(code[:n] for n in range(1, len(code) + 1))
    return wanted


def _code_map_sql(wanted: dict[str, set[str]]) -> tuple[str, list]:
    """SQL for the code map rows of ``wanted``, with their group, as one JSON list (NULL when nothing is
    wanted), and its parameters."""
    if not wanted:
        return "NULL", []
    where, params = [], []
    for system, candidates in sorted(wanted.items()):
        where.append(f"(m.system = %s AND m.code IN ({', '.join(['%s'] * len(candidates))}))")
        params += [system, *sorted(candidates)]
    columns = ["m.system", "m.code", "m.match", *(f"g.{name}" for name in _GROUP_FIELDS)]
    return (
        f"(SELECT {sql_json(*columns, aggregate=True)}"
        f" FROM {ConditionCodeMap._meta.db_table} m"
        f" JOIN {ConditionGroup._meta.db_table} g ON g.id = m.group_id"
        f" WHERE {' OR '.join(where)})",
        params,
    )


def _condition_mapping(codes: list[dict], rows) -> ConditionMapping:
    """Map ``codes`` with the code map ``rows`` (the JSON rows of _code_map_sql)."""
    result = ConditionMapping()
    by_system: dict[str, list[tuple[str, str, ConditionGroup]]] = defaultdict(list)
    known: dict[int, ConditionGroup] = {}
    for system, code, match, *values in rows or ():
        group = dict(zip(_GROUP_FIELDS, values))
        if group["id"] not in known:
            group["cardiometabolic_renal"] = bool(group["cardiometabolic_renal"])  # SQLite says 0 or 1
            known[group["id"]] = ConditionGroup.from_db(
                ConditionGroup.objects.db, _GROUP_FIELDS, [group[name] for name in _GROUP_FIELDS]
            )
        by_system[system].append((code, match, known[group["id"]]))

    groups: dict[str, ConditionGroup] = {}
    for coding in codes:
        system, raw = coding.get("system") or "", coding.get("code") or ""
        code = ConditionCodeMap.normalise(raw)
        plain = {"system": system, "code": raw, "display": coding.get("display") or ""}
        if system not in ConditionCodeMap.SYSTEMS or not code:
            why = "no code" if not code else f"the hub maps no codes of system {system or '(none)'!r}"
            result.unmapped.append({**plain, "why": why})
            continue
        hits = [
            group
            for row_code, match, group in by_system[system]
            if (match == ConditionCodeMap.Match.EXACT and row_code == code)
            or (match == ConditionCodeMap.Match.PREFIX and code.startswith(row_code))
        ]
        if not hits:
            result.unmapped.append({**plain, "why": "not in the condition code map"})
            continue
        for group in hits:
            groups[group.slug] = group
        result.mapped.append({**plain, "groups": sorted({group.slug for group in hits})})
    result.groups = [groups[s] for s in sorted(groups)]
    return result


def condition_codes_map(*, codes: list[dict]) -> ConditionMapping:
    """Map codings ({system, code, display}) to condition groups: exact codes and ICD-10-CM prefixes, one
    query.

    A coding that maps to nothing (an unknown system, a code not in the table, a text-only reason) is returned
    in ``unmapped``, never dropped."""
    sql, params = _code_map_sql(_codes_wanted(codes))
    rows = None
    if params:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {sql}", params)
            rows = sql_json_value(cursor.fetchone()[0])
    return _condition_mapping(codes, rows)


# --- Qualification ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CredentialTypeScope:
    id: int
    slug: str
    name: str
    max_risk_tier: int
    groups: frozenset[str]


def _credential_types_sql() -> str:
    """SQL for every credential type with each condition group it covers, as one JSON list."""
    through = CredentialType.condition_groups.through._meta.db_table
    return (
        f"(SELECT {sql_json('t.id', 't.slug', 't.name', 't.max_risk_tier', 'g.slug', aggregate=True)}"
        f" FROM {CredentialType._meta.db_table} t"
        f" LEFT JOIN {through} tg ON tg.credentialtype_id = t.id"
        f" LEFT JOIN {ConditionGroup._meta.db_table} g ON g.id = tg.conditiongroup_id)"
    )


def _credential_type_scopes(rows) -> dict[int, CredentialTypeScope]:
    types: dict[int, dict] = {}
    for type_id, slug, name, tier, group in rows or ():
        entry = types.setdefault(type_id, {"slug": slug, "name": name, "tier": tier, "groups": set()})
        if group:
            entry["groups"].add(group)
    return {
        i: CredentialTypeScope(
            id=i, slug=t["slug"], name=t["name"], max_risk_tier=t["tier"], groups=frozenset(t["groups"])
        )
        for i, t in types.items()
    }


def credential_type_scopes() -> dict[int, CredentialTypeScope]:
    """Every credential type and what it covers (one query; the table is small)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {_credential_types_sql()}")
        return _credential_type_scopes(sql_json_value(cursor.fetchone()[0]))


def qualification_sql(*, codes: list[dict]) -> tuple[str, list]:
    """SQL for two JSON values, the code map rows of ``codes`` and every credential type with its groups, to
    put in a SELECT list, and its parameters; qualification_parse() reads them. It lets routing fetch them in
    the same round trip as its pool."""
    codes_sql, params = _code_map_sql(_codes_wanted(codes))
    return f"{codes_sql}, {_credential_types_sql()}", params


def qualification_parse(
    *, codes: list[dict], code_rows, type_rows
) -> tuple[ConditionMapping, dict[int, CredentialTypeScope]]:
    return (
        _condition_mapping(codes, sql_json_value(code_rows)),
        _credential_type_scopes(sql_json_value(type_rows)),
    )


@dataclass(frozen=True)
class RoleScope:
    """What a role may take today: condition group → the highest tier it is qualified for."""

    groups: dict[str, int]
    current: list[str]  # credential type slugs that count
    expired: list[str]
    unverified: list[str]
    only_condition_groups: list[str]
    max_risk_tier: int | None


def role_scope(*, role: ProfessionalRole, today: dt.date) -> RoleScope:
    """The condition groups and tiers a role is qualified for (for PractitionerRole.specialty, the admin)."""
    types = credential_type_scopes()
    current, expired, unverified = [], [], []
    groups: dict[str, int] = {}
    for credential in Credential.objects.filter(professional_id=role.professional_id):
        scope = types[credential.type_id]
        if credential.verified_at is None:
            unverified.append(scope.slug)
        elif credential.expires_on < today:
            expired.append(scope.slug)
        else:
            current.append(scope.slug)
            for g in scope.groups:
                groups[g] = max(groups.get(g, 0), scope.max_risk_tier)
    only = sorted(role.only_condition_groups.values_list("slug", flat=True))
    if only:
        groups = {g: t for g, t in groups.items() if g in only}
    if role.max_risk_tier is not None:
        groups = {g: min(t, role.max_risk_tier) for g, t in groups.items()}
    return RoleScope(
        groups=dict(sorted(groups.items())),
        current=sorted(current),
        expired=sorted(expired),
        unverified=sorted(unverified),
        only_condition_groups=only,
        max_risk_tier=role.max_risk_tier,
    )
