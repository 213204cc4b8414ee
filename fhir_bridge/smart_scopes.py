"""SMART system scopes: which ones the hub understands, grants by default and advertises, and whether a grant
covers an interaction.

Scopes are SMART's system scopes in both forms: v1 ``system/Task.read`` / ``.write`` / ``.*`` and v2
``system/Task.cruds`` (any subset of c, r, u, d, s in that order); v1 read is v2 ``rs``, write is ``cud``.
v2 scopes with a query part (``system/Task.rs?status=requested``) are never granted: the hub does not enforce
per-query restrictions, and granting the unrestricted scope instead would give more than was asked for.

The resource types are the route table's (route_table.py): a scope on a type the hub does not serve is refused,
and every type it serves can be granted.

Reference: https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fhir_bridge.route_table import READS, TABLE, WRITES

if TYPE_CHECKING:  # models imports this module for the client's default scopes
    from fhir_bridge.models import EhrClient

# The resource types the hub serves, in the order the SMART configuration lists them.
RESOURCE_TYPES = tuple(served.name for served in TABLE)
_KNOWN_TYPES = frozenset(RESOURCE_TYPES) | {"*"}

# What ``register_ehr_client`` grants when no --scope is given (and the EhrClient default), and what
# ``ehr_client_token`` asks for: everything on every type, within what each type answers. A type an EHR may send
# gets all of cruds, not only the letters it answers (no delete anywhere): v1's system/X.write and system/X.* are
# cud and cruds, and a default that could not cover them would refuse the commonest requests.
DEFAULT_SCOPES = tuple(
    f"system/{served.name}.{'cruds' if served.interactions & WRITES else 'rs'}" for served in TABLE
    if served.by_default
)
# Types that a system/*.x scope does not reach: only a scope naming the type grants them.
_NAMED_ONLY = frozenset(served.name for served in TABLE if not served.by_default)

# What a provider's system (a client registered to a network organization, the PA IG's Light Service Provider)
# may be granted when no --scope is given: read, search and update its Tasks (answer offers, move its cases),
# read the referrals it accepted, post the PA Observations of its cases, and read the network. No create of
# Tasks or ServiceRequests: a provider does not send referrals.
PROVIDER_SCOPES = (
    "system/Task.rus",
    "system/ServiceRequest.rs",
    "system/Patient.rs",
    "system/Condition.rs",
    "system/Observation.crs",
    "system/Goal.rs",
    "system/Practitioner.rs",
    "system/PractitionerRole.rs",
    "system/Organization.rs",
    "system/Location.rs",
    "system/HealthcareService.rs",
)

# v1 permissions in v2 letters.
_V1_LETTERS = {"read": frozenset("rs"), "write": frozenset("cud"), "*": frozenset("cruds")}
_V2_LETTERS = re.compile(r"c?r?u?d?s?")  # SMART v2 requires the letters in this order
_SCOPE = re.compile(r"system/(?P<type>\*|[A-Z][A-Za-z]*)\.(?P<permission>[^?]+)(?P<query>\?.*)?")

# The FHIR interaction each v2 letter stands for.
_INTERACTION_LETTER = {
    "create": "c",
    "read": "r",
    "vread": "r",
    "history": "r",
    "update": "u",
    "patch": "u",
    "delete": "d",
    "search": "s",
}


# --- Scopes -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SystemScope:
    resource_type: str  # a resource type or "*"
    letters: frozenset[str]  # a non-empty subset of "cruds"


def scope_parse(scope: str) -> SystemScope:
    """Parse one system scope, or raise ValueError saying why the hub does not understand it."""
    match = _SCOPE.fullmatch(scope)
    if match is None:
        raise ValueError(
            f"{scope!r} is not a system scope: write system/<ResourceType>.<permission>, for example "
            "system/Task.read (SMART v1) or system/Task.rs (SMART v2)"
        )
    if match["query"]:
        raise ValueError(
            f"{scope!r} has a query part; the hub grants only whole-type scopes such as system/Task.rs"
        )
    resource_type, permission = match["type"], match["permission"]
    if resource_type not in _KNOWN_TYPES:
        raise ValueError(
            f"{scope!r}: the hub serves no {resource_type}; use one of {', '.join(RESOURCE_TYPES)} or *"
        )
    if permission in _V1_LETTERS:
        return SystemScope(resource_type, _V1_LETTERS[permission])
    if permission and _V2_LETTERS.fullmatch(permission):
        return SystemScope(resource_type, frozenset(permission))
    raise ValueError(
        f"{scope!r}: the permission must be read, write or * (SMART v1), or letters of cruds in that order "
        "(SMART v2, e.g. rs or cud)"
    )


@functools.lru_cache(maxsize=2048)
def _scope_or_none(scope: str) -> SystemScope | None:
    try:
        return scope_parse(scope)
    except ValueError:
        return None


def _permissions(scopes: Iterable[str]) -> dict[str, frozenset[str]]:
    """Resource type (or "*") → the v2 letters the scopes give on it. Scopes not understood give nothing."""
    letters: dict[str, set[str]] = {}
    for scope in scopes:
        parsed = _scope_or_none(scope)
        if parsed is not None:
            letters.setdefault(parsed.resource_type, set()).update(parsed.letters)
    return {resource_type: frozenset(found) for resource_type, found in letters.items()}


def scopes_grantable(*, requested: Iterable[str], allowed: Iterable[str]) -> list[str]:
    """The requested scopes that the allowed ones cover, in the order asked, without repeats.

    Coverage is by the union of the allowed scopes (``system/Task.read`` plus ``system/Task.write`` covers
    ``system/Task.*`` and ``system/Task.cruds``), and ``system/*.x`` covers every type. A request for
    ``system/*.x`` is covered only by allowed ``system/*`` scopes.
    """
    have = _permissions(allowed)
    everywhere = have.get("*", frozenset())
    granted: list[str] = []
    for scope in requested:
        parsed = _scope_or_none(scope)
        if parsed is None or scope in granted:
            continue
        covered = (
            everywhere
            if parsed.resource_type == "*"
            else (frozenset() if parsed.resource_type in _NAMED_ONLY else everywhere)
            | have.get(parsed.resource_type, frozenset())
        )
        if parsed.letters <= covered:
            granted.append(scope)
    return granted



def scopes_supported() -> list[str]:
    """The scopes the SMART configuration advertises: per served type, the read forms when it answers a read,
    the write forms when it answers a write, and all of them when it answers both; then ``system/*``."""
    scopes = []
    for served in TABLE:
        reads, writes = bool(served.interactions & READS), bool(served.interactions & WRITES)
        permissions = (("read", "rs") if reads else ()) + (("write", "cud") if writes else ())
        if reads and writes:
            permissions = ("read", "write", "rs", "cud", "cruds")
        scopes += [f"system/{served.name}.{permission}" for permission in permissions]
    return scopes + [f"system/*.{permission}" for permission in ("read", "write", "rs", "cud", "cruds")]


# --- Grants: what a bearer token lets its client do ---------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    client: EhrClient
    scopes: frozenset[str]
    # Parsed once here, because grant_allows runs on every request.
    _permissions: dict[str, frozenset[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_permissions", _permissions(self.scopes))


def grant_allows(grant: Grant, resource_type: str, interaction: str) -> bool:
    """Whether ``grant`` covers ``interaction`` on ``resource_type``.

    ``interaction`` is one of read, vread, history, search, create, update, patch, delete; anything else is a
    programming error (ValueError).
    """
    try:
        letter = _INTERACTION_LETTER[interaction]
    except KeyError:
        raise ValueError(f"unknown interaction {interaction!r}") from None
    permissions = grant._permissions
    if letter in permissions.get(resource_type, ()):
        return True
    return resource_type not in _NAMED_ONLY and letter in permissions.get("*", ())
