"""Loading and updating the network from a file: a CSV with one row per professional role, or a FHIR Bundle of
Organization, Location, Practitioner, PractitionerRole (and HealthcareService), the shape
``fhir_bridge/network_fhir.py`` renders, so that an export can be imported again.

``rows_from_csv`` / ``rows_from_fhir_bundle`` parse and validate at the edge: they return ``ImportRow``s of
plain values, each carrying its own errors. ``network_import`` then checks and applies the rows, each in its
own transaction (a savepoint when the caller holds one), so a bad row is reported and rolled back whole while
the good rows stay. It is idempotent: every row is keyed on its ``fhir_id`` and only what differs is written,
so importing the same file twice reports the second time as all unchanged. A dry run applies everything the
same way inside a transaction that it then rolls back, so its report is exactly what a real run would do, and
nothing is written.

The file formats are described in ``network/samples/README.md``. Rules an importer should know:

* Nothing is deleted. An organization, site, person, role or credential that is not in the file stays as it
  is.
* Credentials are keyed on (person, type, number) and are not verified by an import unless the file names who
  verified them (CSV ``verified_by``, FHIR extension ``credential-verified-by``), because routing counts only
  verified credentials. A credential whose expiry changes without a ``verified_by`` loses its verification:
  what an admin checked was the old date.
* A site given without coordinates keeps its own; a new site, or one whose postal code changes, is placed at
  the centroid of its ZIP code (``geo.zip_place``) and the report says so. An unknown ZIP, or one in another
  state, leaves the site without coordinates (it can then take virtual referrals only).
* Within one file, an organization, site or person that appears on several rows must be given the same way on
  each; a row that contradicts an earlier one is an error (otherwise re-importing would flip it back and
  forth).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import DatabaseError, models, transaction
from django.utils import timezone

from fhir_bridge.fhir import structural_issues
from fhir_bridge.network_fhir import CREDENTIAL_TYPE_SYSTEM, NPI_SYSTEM, ORGANIZATION_KIND_SYSTEM
from network.geo import zip_place
from network.models import Credential, CredentialType, Organization, Professional, ProfessionalRole, Site

logger = logging.getLogger(__name__)

HUB_EXTENSIONS = "http://exercise-referral-hub.org/fhir/StructureDefinition"
# What FHIR's PractitionerRole has no element for. Each is optional: when absent the role keeps its value (or
# gets the model's default when it is new).
EXT_LANGUAGE = f"{HUB_EXTENSIONS}/role-language"  # valueCode, repeats: BCP 47 tag
EXT_MODALITY = f"{HUB_EXTENSIONS}/role-modality"  # valueCode, repeats: in-person | group | virtual
EXT_MAX_ACTIVE_CASES = f"{HUB_EXTENSIONS}/role-max-active-cases"  # valueUnsignedInt
EXT_ACCEPTING = f"{HUB_EXTENSIONS}/role-accepting"  # valueBoolean
EXT_PAUSED_UNTIL = f"{HUB_EXTENSIONS}/role-paused-until"  # valueDate
EXT_PAYER = f"{HUB_EXTENSIONS}/role-payer"  # valueCode, repeats
EXT_SERVICE_RADIUS_KM = f"{HUB_EXTENSIONS}/role-service-radius-km"  # valueDecimal
EXT_VERIFIED_BY = f"{HUB_EXTENSIONS}/credential-verified-by"  # valueString, on Practitioner.qualification

BUNDLE_TYPES = ("collection", "transaction", "batch", "searchset")
MODALITIES = {"in-person": "offers_in_person", "group": "offers_group", "virtual": "offers_virtual"}

MODELS: dict[str, type[models.Model]] = {
    "organization": Organization,
    "site": Site,
    "professional": Professional,
    "role": ProfessionalRole,
}
# Foreign keys a part names by the other row's fhir_id.
REFERENCES = {"site": ("organization",), "role": ("professional", "organization", "site")}

# --- what a file says --------------------------------------------------------------------------------------


@dataclass
class RowError:
    line: int | None  # CSV line (the header is line 1) or Bundle entry index; None for the file as a whole
    source: str  # "line 4", "Bundle.entry[3] PractitionerRole/get-fit-rivera", "file"
    column: str  # CSV column or FHIR path
    message: str

    def __str__(self):
        return (
            f"{self.source}, {self.column}: {self.message}"
            if self.column
            else f"{self.source}: {self.message}"
        )


@dataclass
class Part:
    """One organization, site, person or role as a row gives it.

    ``fields`` holds only the model fields the source gives (foreign keys as the target's fhir_id); a field
    left out is left alone on an existing row and gets the model's default on a new one. A part with
    ``must_exist`` only names a row already in the hub (a FHIR reference to a resource outside the Bundle)."""

    kind: str  # a key of MODELS
    fhir_id: str
    fields: dict[str, Any] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)  # field -> the column or path it came from
    id_column: str = ""
    must_exist: bool = False
    place_by_zip: bool = False  # a site given without coordinates


@dataclass
class CredentialLine:
    professional: str  # fhir_id
    type_slug: str
    number: str
    expires_on: dt.date
    issuer: str | None  # None: not given
    verified_by: str  # "": this import does not vouch for it
    column: str


@dataclass
class ImportRow:
    """One CSV row (one role), or one PractitionerRole of a Bundle with what it references, or a Bundle's
    Organization, Location or Practitioner that no role references. Parts come in dependency order."""

    line: int | None
    source: str
    parts: list[Part] = field(default_factory=list)
    credentials: list[CredentialLine] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def error(self, column: str, message: str) -> None:
        self.errors.append(RowError(self.line, self.source, column, message))

    @property
    def main(self) -> Part | None:
        return self.parts[-1] if self.parts else None


# --- what an import did -----------------------------------------------------------------------------------


@dataclass
class Change:
    kind: str  # organization | site | professional | credential | role
    key: str  # the fhir_id; for a credential "professional/type/number"
    action: str  # created | updated
    fields: dict[str, tuple[Any, Any]]  # field -> (old, new); old is None for a created row


@dataclass
class RowResult:
    line: int | None
    source: str
    key: str  # "role get-fit-rivera"
    outcome: str  # created | updated | unchanged
    changes: list[Change] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


@dataclass
class ImportReport:
    dry_run: bool
    actor: str
    results: list[RowResult] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def _count(self, outcome: str) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)

    @property
    def created(self) -> int:
        return self._count("created")

    @property
    def updated(self) -> int:
        return self._count("updated")

    @property
    def unchanged(self) -> int:
        return self._count("unchanged")

    @property
    def failed(self) -> int:
        """Rows (or the file itself) with at least one error."""
        return len({e.source for e in self.errors})

    def summary(self) -> str:
        counts = [f"{self.created} created", f"{self.updated} updated", f"{self.unchanged} unchanged"]
        text = ", ".join([*counts, f"{self.failed} failed"])
        return text + (" (dry run: nothing written)" if self.dry_run else "")

    def as_text(self, *, verbose: bool = False) -> str:
        """The report for a person: what changed, field by field, then every error and notice."""
        lines = []
        for result in self.results:
            if result.outcome == "unchanged" and not verbose:
                continue
            lines.append(f"{result.source}: {result.key} {result.outcome}")
            for change in result.changes:
                if change.action == "created":
                    detail = (
                        ", ".join(f"{k}={display(new)}" for k, (_, new) in change.fields.items())
                        if verbose
                        else ""
                    )
                    lines.append(
                        f"    {change.kind} {change.key} created" + (f": {detail}" if detail else "")
                    )
                else:
                    detail = "; ".join(
                        f"{k}: {display(old)} → {display(new)}" for k, (old, new) in change.fields.items()
                    )
                    lines.append(f"    {change.kind} {change.key} updated: {detail}")
            lines.extend(f"    note: {n}" for n in result.notices)
        if self.errors:
            lines.append("Errors:")
            lines.extend(f"    {e}" for e in self.errors)
        if self.notices:
            lines.append("Notices:")
            lines.extend(f"    {n}" for n in self.notices)
        lines.append(self.summary())
        return "\n".join(lines)

    def as_dict(self) -> dict:
        """Plain JSON-able values (for a template or an API)."""
        return {
            "dry_run": self.dry_run,
            "actor": self.actor,
            "counts": {
                "created": self.created,
                "updated": self.updated,
                "unchanged": self.unchanged,
                "failed": self.failed,
            },
            "rows": [
                {
                    "line": r.line,
                    "source": r.source,
                    "key": r.key,
                    "outcome": r.outcome,
                    "changes": [
                        {
                            "kind": c.kind,
                            "key": c.key,
                            "action": c.action,
                            "fields": {k: [display(o), display(n)] for k, (o, n) in c.fields.items()},
                        }
                        for c in r.changes
                    ],
                    "notices": r.notices,
                }
                for r in self.results
            ],
            "errors": [
                {"line": e.line, "source": e.source, "column": e.column, "message": e.message}
                for e in self.errors
            ],
            "notices": self.notices,
        }


def display(value: Any) -> str:
    if value is None or value == "":
        return "(blank)"
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value) or "(none)"
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)


# --- value checks, shared by both formats (each raises ValueError with a sentence) ------------------------

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
_PAYER = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_ZIP = re.compile(r"^\d{5}(-\d{4})?$")
_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0"}


def _str(raw: Any) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise ValueError(f"expected text, got {raw!r}")  # noqa: TRY004 - every parser reports by ValueError
    return raw.strip()


def parse_id(raw: Any) -> str:
    value = _str(raw)
    if not value:
        raise ValueError("is required")
    if not _ID.match(value):
        raise ValueError(f"{value!r} is not a valid id (letters, digits, '-' and '_', at most 64)")
    return value


def text(max_length: int, *, required: bool = False):
    def parse(raw: Any) -> str:
        value = _str(raw)
        if required and not value:
            raise ValueError("is required")
        if len(value) > max_length:
            raise ValueError(f"is {len(value)} characters long; at most {max_length}")
        return value

    return parse


def parse_kind(raw: Any) -> str:
    value = _str(raw).lower() or Organization.Kind.GYM
    if value not in Organization.Kind.values:
        raise ValueError(f"{value!r} is not an organization kind ({', '.join(Organization.Kind.values)})")
    return value


def parse_state(raw: Any) -> str:
    value = _str(raw)
    if value and not re.fullmatch(r"[A-Za-z]{2}", value):
        raise ValueError(f"{value!r} is not a two-letter state code")
    return value.upper()


def parse_postal_code(raw: Any) -> str:
    value = _str(raw)
    if value and not _ZIP.match(value):
        raise ValueError(f"{value!r} is not a US ZIP code (12345 or 12345-6789)")
    return value


def number(lo: float, hi: float):
    def parse(raw: Any) -> float | None:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        if isinstance(raw, bool):
            raise ValueError(f"{raw!r} is not a number")  # noqa: TRY004 - as above
        try:
            value = float(raw.strip() if isinstance(raw, str) else raw)
        except (TypeError, ValueError):
            raise ValueError(f"{raw!r} is not a number") from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise ValueError(f"{display(raw)} is out of range ({lo:g} to {hi:g})")
        return value

    return parse


def whole_number(lo: int, hi: int):
    def parse(raw: Any) -> int | None:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError(f"{raw!r} is not a whole number")
        try:
            value = int(raw.strip() if isinstance(raw, str) else raw)
        except (TypeError, ValueError):
            raise ValueError(f"{raw!r} is not a whole number") from None
        if not lo <= value <= hi:
            raise ValueError(f"{value} is out of range ({lo} to {hi})")
        return value

    return parse


def parse_bool(raw: Any) -> bool | None:
    if isinstance(raw, bool) or raw is None:
        return raw
    value = _str(raw).lower()
    if not value:
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{raw!r} is not yes or no")


def parse_date(raw: Any) -> dt.date | None:
    value = _str(raw)
    if not value:
        return None
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def parse_email(raw: Any) -> str:
    value = _str(raw)
    if value:
        try:
            validate_email(value)
        except ValidationError:
            raise ValueError(f"{value!r} is not an email address") from None
    return value


def npi_is_valid(npi: str) -> bool:
    """The NPI check digit: Luhn over the 9 digits, with the constant 24 for the card-issuer prefix 80840."""
    if not re.fullmatch(r"\d{10}", npi):
        return False
    total = 24
    for i, char in enumerate(reversed(npi[:9])):
        digit = int(char) * (2 if i % 2 == 0 else 1)
        total += digit - 9 if digit > 9 else digit
    return (10 - total % 10) % 10 == int(npi[9])


def parse_npi(raw: Any) -> str:
    value = _str(raw)
    if value and not npi_is_valid(value):
        raise ValueError(f"{value!r} is not a valid NPI (10 digits with a correct check digit)")
    return value


def _tokens(raw: Any) -> list[str]:
    if isinstance(raw, list):
        return [_str(v) for v in raw if _str(v)]
    return [t.strip() for t in re.split(r"[;,]", _str(raw)) if t.strip()]


def parse_languages(raw: Any) -> list[str]:
    tags = _tokens(raw)
    bad = [t for t in tags if not _LANGUAGE.match(t)]
    if bad:
        raise ValueError(f"{', '.join(map(repr, bad))} is not a language tag (BCP 47, e.g. en, es, zh-Hant)")
    return list(dict.fromkeys(tags)) or ["en"]


def parse_modalities(raw: Any) -> dict[str, bool]:
    tokens = [t.lower() for t in _tokens(raw)] or ["in-person"]
    bad = [t for t in tokens if t not in MODALITIES]
    if bad:
        raise ValueError(f"{', '.join(map(repr, bad))} is not a modality ({', '.join(MODALITIES)})")
    return {flag: name in tokens for name, flag in MODALITIES.items()}


def parse_payers(raw: Any) -> list[str]:
    payers = [t.lower() for t in _tokens(raw)]
    bad = [p for p in payers if not _PAYER.match(p)]
    if bad:
        raise ValueError(f"{', '.join(map(repr, bad))} is not a payer id (lower case, digits, '-')")
    return list(dict.fromkeys(payers))


_INVALID = object()


def _take(row: ImportRow, column: str, raw: Any, parse) -> Any:
    try:
        return parse(raw)
    except ValueError as exc:
        row.error(column, str(exc))
        return _INVALID


def _put(row: ImportRow, part: Part, name: str, column: str, raw: Any, parse, *, default: Any = None) -> None:
    value = _take(row, column, raw, parse)
    if value is _INVALID:
        return
    if isinstance(value, dict):  # modalities: several flags from one column
        for flag, on in value.items():
            part.fields[flag], part.columns[flag] = on, column
        return
    part.fields[name] = default if value is None and default is not None else value
    part.columns[name] = column


def _role_defaults() -> dict[str, Any]:
    return {f.name: f.get_default() for f in ProfessionalRole._meta.concrete_fields if f.has_default()}


# --- CSV --------------------------------------------------------------------------------------------------

# column -> (part, model field, parse). A column left out of the file leaves that field alone; a blank cell in
# a column that is there gives the field's blank value, or its default where the model has one.
CSV_COLUMNS: dict[str, tuple[str, str, Any]] = {
    "organization_id": ("organization", "fhir_id", parse_id),
    "organization_name": ("organization", "name", text(200, required=True)),
    "organization_kind": ("organization", "kind", parse_kind),
    "organization_email": ("organization", "email", parse_email),
    "organization_phone": ("organization", "phone", text(40)),
    "site_id": ("site", "fhir_id", parse_id),
    "site_name": ("site", "name", text(200, required=True)),
    "site_line": ("site", "line", text(200)),
    "site_city": ("site", "city", text(100)),
    "site_state": ("site", "state", parse_state),
    "site_postal_code": ("site", "postal_code", parse_postal_code),
    "site_latitude": ("site", "latitude", number(-90, 90)),
    "site_longitude": ("site", "longitude", number(-180, 180)),
    "professional_id": ("professional", "fhir_id", parse_id),
    "professional_given": ("professional", "given_name", text(100)),
    "professional_family": ("professional", "family_name", text(100, required=True)),
    "professional_npi": ("professional", "npi", parse_npi),
    "credentials": ("credentials", "", None),
    "verified_by": ("credentials", "verified_by", text(150)),
    "role_id": ("role", "fhir_id", parse_id),
    "languages": ("role", "languages", parse_languages),
    "modalities": ("role", "modalities", parse_modalities),
    "max_active_cases": ("role", "max_active_cases", whole_number(0, 32767)),
    "accepting": ("role", "accepting", parse_bool),
    "paused_until": ("role", "paused_until", parse_date),
    "payers": ("role", "payers", parse_payers),
    "service_radius_km": ("role", "service_radius_km", number(0, 500)),
    "email": ("role", "email", parse_email),
}
CSV_REQUIRED = ("organization_id", "organization_name", "professional_id", "professional_family", "role_id")


def parse_credentials(raw: Any) -> list[tuple[str, str, dt.date, str | None]]:
    """``type:number:expires[:issuer]`` separated by ``;``:
    ``acsm-cep:CEP123:2027-05-31;eim-2::2026-12-31``.

    The number may be empty; the expiry (valid through that date) may not."""
    credentials = []
    for item in (i.strip() for i in _str(raw).split(";")):
        if not item:
            continue
        pieces = item.split(":", 3)
        if len(pieces) < 3:
            raise ValueError(f"{item!r} is not type:number:expires (e.g. acsm-cep:CEP123:2027-05-31)")
        slug, cred_number, expires = (p.strip() for p in pieces[:3])
        issuer = pieces[3].strip() if len(pieces) == 4 else None
        if not slug:
            raise ValueError(f"{item!r} has no credential type")
        if len(cred_number) > 64:
            raise ValueError(f"the number in {item!r} is longer than 64 characters")
        if not expires:
            raise ValueError(f"{item!r} has no expiry date (type:number:YYYY-MM-DD)")
        try:
            expires_on = parse_date(expires)
        except ValueError as exc:
            raise ValueError(f"in {item!r}: {exc}") from None
        if issuer is not None and len(issuer) > 200:
            raise ValueError(f"the issuer in {item!r} is longer than 200 characters")
        credentials.append((slug.lower(), cred_number, expires_on, issuer))
    return credentials


def rows_from_csv(content: str) -> list[ImportRow]:
    """One ImportRow per data line; a row's errors name its line (the header is line 1) and the column."""
    reader = csv.reader(io.StringIO(content.removeprefix("\ufeff")))
    try:
        header = next(reader)
    except StopIteration:
        return [_file_error("header", "the file is empty")]
    except csv.Error as exc:
        return [_file_error("header", f"not a readable CSV file ({exc})")]
    columns = [h.strip().lower() for h in header]
    problems = []
    unknown = [c for c in columns if c and c not in CSV_COLUMNS]
    if unknown:
        problems.append(
            f"unknown column(s) {', '.join(map(repr, unknown))}; the columns are {', '.join(CSV_COLUMNS)}"
        )
    missing = [c for c in CSV_REQUIRED if c not in columns]
    if missing:
        problems.append(f"missing required column(s) {', '.join(missing)}")
    duplicated = sorted({c for c in columns if c and columns.count(c) > 1})
    if duplicated:
        problems.append(f"column(s) given twice: {', '.join(duplicated)}")
    if problems:
        return [_file_error("header", "; ".join(problems))]

    rows = []
    role_defaults = _role_defaults()
    line = reader.line_num  # the last line read; the next record starts after it
    try:
        for cells in reader:
            start, line = line + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue
            row = ImportRow(line=start, source=f"line {start}")
            if len(cells) > len(columns):
                row.error("", f"has {len(cells)} cells; the header has {len(columns)} columns")
            else:
                _csv_row(row, dict(zip(columns, cells + [""] * (len(columns) - len(cells)))), role_defaults)
            rows.append(row)
    except csv.Error as exc:
        rows.append(
            _file_error(
                f"line {reader.line_num}", f"not readable CSV ({exc}); the rest of the file is skipped"
            )
        )
    return rows


def _csv_row(row: ImportRow, cells: dict[str, str], role_defaults: dict[str, Any]) -> None:
    parts = {
        kind: Part(kind, fhir_id=_str(cells.get(f"{kind}_id")), id_column=f"{kind}_id") for kind in MODELS
    }
    for column, raw in cells.items():
        kind, name, parse = CSV_COLUMNS[column]
        if kind == "credentials" or name == "fhir_id":
            continue
        if kind == "site" and not parts["site"].fhir_id:
            if _str(raw):
                row.error(column, "is given but site_id is blank (a role without a site has no address)")
            continue
        _put(
            row,
            parts[kind],
            name,
            column,
            raw,
            parse,
            default=role_defaults.get(name) if kind == "role" else None,
        )
    for kind, part in parts.items():
        if kind == "site" and not part.fhir_id:
            continue
        value = _take(row, part.id_column, part.fhir_id, parse_id)
        if value is not _INVALID:
            part.fhir_id = value

    site, role = parts["site"], parts["role"]
    if site.fhir_id:
        site.fields["organization"] = parts["organization"].fhir_id
        site.columns["organization"] = "organization_id"
        if "name" not in site.fields and "site_name" not in cells:
            row.error("site_name", "is required when site_id is given")
        has_lat, has_lon = site.fields.get("latitude") is not None, site.fields.get("longitude") is not None
        bad_coordinates = any(e.column in ("site_latitude", "site_longitude") for e in row.errors)
        if bad_coordinates:
            pass  # already reported
        elif has_lat != has_lon:
            row.error(
                "site_latitude" if not has_lat else "site_longitude",
                "give both latitude and longitude, or neither",
            )
        elif not has_lat:
            site.fields.pop("latitude", None)
            site.fields.pop("longitude", None)
            site.place_by_zip = True
    role.fields.update(professional=parts["professional"].fhir_id, organization=parts["organization"].fhir_id)
    role.columns.update(professional="professional_id", organization="organization_id")
    if "site_id" in cells:  # without the column the role keeps its site
        role.fields["site"], role.columns["site"] = site.fhir_id or None, "site_id"
    row.parts = [parts["organization"], *([site] if site.fhir_id else []), parts["professional"], role]

    if "credentials" in cells:
        verified_by = _take(row, "verified_by", cells.get("verified_by", ""), text(150))
        credentials = _take(row, "credentials", cells["credentials"], parse_credentials)
        if credentials is not _INVALID and verified_by is not _INVALID:
            row.credentials = [
                CredentialLine(
                    parts["professional"].fhir_id, slug, num, expires, issuer, verified_by, "credentials"
                )
                for slug, num, expires, issuer in credentials
            ]
    elif _str(cells.get("verified_by")):
        row.error("verified_by", "is given but there is no credentials column")


def _file_error(column: str, message: str) -> ImportRow:
    row = ImportRow(line=None, source="file")
    row.error(column, message)
    return row


# --- FHIR -------------------------------------------------------------------------------------------------


def _codes(concept: Any, system: str) -> list[str]:
    if not isinstance(concept, dict):
        return []
    return [
        c.get("code")
        for c in concept.get("coding") or []
        if isinstance(c, dict) and c.get("system") == system and c.get("code")
    ]


def _telecom(resource: dict, system: str) -> str | None:
    """The first telecom of that system; None when the resource has no telecom at all (left alone)."""
    if "telecom" not in resource:
        return None
    for point in resource.get("telecom") or []:
        if isinstance(point, dict) and point.get("system") == system and point.get("value"):
            return point["value"]
    return ""


def _put_active(part: Part, resource: dict, path: str) -> None:
    """``active`` only when the resource gives it: without it the row keeps its own."""
    if isinstance(resource.get("active"), bool):
        part.fields["active"], part.columns["active"] = resource["active"], f"{path}.active"


def _extension_values(element: dict, url: str) -> list[Any] | None:
    found = [e for e in element.get("extension") or [] if isinstance(e, dict) and e.get("url") == url]
    if not found:
        return None
    return [next((v for k, v in e.items() if k.startswith("value")), None) for e in found]


class _Bundle:
    """A Bundle's entries indexed by fullUrl and Type/id, and the resolution of references between them."""

    def __init__(self, bundle: dict):
        self.entries: list[dict] = []
        self.ids: dict[int, str] = {}
        self.by_url: dict[str, int] = {}
        self.by_type_id: dict[str, int] = {}
        self.entry_errors: dict[int, list[tuple[str, str]]] = {}
        self.notices: list[str] = []
        for i, entry in enumerate(bundle.get("entry") or []):
            self.entries.append(entry if isinstance(entry, dict) else {})
            self._index(i)

    def path(self, i: int) -> str:
        return f"Bundle.entry[{i}]"

    def resource(self, i: int) -> dict:
        resource = self.entries[i].get("resource")
        return resource if isinstance(resource, dict) else {}

    def type_of(self, i: int) -> str:
        return str(self.resource(i).get("resourceType") or "")

    def label(self, i: int) -> str:
        return f"{self.path(i)} {self.type_of(i)}/{self.ids.get(i, '?')}"

    def _index(self, i: int) -> None:
        entry, errors = self.entries[i], self.entry_errors.setdefault(i, [])
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            errors.append((f"{self.path(i)}.resource", "every entry carries a resource"))
            return
        method = (
            (entry.get("request") or {}).get("method") if isinstance(entry.get("request"), dict) else None
        )
        if method == "DELETE":
            errors.append((f"{self.path(i)}.request.method", "an import never deletes; remove the entry"))
        resource_type, full_url = self.type_of(i), entry.get("fullUrl") or ""
        rid = resource.get("id")
        if not rid and isinstance(full_url, str):
            # A transaction can create resources that have only a urn:uuid fullUrl; the uuid becomes the id.
            rid = (
                full_url.removeprefix("urn:uuid:")
                if full_url.startswith("urn:uuid:")
                else full_url.rstrip("/").split("/")[-1]
            )
        try:
            self.ids[i] = parse_id(rid)
        except ValueError as exc:
            errors.append((f"{self.path(i)}.resource.id", str(exc)))
            return
        key = f"{resource_type}/{self.ids[i]}"
        if key in self.by_type_id:
            errors.append((f"{self.path(i)}.resource.id", f"{key} is also entry {self.by_type_id[key]}"))
            return
        self.by_type_id[key] = i
        if isinstance(full_url, str) and full_url:
            self.by_url[full_url] = i

    def resolve(self, reference: Any, expected: str, path: str) -> tuple[int | None, str | None, str | None]:
        """(entry index, fhir_id, error). The index is None for a resource outside the Bundle, which must then
        already be in the hub."""
        ref = reference.get("reference") if isinstance(reference, dict) else None
        if not isinstance(ref, str) or not ref:
            return None, None, f"{path} needs a reference to a {expected}"
        if ref in self.by_url:
            i = self.by_url[ref]
        else:
            pieces = ref.rstrip("/").split("/")
            if "_history" in pieces:
                pieces = pieces[: pieces.index("_history")]
            if ref.startswith("urn:") or len(pieces) < 2:
                return None, None, f"{path}: {ref!r} matches no entry of the Bundle"
            if pieces[-2] != expected:
                return None, None, f"{path}: {ref!r} is not a {expected}"
            i = self.by_type_id.get(f"{expected}/{pieces[-1]}")
            if i is None:
                try:
                    return None, parse_id(pieces[-1]), None
                except ValueError as exc:
                    return None, None, f"{path}: {exc}"
        if self.type_of(i) != expected:
            return None, None, f"{path}: {ref!r} is a {self.type_of(i) or 'resource'}, not a {expected}"
        return i, self.ids[i], None


def rows_from_fhir_bundle(bundle: Any) -> list[ImportRow]:
    """One ImportRow per PractitionerRole (with the Organization, Location and Practitioner it references),
    then one per Organization, Location or Practitioner that no role references. A reference to a resource
    outside the Bundle must name a row already in the hub. Errors name the Bundle entry and the element."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return [_file_error("resourceType", "expected a FHIR Bundle")]
    if bundle.get("type") not in BUNDLE_TYPES:
        return [_file_error("Bundle.type", f"{bundle.get('type')!r} is not one of {', '.join(BUNDLE_TYPES)}")]
    if not isinstance(bundle.get("entry", []), list):
        return [_file_error("Bundle.entry", "must be a list")]
    index = _Bundle(bundle)
    for i in range(len(index.entries)):
        resource = index.resource(i)
        if resource:
            index.entry_errors[i] += [
                (issue.expression, issue.diagnostics)
                for issue in structural_issues(resource, path=f"{index.path(i)}.resource")
            ]

    program_kinds, program_sites = _programs(index)
    parser = _FhirRows(index, program_kinds, program_sites)
    rows: list[ImportRow] = []
    used: set[int] = set()
    for i in range(len(index.entries)):
        resource_type = index.type_of(i)
        if resource_type == "PractitionerRole":
            rows.append(parser.role_row(i, used))
        elif resource_type == "HealthcareService" or resource_type not in (
            "Organization",
            "Location",
            "Practitioner",
        ):
            if index.entry_errors[i]:
                rows.append(parser.errors_row(i))
            elif resource_type != "HealthcareService":
                index.notices.append(
                    f"{index.label(i)}: a {resource_type} is not part of the network; ignored"
                )
    for i in range(len(index.entries)):
        if i not in used and index.type_of(i) in ("Organization", "Location", "Practitioner"):
            rows.append(parser.standalone_row(i))
    if index.notices:
        rows.append(ImportRow(line=None, source="file", notices=index.notices))
    return sorted(rows, key=lambda r: r.line if r.line is not None else -1)


def _programs(index: _Bundle) -> tuple[dict[int, str], dict[int, tuple[int | None, str]]]:
    """From HealthcareServices (network_fhir renders one per program organization): the organization's kind
    when its Organization has no type, and the organization of a Location that has no managingOrganization."""
    kinds, sites = {}, {}
    for i in range(len(index.entries)):
        if index.type_of(i) != "HealthcareService" or index.entry_errors[i]:
            continue
        resource = index.resource(i)
        org_i, org_id, problem = index.resolve(
            resource.get("providedBy"), "Organization", f"{index.path(i)}.resource.providedBy"
        )
        if problem:
            index.notices.append(f"{problem}; the HealthcareService is ignored")
            continue
        for category in resource.get("category") or []:
            for code in _codes(category, ORGANIZATION_KIND_SYSTEM):
                if org_i is not None:
                    kinds.setdefault(org_i, code)
        for k, ref in enumerate(resource.get("location") or []):
            loc_i, _, _ = index.resolve(ref, "Location", f"{index.path(i)}.resource.location[{k}]")
            if loc_i is not None:
                sites.setdefault(loc_i, (org_i, org_id))
    return kinds, sites


class _FhirRows:
    def __init__(self, index: _Bundle, program_kinds: dict, program_sites: dict):
        self.index, self.program_kinds, self.program_sites = index, program_kinds, program_sites
        self.role_defaults = _role_defaults()

    def _start(self, i: int) -> ImportRow:
        row = ImportRow(line=i, source=self.index.label(i))
        self._entry_errors(row, i)
        return row

    def _entry_errors(self, row: ImportRow, i: int) -> None:
        for column, message in self.index.entry_errors.get(i, []):
            row.error(column, message)

    def errors_row(self, i: int) -> ImportRow:
        return self._start(i)

    def _referenced(
        self, row: ImportRow, i: int | None, fhir_id: str, kind: str, used: set[int], column: str
    ) -> Part:
        """The part for a referenced resource: parsed from its entry, or a must-exist name of a hub row."""
        if i is None:
            return Part(kind, fhir_id, must_exist=True, id_column=column)
        used.add(i)
        if i != row.line:
            self._entry_errors(row, i)
        return getattr(self, kind)(row, i)

    def role_row(self, i: int, used: set[int]) -> ImportRow:
        index, row = self.index, self._start(i)
        resource, path = index.resource(i), f"{index.path(i)}.resource"
        if row.errors and i not in index.ids:
            return row
        parts: dict[tuple[str, str], Part] = {}

        def add(part: Part) -> None:
            parts.setdefault((part.kind, part.fhir_id), part)

        refs = {}
        for element, resource_type, kind in (
            ("practitioner", "Practitioner", "professional"),
            ("organization", "Organization", "organization"),
        ):
            ref_i, ref_id, problem = index.resolve(resource.get(element), resource_type, f"{path}.{element}")
            if problem:
                row.error(f"{path}.{element}", problem)
                continue
            refs[kind] = (ref_i, ref_id)
        locations = resource.get("location") or []
        if len(locations) > 1:
            row.error(f"{path}.location", f"a role works at one site; {len(locations)} Locations are given")
        site_ref = None
        if len(locations) == 1:
            loc_i, loc_id, problem = index.resolve(locations[0], "Location", f"{path}.location[0]")
            if problem:
                row.error(f"{path}.location[0]", problem)
            else:
                site_ref = (loc_i, loc_id)
        if row.errors:
            return row

        org_i, org_id = refs["organization"]
        add(self._referenced(row, org_i, org_id, "organization", used, f"{path}.organization"))
        if site_ref:
            loc_i, loc_id = site_ref
            if loc_i is not None:
                site_org = self._site_organization(row, loc_i, fallback=(org_i, org_id))
                if site_org and site_org[1] != org_id:
                    add(
                        self._referenced(
                            row,
                            site_org[0],
                            site_org[1],
                            "organization",
                            used,
                            f"{index.path(loc_i)}.resource.managingOrganization",
                        )
                    )
            add(self._referenced(row, loc_i, loc_id, "site", used, f"{path}.location[0]"))
            if loc_i is not None and parts[("site", loc_id)].fields.get("organization") is None:
                parts[("site", loc_id)].fields["organization"] = org_id
                parts[("site", loc_id)].columns["organization"] = (
                    f"{index.path(loc_i)}.resource.managingOrganization"
                )
        pro_i, pro_id = refs["professional"]
        add(self._referenced(row, pro_i, pro_id, "professional", used, f"{path}.practitioner"))
        if pro_i is not None:
            row.credentials = self._credentials(row, pro_i)

        role = Part("role", index.ids[i], id_column=f"{path}.id")
        role.fields.update(professional=pro_id, organization=org_id)
        role.columns.update(professional=f"{path}.practitioner", organization=f"{path}.organization")
        if "location" in resource:  # without it the role keeps its site
            role.fields["site"], role.columns["site"] = site_ref[1] if site_ref else None, f"{path}.location"
        _put_active(role, resource, path)
        email = _telecom(resource, "email")
        if email is not None:
            _put(row, role, "email", f"{path}.telecom", email, parse_email)
        for url, name, parse, many in (
            (EXT_LANGUAGE, "languages", parse_languages, True),
            (EXT_MODALITY, "modalities", parse_modalities, True),
            (EXT_MAX_ACTIVE_CASES, "max_active_cases", whole_number(0, 32767), False),
            (EXT_ACCEPTING, "accepting", parse_bool, False),
            (EXT_PAUSED_UNTIL, "paused_until", parse_date, False),
            (EXT_PAYER, "payers", parse_payers, True),
            (EXT_SERVICE_RADIUS_KM, "service_radius_km", number(0, 500), False),
        ):
            values = _extension_values(resource, url)
            if values is None:
                continue
            column = f"{path}.extension({url.rsplit('/', 1)[-1]})"
            if not many and len(values) > 1:
                row.error(column, "is given more than once")
                continue
            raw = [v for v in values if v is not None] if many else values[0]
            _put(row, role, name, column, raw, parse, default=self.role_defaults.get(name))
        add(role)
        row.parts = list(parts.values())
        return row

    def _site_organization(self, row: ImportRow, loc_i: int, fallback) -> tuple[int | None, str] | None:
        resource = self.index.resource(loc_i)
        if "managingOrganization" in resource:
            org_i, org_id, problem = self.index.resolve(
                resource["managingOrganization"],
                "Organization",
                f"{self.index.path(loc_i)}.resource.managingOrganization",
            )
            if problem:
                row.error(f"{self.index.path(loc_i)}.resource.managingOrganization", problem)
                return None
            return org_i, org_id
        return self.program_sites.get(loc_i) or fallback

    def standalone_row(self, i: int) -> ImportRow:
        row = self._start(i)
        kind = {"Organization": "organization", "Location": "site", "Practitioner": "professional"}[
            self.index.type_of(i)
        ]
        if row.errors and i not in self.index.ids:
            return row
        parts = []
        if kind == "site":
            site_org = self._site_organization(row, i, fallback=None)
            if site_org is None and not row.errors:
                row.error(
                    f"{self.index.path(i)}.resource.managingOrganization",
                    "a Location that no role uses needs its managingOrganization",
                )
            if row.errors:
                return row
            parts.append(
                self._referenced(
                    row,
                    site_org[0],
                    site_org[1],
                    "organization",
                    set(),
                    f"{self.index.path(i)}.resource.managingOrganization",
                )
            )
        parts.append(getattr(self, kind)(row, i))
        if kind == "professional":
            row.credentials = self._credentials(row, i)
        row.parts = parts
        return row

    def organization(self, row: ImportRow, i: int) -> Part:
        resource, path = self.index.resource(i), f"{self.index.path(i)}.resource"
        part = Part("organization", self.index.ids[i], id_column=f"{path}.id")
        _put(row, part, "name", f"{path}.name", resource.get("name"), text(200, required=True))
        kinds = [c for t in resource.get("type") or [] for c in _codes(t, ORGANIZATION_KIND_SYSTEM)]
        if kinds or i in self.program_kinds:
            _put(row, part, "kind", f"{path}.type", kinds[0] if kinds else self.program_kinds[i], parse_kind)
        _put_active(part, resource, path)
        for system, name, parse in (("email", "email", parse_email), ("phone", "phone", text(40))):
            value = _telecom(resource, system)
            if value is not None:
                _put(row, part, name, f"{path}.telecom", value, parse)
        return part

    def site(self, row: ImportRow, i: int) -> Part:
        resource, path = self.index.resource(i), f"{self.index.path(i)}.resource"
        part = Part("site", self.index.ids[i], id_column=f"{path}.id")
        _put(row, part, "name", f"{path}.name", resource.get("name"), text(200, required=True))
        if "managingOrganization" in resource:
            _, org_id, _ = self.index.resolve(resource["managingOrganization"], "Organization", path)
            if org_id:
                part.fields["organization"] = org_id
                part.columns["organization"] = f"{path}.managingOrganization"
        elif i in self.program_sites:
            part.fields["organization"] = self.program_sites[i][1]
            part.columns["organization"] = f"{path}.managingOrganization"
        address = resource.get("address")
        if isinstance(address, dict):
            lines = [ln for ln in address.get("line") or [] if isinstance(ln, str)]
            _put(row, part, "line", f"{path}.address.line", ", ".join(lines), text(200))
            _put(row, part, "city", f"{path}.address.city", address.get("city"), text(100))
            _put(row, part, "state", f"{path}.address.state", address.get("state"), parse_state)
            _put(
                row,
                part,
                "postal_code",
                f"{path}.address.postalCode",
                address.get("postalCode"),
                parse_postal_code,
            )
        position = resource.get("position")
        if isinstance(position, dict):
            _put(
                row, part, "latitude", f"{path}.position.latitude", position.get("latitude"), number(-90, 90)
            )
            _put(
                row,
                part,
                "longitude",
                f"{path}.position.longitude",
                position.get("longitude"),
                number(-180, 180),
            )
        else:
            part.place_by_zip = True
        return part

    def professional(self, row: ImportRow, i: int) -> Part:
        resource, path = self.index.resource(i), f"{self.index.path(i)}.resource"
        part = Part("professional", self.index.ids[i], id_column=f"{path}.id")
        names = [n for n in resource.get("name") or [] if isinstance(n, dict)]
        name = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
        _put(row, part, "family_name", f"{path}.name.family", name.get("family"), text(100, required=True))
        _put(
            row,
            part,
            "given_name",
            f"{path}.name.given",
            " ".join(g for g in name.get("given") or [] if isinstance(g, str)),
            text(100),
        )
        npis = [
            x.get("value")
            for x in resource.get("identifier") or []
            if isinstance(x, dict) and x.get("system") == NPI_SYSTEM
        ]
        if npis:
            _put(row, part, "npi", f"{path}.identifier", npis[0], parse_npi)
        _put_active(part, resource, path)
        return part

    def _credentials(self, row: ImportRow, i: int) -> list[CredentialLine]:
        resource, path = self.index.resource(i), f"{self.index.path(i)}.resource"
        lines = []
        for k, qualification in enumerate(resource.get("qualification") or []):
            column = f"{path}.qualification[{k}]"
            if not isinstance(qualification, dict):
                continue
            slugs = _codes(qualification.get("code"), CREDENTIAL_TYPE_SYSTEM)
            if not slugs:
                row.notices.append(f"{column} is not coded in {CREDENTIAL_TYPE_SYSTEM}; ignored")
                continue
            identifiers = [
                x.get("value") for x in qualification.get("identifier") or [] if isinstance(x, dict)
            ]
            cred_number = _take(row, f"{column}.identifier", identifiers[0] if identifiers else "", text(64))
            period = qualification.get("period") if isinstance(qualification.get("period"), dict) else {}
            expires_on = _take(row, f"{column}.period.end", period.get("end"), parse_date)
            if expires_on is None:
                row.error(f"{column}.period.end", "is required: the date the credential is valid through")
                continue
            issuer = qualification.get("issuer")
            issuer = (
                _take(row, f"{column}.issuer", issuer.get("display"), text(200))
                if isinstance(issuer, dict)
                else None
            )
            verified = _extension_values(qualification, EXT_VERIFIED_BY) or [""]
            verified_by = _take(row, f"{column}.extension(credential-verified-by)", verified[0], text(150))
            if _INVALID in (cred_number, expires_on, issuer, verified_by):
                continue
            lines.append(
                CredentialLine(
                    self.index.ids[i], slugs[0].lower(), cred_number, expires_on, issuer, verified_by, column
                )
            )
        return lines


def rows_from_file(content: str | bytes, fmt: str) -> list[ImportRow]:
    """Parse a file's content as ``csv`` or ``fhir`` (JSON)."""
    if isinstance(content, bytes):
        try:
            content = content.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return [_file_error("", f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})")]
    if fmt == "csv":
        return rows_from_csv(content)
    if fmt == "fhir":
        try:
            bundle = json.loads(content)
        except ValueError as exc:
            return [_file_error("", f"not JSON ({exc})")]
        return rows_from_fhir_bundle(bundle)
    raise ValueError(f"unknown format {fmt!r} (csv or fhir)")


def format_of(filename: str) -> str | None:
    name = filename.lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".json"):
        return "fhir"
    return None


