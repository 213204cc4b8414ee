"""What an import file says, row by row (``ImportRow`` and its ``Part``s, each carrying its own errors), and
what an import did (``ImportReport``). Both file readers build these rows; network_import reports on them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.db import models

from network.models import Organization, Professional, ProfessionalRole, Site

# The kinds of part a row has, and the model each one is.
MODELS: dict[str, type[models.Model]] = {
    "organization": Organization,
    "site": Site,
    "professional": Professional,
    "role": ProfessionalRole,
}

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


def _file_error(column: str, message: str) -> ImportRow:
    row = ImportRow(line=None, source="file")
    row.error(column, message)
    return row
