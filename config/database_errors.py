"""Which database errors a second try may cure: the one classification the FHIR edge's retry-then-503 and the
Celery tasks' autoretry share.

Django raises ``OperationalError`` for both kinds, so the class says nothing: PostgreSQL's SQLSTATE and SQLite's
result code (on the driver's exception, Django's ``__cause__``) do.

- Transient: a lost or refused connection (PostgreSQL SQLSTATE class 08, or no SQLSTATE at all: the server never
  answered; ``InterfaceError``: the connection is closed), a serialization failure or deadlock (class 40), a lock
  that did not come free in time (55P03; SQLite's SQLITE_BUSY and SQLITE_LOCKED, "database is locked"), a
  statement cancelled by its timeout (57014), a server shutting down or starting (57P01 to 57P03), or out of
  connections, memory or disk (class 53).
- Permanent: everything else, among them a statement too large to evaluate (PostgreSQL class 54, program limit
  exceeded; SQLite's "Expression tree is too large (maximum depth 1000)", "too many SQL variables",
  SQLITE_TOOBIG), which ``too_large`` tells apart: the request itself is at fault, and sending it again cannot help.

References: https://www.postgresql.org/docs/current/errcodes-appendix.html, https://www.sqlite.org/rescode.html.
"""

import sqlite3

from django.db import InterfaceError, OperationalError

_TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53")
_TRANSIENT_SQLSTATES = frozenset({"55P03", "57014", "57P01", "57P02", "57P03"})
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_TOOBIG = 5, 6, 18
# SQLite reports the limits of its parser and planner as SQLITE_ERROR, told apart only by their message.
_SQLITE_TOO_LARGE = ("too large", "too many", "too big", "stack overflow")


def transient(exc: BaseException) -> bool:
    """Whether trying ``exc``'s work again, from the start, may succeed."""
    if isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    if isinstance(cause, sqlite3.Error):
        code = getattr(cause, "sqlite_errorcode", None)
        if code is None:  # a driver without result codes (Python < 3.11)
            return "locked" in str(cause) or "busy" in str(cause)
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    sqlstate = getattr(cause, "sqlstate", None)  # psycopg
    if sqlstate is None:
        return True  # no answer from the server: the connection failed
    return sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES or sqlstate in _TRANSIENT_SQLSTATES


def too_large(exc: BaseException) -> bool:
    """Whether ``exc`` says the statement is beyond what the database will evaluate (permanent)."""
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    if isinstance(cause, sqlite3.Error):
        if getattr(cause, "sqlite_errorcode", 0) & 0xFF == _SQLITE_TOOBIG:
            return True
        return any(words in str(cause).lower() for words in _SQLITE_TOO_LARGE)
    sqlstate = getattr(cause, "sqlstate", None) or ""
    return sqlstate.startswith("54")