# --- the import -------------------------------------------------------------------------------------------


class _RowFailed(Exception):
    def __init__(self, errors: list[RowError]):
        self.errors = errors


class _DryRunRollback(Exception):
    pass


@dataclass
class _Context:
    now: dt.datetime
    credential_types: dict[str, CredentialType]
    declared: dict[tuple[str, str], tuple[str, dict[str, Any]]] = field(default_factory=dict)


def network_import(
    *, rows: list[ImportRow], dry_run: bool, actor: str, now: dt.datetime | None = None
) -> ImportReport:
    """Apply every row that has no error, each in its own transaction (or savepoint), and report what was
    created, updated (field by field, old → new), unchanged, and every error with its line and column.

    With ``dry_run`` the same work runs inside one transaction that is rolled back, so the report is exact and
    nothing stays written."""
    report = ImportReport(dry_run=dry_run, actor=actor)
    context = _Context(
        now=now or timezone.now(), credential_types={t.slug: t for t in CredentialType.objects.all()}
    )
    if dry_run:
        try:
            with transaction.atomic():
                for row in rows:
                    _row_import(row, context, report)
                raise _DryRunRollback
        except _DryRunRollback:
            pass
    else:
        for row in rows:
            _row_import(row, context, report)
    logger.info("network import by %s%s: %s", actor, " (dry run)" if dry_run else "", report.summary())
    return report


