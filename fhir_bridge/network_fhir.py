"""The community network as read-only FHIR: Organization, Location, Practitioner, PractitionerRole and
HealthcareService, rendered from the network's own tables (the truth), never stored twice.

Each resource's version is its row's ``updated_at``: meta.lastUpdated is that instant, and meta.versionId its epoch
milliseconds, which only ever grow. No history is kept of the network (it is not PHI, and an import replaces it).
"""

import datetime as dt
import math

from django.db.models import F, FloatField, Prefetch, Q, QuerySet, Value
from django.db.models.functions import ASin, Cos, Least, Power, Radians, Sin, Sqrt

from fhir_bridge.codes import (
    CONDITION_GROUP_SYSTEM,
    CREDENTIAL_TYPE_SYSTEM,
    NPI_SYSTEM,
    ORGANIZATION_KIND_SYSTEM,
    SDOHCC_CAPACITY_STATUS_EXTENSION,
    SDOHCC_TEMPORARY_SYSTEM,
    SNOMED_SYSTEM,
)
from fhir_bridge.outcomes import error
from fhir_bridge.route_table import TABLE
from fhir_bridge.store import http_date_iso
from network.geo import EARTH_RADIUS_KM
from network.models import Credential, Organization, Professional, ProfessionalRole, Site
from referrals.selectors import role_active_case_counts

PROGRAM_KINDS = (Organization.Kind.YMCA, Organization.Kind.CARDIAC_REHAB, Organization.Kind.WELLNESS)
_EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

# The network's types and their search parameters are the route table's (search.search_plan checks them).
NETWORK_TYPES = tuple(served.name for served in TABLE if served.network)


def last_modified(row) -> dt.datetime:
    return getattr(row, "updated_at", None) or _EPOCH


def _meta(row) -> dict:
    moment = last_modified(row)
    return {"versionId": str(int(moment.timestamp() * 1000)), "lastUpdated": http_date_iso(moment)}


def _ref(resource_type: str, row, display: str | None = None) -> dict:
    ref = {"reference": f"{resource_type}/{row.fhir_id}"}
    if display:
        ref["display"] = display
    return ref


def _telecom(email: str = "", phone: str = "") -> list[dict]:
    return [t for t in ({"system": "email", "value": email, "use": "work"} if email else None,
                        {"system": "phone", "value": phone, "use": "work"} if phone else None) if t]


def organization_render(org: Organization) -> dict:
    resource = {
        "resourceType": "Organization",
        "id": org.fhir_id,
        "meta": _meta(org),
        "active": org.active,
        "type": [{"coding": [{"system": ORGANIZATION_KIND_SYSTEM, "code": org.kind, "display": org.get_kind_display()}]}],
        "name": org.name,
    }
    if telecom := _telecom(org.email, org.phone):
        resource["telecom"] = telecom
    return resource


def location_render(site: Site) -> dict:
    resource = {
        "resourceType": "Location",
        "id": site.fhir_id,
        "meta": _meta(site),
        "status": "active",
        "name": site.name,
        "mode": "instance",
        "address": {k: v for k, v in (
            ("line", [site.line] if site.line else None), ("city", site.city), ("state", site.state),
            ("postalCode", site.postal_code), ("country", "US"),
        ) if v},
        "managingOrganization": _ref("Organization", site.organization, site.organization.name),
    }
    if site.latitude is not None and site.longitude is not None:
        resource["position"] = {"latitude": site.latitude, "longitude": site.longitude}
    return resource


def _current(credentials, today: dt.date) -> list[Credential]:
    """Verified and not expired: the same test routing applies (Credential.is_current)."""
    return [c for c in credentials if c.is_current(today)]


def practitioner_render(professional: Professional, *, today: dt.date | None = None) -> dict:
    today = today or dt.date.today()
    resource = {
        "resourceType": "Practitioner",
        "id": professional.fhir_id,
        "meta": _meta(professional),
        "active": professional.active,
        "name": [{"family": professional.family_name, "given": [professional.given_name] if professional.given_name else []}],
    }
    if professional.npi:
        resource["identifier"] = [{"system": NPI_SYSTEM, "value": professional.npi}]
    qualifications = []
    for credential in _current(professional.credentials.all(), today):
        qualification = {
            "code": {"coding": [{"system": CREDENTIAL_TYPE_SYSTEM, "code": credential.type.slug, "display": credential.type.name}]},
            "period": {"end": credential.expires_on.isoformat()},
        }
        if credential.number:
            qualification["identifier"] = [{"value": credential.number}]
        if credential.issuer or credential.type.issuer:
            qualification["issuer"] = {"display": credential.issuer or credential.type.issuer}
        qualifications.append(qualification)
    if qualifications:
        resource["qualification"] = qualifications
    return resource


