"""The routing engine: who may take a referral (hard constraints), then who should (a score).

``routing_plan`` reads the database and writes nothing; referrals/offers.py turns a plan into a stored
RoutingDecision and an offer, under the locks that keep capacity honest.

How a plan is made (one query in all; see referrals/README.md):
1. Map the referral's condition codes to groups (unmapped codes are kept and flagged) and assess the patient's
   risk tier (referrals/risk.py).
2. Place the patient: the geolocation the EHR sent, else the ZIP centroid; unplaceable → no candidates, a
   coordinator routes it.
3. The pool, pre-filtered in SQL: roles whose site lies in a bounding box sized by the largest service radius
   in the network (an index on site latitude/longitude) and whose own radius reaches the patient, the nearest
   ``IN_PERSON_POOL_LIMIT`` of them; when the referral allows virtual delivery, the nearest
   ``VIRTUAL_POOL_LIMIT`` virtual roles in the patient's state; and every role the referral names (directed).
   With each role come its capacity use, credentials, restrictions and history, and with the pool the code map
   rows and the credential types of step 1: the plan reads the database once.
4. Every hard constraint is checked for every candidate in the pool, and every failure is recorded.
5. The eligible are scored; a directed member who is eligible comes first whatever the score.
"""

import datetime as dt
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

from django.conf import settings
from django.db import connection

from network.geo import KM_PER_DEGREE_LATITUDE, Place, haversine_km, patient_place
from network.models import (
    ConditionGroup,
    Credential,
    Organization,
    Professional,
    ProfessionalRole,
    Site,
)
from network.selectors import (
    ConditionMapping,
    network_member_roles,
    qualification_parse,
    qualification_sql,
    sql_json,
    sql_json_value,
)
from referrals.models import Offer, OfferStatus, Referral
from referrals.risk import RiskProfile, Screening, risk_assess
from referrals.scorecards import outcome_component, scorecards_current
from referrals.selectors import active_cases_sql

# Bounds on the work of one decision, whatever the size of the network. A truncated pool is said in the
# summary.
IN_PERSON_POOL_LIMIT = 100
VIRTUAL_POOL_LIMIT = 100
# The virtual pool looks this far around the patient first, and through the whole state only when it finds
# fewer than VIRTUAL_POOL_LIMIT there (routing.py::_virtual_parts).
VIRTUAL_NEAR_KM = 100.0
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
# The outcome scorecards (referrals/scorecards.py) may join the score as "outcomes", off unless
# HUB_ROUTING_OUTCOME_WEIGHT_PERCENT is set: then it takes that share and the others shrink in proportion.
OUTCOMES = "outcomes"


def routing_weights() -> dict[str, float]:
    """The score's weights now: WEIGHTS, or with ``outcomes`` at HUB_ROUTING_OUTCOME_WEIGHT_PERCENT (they sum
    to 1 either way)."""
    share = settings.HUB_ROUTING_OUTCOME_WEIGHT_PERCENT / 100
    if not share:
        return WEIGHTS
    return {**{name: round(w * (1 - share), 4) for name, w in WEIGHTS.items()}, OUTCOMES: share}

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
    - clearance, precautions, screening: see referrals/risk.py for where they sit in the ServiceRequest;
    - required_language: a BCP 47 tag the professional must speak (Patient.communication, when an interpreter
      would otherwise be needed); preferred_languages only count towards the score;
    - virtual_allowed: the referral accepts video sessions; preferred_delivery: "in-person", "virtual" or
      "group";
    - payer: the payer identifier the patient would use (scored, not required).
    """

    latitude: float | None = None
    longitude: float | None = None
    location_source: str = ""  # how latitude/longitude were found (ClinicalFacts.LocationSource); "" not placed
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
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        values["precautions"] = tuple(values.get("precautions") or ())
        values["preferred_languages"] = tuple(values.get("preferred_languages") or ())
        return cls(screening=Screening(**screening) if screening else None, **values)


def referral_patient_facts(*, referral: Referral) -> PatientFacts:
    """What routing needs to know about the patient, from the referral's ClinicalFacts (the same for the first
    run, a reroute after a decline or an expiry, and a coordinator's run)."""
    facts = referral.facts
    delivery = set(facts.delivery_modes)
    return PatientFacts(
        latitude=facts.latitude,
        longitude=facts.longitude,
        location_source=facts.location_source,
        postal_code=referral.patient_postal_code,
        state=facts.state,
        clearance=facts.clearance or None,
        precautions=tuple(facts.precautions),
        screening=Screening(
            currently_active=facts.currently_active, known_disease=facts.known_disease, symptoms=facts.symptoms
        ),
        required_language=facts.required_language,
        preferred_languages=tuple(facts.preferred_languages),
        virtual_allowed=bool(delivery & {"virtual", "virtual-ok"}),
        preferred_delivery=next((d for d in ("in-person", "virtual", "group") if d in delivery), ""),
        payer=facts.payer,
    )


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