def _row_import(row: ImportRow, context: _Context, report: ImportReport) -> None:
    if not row.parts:  # a file's own notices, or a row that failed before it had parts
        report.notices += row.notices
        if not row.errors:
            return
    errors = row.errors or _row_check(row, context)
    if not errors:
        try:
            with transaction.atomic():
                result = _row_apply(row, context)
        except _RowFailed as failed:
            errors = failed.errors
        except DatabaseError as exc:
            errors = [RowError(row.line, row.source, "", f"the database refused the row: {exc}")]
    if errors:
        report.errors += errors
        return
    result.notices = row.notices + result.notices
    report.results.append(result)
    for part in row.parts:  # declared once applied: a later row must agree with it
        if not part.must_exist:
            context.declared.setdefault((part.kind, part.fhir_id), (row.source, part.fields))
    for line in row.credentials:
        context.declared.setdefault(
            ("credential", _credential_key(line)), (row.source, _credential_fields(line))
        )


def _credential_key(line: CredentialLine) -> str:
    return f"{line.professional}/{line.type_slug}/{line.number}"


def _credential_fields(line: CredentialLine) -> dict[str, Any]:
    fields = {"expires_on": line.expires_on, "verified_by": line.verified_by}
    if line.issuer is not None:
        fields["issuer"] = line.issuer
    return fields