def role_condition_groups(role: ProfessionalRole, *, today: dt.date | None = None) -> list:
    """The condition groups a role's current credentials cover, narrowed by the role's own restriction."""
    today = today or dt.date.today()
    groups = {}
    for credential in _current(role.professional.credentials.all(), today):
        for group in credential.type.condition_groups.all():
            groups[group.slug] = group
    only = {g.slug for g in role.only_condition_groups.all()}
    return [groups[slug] for slug in sorted(groups) if not only or slug in only]


def _availability(role: ProfessionalRole, today: dt.date) -> str:
    if not role.active:
        return "Not taking referrals"
    if role.paused_until and role.paused_until > today:
        return f"Paused until {role.paused_until.isoformat()}"
    return "Accepting new referrals" if role.accepting else "Not accepting new referrals"


def practitioner_role_render(role: ProfessionalRole, *, today: dt.date | None = None) -> dict:
    today = today or dt.date.today()
    modalities = [label for flag, label in ((role.offers_in_person, "in person"), (role.offers_group, "group class"),
                                             (role.offers_virtual, "virtual")) if flag]
    resource = {
        "resourceType": "PractitionerRole",
        "id": role.fhir_id,
        "meta": _meta(role),
        "active": role.active,
        "practitioner": _ref("Practitioner", role.professional, role.professional.display_name),
        "organization": _ref("Organization", role.organization, role.organization.name),
        "code": [{"coding": [{"system": SNOMED_SYSTEM, "code": "228239008", "display": "Trainers"}],
                  "text": "Exercise professional (" + ", ".join(modalities) + ")"}],
        "specialty": [
            {"coding": [{"system": CONDITION_GROUP_SYSTEM, "code": g.slug, "display": g.name}]}
            for g in role_condition_groups(role, today=today)
        ],
        "availabilityExceptions": _availability(role, today),
    }
    if role.site_id:
        resource["location"] = [_ref("Location", role.site, role.site.name)]
    if telecom := _telecom(role.email):
        resource["telecom"] = telecom
    return resource


# SDOH Clinical Care's capacity status codes (SDOHCC-ValueSetCapacityStatus, STU3) and their displays.
CAPACITY_STATUS_DISPLAY = {"capacity": "Has Capacity", "no-capacity": "No Capacity",
                           "waitlist": "No Capacity - Has Waitlist"}


def program_capacity(org: Organization, *, today: dt.date) -> tuple[str, str]:
    """A program's capacity status code and a note, from its roles (with ``active_cases`` as ``rows_ready`` sets
    it, else counted here in one grouped query): ``capacity`` when a role that takes referrals now (active,
    accepting, not paused, its professional and organization active) has a free place; ``waitlist`` when such roles
    exist but every place is taken (routing skips them, and a referral that names the program waits with the hub's
    coordinators until a place opens); ``no-capacity`` when none takes referrals."""
    if not org.active:
        return "no-capacity", "Not taking referrals"
    if org.paused_until and today < org.paused_until:
        return "no-capacity", f"Paused until {org.paused_until.isoformat()}"
    taking = [r for r in org.roles.all() if r.active and r.accepting and r.professional.active
              and not r.is_paused(today)]
    if not taking:
        return "no-capacity", "Not taking new referrals"
    _with_load(taking)
    places = sum(r.max_active_cases for r in taking)
    used = sum(min(r.max_active_cases, r.active_cases) for r in taking)
    people = f"{len(taking)} professional{'s' if len(taking) != 1 else ''}"
    if used < places:
        return "capacity", f"{places - used} of {places} places free across {people}"
    return "waitlist", f"All {places} places taken across {people}; new referrals wait for the next free place"


def _with_load(roles: list[ProfessionalRole]) -> None:
    """Set ``active_cases`` on the roles that lack it, in one grouped query (referrals.selectors)."""
    uncounted = [r for r in roles if getattr(r, "active_cases", None) is None]
    if uncounted:
        counts = role_active_case_counts(role_ids=[r.pk for r in uncounted])
        for role in uncounted:
            role.active_cases = counts.get(role.pk, 0)


