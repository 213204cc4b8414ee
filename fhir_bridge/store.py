"""Writes of served FHIR resources: each version, its history row, its search tokens and its business
identifiers, in the caller's transaction."""

import datetime as dt
import functools
import uuid
from dataclasses import dataclass

import orjson
from django.db import IntegrityError, connection

from config.sql import json_insert_sql, rows_insert

from fhir_bridge.models import (
    ConditionalCreateKey,
    EhrClient,
    ResourceIdentifier,
    ResourceVersion,
    SearchToken,
    StoredResource,
)
from fhir_bridge.search_params import business_identifiers, search_values, search_values_changed

# Business identifiers of these types are unique per client: the idempotency of referral intake rests on them.
IDENTIFIED_TYPES = frozenset({"Task", "ServiceRequest"})


class DuplicateResource(Exception):
    """A unique business identifier or conditional-create key is already taken (the caller's transaction is
    spoiled and must be rolled back)."""


def new_id() -> str:
    return str(uuid.uuid4())


def http_date_iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stamp(content: dict, *, fhir_id: str, version_id: int, now: dt.datetime) -> dict:
    """Set id and meta.versionId/lastUpdated, keeping any profile, tag or security the sender gave."""
    meta = dict(content.get("meta") or {})
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = http_date_iso(now)
    content = {"resourceType": content["resourceType"], "id": fhir_id, "meta": meta, **content}
    content["id"] = fhir_id
    content["meta"] = meta
    return content


_TOKEN_COLUMNS = ("resource_id", "clinic_id", "resource_type", "param", "value")
_RESOURCE_COLUMNS = (
    "resource_type", "fhir_id", "clinic_id", "referral_id", "version_id", "last_updated", "content",
    "is_deleted",
)


def resources_create(
    *,
    contents: list[dict],
    clinic_id: int | None,
    referral_id: int | None = None,
    client: EhrClient | None = None,
    conditional_keys: dict[int, str] | None = None,
    now: dt.datetime,
) -> list[StoredResource]:
    """Store new resources (each already carrying its final ``id``) as version 1, with a handful of queries
    whatever their number. ``conditional_keys`` maps an index in ``contents`` to its If-None-Exist query.

    Raises DuplicateResource when a business identifier or conditional key is taken. Call inside
    transaction.atomic, and let the exception leave it, so that nothing half-written remains.
    """
    stamped = [stamp(c, fhir_id=c["id"], version_id=1, now=now) for c in contents]
    try:
        # rows_insert, not bulk_create: the ORM's preparation of six documents cost three times the insert.
        updated = connection.ops.adapt_datetimefield_value(now)
        ids = rows_insert(
            StoredResource,
            _RESOURCE_COLUMNS,
            [(c["resourceType"], c["id"], clinic_id, referral_id, 1, updated, orjson.dumps(c).decode(), False)
             for c in stamped],
            returning=True,
        )
        rows = [
            StoredResource.from_db(
                connection.alias, ["id", *_RESOURCE_COLUMNS],
                [pk, c["resourceType"], c["id"], clinic_id, referral_id, 1, now, c, False],
            )
            for pk, c in zip(ids, stamped, strict=True)
        ]
        rows_insert(
            SearchToken,
            _TOKEN_COLUMNS,
            [(r.pk, clinic_id, r.resource_type, p, v) for r in rows for p, v in search_values(r.content)],
        )
        if client is not None:
            rows_insert(
                ResourceIdentifier,
                ("client_id", "resource_type", "system", "value", "resource_id"),
                [
                    (client.pk, r.resource_type, s, v, r.pk)
                    for r in rows
                    if r.resource_type in IDENTIFIED_TYPES
                    for s, v in business_identifiers(r.content)
                ],
            )
            if conditional_keys:
                ConditionalCreateKey.objects.bulk_create(
                    ConditionalCreateKey(client=client, resource_type=rows[i].resource_type, query=q, resource=rows[i])
                    for i, q in conditional_keys.items()
                )
    except IntegrityError as exc:
        # The caller's transaction is spoiled now (on PostgreSQL it is aborted): it must roll back, which
        # raising out of its atomic block does.
        raise DuplicateResource(str(exc)) from exc
    return rows


class VersionConflict(Exception):
    """The resource is no longer at the version the writer read."""


def resource_update(
    *, resource: StoredResource, content: dict, now: dt.datetime, expected_version: int | None = None
) -> StoredResource:
    """Write ``content`` as the next version of ``resource`` (compare-and-set on the version), keep the version it
    replaces as a history row, and bring its search tokens up to date (those of the old content that changed are
    deleted, the new ones inserted: the tokens always index the current content, under today's SEARCH_PARAMS;
    a change to those needs a reindex of what is stored). Call inside transaction.atomic, with ``resource`` as
    read in it.

    Raises VersionConflict when the stored version is no longer ``expected_version`` (or the one read); then
    nothing is written.

    Every status change of every referral comes through here (fhir_bridge.projection.task_project), so its
    statements are written out rather than built by the ORM: compiling the four querysets cost about a third of
    a change's Python time, several times what sending them does (bench/README.md, "A referral change"). On
    PostgreSQL the four are one statement (_VersionWrite), and the replaced version is copied into the history
    by the database rather than sent back to it."""
    current = resource.version_id if expected_version is None else expected_version
    new_version = current + 1
    content = stamp(content, fhir_id=resource.fhir_id, version_id=new_version, now=now)
    # Only the tokens that changed: most versions move one or two searched values (a status), some none.
    gone, added = search_values_changed(resource.content, content)
    write = _VersionWrite(
        resource_id=resource.pk,
        current=current,
        method="POST" if current == 1 else "PUT",
        new_version=new_version,
        last_updated=connection.ops.adapt_datetimefield_value(now),
        content=_DOCUMENT.get_db_prep_save(content, connection),
        gone=gone,
        added=[(resource.pk, resource.clinic_id, resource.resource_type, p, v) for p, v in added],
    )
    if not (write.in_one_statement() if connection.vendor == "postgresql" else write.in_steps()):
        raise VersionConflict(f"{resource.reference} is no longer at version {current}")
    resource.version_id, resource.last_updated, resource.content = new_version, now, content
    return resource


