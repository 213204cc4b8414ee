"""Loading and updating the network from a file: a CSV with one row per professional role, or a FHIR Bundle of
Organization, Location, Practitioner, PractitionerRole (and HealthcareService), the shape
``fhir_bridge/network_fhir.py`` renders, so that an export can be imported again.

The package, by role: ``report`` (rows, their errors, the report), ``values`` (value parsers), ``csv`` (the CSV
reader), ``apply`` (the idempotent upserts). A reader parses and validates at the edge: it returns
``ImportRow``s of plain values, each carrying its own errors. Readers are registered by format in ``READERS``:
``csv`` here; ``fhir`` (``fhir_bridge/network_import.py``) by the FHIR bridge's AppConfig.ready(), since the
network knows nothing of FHIR. ``network_import`` then checks and applies the rows, each in its
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

from collections.abc import Callable
from dataclasses import dataclass

from network.importing.apply import network_import
from network.importing.csv import CSV_COLUMNS, CSV_REQUIRED, parse_credentials, rows_from_csv
from network.importing.report import (
    Change,
    CredentialLine,
    ImportReport,
    ImportRow,
    Part,
    RowError,
    RowResult,
    _file_error,
    display,
)
from network.importing.values import npi_is_valid

__all__ = [
    "CSV_COLUMNS",
    "CSV_REQUIRED",
    "READERS",
    "Change",
    "CredentialLine",
    "ImportReport",
    "ImportRow",
    "Part",
    "Reader",
    "RowError",
    "RowResult",
    "display",
    "format_of",
    "network_import",
    "npi_is_valid",
    "parse_credentials",
    "rows_from_csv",
    "rows_from_file",
]


@dataclass(frozen=True)
class Reader:
    label: str  # what the admin's import page calls the format ("CSV")
    suffix: str  # the file name ending that picks it when no format is given (".csv")
    read: Callable[[str], list[ImportRow]]  # the file's text -> its rows (errors in the rows, never raised)


# Format name -> its reader. ``fhir`` is added by fhir_bridge's AppConfig.ready() (fhir_bridge/apps.py).
READERS: dict[str, Reader] = {"csv": Reader(label="CSV", suffix=".csv", read=rows_from_csv)}


def rows_from_file(content: str | bytes, fmt: str) -> list[ImportRow]:
    """Parse a file's content (UTF-8, a BOM allowed) with the reader of format ``fmt`` (a key of READERS).

    Raises ValueError for a format no reader is registered for."""
    if fmt not in READERS:
        raise ValueError(f"unknown format {fmt!r} ({' or '.join(sorted(READERS))})")
    if isinstance(content, bytes):
        try:
            content = content.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return [_file_error("", f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})")]
    return READERS[fmt].read(content)


def format_of(filename: str) -> str | None:
    """The format whose reader takes files named like ``filename``, or None."""
    name = filename.lower()
    return next((fmt for fmt, reader in READERS.items() if name.endswith(reader.suffix)), None)