def healthcare_service_render(org: Organization, *, today: dt.date | None = None) -> dict:
    """A program (YMCA, cardiac rehab, hospital wellness) as a HealthcareService: its sites and what its staff
    are qualified for."""
    today = today or dt.date.today()
    groups = {}
    for role in org.roles.all():
        if role.active:
            for group in role_condition_groups(role, today=today):
                groups[group.slug] = group
    status, notes = program_capacity(org, today=today)
    return {
        "resourceType": "HealthcareService",
        "id": org.fhir_id,
        "meta": _meta(org),
        "extension": [{"url": SDOHCC_CAPACITY_STATUS_EXTENSION, "extension": [
            {"url": "capacityStatus", "valueCodeableConcept": {"coding": [
                {"system": SDOHCC_TEMPORARY_SYSTEM, "code": status, "display": CAPACITY_STATUS_DISPLAY[status]}]}},
            {"url": "capacityNotes", "valueString": notes},
        ]}],
        "active": org.active,
        "providedBy": _ref("Organization", org, org.name),
        "category": [{"coding": [{"system": ORGANIZATION_KIND_SYSTEM, "code": org.kind, "display": org.get_kind_display()}]}],
        "name": f"{org.name} exercise program",
        "location": [_ref("Location", site, site.name) for site in org.sites.all()],
        "specialty": [{"coding": [{"system": CONDITION_GROUP_SYSTEM, "code": g.slug, "display": g.name}]}
                      for slug, g in sorted(groups.items())],
    }


# --- reads ---------------------------------------------------------------------------------------------------

_ROLE_PREFETCH = (
    Prefetch("professional__credentials", queryset=Credential.objects.select_related("type").prefetch_related("type__condition_groups")),
    "only_condition_groups",
)


def _querysets() -> dict[str, QuerySet]:
    return {
        "Organization": Organization.objects.all(),
        "Location": Site.objects.select_related("organization"),
        "Practitioner": Professional.objects.prefetch_related(
            Prefetch("credentials", queryset=Credential.objects.select_related("type"))
        ),
        "PractitionerRole": ProfessionalRole.objects.select_related("professional", "organization", "site")
        .prefetch_related(*_ROLE_PREFETCH),
        "HealthcareService": Organization.objects.filter(kind__in=PROGRAM_KINDS).prefetch_related(
            "sites",
            Prefetch("roles", queryset=ProfessionalRole.objects.select_related("professional")
                     .prefetch_related(*_ROLE_PREFETCH)),
        ),
    }


RENDER = {
    "Organization": organization_render,
    "Location": location_render,
    "Practitioner": practitioner_render,
    "PractitionerRole": practitioner_role_render,
    "HealthcareService": healthcare_service_render,
}


def rows_ready(resource_type: str, rows: list) -> list:
    """Complete fetched rows for RENDER: a HealthcareService's roles get ``active_cases``, the load of every role
    of every row counted in one grouped query (referrals.selectors.role_active_case_counts), not one per role.
    Returns ``rows``."""
    if resource_type == "HealthcareService":
        _with_load([role for org in rows for role in org.roles.all()])
    return rows


def network_read(resource_type: str, fhir_id: str):
    """The row behind a network resource, ready to render (``rows_ready``), or None."""
    row = _querysets()[resource_type].filter(fhir_id=fhir_id).first()
    return row if row is None else rows_ready(resource_type, [row])[0]


def _reference_id(value: str, resource_type: str) -> str:
    value = value.rstrip("/").split("/")
    if len(value) >= 2 and value[-2] != resource_type:
        return ""
    return value[-1]


def _near(raw: str) -> tuple[float, float, float]:
    """near=lat|long|distance|units (units km or mi; 10 km when left out)."""
    parts = raw.split("|")
    try:
        lat, lon = float(parts[0]), float(parts[1])
        distance = float(parts[2]) if len(parts) > 2 and parts[2] else 10.0
    except (ValueError, IndexError):
        raise error(400, "invalid", "near takes latitude|longitude|distance|units, e.g. near=39.78|-89.65|10|km", "near") from None
    units = parts[3] if len(parts) > 3 and parts[3] else "km"
    if units not in ("km", "mi", "[mi_i]"):
        raise error(400, "invalid", f"near's units must be km or mi, not {units!r}", "near")
    if not (-90 <= lat <= 90 and -180 <= lon <= 180 and 0 < distance < math.inf):  # nan compares false
        raise error(400, "invalid", "near's latitude, longitude or distance is out of range", "near")
    return lat, lon, distance * (1.609344 if units != "km" else 1.0)


_STRING_LOOKUPS = {"": "istartswith", "contains": "icontains", "exact": "exact"}


def _string_match(fields: tuple[str, ...], values: list[str], modifier: str) -> Q:
    """A string parameter (R4 search.html#string): any value ORed, on any of ``fields``; from the start and case
    aside by default, whole and as written with :exact, anywhere with :contains."""
    lookup = _STRING_LOOKUPS[modifier]
    match = Q(pk__in=[])
    for value in values:
        for name in fields:
            match |= Q(**{f"{name}__{lookup}": value})
    return match


