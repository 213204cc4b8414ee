"""Writing the audit trail: ``access_record`` (one row) and ``accesses_record`` (several, one INSERT) are the
only ways a row is written."""

import functools
import ipaddress
import logging

from django.db import DatabaseError, connection
from django.utils import timezone

from audit.models import Access

log = logging.getLogger(__name__)

_ACTIONS = {
    "create": Access.Action.CREATE, "update": Access.Action.UPDATE, "delete": Access.Action.DELETE,
    "read": Access.Action.READ, "vread": Access.Action.READ, "history": Access.Action.READ,
    "search": Access.Action.READ,
}


def client_ip(meta: dict) -> str | None:
    """The peer's address as the web server saw it (REMOTE_ADDR; behind a proxy, the proxy's own settings
    decide what that is)."""
    raw = meta.get("REMOTE_ADDR") or ""
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        return None


# C0 controls and DEL (U+0000 PostgreSQL cannot store; the others forge lines in a log viewer) as visible escapes.
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}


def _printable(text: str) -> str:
    return text.translate(_CONTROLS)


# The row's columns, in the order access_record passes them (the id is the table's own).
_COLUMNS = ("recorded_at", "channel", "action", "interaction", "agent_client", "agent_user", "clinic_id",
            "entity_type", "entity_id", "query", "path", "method", "source_ip", "status")


@functools.cache
def _insert_sql() -> str:
    quote = connection.ops.quote_name
    return (
        f"INSERT INTO {quote(Access._meta.db_table)} ({', '.join(quote(c) for c in _COLUMNS)}) "
        f"VALUES ({', '.join(['%s'] * len(_COLUMNS))})"
    )


def access_record(
    *, channel: str, interaction: str, method: str, path: str, status: int, source_ip: str | None,
    agent_client: str = "", agent_user: str = "", clinic_id: int | None = None, entity_type: str = "",
    entity_id: str = "", query: str = "",
) -> None:
    """Write one audit row (one INSERT, no reads). ``interaction`` is FHIR's (read, vread, history, search,
    create, update, transaction) or a coordinator's command; ``status`` the HTTP status answered. Control
    characters in the texts (a NUL in a path or query) are stored as visible escapes (``\\x00``); each text is
    cut to its column's width.

    Called inside the transaction of the request's work (one commit for both), or after it rolled back for a
    refusal. Inside a transaction a failed INSERT is raised: the work rolls back with it rather than commit
    unaudited (fail closed). Outside one, it is logged, never turned into the client's error.

    A plain INSERT rather than ``Access.objects.create``: every request the hub answers writes one, and the
    model's save (signals, field preparation, the compiled statement) cost more than the insert itself (about
    0.4 ms of CPU per request on intake's path, bench/README.md).
    """
    values = (
        connection.ops.adapt_datetimefield_value(timezone.now()),
        channel,
        _ACTIONS.get(interaction, Access.Action.EXECUTE),
        _printable(interaction)[:20],
        agent_client[:64],
        _printable(agent_user)[:150],
        clinic_id,
        _printable(entity_type)[:64],
        _printable(entity_id)[:64],
        _printable(query),
        _printable(path),
        method[:10],
        connection.ops.adapt_ipaddressfield_value(source_ip),
        status,
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(_insert_sql(), values)
    except DatabaseError:
        if connection.in_atomic_block:
            raise
        log.exception("could not write the audit row for %s %s", method, path)


def accesses_record(entries: list[dict]) -> list[Access]:
    """Write several audit rows with one INSERT: each entry holds ``access_record``'s keyword arguments, and
    is stored as that would store it. For a worker that discloses many messages in one transaction (the outbox's
    deliveries): one round trip, not one per row. Fails closed inside a transaction, as ``access_record``;
    outside one, a failure is logged and no row is returned."""
    if not entries:
        return []
    try:
        return Access.objects.bulk_create([_access(**entry) for entry in entries])
    except DatabaseError:
        if connection.in_atomic_block:
            raise
        first = entries[0]
        log.exception("could not write %d audit rows (the first: %s %s)", len(entries), first.get("method"),
                      first.get("path"))
        return []


def _access(
    *, channel: str, interaction: str, method: str, path: str, status: int, source_ip: str | None,
    agent_client: str = "", agent_user: str = "", clinic_id: int | None = None, entity_type: str = "",
    entity_id: str = "", query: str = "",
) -> Access:
    return Access(
        channel=channel,
        action=_ACTIONS.get(interaction, Access.Action.EXECUTE),
        interaction=_printable(interaction)[:20],
        agent_client=agent_client[:64],
        agent_user=_printable(agent_user)[:150],
        clinic_id=clinic_id,
        entity_type=_printable(entity_type)[:64],
        entity_id=_printable(entity_id)[:64],
        query=_printable(query),
        path=_printable(path),
        method=method[:10],
        source_ip=source_ip,
        status=status,
    )