def _row_check(row: ImportRow, context: _Context) -> list[RowError]:
    """What can be told without writing: unknown credential types, and contradictions with earlier rows."""
    errors = []

    def fail(column: str, message: str) -> None:
        errors.append(RowError(row.line, row.source, column, message))

    for line in row.credentials:
        if line.type_slug not in context.credential_types:
            known = ", ".join(sorted(context.credential_types))
            fail(line.column, f"unknown credential type {line.type_slug!r} (known: {known})")
        earlier = context.declared.get(("credential", _credential_key(line)))
        if earlier:
            for name, value in _credential_fields(line).items():
                if name in earlier[1] and earlier[1][name] != value:
                    fail(
                        line.column,
                        f"credential {_credential_key(line)} has {name} {display(value)} here but "
                        f"{display(earlier[1][name])} on {earlier[0]}",
                    )
    for part in row.parts:
        earlier = context.declared.get((part.kind, part.fhir_id))
        if earlier is None:
            continue
        if part.kind == "role" and not part.must_exist:
            fail(part.id_column, f"role {part.fhir_id!r} is already on {earlier[0]}; a role is given once")
            continue
        for name, value in part.fields.items():
            if name in earlier[1] and earlier[1][name] != value:
                fail(
                    part.columns.get(name, name),
                    f"{part.kind} {part.fhir_id!r} has {name} {display(value)} here "
                    f"but {display(earlier[1][name])} on {earlier[0]}",
                )
    return errors