# The pool is one plain SQL statement (portable to SQLite and PostgreSQL). It runs on every decision: one
# round trip that brings everything the constraints and the score need costs less than one per kind of fact,
# and building it through the ORM cost more than running it.
#
# Its shape keeps the database's work bounded by the pool, not the network: each pool is a derived table that
# reads its sites and their roles by index, orders and limits them (_pool_part); for the few roles that
# survive, everything else is a correlated subquery per row (index probes), which leaves the planner no join
# order to search and no choice of a scan over a whole table. The answer is one JSON document, a list with one
# array per role: one parse instead of a conversion per value.
#
# The array's items, in order; _row() turns one into a dict of these names. The pool parts read only what the
# covering index on the role's site holds (migrations/0004_role_pool_indexes.py) and the sites' columns, and
# add ``pool`` and ``d2`` (the squared distance to the patient, km²).
_PART_COLUMNS = (
    ("id", "r.id"),
    ("professional_id", "r.professional_id"),
    ("organization_id", "r.organization_id"),
    ("service_radius_km", "r.service_radius_km"),
    ("latitude", "s.latitude"),
    ("longitude", "s.longitude"),
    ("state", "s.state"),
)
# Then the rest of the role, with its professional's and organization's, as one array read by primary key.
_ROLE_COLUMNS = (
    ("fhir_id", "r.fhir_id"),
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
    ("given_name", "p.given_name"),
    ("family_name", "p.family_name"),
    ("professional_active", "p.active"),
    ("organization_name", "o.name"),
    ("organization_active", "o.active"),
    ("organization_paused_until", "o.paused_until"),
)
_ROLE_JSON_COLUMNS = ("languages", "payers")
# Then, per role (see _pool_sql): its live cases; offered this referral before; the condition groups an
# admin restricted it to (null or [] for none); its professional's credentials, [[id, type id, expires_on,
# verified]]; its past answers over STATS_WINDOW, [accepted, rejected, expired, mean response seconds] (nulls
# without any); and whether its organization accepted one of this clinic's referrals in that window.
_PER_ROLE = ("active_cases", "offered", "restricted", "credentials", "history", "continuity")
_POOL_NAMES = tuple(name for name, _ in _PART_COLUMNS) + ("pool", "d2", "role") + _PER_ROLE
_DATE_COLUMNS = ("organization_paused_until", "paused_until")

# The pools, as the statement labels their rows (our constants: they are written into the SQL).
DIRECTED, IN_PERSON, VIRTUAL, ONLY = "directed", "in-person", "virtual", "only"

# The squared flat-earth distance from the patient to the site ``s``, in km² (placeholders: _distance_params).
_D2 = (
    "((s.longitude - %s) * %s) * ((s.longitude - %s) * %s)"
    " + ((s.latitude - %s) * %s) * ((s.latitude - %s) * %s)"
)


