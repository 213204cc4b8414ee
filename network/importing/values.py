"""Value parsers shared by every file format: each takes what a cell or element holds and returns the plain value,
or raises ValueError with a sentence that the report shows."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from network.importing.report import ImportRow, Part, display
from network.models import Organization, ProfessionalRole

MODALITIES = {"in-person": "offers_in_person", "group": "offers_group", "virtual": "offers_virtual"}

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