def network_search(resource_type: str, criteria) -> QuerySet:
    """Matching rows for a checked plan's criteria (search.search_plan), as a queryset the caller counts and
    pages in SQL; for ``near``, the sites within the distance, nearest first, each with its great-circle
    ``distance_km``."""
    queryset = _querysets()[resource_type]
    near = None
    for criterion in criteria:
        name, raw = criterion.name, criterion.raw
        values = [v for v in raw.split(",") if v]
        if name == "_id":
            queryset = queryset.filter(fhir_id__in=values)
        elif name == "active":
            queryset = queryset.filter(active=raw == "true")
        elif name == "name":
            fields = ("family_name", "given_name") if resource_type == "Practitioner" else ("name",)
            queryset = queryset.filter(_string_match(fields, values, criterion.modifier))
        elif name == "type":
            queryset = queryset.filter(kind__in=[v.split("|")[-1] for v in values])
        elif name == "identifier":
            queryset = queryset.filter(npi__in=[v.split("|")[-1] for v in values])
        elif name == "address-postalcode":
            queryset = queryset.filter(_string_match(("postal_code",), values, criterion.modifier))
        elif name == "address-state":
            queryset = queryset.filter(_string_match(("state",), values, criterion.modifier))
        elif name == "organization":
            ids = [_reference_id(v, "Organization") for v in values]
            # A HealthcareService is its Organization's program (providedBy is the row itself).
            lookup = "fhir_id__in" if resource_type == "HealthcareService" else "organization__fhir_id__in"
            queryset = queryset.filter(**{lookup: ids})
        elif name == "practitioner":
            queryset = queryset.filter(professional__fhir_id__in=[_reference_id(v, "Practitioner") for v in values])
        elif name == "location":
            ids = [_reference_id(v, "Location") for v in values]
            queryset = queryset.filter(sites__fhir_id__in=ids) if resource_type == "HealthcareService" else queryset.filter(site__fhir_id__in=ids)
        elif name == "specialty":
            slugs = [v.split("|")[-1] for v in values]
            # A current credential (Credential.is_current) covering the group, in one filter() so that the three
            # conditions hold of the same credential.
            credentials = "professional__credentials"
            if resource_type == "HealthcareService":
                credentials = f"roles__{credentials}"
            queryset = queryset.filter(**{
                f"{credentials}__type__condition_groups__slug__in": slugs,
                f"{credentials}__expires_on__gte": dt.date.today(),
                f"{credentials}__verified_at__isnull": False,
            })
        elif name == "near":
            near = _near(raw)
    queryset = queryset.distinct()
    if near is None:
        return queryset.order_by("pk")
    lat, lon, km = near
    # An indexed bounding box first (site_lat_long; 111 km to a degree is a little short, so the box is a little
    # wide), then the exact great-circle distance on what it keeps, in the same statement.
    dlat = km / 111.0
    dlon = km / (111.0 * max(math.cos(math.radians(lat)), 0.01))
    boxed = queryset.filter(latitude__range=(lat - dlat, lat + dlat), longitude__range=(lon - dlon, lon + dlon))
    return (
        boxed.annotate(distance_km=great_circle_km(lat, lon, "latitude", "longitude"))
        .filter(distance_km__lte=km)
        .order_by("distance_km", "pk")
    )


def great_circle_km(lat: float, lon: float, lat_field: str, lon_field: str):
    """The haversine distance in km from (lat, lon), in degrees, to each row's (lat_field, lon_field), as a SQL
    expression: network.geo.haversine_km computed by the database, with the same Earth radius. PostgreSQL has these
    functions built in; on SQLite Django registers them on every connection (django/db/backends/sqlite3/
    _functions.py), whatever the SQLite build, so the expression runs on both. The haversine is exact to
    floating-point rounding at every distance, unlike an equirectangular shortcut. asin's argument is capped at 1,
    as rounding can push it over for antipodal points and PostgreSQL would raise."""
    phi1, phi2 = math.radians(lat), Radians(F(lat_field))
    half_dphi = (phi2 - Value(phi1)) / Value(2.0)
    half_dlambda = (Radians(F(lon_field)) - Value(math.radians(lon))) / Value(2.0)
    a = Power(Sin(half_dphi), 2) + Value(math.cos(phi1)) * Cos(phi2) * Power(Sin(half_dlambda), 2)
    return Value(2 * EARTH_RADIUS_KM) * ASin(Least(Value(1.0), Sqrt(a)), output_field=FloatField())