def _pool_part(pool: str, *, where: str, order_limit: str = "", name: str = "", only_if: str = "") -> str:
    """One pool: the roles that ``where`` selects (over the role ``r`` and its site ``s``), ordered and
    limited by ``order_limit`` (which may use ``d2``), with their role and site columns; read only if the
    condition ``only_if`` holds, when given (PostgreSQL skips the part otherwise). A derived table, so that
    its own ORDER BY and LIMIT hold inside a UNION ALL on SQLite too. Placeholders: the distance terms (8),
    then those of ``where``, ``order_limit`` and ``only_if``."""
    role, site = ProfessionalRole._meta.db_table, Site._meta.db_table
    columns = ", ".join(f"{sql} AS {column}" for column, sql in _PART_COLUMNS)
    return (
        f"SELECT * FROM (SELECT {columns}, '{pool}' AS pool, {_D2} AS d2"
        f" FROM {role} r LEFT JOIN {site} s ON s.id = r.site_id WHERE {where} {order_limit})"
        f" AS pool_{(name or pool).replace('-', '_')}{f' WHERE {only_if}' if only_if else ''}"
    )


def _pool_sql(parts: list[str]) -> str:
    """The pools' roles (``parts``, see _pool_part) as one JSON list of arrays (_POOL_NAMES), each with: the
    rest of the role with its professional and organization; its live cases (the capacity count,
    selectors.active_cases_sql); whether this referral was offered to it before; the condition groups an admin
    restricted it to; its professional's credentials; its answers to past offers over STATS_WINDOW
    (responsiveness, acceptance); and whether its organization accepted one of the clinic's referrals in that
    window (continuity). Placeholders: the referral id, the window's start, the clinic and the window's start
    again, then those of the parts."""
    role, professional = ProfessionalRole._meta.db_table, Professional._meta.db_table
    organization = Organization._meta.db_table
    offer, referral, credential = Offer._meta.db_table, Referral._meta.db_table, Credential._meta.db_table
    through = ProfessionalRole.only_condition_groups.through._meta.db_table
    group = ConditionGroup._meta.db_table
    accepted, rejected, expired = OfferStatus.ACCEPTED, OfferStatus.REJECTED, OfferStatus.EXPIRED
    # SQLite keeps JSON as text: json() keeps it from being quoted as a string inside an array.
    nested = "({})" if connection.vendor == "postgresql" else "json(({}))"
    role_columns = [nested.format(sql) if name in _ROLE_JSON_COLUMNS else sql for name, sql in _ROLE_COLUMNS]
    credential_columns = ("cr.id", "cr.type_id", "cr.expires_on", "cr.verified_at IS NOT NULL")
    answers = sql_json(
        f"SUM(CASE WHEN a.status = '{accepted}' THEN 1 ELSE 0 END)",
        f"SUM(CASE WHEN a.status = '{rejected}' THEN 1 ELSE 0 END)",
        f"SUM(CASE WHEN a.status = '{expired}' THEN 1 ELSE 0 END)",
        "AVG(a.response_seconds)",
    )
    # Scalar subqueries rather than joins or EXISTS: PostgreSQL runs each as an index probe per row, where a
    # join or an EXISTS estimated on a few rows could become a hash over the whole table. "Offered before"
    # is the one set read once (a referral has a handful of offers).
    per_role = [
        *(f"k.{name}" for name, _ in _PART_COLUMNS),
        "k.pool",
        "k.d2",
        nested.format(
            f"SELECT {sql_json(*role_columns)} FROM {role} r"
            f" JOIN {professional} p ON p.id = r.professional_id"
            f" JOIN {organization} o ON o.id = r.organization_id"
            " WHERE r.id = k.id"
        ),
        f"({active_cases_sql('k.id')})",
        f"k.id IN (SELECT x.role_id FROM {offer} x WHERE x.referral_id = %s)",
        nested.format(
            f"SELECT {sql_json('g.slug', aggregate=True)} FROM {through} t"
            f" JOIN {group} g ON g.id = t.conditiongroup_id WHERE t.professionalrole_id = k.id"
        ),
        nested.format(
            f"SELECT {sql_json(*credential_columns, aggregate=True)}"
            f" FROM {credential} cr WHERE cr.professional_id = k.professional_id"
        ),
        nested.format(f"SELECT {answers} FROM {offer} a WHERE a.role_id = k.id AND a.created_at >= %s"),
        f"""(
            SELECT 1 FROM {offer} b JOIN {referral} rr ON rr.id = b.referral_id
            WHERE b.organization_id = k.organization_id AND b.status = '{accepted}'
                AND rr.clinic_id = %s AND b.created_at >= %s
            LIMIT 1
        )""",
    ]
    return f"SELECT {sql_json(*per_role, aggregate=True)} FROM ({' UNION ALL '.join(parts)}) AS k"