def _row_apply(row: ImportRow, context: _Context) -> RowResult:
    """Call inside the row's own transaction: raises _RowFailed (which rolls it back) on the first problem."""
    objects: dict[tuple[str, str], models.Model] = {}
    changes: list[Change] = []
    notices: list[str] = []
    created_main = False
    for part in row.parts:
        obj, change = _part_upsert(row, part, objects, notices)
        objects[(part.kind, part.fhir_id)] = obj
        if change:
            changes.append(change)
            created_main = change.action == "created" and part is row.main
    for line in row.credentials:
        professional = objects.get(("professional", line.professional)) or _lookup(
            row, "professional", line.professional, line.column
        )
        if change := _credential_upsert(line, professional, context, notices):
            changes.append(change)
    main = row.main
    return RowResult(
        line=row.line,
        source=row.source,
        key=f"{main.kind} {main.fhir_id}",
        outcome="created" if created_main else "updated" if changes else "unchanged",
        changes=changes,
        notices=notices,
    )


def _row_failed(row: ImportRow, column: str, message: str) -> _RowFailed:
    return _RowFailed([RowError(row.line, row.source, column, message)])


def _lookup(
    row: ImportRow, kind: str, fhir_id: str, column: str, *, for_update: bool = False
) -> models.Model:
    rows = MODELS[kind].objects.select_for_update() if for_update else MODELS[kind].objects
    obj = rows.filter(fhir_id=fhir_id).first()
    if obj is None:
        raise _row_failed(row, column, f"{kind} {fhir_id!r} is neither in the file nor in the hub")
    return obj


