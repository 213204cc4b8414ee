"""Reading the network from a FHIR Bundle of Organization, Location, Practitioner, PractitionerRole (and
HealthcareService), the shape ``fhir_bridge/network_fhir.py`` renders, so that an export can be imported again.

The network's import (``network.importing``) knows nothing of FHIR: this reader turns a Bundle into the same
``ImportRow``s as the CSV reader, and fhir_bridge's AppConfig.ready() registers it in
``network.importing.READERS`` under the format ``fhir``, so that the admin's import page and
``manage.py import_network`` take both."""

from __future__ import annotations

import json
from typing import Any

from fhir_bridge.fhir import structural_issues
from fhir_bridge.network_fhir import CREDENTIAL_TYPE_SYSTEM, NPI_SYSTEM, ORGANIZATION_KIND_SYSTEM
from network.importing.report import (
    CredentialLine,
    ImportRow,
    Part,
    _file_error,
)
from network.importing.values import (
    _INVALID,
    _put,
    _role_defaults,
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


def rows_from_fhir_text(content: str) -> list[ImportRow]:
    """The rows of a FHIR Bundle given as JSON text (the ``fhir`` reader of network.importing.READERS)."""
    try:
        bundle = json.loads(content)
    except ValueError as exc:
        return [_file_error("", f"not JSON ({exc})")]
    return rows_from_fhir_bundle(bundle)