def _distance_params(place: Place | None) -> list[float]:
    if place is None:
        return [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    kx = KM_PER_DEGREE_LATITUDE * math.cos(math.radians(place.latitude))
    ky = KM_PER_DEGREE_LATITUDE
    return [place.longitude, kx, place.longitude, kx, place.latitude, ky, place.latitude, ky]


def _as_date(value):
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def _row(values: list) -> dict:
    row = dict(zip(_POOL_NAMES, values))
    row.update(zip((name for name, _ in _ROLE_COLUMNS), row.pop("role")))
    for name in _DATE_COLUMNS:
        row[name] = _as_date(row[name])
    return row


def _virtual_parts(place: Place, distance: list[float]) -> tuple[list[str], list]:
    """The virtual pool: the nearest VIRTUAL_POOL_LIMIT virtual roles of sites in the patient's state
    (licensure), those without coordinates last. Two parts, of which the database reads one:

    - when at least the limit of them lie within VIRTUAL_NEAR_KM of the patient, those, found through the
      latitude/longitude index in a box around the patient (every site within that distance is in the box, and
      every site outside it is farther, so they are the nearest of the whole state);
    - otherwise every virtual role in the state, nearest first (a rural patient, a sparse network).

    The common case reads a neighbourhood, not a state: a large state holds thousands of sites at 100k
    professionals. "IS NOT FALSE" (the column is never NULL) on purpose: it does not match the partial index
    role_virtual_site, which tempts PostgreSQL into reading every virtual role of the network and hashing them
    against the state's sites; without it, each site is probed in role_site_pool (index-only)."""
    role, site = ProfessionalRole._meta.db_table, Site._meta.db_table
    virtual = "r.offers_virtual IS NOT FALSE AND s.state = %s"
    dlat = VIRTUAL_NEAR_KM / KM_PER_DEGREE_LATITUDE
    dlon = VIRTUAL_NEAR_KM / (KM_PER_DEGREE_LATITUDE * math.cos(math.radians(min(89.0, abs(place.latitude)))))
    near = f"s.latitude BETWEEN %s AND %s AND s.longitude BETWEEN %s AND %s AND {virtual} AND {_D2} <= %s"
    near_params = [
        place.latitude - dlat,
        place.latitude + dlat,
        place.longitude - dlon,
        place.longitude + dlon,
        place.state,
        *distance,
        VIRTUAL_NEAR_KM * VIRTUAL_NEAR_KM,
    ]
    enough = (
        f"(SELECT COUNT(*) FROM (SELECT 1 FROM {role} r JOIN {site} s ON s.id = r.site_id"
        f" WHERE {near} LIMIT %s) AS near) >= %s"
    )
    enough_params = near_params + [VIRTUAL_POOL_LIMIT, VIRTUAL_POOL_LIMIT]
    parts = [
        _pool_part(
            VIRTUAL, name="virtual_near", where=near, order_limit="ORDER BY d2, r.id LIMIT %s", only_if=enough
        ),
        _pool_part(
            VIRTUAL,
            where=virtual,
            order_limit="ORDER BY (s.latitude IS NULL), d2, r.id LIMIT %s",
            only_if=f"NOT ({enough})",
        ),
    ]
    params = distance + near_params + [VIRTUAL_POOL_LIMIT] + enough_params
    params += distance + [place.state, VIRTUAL_POOL_LIMIT] + enough_params
    return parts, params


def _pool_statement(
    *,
    place: Place | None,
    patient: PatientFacts,
    directed_references: list[str],
    only_role_ids,
    referral_id: int,
    clinic_id: int,
    since: dt.datetime,
) -> tuple[str, list] | None:
    """The pool query (_pool_sql) for this referral and its parameters, or None when there is no pool to read
    (no place, nobody named)."""
    distance = _distance_params(place)
    parts, params = [], []
    if only_role_ids:
        marks = ", ".join(["%s"] * len(only_role_ids))
        parts.append(_pool_part(ONLY, where=f"r.id IN ({marks})"))
        params += distance + list(only_role_ids)
    elif only_role_ids is None:
        for reference in directed_references:
            members = network_member_roles(reference=reference)
            if members.query.is_empty():
                continue
            sql, member_params = (
                members.order_by("id").values("id")[:DIRECTED_POOL_LIMIT].query.sql_with_params()
            )
            parts.append(_pool_part(DIRECTED, where=f"r.id IN ({sql})"))
            params += distance + list(member_params)
        if place is not None:
            # The box is sized by the largest radius anyone serves (MAX over its index, once per query), so
            # that it holds every role that might reach the patient: on latitude exactly, on longitude with
            # the cosine taken at the box's edge for the largest radius allowed (500 km), a little wider than
            # needed and never narrower. The database then keeps those whose own radius reaches the patient,
            # nearest first.
            max_radius = f"(SELECT MAX(service_radius_km) FROM {ProfessionalRole._meta.db_table})"
            dlat = 1.01 / KM_PER_DEGREE_LATITUDE
            edge = min(89.0, abs(place.latitude) + 500.0 / KM_PER_DEGREE_LATITUDE * 1.01)
            dlon = 1.01 / (KM_PER_DEGREE_LATITUDE * math.cos(math.radians(edge)))
            where = (
                f"s.latitude BETWEEN %s - {max_radius} * %s AND %s + {max_radius} * %s"
                f" AND s.longitude BETWEEN %s - {max_radius} * %s AND %s + {max_radius} * %s"
                # 3% slack on the square (1.5% on the distance) for the flat-earth approximation.
                f" AND {_D2} <= r.service_radius_km * r.service_radius_km * 1.03"
            )
            parts.append(_pool_part(IN_PERSON, where=where, order_limit="ORDER BY d2, r.id LIMIT %s"))
            box = [place.latitude, dlat, place.latitude, dlat, place.longitude, dlon, place.longitude, dlon]
            params += distance + box + distance + [IN_PERSON_POOL_LIMIT + 1]
            if patient.virtual_allowed and place.state:
                part, part_params = _virtual_parts(place, distance)
                parts += part
                params += part_params
    if not parts:
        return None
    return _pool_sql(parts), [referral_id, since, clinic_id, since] + params


def _pools(*, document, place: Place | None, patient: PatientFacts, only_role_ids) -> tuple[dict, dict]:
    """The candidate rows of the pool query's ``document`` (dicts, plus ``directed``), and what bounded the
    pools."""
    rows: dict[int, dict] = {}
    pools: dict[int, set] = defaultdict(set)  # role id → the pools it came from
    listed: dict[str, list[int]] = defaultdict(list)  # pool → its role ids, in its order
    found = [_row(values) for values in sql_json_value(document) or ()]
    # Each pool in its own order: nearest first (sites without coordinates last), then by id.
    found.sort(key=lambda r: (r["pool"], r["d2"] is None, r["d2"] or 0.0, r["id"]))
    for row in found:
        kind = row.pop("pool")
        listed[kind].append(row["id"])
        pools[row["id"]].add(kind)
        rows.setdefault(row["id"], row)

    pool: dict = {}
    if only_role_ids is not None:
        pool["only"] = len(listed[ONLY])
    else:
        pool["directed"] = len(set(listed[DIRECTED]))
        if place is not None:
            in_person = listed[IN_PERSON]
            pool["in_person"] = min(len(in_person), IN_PERSON_POOL_LIMIT)
            pool["in_person_truncated"] = len(in_person) > IN_PERSON_POOL_LIMIT
            if pool["in_person_truncated"] and pools[in_person[-1]] == {IN_PERSON}:
                del rows[in_person[-1]]  # read only to know that there are more than the limit
            if patient.virtual_allowed and place.state:
                pool["virtual"] = len(listed[VIRTUAL])
                pool["virtual_truncated"] = len(listed[VIRTUAL]) >= VIRTUAL_POOL_LIMIT
    for role_id, row in rows.items():
        row["directed"] = DIRECTED in pools[role_id]
    return rows, pool


def _credentials_held(credentials: list | None, today: dt.date) -> tuple:
    """The pool row's credentials as (type id, expires_on, state), in credential id order. Hashable: it is
    part of the key that judges each mix of credentials once per plan."""
    held = []
    for _, type_id, expires_on, verified in sorted(credentials or ()):
        expires_on = _as_date(expires_on)
        state = "unverified" if not verified else "expired" if expires_on < today else "current"
        held.append((type_id, expires_on, state))
    return tuple(held)


def _primary_language(tag: str) -> str:
    return (tag or "").strip().lower().split("-")[0]


def _qualification(
    *,
    required: list[str],
    tier: int,
    credentials: tuple,  # _credentials_held
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

    current = [c[0] for c in credentials if c[2] == "current"]
    missing = uncovered(current)
    if missing:
        held = ", ".join(sorted({types[t].slug for t in current})) or "none"
        need = f"no current credential covers {', '.join(missing)} at risk tier {tier} (current: {held})"
        expired = [c for c in credentials if c[2] == "expired"]
        unverified = [c for c in credentials if c[2] == "unverified"]
        if expired and not uncovered(current + [c[0] for c in expired]):
            names = ", ".join(f"{types[c[0]].slug} expired {c[1].isoformat()}" for c in expired)
            failures.append(("credential-expired", f"{need}; {names}"))
        elif unverified and not uncovered(current + [c[0] for c in unverified]):
            names = ", ".join(types[c[0]].slug for c in unverified)
            failures.append(("credential-unverified", f"{need}; not verified: {names}"))
        else:
            failures.append(("not-qualified", need))
    return failures


def _score(
    candidate: Candidate, row: dict, *, patient: PatientFacts, weights: dict = WEIGHTS,
    outcomes: dict | None = None, condition_groups: list[str] = (),
) -> None:
    """Score an eligible ``candidate`` from its pool row (_row), with ``weights`` (routing_weights); when they
    weigh outcomes, ``outcomes`` is the shown scorecards' lookup (Scorecards.lookup) and ``condition_groups``
    the referral's."""
    if candidate.delivery == "virtual" or candidate.distance_km is None:
        distance = NEUTRAL
    else:
        distance = 1.0 / (1.0 + candidate.distance_km / 10.0)  # 1 at the door, 0.5 at 10 km, 0.25 at 30 km
    load = 1.0 - row["active_cases"] / row["max_active_cases"] if row["max_active_cases"] else 0.0
    # Answers in STATS_WINDOW; all null when there were none.
    accepted, rejected, expired, response_seconds = row["history"] or (None, None, None, None)
    if response_seconds is not None:
        responsiveness = 1.0 - min(float(response_seconds) / 3600.0, 48.0) / 48.0
    else:
        responsiveness = NEUTRAL
    if accepted is not None:
        acceptance = (accepted + 1) / (accepted + rejected + expired + 2)  # Laplace: no history is 0.5
    else:
        acceptance = NEUTRAL
    # This practice took one of the clinic's referrals in the window.
    continuity = 1.0 if row["continuity"] else 0.0
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
    if OUTCOMES in weights:
        components[OUTCOMES], _ = outcome_component(
            scorecards=outcomes or {}, professional_id=row["professional_id"],
            organization_id=row["organization_id"], condition_groups=list(condition_groups), neutral=NEUTRAL,
        )
    candidate.components = {k: round(v, 3) for k, v in components.items()}
    candidate.score = round(sum(weights[k] * v for k, v in components.items()), 4)


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
    already-offered constraint: an admin may offer a referral again to someone who declined it."""
    today = now.date()
    codes = list(referral.facts.condition_codes)
    if patient.location_source and patient.latitude is not None and patient.longitude is not None:
        place = Place(
            latitude=patient.latitude, longitude=patient.longitude, state=patient.state, source=patient.location_source
        )
    else:  # placed when the referral was opened, or never: a ZIP added to the code data since is not looked up
        place = patient_place(
            latitude=patient.latitude,
            longitude=patient.longitude,
            postal_code=patient.postal_code or referral.patient_postal_code,
            state=patient.state,
        )
    directed_references = [
        ref
        for ref in dict.fromkeys(
            [referral.performer_reference, referral.owner_reference if referral.is_directed else ""]
        )
        if ref
    ]
    pool_statement = None
    if place is not None or only_role_ids is not None:
        pool_statement = _pool_statement(
            place=place,
            patient=patient,
            directed_references=directed_references,
            only_role_ids=only_role_ids,
            referral_id=referral.pk,
            clinic_id=referral.clinic_id,
            since=now - STATS_WINDOW,
        )
    # One round trip: what the codes map to and what each credential type covers, and the pool.
    sql, params = qualification_sql(codes=codes)
    if pool_statement is not None:
        sql, params = f"{sql}, ({pool_statement[0]})", params + pool_statement[1]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {sql}", params)
        code_rows, type_rows, *document = cursor.fetchone()
    mapping, types = qualification_parse(codes=codes, code_rows=code_rows, type_rows=type_rows)

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
    if place is None:
        flags.append("address-not-placed")
    elif patient.virtual_allowed and not place.state:
        flags.append("patient-state-unknown")

    if place is None and only_role_ids is None:
        summary = {"considered": 0, "eligible": 0, "excluded": {}, "risk_tier": risk.tier, "pool": {}}
        return RoutingPlan(place, mapping, risk, flags, [], summary, directed_references)

    rows, pool = _pools(
        document=document[0] if document else None, place=place, patient=patient, only_role_ids=only_role_ids
    )
    required = mapping.group_slugs
    language = _primary_language(patient.required_language)
    qualified: dict[tuple, list[tuple[str, str]]] = {}
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
        # Many people share a mix of credentials: each mix is judged once per plan.
        held = _credentials_held(row["credentials"], today)
        restricted = frozenset(row["restricted"] or ())
        key = (held, restricted, row["max_risk_tier"])
        if key not in qualified:
            qualified[key] = _qualification(
                required=required,
                tier=risk.tier,
                credentials=held,
                types=types,
                restricted=restricted,
                role_max_tier=row["max_risk_tier"],
            )
        failures.extend(qualified[key])

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
    weights = routing_weights()
    outcomes = scorecards_current(now=now).lookup() if OUTCOMES in weights and eligible else None
    for candidate in eligible:
        _score(candidate, rows[candidate.role_id], patient=patient, weights=weights, outcomes=outcomes,
               condition_groups=required)

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
    if OUTCOMES in weights:  # every explanation that weighed outcomes says by how much
        summary["weights"] = dict(weights)
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
        if OUTCOMES in plan.summary.get("weights", {}):
            line += f" Patients' past outcomes weighed {plan.summary['weights'][OUTCOMES]:.0%} of the score."
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