def _part_upsert(
    row: ImportRow, part: Part, objects: dict, notices: list[str]
) -> tuple[models.Model, Change | None]:
    if part.must_exist:
        return _lookup(row, part.kind, part.fhir_id, part.id_column, for_update=True), None
    model = MODELS[part.kind]
    obj = model.objects.select_for_update().filter(fhir_id=part.fhir_id).first()
    values = dict(part.fields)
    for name in REFERENCES.get(part.kind, ()):
        if values.get(name) is not None:
            target = values[name]
            values[name] = objects.get((name, target)) or _lookup(
                row, name, target, part.columns.get(name, name)
            )
    if part.kind == "role" and obj is not None and obj.professional_id != values["professional"].pk:
        raise _row_failed(
            row,
            part.columns.get("professional", "professional"),
            f"role {part.fhir_id!r} belongs to professional {obj.professional.fhir_id!r}; a "
            "role does not move to another person (give the new role its own id)",
        )
    if part.place_by_zip:
        _site_place(part, obj, values, notices)

    if obj is None:
        obj = model(fhir_id=part.fhir_id, **values)
        _clean(obj, part, row)
        obj.save()
        return obj, Change(
            part.kind, part.fhir_id, "created", {k: (None, _plain(v)) for k, v in values.items()}
        )

    changed = {}
    for name, new in values.items():
        if _differs(obj, name, new):
            changed[name] = (_plain(getattr(obj, name)), _plain(new))
            setattr(obj, name, new)
    if not changed:
        return obj, None
    _clean(obj, part, row)
    update_fields = list(changed)
    if any(f.name == "updated_at" for f in model._meta.concrete_fields):
        update_fields.append("updated_at")
    obj.save(update_fields=update_fields)
    return obj, Change(part.kind, part.fhir_id, "updated", changed)


