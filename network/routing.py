"""The routing engine: who may take a referral (hard constraints), then who should (a score).

``routing_plan`` reads the database and writes nothing; network/services.py turns a plan into a stored
RoutingDecision and an offer, under the locks that keep capacity honest.

How a plan is made (each step is one query or none; see network/README.md):
1. Map the referral's condition codes to groups (unmapped codes are kept and flagged) and assess the patient's
   risk tier (network/risk.py).
2. Place the patient: the geolocation the EHR sent, else the ZIP centroid; unplaceable → no candidates, a
   coordinator routes it.
3. The pool, pre-filtered in SQL: roles whose site lies in a bounding box sized by the largest service radius in
   the network (an index on site latitude/longitude) and whose own radius reaches the patient, the nearest
   ``IN_PERSON_POOL_LIMIT`` of them; when the referral allows virtual delivery, the nearest
   ``VIRTUAL_POOL_LIMIT`` virtual roles in the patient's state; and every role the referral names (directed).
4. Every hard constraint is checked for every candidate in the pool, and every failure is recorded.
5. The eligible are scored; a directed member who is eligible comes first whatever the score.
"""

import datetime as dt
import json
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

from django.db import connection

from network.geo import KM_PER_DEGREE_LATITUDE, Place, haversine_km, patient_place
from network.models import Credential, Offer, OfferStatus, Organization, Professional, ProfessionalRole, Site
from network.risk import RiskProfile, Screening, risk_assess
from network.selectors import (
    ConditionMapping,
    active_cases_sql,
    condition_codes_map,
    credential_type_scopes,
    network_member_roles,
)
from referrals.models import Referral

# Bounds on the work of one decision, whatever the size of the network. A truncated pool is said in the
# summary.
IN_PERSON_POOL_LIMIT = 100
VIRTUAL_POOL_LIMIT = 100
DIRECTED_POOL_LIMIT = 50
# Past offers older than this do not count towards response speed and acceptance rate.
STATS_WINDOW = dt.timedelta(days=365)

# How the score weighs its components (each in [0, 1]); they sum to 1.
WEIGHTS = {
    "distance": 0.30,  # nearer is better; virtual delivery counts as a middling distance
    "load": 0.15,  # free capacity
    "responsiveness": 0.10,  # how fast past offers were answered
    "acceptance": 0.15,  # how often past offers were accepted
    "continuity": 0.15,  # the referring clinic's patients went to this practice in the last year
    "preferences": 0.15,  # what the patient asked for: delivery, language, payer
}
NEUTRAL = 0.5  # a component with no data neither helps nor hurts

# Hard constraints, in the order they are checked, with the words the physician's gist uses.
CONSTRAINTS = {
    "already-offered": "already offered this referral",
    "role-inactive": "inactive",
    "professional-inactive": "inactive",
    "organization-inactive": "organization inactive",
    "not-accepting": "not taking referrals",
    "paused": "paused",
    "not-qualified": "not qualified",
    "credential-expired": "credential expired",
    "credential-unverified": "credential not verified",
    "role-restriction": "restricted by an admin",
    "outside-service-area": "outside their service area",
    "language": "not speaking the required language",
    "at-capacity": "at capacity",
}


@dataclass(frozen=True)
class PatientFacts:
    """What routing needs to know about the patient, as plain values (fhir_bridge parses FHIR into this).

    - latitude/longitude: the FHIR geolocation extension on Patient.address, when present;
    - postal_code, state: Patient.address (the referral's patient_postal_code is used when postal_code is
      empty);
    - clearance, precautions, screening: see network/risk.py for where they sit in the ServiceRequest;
    - required_language: a BCP 47 tag the professional must speak (Patient.communication, when an interpreter
      would otherwise be needed); preferred_languages only count towards the score;
    - virtual_allowed: the referral accepts video sessions; preferred_delivery: "in-person", "virtual" or
      "group";
    - payer: the payer identifier the patient would use (scored, not required).
    """

    latitude: float | None = None
    longitude: float | None = None
    postal_code: str = ""
    state: str = ""
    clearance: str | None = None
    precautions: tuple[str, ...] = ()
    screening: Screening | None = None
    required_language: str = ""
    preferred_languages: tuple[str, ...] = ()
    virtual_allowed: bool = False
    preferred_delivery: str = ""
    payer: str = ""

    def as_dict(self) -> dict:
        data = asdict(self)
        data["precautions"] = list(self.precautions)
        data["preferred_languages"] = list(self.preferred_languages)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "PatientFacts":
        data = dict(data or {})
        screening = data.pop("screening", None)
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["precautions"] = tuple(values.get("precautions") or ())
        values["preferred_languages"] = tuple(values.get("preferred_languages") or ())
        return cls(screening=Screening(**screening) if screening else None, **values)


