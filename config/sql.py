"""Written-out statements for the hub's hottest writes and reads, beside the ORM rather than instead of it: one
INSERT of plain rows (rows_insert), one INSERT of a model instance (instance_insert), one SELECT read into
instances (rows_select). Each exists because a measured path spent more Python building the ORM's statement
than the database spent running it (bench/README.md); everything else uses the ORM."""

import functools

import orjson
from django.db import connection


def instance_insert(instance) -> None:
    """INSERT ``instance`` (a model instance not saved yet) as Model.save would store it, each field's value
    from its ``pre_save`` (``auto_now_add`` and the like) prepared by ``get_db_prep_save``, and set its
    database-made primary key from RETURNING. No signals are sent (the hub has no save receivers) and nothing
    is validated beyond what the database checks. Raises django.db.IntegrityError like the ORM does.

    For the rows every referral's creation and change writes (the Referral, its ClinicalFacts, its events):
    Model.save compiled a fresh INSERT for each, about 0.1-0.3 ms of Python apiece, where this sends one text
    per model that psycopg prepares once."""
    model = type(instance)
    fields, auto = _insert_fields(model)
    values = [f.get_db_prep_save(f.pre_save(instance, True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(_instance_insert_sql(model), values)
        if auto is not None:
            setattr(instance, auto.attname, cursor.fetchone()[0])
    instance._state.adding = False
    instance._state.db = connection.alias


@functools.cache
def _insert_fields(model) -> tuple[list, object]:
    auto = model._meta.auto_field
    return [f for f in model._meta.concrete_fields if f is not auto and not getattr(f, "generated", False)], auto


@functools.cache
def _instance_insert_sql(model) -> str:
    quote = connection.ops.quote_name
    fields, auto = _insert_fields(model)
    returning = f" RETURNING {quote(auto.column)}" if auto is not None else ""
    return (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))}){returning}"
    )


def rows_insert(model, columns: tuple[str, ...], rows: list[tuple], *, returning: bool = False) -> list[int]:
    """One INSERT of plain tuples (ints, strings, None; a datetime as ``connection.ops`` adapts it). For the
    small rows that intake writes by the dozen (search tokens, identifiers) and the one it writes whole (the
    inbound message): building a model instance for each and compiling a bulk_create cost more than the insert
    itself.

    On PostgreSQL the rows go as one JSON array of arrays (orjson, in C) that ``jsonb_array_elements``
    expands, each element cast to its column's type: the statement's text is the same whatever the number of
    rows, so psycopg parses it once and PostgreSQL prepares it (a multi-row VALUES list over 4 KiB is parsed
    again on every request: psycopg caches no statement longer than that). One array parameter per column
    through ``unnest`` did the same, but psycopg builds array literals in Python: 0.6 ms of CPU for intake's
    55 search tokens where JSON takes 0.2 ms, and 1 ms for a 6 kB inbound message (bench/README.md).
    Elsewhere (SQLite), a multi-row VALUES list.

    ``returning``: the new rows' ids, in the order of ``rows`` (as Django's bulk_create, this relies on both
    databases returning the rows in the order they were inserted). Raises django.db.IntegrityError like the
    ORM does."""
    if not rows:
        return []
    returned = " RETURNING id" if returning else ""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(json_insert_sql(model, columns) + returned, [orjson.dumps(rows).decode()])
        else:
            quote = connection.ops.quote_name
            row_sql = "(" + ", ".join(["%s"] * len(columns)) + ")"
            cursor.execute(
                f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(c) for c in columns)}) "
                f"VALUES {', '.join([row_sql] * len(rows))}{returned}",
                [value for row in rows for value in row],
            )
        return [pk for pk, in cursor.fetchall()] if returning else []


def rows_select(model, sql: str, params: list) -> list:
    """Run ``sql``, a SELECT of ``model``'s concrete columns in their order (``select_columns``), and return the
    rows as instances, each value converted as the ORM converts it (the backend's converters, then the field's:
    a JSON document parsed, a SQLite datetime made aware). For the two reads of every referral change
    (fhir_bridge.projection): a queryset's compile, or RawQuerySet's mapping of columns to fields on every run,
    cost more Python than the read itself."""
    fields, converters = _model_converters(model)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    instances = []
    for row in rows:
        values = list(row)
        for i, convert in converters:
            for converter, expression in convert:
                values[i] = converter(values[i], expression, connection)
        instances.append(model.from_db(connection.alias, fields, values))
    return instances


def select_columns(model, alias: str = "") -> str:
    """The quoted concrete columns of ``model`` in their order, for rows_select (``alias.`` before each)."""
    quote = connection.ops.quote_name
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + quote(f.column) for f in model._meta.concrete_fields)


@functools.cache
def _model_converters(model) -> tuple[list[str], list[tuple[int, list]]]:
    """``model``'s concrete field names, and for each column that has any, its converters as the ORM's compiler
    finds them (SQLCompiler.get_converters): [(position, [(converter, expression), ...]), ...]."""
    fields = model._meta.concrete_fields
    converters = []
    for i, field in enumerate(fields):
        col = field.get_col(model._meta.db_table)
        found = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
        if found:
            converters.append((i, [(converter, col) for converter in found]))
    return [f.attname for f in fields], converters


@functools.cache
def json_insert_sql(model, columns: tuple[str, ...], *, where: str = "") -> str:
    """INSERT INTO table (columns) SELECT (r->>0)::type, ... FROM jsonb_array_elements(%s::jsonb) ... : a
    JSON array per row, taken in the array's order, each element cast to its column's type (``Field.db_type``;
    a foreign key's is its target's; a JSON column's value comes as its JSON text). ``where``: a condition on
    the whole insert (PostgreSQL SQL, "" for none)."""
    quote = connection.ops.quote_name
    fields = {f.column: f for f in model._meta.concrete_fields}
    values = ", ".join(f"(r->>{i})::{fields[c].db_type(connection)}" for i, c in enumerate(columns))
    return (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(c) for c in columns)}) "
        f"SELECT {values} FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS rows (r, n) "
        + (f"WHERE {where} " if where else "")
        + "ORDER BY n"
    )