def _plain(value: Any) -> Any:
    """A foreign key as its fhir_id, for comparing and reporting."""
    return value.fhir_id if isinstance(value, models.Model) else value


def _differs(obj: models.Model, name: str, new: Any) -> bool:
    field_ = obj._meta.get_field(name)
    if field_.is_relation:  # by key, without fetching the related row
        return getattr(obj, field_.attname) != (new.pk if new is not None else None)
    return getattr(obj, name) != new


def _clean(obj: models.Model, part: Part, row: ImportRow) -> None:
    """The model's own checks (lengths, choices, constraints) as a last guard behind the parsers."""
    try:
        obj.full_clean(validate_unique=False)
    except ValidationError as exc:
        raise _RowFailed(
            [
                RowError(row.line, row.source, part.columns.get(name, name), " ".join(messages))
                for name, messages in exc.message_dict.items()
            ]
        ) from None


def _site_place(part: Part, site: Site | None, values: dict, notices: list[str]) -> None:
    """A site given without coordinates keeps its own, unless it is new or its postal code changed: then it
    goes to its ZIP's centroid, or nowhere when the ZIP is unknown or in another state."""
    postal_code = values.get("postal_code", site.postal_code if site else "")
    if site is not None and postal_code == site.postal_code:
        return
    state = values.get("state", site.state if site else "")
    place = zip_place(postal_code) if postal_code else None
    if place and (not state or state == place.state):
        values["latitude"], values["longitude"] = place.latitude, place.longitude
        notices.append(
            f"site {part.fhir_id!r} has no coordinates in the file: placed at the centroid of ZIP "
            f"{postal_code} ({place.latitude}, {place.longitude}); give latitude and longitude for its "
            "exact place"
        )
        return
    values["latitude"] = values["longitude"] = None
    why = (
        "has no postal code"
        if not postal_code
        else f"ZIP {postal_code} is unknown"
        if not place
        else f"ZIP {postal_code} is in {place.state}, not {state}"
    )
    notices.append(
        f"site {part.fhir_id!r} has no coordinates and {why}: it is left off the map and can take "
        "virtual referrals only"
    )