@dataclass
class Candidate:
    role_id: int
    fhir_id: str
    name: str
    organization: str
    organization_id: int
    directed: bool = False
    delivery: str = ""  # "in-person" or "virtual", when the role can reach the patient
    distance_km: float | None = None
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (constraint, detail), in check order
    score: float | None = None
    components: dict = field(default_factory=dict)
    rank: int | None = None
    chosen: bool = False

    @property
    def eligible(self) -> bool:
        return not self.excluded

    def as_dict(self) -> dict:
        data = {
            "role": self.fhir_id,
            "role_id": self.role_id,
            "name": self.name,
            "organization": self.organization,
            "directed": self.directed,
            "delivery": self.delivery,
            "distance_km": None if self.distance_km is None else round(self.distance_km, 2),
            "excluded": [{"constraint": c, "detail": d} for c, d in self.excluded],
        }
        if self.eligible:
            data.update(score=self.score, components=self.components, rank=self.rank, chosen=self.chosen)
        return data


@dataclass
class RoutingPlan:
    place: Place | None
    mapping: ConditionMapping
    risk: RiskProfile
    flags: list[str]
    candidates: list[Candidate]  # eligible first, best first; then the excluded, nearest first
    summary: dict
    directed_references: list[str]

    @property
    def eligible(self) -> list[Candidate]:
        return [c for c in self.candidates if c.eligible]

    @property
    def directed_candidates(self) -> list[Candidate]:
        return [c for c in self.candidates if c.directed]


# The pool query is plain SQL (portable to SQLite and PostgreSQL): it runs on every decision, and building it
# through the ORM cost more than running it. Columns, in order; _row() turns a result row into a dict of these
# names.
_POOL_COLUMNS = (
    ("id", "r.id"),
    ("fhir_id", "r.fhir_id"),
    ("professional_id", "r.professional_id"),
    ("given_name", "p.given_name"),
    ("family_name", "p.family_name"),
    ("professional_active", "p.active"),
    ("organization_id", "r.organization_id"),
    ("organization_name", "o.name"),
    ("organization_active", "o.active"),
    ("organization_paused_until", "o.paused_until"),
    ("active", "r.active"),
    ("accepting", "r.accepting"),
    ("paused_until", "r.paused_until"),
    ("max_active_cases", "r.max_active_cases"),
    ("max_risk_tier", "r.max_risk_tier"),
    ("languages", "r.languages"),
    ("offers_in_person", "r.offers_in_person"),
    ("offers_group", "r.offers_group"),
    ("offers_virtual", "r.offers_virtual"),
    ("payers", "r.payers"),
    ("service_radius_km", "r.service_radius_km"),
    ("latitude", "s.latitude"),
    ("longitude", "s.longitude"),
    ("state", "s.state"),
)
_DATE_COLUMNS = ("organization_paused_until", "paused_until")
_JSON_COLUMNS = ("languages", "payers")


def _pool_sql(*, where: str, order_limit: str) -> str:
    """Roles chosen by ``where`` (over the role ``r`` and its site ``s``), ordered and limited by
    ``order_limit`` (which may use ``d2``, the squared distance to the patient in km²), then joined with their
    professional and organization, with, per role: its live cases (the capacity count,
    selectors.active_cases_sql), whether this referral was offered to it before, and whether an admin
    restricted its condition groups. The joins and counts run only for the rows that survive the limit.
    Placeholders: the referral id, the distance terms (8),
    then those of ``where`` and ``order_limit``."""
    role, site = ProfessionalRole._meta.db_table, Site._meta.db_table
    professional, organization = Professional._meta.db_table, Organization._meta.db_table
    offer = Offer._meta.db_table
    through = ProfessionalRole.only_condition_groups.through._meta.db_table
    columns = ", ".join(sql for _, sql in _POOL_COLUMNS)
    return f"""
        SELECT {columns},
            ({active_cases_sql("r.id")}) AS active_cases,
            EXISTS (SELECT 1 FROM {offer} x WHERE x.role_id = r.id AND x.referral_id = %s) AS offered,
            EXISTS (SELECT 1 FROM {through} t WHERE t.professionalrole_id = r.id) AS restricted,
            k.d2
        FROM (
            SELECT r.id AS role_id,
                ((s.longitude - %s) * %s) * ((s.longitude - %s) * %s)
                  + ((s.latitude - %s) * %s) * ((s.latitude - %s) * %s) AS d2
            FROM {role} r LEFT JOIN {site} s ON s.id = r.site_id
            WHERE {where}
            {order_limit}
        ) k
        JOIN {role} r ON r.id = k.role_id
        JOIN {professional} p ON p.id = r.professional_id
        JOIN {organization} o ON o.id = r.organization_id
        LEFT JOIN {site} s ON s.id = r.site_id
        ORDER BY (k.d2 IS NULL), k.d2, r.id
    """