_DOCUMENT = StoredResource._meta.get_field("content")


@dataclass(frozen=True)
class _VersionWrite:
    """One new version of a stored resource, as resource_update writes it: the version it replaces copied into
    the history (if the row is still at ``current``), the row itself, and its changed search tokens."""

    resource_id: int
    current: int
    method: str  # of the version replaced, as the history keeps it: POST for version 1, PUT after
    new_version: int
    last_updated: object  # as connection.ops adapts a datetime
    content: object  # as the content field prepares a document
    gone: list[tuple[str, str]]  # (param, value) tokens to delete
    added: list[tuple]  # rows of _TOKEN_COLUMNS to insert

    def in_one_statement(self) -> bool:
        """PostgreSQL: the four writes as one statement of data-modifying CTEs (one round trip, one text that
        psycopg prepares once), each conditional on the history copy, which locks the row at ``current``.
        Returns whether the row was at ``current`` (else nothing was written)."""
        params, values = zip(*self.gone) if self.gone else ((), ())
        with connection.cursor() as cursor:
            cursor.execute(
                _version_write_sql(),
                [
                    self.method, self.resource_id, self.current,
                    list(params), list(values),
                    orjson.dumps(self.added).decode(),
                    self.new_version, self.last_updated, self.content,
                ],
            )
            return cursor.rowcount == 1

    def in_steps(self) -> bool:
        """Elsewhere (SQLite, which holds its write lock from BEGIN): the history copy first, which is the
        compare-and-set, then the row and the tokens."""
        quote = connection.ops.quote_name
        with connection.cursor() as cursor:
            cursor.execute(_history_copy_sql(), [self.method, self.resource_id, self.current])
            if cursor.rowcount != 1:
                return False
            cursor.execute(
                f"UPDATE {quote(StoredResource._meta.db_table)} SET {quote('version_id')} = %s, "
                f"{quote('last_updated')} = %s, {quote('content')} = %s WHERE {quote('id')} = %s",
                [self.new_version, self.last_updated, self.content, self.resource_id],
            )
        _tokens_delete(self.resource_id, self.gone)
        rows_insert(SearchToken, _TOKEN_COLUMNS, self.added)
        return True


@functools.cache
def _history_copy_sql() -> str:
    """INSERT INTO the history SELECT the stored row, if it is at the expected version (params: method, id,
    version); on PostgreSQL the row is locked as it is read."""
    quote = connection.ops.quote_name
    columns = ("resource_id", "version_id", "last_updated", "method", "content")
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    return (
        f"INSERT INTO {quote(ResourceVersion._meta.db_table)} ({', '.join(quote(c) for c in columns)}) "
        f"SELECT {quote('id')}, {quote('version_id')}, {quote('last_updated')}, %s, {quote('content')} "
        f"FROM {quote(StoredResource._meta.db_table)} WHERE {quote('id')} = %s AND {quote('version_id')} = %s{lock}"
    )


@functools.cache
def _version_write_sql() -> str:
    """_VersionWrite.in_one_statement's text. The CTEs see one snapshot, so the tokens deleted and those inserted
    never meet (search_values_changed gives disjoint sets), and each acts only if ``kept`` copied the row, which
    a concurrent writer's new version (waited for by the lock, then re-checked) makes it not do."""
    quote = connection.ops.quote_name
    resources, tokens = quote(StoredResource._meta.db_table), quote(SearchToken._meta.db_table)
    kept = "(SELECT resource_id FROM kept)"
    return (
        f"WITH kept AS ({_history_copy_sql()} RETURNING resource_id), "
        f"gone AS (DELETE FROM {tokens} WHERE {quote('resource_id')} IN {kept} "
        f"AND ({quote('param')}, {quote('value')}) IN (SELECT * FROM unnest(%s::varchar[], %s::varchar[]))), "
        f"added AS ({json_insert_sql(SearchToken, _TOKEN_COLUMNS, where='EXISTS (SELECT FROM kept)')}) "
        f"UPDATE {resources} SET {quote('version_id')} = %s, {quote('last_updated')} = %s, {quote('content')} = %s "
        f"WHERE {quote('id')} IN {kept}"
    )


def _tokens_delete(resource_id: int, pairs: list[tuple[str, str]]) -> None:
    """Delete these (param, value) search tokens of one resource, in one statement (on PostgreSQL one text
    whatever their number, as rows_insert's)."""
    if not pairs:
        return
    quote = connection.ops.quote_name
    sql = (
        f"DELETE FROM {quote(SearchToken._meta.db_table)} WHERE {quote('resource_id')} = %s "
        f"AND ({quote('param')}, {quote('value')}) IN "
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            params, values = zip(*pairs)
            cursor.execute(
                sql + "(SELECT * FROM unnest(%s::varchar[], %s::varchar[]))", [resource_id, list(params), list(values)]
            )
        else:
            cursor.execute(
                sql + "(VALUES " + ", ".join(["(%s, %s)"] * len(pairs)) + ")",
                [resource_id, *(item for pair in pairs for item in pair)],
            )