def _credential_upsert(
    line: CredentialLine, professional: Professional, context: _Context, notices: list[str]
) -> Change | None:
    credential_type = context.credential_types[line.type_slug]
    key = f"{professional.fhir_id}/{line.type_slug}/{line.number or '-'}"
    credential = (
        Credential.objects.select_for_update()
        .filter(professional=professional, type=credential_type, number=line.number)
        .order_by("pk")
        .first()
    )
    if credential is None:
        credential = Credential(
            professional=professional,
            type=credential_type,
            number=line.number,
            expires_on=line.expires_on,
            issuer=line.issuer or "",
            verified_by=line.verified_by,
            verified_at=context.now if line.verified_by else None,
        )
        credential.save()
        if not line.verified_by:
            notices.append(f"credential {key} is not verified: routing counts it once an admin verifies it")
        return Change(
            "credential",
            key,
            "created",
            {
                "expires_on": (None, line.expires_on),
                "issuer": (None, credential.issuer),
                "verified_by": (None, line.verified_by),
                "verified_at": (None, credential.verified_at),
            },
        )

    changed: dict[str, tuple[Any, Any]] = {}
    if credential.expires_on != line.expires_on:
        changed["expires_on"] = (credential.expires_on, line.expires_on)
    # The hub renders a blank issuer as the type's issuer; both name the same body.
    if line.issuer is not None and (line.issuer or credential_type.issuer) != (
        credential.issuer or credential_type.issuer
    ):
        changed["issuer"] = (credential.issuer, line.issuer)
    if line.verified_by:
        if (
            credential.verified_at is None
            or credential.verified_by != line.verified_by
            or "expires_on" in changed
        ):
            changed["verified_by"] = (credential.verified_by, line.verified_by)
            changed["verified_at"] = (credential.verified_at, context.now)
    elif "expires_on" in changed and credential.verified_at is not None:
        changed["verified_by"] = (credential.verified_by, "")
        changed["verified_at"] = (credential.verified_at, None)
        notices.append(
            f"credential {key}: its expiry changed, so its verification is cleared until an admin "
            "verifies the new date"
        )
    if not changed:
        return None
    for name, (_, new) in changed.items():
        setattr(credential, name, new)
    credential.save(update_fields=list(changed))
    return Change("credential", key, "updated", changed)