def _distance_params(place: Place | None) -> list[float]:
    if place is None:
        return [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    kx = KM_PER_DEGREE_LATITUDE * math.cos(math.radians(place.latitude))
    ky = KM_PER_DEGREE_LATITUDE
    return [place.longitude, kx, place.longitude, kx, place.latitude, ky, place.latitude, ky]


def _as_date(value):
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def _row(values) -> dict:
    row = dict(
        zip([name for name, _ in _POOL_COLUMNS] + ["active_cases", "offered", "restricted", "d2"], values)
    )
    for name in _DATE_COLUMNS:
        row[name] = _as_date(row[name])
    for name in _JSON_COLUMNS:
        if isinstance(row[name], str):
            row[name] = json.loads(row[name])
    return row


def _pools(
    *,
    place: Place | None,
    patient: PatientFacts,
    directed_references: list[str],
    only_role_ids,
    referral_id: int,
):
    """The candidate rows (dicts, plus ``directed``), and what bounded the pools."""
    rows: dict[int, dict] = {}
    pool: dict = {}
    head = [referral_id, *_distance_params(place)]

    def add(sql: str, params: list, directed=False) -> list[int]:
        ids = []
        with connection.cursor() as cursor:
            cursor.execute(sql, head + params)
            for values in cursor.fetchall():
                row = _row(values)
                ids.append(row["id"])
                kept = rows.setdefault(row["id"], {**row, "directed": False})
                kept["directed"] = kept["directed"] or directed
        return ids

    def by_ids(ids: list[int], directed=False) -> list[int]:
        if not ids:
            return []
        marks = ", ".join(["%s"] * len(ids))
        return add(_pool_sql(where=f"r.id IN ({marks})", order_limit=""), list(ids), directed)

    if only_role_ids is not None:
        pool["only"] = len(by_ids(list(only_role_ids)))
        return rows, pool

    for reference in directed_references:
        by_ids(
            list(
                network_member_roles(reference=reference)
                .order_by("id")
                .values_list("id", flat=True)[:DIRECTED_POOL_LIMIT]
            ),
            directed=True,
        )
    pool["directed"] = len(rows)
    if place is None:
        return rows, pool

    # The box is sized by the largest radius anyone serves (MAX over its index, once per query), so that it
    # holds every role that might reach the patient: on latitude exactly, on longitude with the cosine taken
    # at the box's edge for the largest radius allowed (500 km), a little wider than needed and never
    # narrower. The database then keeps those whose own radius reaches the patient, nearest first.
    max_radius = f"(SELECT MAX(service_radius_km) FROM {ProfessionalRole._meta.db_table})"
    dlat = 1.01 / KM_PER_DEGREE_LATITUDE
    edge = min(89.0, abs(place.latitude) + 500.0 / KM_PER_DEGREE_LATITUDE * 1.01)
    dlon = 1.01 / (KM_PER_DEGREE_LATITUDE * math.cos(math.radians(edge)))
    where = (
        f"s.latitude BETWEEN %s - {max_radius} * %s AND %s + {max_radius} * %s"
        f" AND s.longitude BETWEEN %s - {max_radius} * %s AND %s + {max_radius} * %s"
        # 3% slack on the square (1.5% on the distance) for the flat-earth approximation.
        " AND ((s.longitude - %s) * %s) * ((s.longitude - %s) * %s)"
        "   + ((s.latitude - %s) * %s) * ((s.latitude - %s) * %s)"
        "   <= r.service_radius_km * r.service_radius_km * 1.03"
    )
    params = [place.latitude, dlat, place.latitude, dlat, place.longitude, dlon, place.longitude, dlon]
    params += _distance_params(place)
    in_person = add(
        _pool_sql(where=where, order_limit="ORDER BY d2, r.id LIMIT %s"), params + [IN_PERSON_POOL_LIMIT + 1]
    )
    pool["in_person"] = min(len(in_person), IN_PERSON_POOL_LIMIT)
    pool["in_person_truncated"] = len(in_person) > IN_PERSON_POOL_LIMIT
    if pool["in_person_truncated"] and not rows[in_person[-1]]["directed"]:
        del rows[in_person[-1]]  # read only to know that there are more than the limit

    if patient.virtual_allowed and place.state:
        # Virtual roles of sites in the patient's state (licensure), nearest first; the partial index
        # role_virtual_site serves the join.
        virtual = add(
            _pool_sql(
                where="r.offers_virtual = %s AND s.state = %s",
                order_limit="ORDER BY (s.latitude IS NULL), d2, r.id LIMIT %s",
            ),
            [True, place.state, VIRTUAL_POOL_LIMIT],
        )
        pool["virtual"] = len(virtual)
        pool["virtual_truncated"] = len(virtual) >= VIRTUAL_POOL_LIMIT
    return rows, pool


def _primary_language(tag: str) -> str:
    return (tag or "").strip().lower().split("-")[0]


def _qualification(
    *,
    required: list[str],
    tier: int,
    credentials: list[tuple],
    types: dict,
    restricted: set,
    role_max_tier: int | None,
) -> list[tuple[str, str]]:
    """The qualification failures of one role: [] when current credentials cover every group at the tier."""
    failures = []
    if restricted:
        outside = [g for g in required if g not in restricted]
        if outside:
            failures.append(
                ("role-restriction", f"takes only {', '.join(sorted(restricted))}; not {', '.join(outside)}")
            )
    if role_max_tier is not None and tier > role_max_tier:
        failures.append(
            ("role-restriction", f"takes patients up to risk tier {role_max_tier}; this one is {tier}")
        )

    def uncovered(usable) -> list[str]:
        scopes = [types[t] for t in usable]
        if not required:
            return [] if any(s.max_risk_tier >= tier for s in scopes) else ["any condition"]
        return [g for g in required if not any(g in s.groups and s.max_risk_tier >= tier for s in scopes)]

    current = [c[0] for c in credentials if c[3] == "current"]
    missing = uncovered(current)
    if missing:
        held = ", ".join(sorted({types[t].slug for t in current})) or "none"
        need = f"no current credential covers {', '.join(missing)} at risk tier {tier} (current: {held})"
        expired = [c for c in credentials if c[3] == "expired"]
        unverified = [c for c in credentials if c[3] == "unverified"]
        if expired and not uncovered(current + [c[0] for c in expired]):
            names = ", ".join(f"{types[c[0]].slug} expired {c[1].isoformat()}" for c in expired)
            failures.append(("credential-expired", f"{need}; {names}"))
        elif unverified and not uncovered(current + [c[0] for c in unverified]):
            names = ", ".join(types[c[0]].slug for c in unverified)
            failures.append(("credential-unverified", f"{need}; not verified: {names}"))
        else:
            failures.append(("not-qualified", need))
    return failures


def _history(*, role_ids: list[int], organization_ids: set[int], clinic_id: int, now: dt.datetime):
    """Past offers over STATS_WINDOW, one query of two index-driven parts: per role (of ``role_ids``) its
    answers and mean response time; and which of ``organization_ids`` accepted one of the clinic's referrals
    (continuity).
    Returns (stats by role id, continuity organization ids)."""
    if not role_ids:
        return {}, set()
    offer, referral = Offer._meta.db_table, Referral._meta.db_table
    role_marks = ", ".join(["%s"] * len(role_ids))
    org_marks = ", ".join(["%s"] * len(organization_ids))
    accepted, rejected, expired = OfferStatus.ACCEPTED, OfferStatus.REJECTED, OfferStatus.EXPIRED
    since = now - STATS_WINDOW
    sql = f"""
        SELECT 'role', o.role_id,
            SUM(CASE WHEN o.status = '{accepted}' THEN 1 ELSE 0 END),
            SUM(CASE WHEN o.status = '{rejected}' THEN 1 ELSE 0 END),
            SUM(CASE WHEN o.status = '{expired}' THEN 1 ELSE 0 END),
            AVG(o.response_seconds)
        FROM {offer} o
        WHERE o.role_id IN ({role_marks}) AND o.created_at >= %s
        GROUP BY o.role_id
        UNION ALL
        SELECT DISTINCT 'organization', o.organization_id, 0, 0, 0, CAST(NULL AS NUMERIC)
        FROM {offer} o JOIN {referral} rr ON rr.id = o.referral_id
        WHERE o.organization_id IN ({org_marks}) AND o.status = '{accepted}' AND rr.clinic_id = %s
            AND o.created_at >= %s
    """
    stats, continuity = {}, set()
    with connection.cursor() as cursor:
        cursor.execute(sql, [*role_ids, since, *sorted(organization_ids), clinic_id, since])
        for kind, key, n_accepted, n_rejected, n_expired, response_seconds in cursor.fetchall():
            if kind == "organization":
                continuity.add(key)
            else:
                stats[key] = {
                    "accepted": n_accepted,
                    "rejected": n_rejected,
                    "expired": n_expired,
                    "response_seconds": response_seconds,
                }
    return stats, continuity


def _score(
    candidate: Candidate,
    row: dict,
    *,
    active: int,
    stats: dict | None,
    continuity: float,
    patient: PatientFacts,
) -> None:
    if candidate.delivery == "virtual" or candidate.distance_km is None:
        distance = NEUTRAL
    else:
        distance = 1.0 / (1.0 + candidate.distance_km / 10.0)  # 1 at the door, 0.5 at 10 km, 0.25 at 30 km
    load = 1.0 - active / row["max_active_cases"] if row["max_active_cases"] else 0.0
    if stats and stats["response_seconds"] is not None:
        hours = float(stats["response_seconds"]) / 3600.0
        responsiveness = 1.0 - min(hours, 48.0) / 48.0
    else:
        responsiveness = NEUTRAL
    if stats:
        answered = stats["accepted"] + stats["rejected"] + stats["expired"]
        acceptance = (stats["accepted"] + 1) / (answered + 2)  # Laplace: no history is 0.5
    else:
        acceptance = NEUTRAL
    wishes = []
    if patient.preferred_delivery:
        offers = {
            "in-person": row["offers_in_person"],
            "group": row["offers_group"],
            "virtual": row["offers_virtual"] and patient.virtual_allowed,
        }
        wishes.append(1.0 if offers.get(patient.preferred_delivery) else 0.0)
    if patient.preferred_languages:
        spoken = {_primary_language(x) for x in row["languages"] or []}
        wishes.append(
            1.0 if any(_primary_language(x) in spoken for x in patient.preferred_languages) else 0.0
        )
    if patient.payer:
        wishes.append(1.0 if patient.payer in (row["payers"] or []) else 0.0)
    preferences = sum(wishes) / len(wishes) if wishes else NEUTRAL
    components = {
        "distance": distance,
        "load": load,
        "responsiveness": responsiveness,
        "acceptance": acceptance,
        "continuity": continuity,
        "preferences": preferences,
    }
    candidate.components = {k: round(v, 3) for k, v in components.items()}
    candidate.score = round(sum(WEIGHTS[k] * v for k, v in components.items()), 4)


def routing_plan(
    *,
    referral: Referral,
    patient: PatientFacts,
    now: dt.datetime,
    only_role_ids: list[int] | None = None,
    manual: bool = False,
) -> RoutingPlan:
    """Who may take ``referral`` and in what order. Reads only.

    ``only_role_ids`` limits the pool to those roles (manual routing). ``manual`` leaves out the
    already-offered
    constraint: an admin may offer a referral again to someone who declined it."""
    today = now.date()
    mapping = condition_codes_map(codes=list(referral.reason_codes or []))
    risk = risk_assess(
        condition_groups=mapping.groups,
        clearance=patient.clearance,
        precautions=patient.precautions,
        screening=patient.screening,
        unknown_conditions=bool(mapping.unmapped),
    )
    flags: list[str] = []
    if mapping.unmapped:
        flags.append("unmapped-condition-code")
    flags.extend(risk.flags)

    place = patient_place(
        latitude=patient.latitude,
        longitude=patient.longitude,
        postal_code=patient.postal_code or referral.patient_postal_code,
        state=patient.state,
    )
    if place is None:
        flags.append("address-not-placed")
    elif patient.virtual_allowed and not place.state:
        flags.append("patient-state-unknown")

    directed_references = [
        ref
        for ref in dict.fromkeys(
            [referral.performer_reference, referral.owner_reference if referral.is_directed else ""]
        )
        if ref
    ]
    if place is None and only_role_ids is None:
        summary = {"considered": 0, "eligible": 0, "excluded": {}, "risk_tier": risk.tier, "pool": {}}
        return RoutingPlan(place, mapping, risk, flags, [], summary, directed_references)

    rows, pool = _pools(
        place=place,
        patient=patient,
        directed_references=directed_references,
        only_role_ids=only_role_ids,
        referral_id=referral.pk,
    )
    # Credentials of the pool's professionals (plain SQL: one short row each), and what each type covers.
    types = credential_type_scopes()
    credentials = defaultdict(list)  # professional id → [(type id, expires_on, verified, state)]
    professionals = sorted({r["professional_id"] for r in rows.values()})
    if professionals:
        marks = ", ".join(["%s"] * len(professionals))
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT professional_id, type_id, expires_on, verified_at IS NOT NULL"
                f" FROM {Credential._meta.db_table}"
                f" WHERE professional_id IN ({marks})",
                professionals,
            )
            for professional_id, type_id, expires_on, verified in cursor.fetchall():
                expires_on = _as_date(expires_on)
                state = "unverified" if not verified else "expired" if expires_on < today else "current"
                credentials[professional_id].append((type_id, expires_on, verified, state))
    restrictions = defaultdict(set)
    restricted_ids = [r["id"] for r in rows.values() if r["restricted"]]
    if restricted_ids:  # rare: read only when the pool query saw one
        for role_id, slug in ProfessionalRole.only_condition_groups.through.objects.filter(
            professionalrole_id__in=restricted_ids
        ).values_list("professionalrole_id", "conditiongroup__slug"):
            restrictions[role_id].add(slug)

    required = mapping.group_slugs
    language = _primary_language(patient.required_language)
    candidates: dict[int, Candidate] = {}
    for row in rows.values():
        name = f"{row['given_name']} {row['family_name']}".strip()
        candidate = Candidate(
            role_id=row["id"],
            fhir_id=row["fhir_id"],
            name=name,
            organization=row["organization_name"],
            organization_id=row["organization_id"],
            directed=row["directed"],
        )
        candidates[row["id"]] = candidate
        failures = candidate.excluded
        if row["offered"] and not manual:
            failures.append(("already-offered", "offered this referral before"))
        if not row["active"]:
            failures.append(("role-inactive", "role is inactive"))
        if not row["professional_active"]:
            failures.append(("professional-inactive", "professional is inactive"))
        if not row["organization_active"]:
            failures.append(("organization-inactive", f"{row['organization_name']} is inactive"))
        if not row["accepting"]:
            failures.append(("not-accepting", "not taking new referrals"))
        for paused_until, whose in (
            (row["paused_until"], "role"),
            (row["organization_paused_until"], "organization"),
        ):
            if paused_until and today < paused_until:
                failures.append(("paused", f"{whose} paused until {paused_until.isoformat()}"))
        failures.extend(
            _qualification(
                required=required,
                tier=risk.tier,
                credentials=credentials[row["professional_id"]],
                types=types,
                restricted=restrictions[row["id"]],
                role_max_tier=row["max_risk_tier"],
            )
        )

        # Where it can be delivered: in person within the radius, else by video where allowed.
        lat, lon = row["latitude"], row["longitude"]
        if place is not None and lat is not None and lon is not None:
            candidate.distance_km = haversine_km(place.latitude, place.longitude, lat, lon)
        within = candidate.distance_km is not None and candidate.distance_km <= row["service_radius_km"]
        in_person = within and (row["offers_in_person"] or row["offers_group"])
        virtual = (
            patient.virtual_allowed
            and row["offers_virtual"]
            and place is not None
            and bool(place.state)
            and row["state"] == place.state
        )
        if in_person and not (virtual and patient.preferred_delivery == "virtual"):
            candidate.delivery = "in-person"
        elif virtual:
            candidate.delivery = "virtual"
        elif place is None:
            failures.append(("outside-service-area", "the patient's address could not be placed"))
        elif candidate.distance_km is None:
            failures.append(
                ("outside-service-area", "the site has no coordinates and no virtual delivery applies")
            )
        elif within:
            failures.append(
                ("outside-service-area", "offers only virtual sessions; the referral does not allow them")
            )
        else:
            detail = f"{candidate.distance_km:.1f} km away; serves {row['service_radius_km']:g} km"
            if row["offers_virtual"] and not patient.virtual_allowed:
                detail += "; virtual delivery not allowed by the referral"
            elif row["offers_virtual"]:
                detail += (
                    f"; virtual only in {row['state'] or 'no state'}, patient in {place.state or 'unknown'}"
                )
            failures.append(("outside-service-area", detail))

        if language:
            spoken = {_primary_language(x) for x in row["languages"] or []}
            if language not in spoken:
                failures.append(("language", f"does not speak {patient.required_language}"))
        active = row["active_cases"]
        if active >= row["max_active_cases"]:
            failures.append(("at-capacity", f"{active} active cases of {row['max_active_cases']}"))

    eligible = [c for c in candidates.values() if c.eligible]
    history, continuity_orgs = _history(
        role_ids=[c.role_id for c in eligible],
        organization_ids={c.organization_id for c in eligible},
        clinic_id=referral.clinic_id,
        now=now,
    )
    for candidate in eligible:
        row = rows[candidate.role_id]
        # Continuity: this practice took one of the clinic's referrals in the last year.
        continuity = 1.0 if candidate.organization_id in continuity_orgs else 0.0
        _score(
            candidate,
            row,
            active=row["active_cases"],
            stats=history.get(candidate.role_id),
            continuity=continuity,
            patient=patient,
        )

    def far_last(c: Candidate) -> float:
        return float("inf") if c.distance_km is None else c.distance_km

    eligible.sort(key=lambda c: (not c.directed, -(c.score or 0.0), far_last(c), c.role_id))
    for rank, candidate in enumerate(eligible, start=1):
        candidate.rank = rank
    excluded = sorted(
        (c for c in candidates.values() if not c.eligible), key=lambda c: (far_last(c), c.role_id)
    )

    if directed_references and not any(c.directed for c in candidates.values()):
        flags.append("directed-member-not-found")
    elif directed_references and not any(c.directed for c in eligible):
        flags.append("directed-member-not-eligible")
    summary = {
        "considered": len(candidates),
        "eligible": len(eligible),
        "excluded": dict(Counter(c.excluded[0][0] for c in excluded)),
        "risk_tier": risk.tier,
        "pool": pool,
    }
    return RoutingPlan(place, mapping, risk, flags, eligible + excluded, summary, directed_references)


