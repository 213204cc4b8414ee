"""The idempotent upserts: ``network_import`` checks and applies parsed rows, each in its own transaction."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DatabaseError, models, transaction
from django.utils import timezone

from network.geo import zip_place
from network.importing.report import (
    MODELS,
    Change,
    CredentialLine,
    ImportReport,
    ImportRow,
    Part,
    RowError,
    RowResult,
    display,
)
from network.models import Credential, CredentialType, Professional, Site

logger = logging.getLogger(__name__)

# Foreign keys a part names by the other row's fhir_id.
REFERENCES = {"site": ("organization",), "role": ("professional", "organization", "site")}


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
