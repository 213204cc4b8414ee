"""The CSV reader: one row per professional role; the columns are described in ``network/samples/README.md``."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

from network.importing.report import MODELS, CredentialLine, ImportRow, Part, _file_error
from network.importing.values import (
    _INVALID,
    _put,
    _role_defaults,
    _str,
    _take,
    number,
    parse_bool,
    parse_date,
    parse_email,
    parse_id,
    parse_kind,
    parse_languages,
    parse_modalities,
    parse_npi,
    parse_payers,
    parse_postal_code,
    parse_state,
    text,
    whole_number,
)

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