# --- The gist for the physician -----------------------------------------------------------------------------


def _excluded_words(summary: dict) -> str:
    parts = Counter()
    for constraint, n in summary.get("excluded", {}).items():
        parts[CONSTRAINTS.get(constraint, constraint)] += n
    return ", ".join(f"{n} {words}" for words, n in parts.most_common())


def _where(candidate: Candidate) -> str:
    if candidate.delivery == "virtual":
        return "by video"
    if candidate.distance_km is None:
        return "in person"
    return f"in person, {candidate.distance_km:.1f} km from the patient"


def routing_gist(*, plan: RoutingPlan, chosen: Candidate | None) -> str:
    """One line for the physician: who, why, and who was left out and for what (no patient details)."""
    if plan.place is None and "address-not-placed" in plan.flags and not plan.candidates:
        line = "The patient's address could not be placed on the map; a coordinator will route this referral."
    elif chosen is None:
        considered = plan.summary.get("considered", 0)
        why = _excluded_words(plan.summary)
        line = (
            f"No qualified professional with room was found ({considered} considered"
            + (f": {why}" if why else "")
            + "); a coordinator will route this referral."
        )
    else:
        line = f"Offered to {chosen.name} ({chosen.organization}), {_where(chosen)}"
        if chosen.directed:
            line += ", as the clinic asked"
        else:
            line += (
                f": best of {plan.summary['eligible']} eligible among {plan.summary['considered']} considered"
            )
            why = _excluded_words(plan.summary)
            if why:
                line += f" ({why})"
        line += "."
    directed_out = [c for c in plan.directed_candidates if not c.eligible]
    if directed_out and not (chosen and chosen.directed):
        first = directed_out[0]
        line = (
            f"{first.name}, named by the clinic, cannot take it ({CONSTRAINTS.get(first.excluded[0][0])}). "
            + line
        )
    if plan.mapping.unmapped:
        codes = ", ".join(u["code"] or u["display"] or "?" for u in plan.mapping.unmapped)
        line += f" Not in the hub's condition map, for review: {codes}."
    return line[:500]
