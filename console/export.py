"""The CSV export of the console's filtered referral list: its columns, documented once here (the export page and
console/README.md list them), PHI only when asked for."""

import csv
from collections.abc import Iterable, Iterator

from django.db.models import QuerySet

from referrals.models import ReferralMilestones

# (column, what it holds, is PHI). Times are ISO 8601 in UTC; empty when the step was not reached.
EXPORT_COLUMNS = (
    ("referral_id", "The hub's referral id (the console's /console/referrals/<id>).", False),
    ("clinic", "The referring clinic's slug.", False),
    ("received_at", "When the hub stored the referral.", False),
    ("status", "The referral Task's status (PA Task Fulfillment Status).", False),
    ("business_status", "The hub's finer step (Task.businessStatus code).", False),
    ("condition_groups", "The condition groups routing found, space-separated slugs.", False),
    ("routed_at", "The first offer to a professional.", False),
    ("accepted_at", "The accepted offer's answer.", False),
    ("first_session_at", "The first attended session's start.", False),
    ("active_at_4_weeks", "yes when a session was attended 14 to 27 days after the first.", False),
    ("completed_at", "When the discharge report was sent, the referral completed.", False),
    ("program", "The organization (program or practice) that accepted the case.", False),
    ("professional_id", "The accepting professional's FHIR Practitioner id.", False),
    ("pavs_baseline_min_per_week", "PAVS minutes per week in the referral (LOINC 82290-8).", False),
    ("pavs_latest_min_per_week", "PAVS minutes per week at the latest check-in.", False),
    ("patient_name", "The patient's name as the referral gave it.", True),
    ("patient_birth_date", "The patient's birth date (FHIR date, may be partial).", True),
    ("patient_postal_code", "The patient's postal code.", True),
)


def _iso(value) -> str:
    return value.isoformat() if value else ""


def _cell(value) -> str:
    # A cell that a spreadsheet would run as a formula (CSV injection, OWASP) is prefixed with a quote.
    text = "" if value is None else str(value)
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class _Echo:
    def write(self, value):
        return value


def export_rows(rows: QuerySet[ReferralMilestones], *, phi: bool) -> Iterator[str]:
    """CSV lines (header first) for ``rows``, streamed in chunks of 2,000 with one query per chunk."""
    writer = csv.writer(_Echo())
    columns = [name for name, _, is_phi in EXPORT_COLUMNS if phi or not is_phi]
    yield writer.writerow(columns)
    fields = [
        "referral_id", "clinic__slug", "received_at", "referral__status", "referral__business_status",
        "condition_groups", "routed_at", "accepted_at", "first_session_at", "active_at_4_weeks", "completed_at",
        "organization__name", "professional__fhir_id", "pavs_baseline", "pavs_latest",
    ]
    if phi:
        fields += ["referral__patient_name", "referral__patient_birth_date", "referral__patient_postal_code"]
    for row in rows.order_by("-received_at", "-referral_id").values_list(*fields).iterator(chunk_size=2000):
        yield writer.writerow([_cell(v) for v in _formatted(row)])


def _formatted(row: tuple) -> Iterable:
    for n, value in enumerate(row):
        if n in (2, 6, 7, 8, 10):
            yield _iso(value)
        elif n == 5:
            yield " ".join(filter(None, value.split(",")))
        elif n == 9:
            yield "yes" if value else "no"
        else:
            yield value
