"""The route table's facts: every resource type the FHIR surface serves, with its interactions and search
parameters. This is the one list; everything that names served types derives from it:

- the router (routes.py) answers an interaction only when the table lists it (else 404 for a type not here, 405
  for an interaction not listed);
- the SMART scopes the hub accepts, grants by default and advertises (smart_scopes.py);
- the CapabilityStatement's resources, interactions and search parameters (capability.py);
- what a referral Bundle may carry and intake stores (``BUNDLE_TYPES``, intake.py);
- the operations each type answers (``$status``, ``$events`` on Subscription), in the router and the
  CapabilityStatement;
- the network's search parameters (network_fhir.py) and the ``_include`` values search answers (search.py).

It imports nothing of the bridge but search_params.py, so that each of those can import it without a cycle
(routes.py itself imports most of them).
"""

from dataclasses import dataclass

from fhir_bridge.search_params import SEARCH_PARAMS

# FHIR's interaction codes, as the router and SMART name them. history is history-instance, search search-type.
READS = frozenset({"read", "vread", "history", "search"})
WRITES = frozenset({"create", "update", "delete"})

# How a stored parameter's kind (search_params.SearchParam.kind) is typed in the CapabilityStatement.
_STORED_PARAM_TYPES = {"token": "token", "reference": "reference", "identifier": "token", "date": "date"}
# The modifiers search.py applies to a stored parameter of each FHIR type (R4 search.html#modifiers). :text is added
# on the CodeableConcept tokens whose text search_params.py indexes (SearchParam.text).
_STORED_MODIFIERS = {"token": ("missing", "not"), "reference": ("missing",), "date": ()}
# The modifiers network_fhir.py applies to the network's parameters: a string matches from its start, whole
# (:exact) or anywhere (:contains), case aside (R4 search.html#string).
_NETWORK_MODIFIERS = {"string": ("exact", "contains")}
# The _sort keys search.py orders stored resources by (each also descending with a leading "-").
_STORED_SORTS = ("_lastUpdated", "_id")


@dataclass(frozen=True)
class Param:
    """One search parameter as the CapabilityStatement declares it and search applies it: its FHIR type and the
    modifiers (without the colon) it answers; any other modifier is refused."""

    name: str
    type: str
    modifiers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServedType:
    """One resource type the hub serves.

    ``search_params`` are the parameters the search interaction answers (``Param``); empty when the type has no
    search. ``includes`` and ``revincludes`` are the ``_include`` / ``_revinclude`` values it answers, as
    "Type:param"; ``sorts`` the ``_sort`` keys. ``network`` types are the community network's, rendered from its own tables: search
    lists the network, and read finds a network member first and then what the clinic itself sent.
    """

    name: str
    interactions: frozenset[str]
    search_params: tuple[Param, ...] = ()
    includes: tuple[str, ...] = ()
    network: bool = False
    revincludes: tuple[str, ...] = ()
    sorts: tuple[str, ...] = ()
    # (name, OperationDefinition canonical, the interaction whose scope it needs) of each operation on the type.
    operations: tuple[tuple[str, str, str], ...] = ()
    # Served from its own table (the handlers in subscription_routes.py), not from stored resources: not versioned,
    # and never part of a referral Bundle.
    own: bool = False
    # Granted to a client registered without --scope, and covered by system/*.x. AuditEvent is not: reading the
    # trail of who read what needs its own scope, given on purpose.
    by_default: bool = True

    @property
    def search_names(self) -> tuple[str, ...]:
        return tuple(param.name for param in self.search_params)

    def param(self, name: str) -> "Param | None":
        return next((param for param in self.search_params if param.name == name), None)


def _stored(
    name: str, interactions: set[str], includes: tuple[str, ...] = (), revincludes: tuple[str, ...] = (),
    operations: tuple[tuple[str, str, str], ...] = (),
) -> ServedType:
    """A type served from stored resources; its search parameters are the ones search_params.py indexes."""
    params, sorts = (), ()
    if "search" in interactions:
        params = (Param("_id", "token"), Param("_lastUpdated", "date")) + tuple(
            Param(
                p.name, _STORED_PARAM_TYPES[p.kind],
                _STORED_MODIFIERS[_STORED_PARAM_TYPES[p.kind]] + (("text",) if p.text else ()),
            )
            for p in SEARCH_PARAMS.get(name, ())
        )
        sorts = _STORED_SORTS
    return ServedType(name, frozenset(interactions), params, includes, revincludes=revincludes, sorts=sorts,
                      operations=operations)


def _network(name: str, interactions: set[str], params: tuple[tuple[str, str], ...]) -> ServedType:
    # The network's parameters take no modifiers and it answers no _include, _revinclude or _sort: search refuses
    # them rather than ignore them.
    return ServedType(
        name, frozenset(interactions), tuple(Param(n, t, _NETWORK_MODIFIERS.get(t, ())) for n, t in params), network=True
    )


_BACKPORT_OPERATIONS = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition"

# The hub's own operations' OperationDefinition canonicals.
_HUB_OPERATIONS = "http://exercise-referral-hub.org/fhir/OperationDefinition"
_STORE = {"create", "read", "vread", "history"}  # a resource an EHR sends and reads back, versioned
_NAME, _ID, _ACTIVE = ("name", "string"), ("_id", "token"), ("active", "token")
_ORGANIZATION, _LOCATION = ("organization", "reference"), ("location", "reference")
_SPECIALTY = ("specialty", "token")  # a condition group (codes.CONDITION_GROUP_SYSTEM)

# In the order the SMART configuration lists them: the referral first, then what comes with it, then the network.
TABLE: tuple[ServedType, ...] = (
    # $report: a progress report now (an EHR before a visit), see routes.handle_task_report.
    _stored(
        "Task", _STORE | {"update", "search"}, includes=("Task:focus", "Task:patient", "Task:part-of"),
        revincludes=("Task:part-of",),  # a referral with its offers
        operations=(("report", f"{_HUB_OPERATIONS}/Task-report", "update"),),
    ),
    _stored(
        "ServiceRequest", _STORE | {"search"}, includes=("ServiceRequest:patient",), revincludes=("Task:focus",)
    ),
    _stored("Patient", _STORE | {"search"}, revincludes=("Task:patient", "ServiceRequest:patient")),
    _stored("Condition", _STORE),
    # An EHR's own (the PAVS it sent) and the case records the hub renders from the domain (records_fhir.py).
    _stored("Observation", _STORE | {"search"}),
    _stored("Goal", _STORE),
    # The network's types an EHR may also send (its own practitioners, the requester's role and organization):
    # create, read and history work on what it sent, search lists the network.
    _network("Practitioner", _STORE | {"search"}, (_ID, _NAME, ("identifier", "token"), _ACTIVE)),
    _network(
        "PractitionerRole", _STORE | {"search"},
        (_ID, _SPECIALTY, _LOCATION, _ORGANIZATION, ("practitioner", "reference"), _ACTIVE),
    ),
    _network("Organization", _STORE | {"search"}, (_ID, _NAME, ("type", "token"), _ACTIVE)),
    _network(
        "Location", {"read", "search"},
        (_ID, _NAME, ("near", "special"), ("address-postalcode", "string"), ("address-state", "string"),
         _ORGANIZATION),
    ),
    _network(
        "HealthcareService", {"read", "search"}, (_ID, _NAME, _SPECIALTY, _LOCATION, _ORGANIZATION, _ACTIVE)
    ),
    _stored("Consent", _STORE),
    _stored("CarePlan", _STORE),
    _stored("RelatedPerson", _STORE),
    # Rendered by the hub from the case's adverse events (records_fhir.py); the EHR reads them.
    _stored("AdverseEvent", {"read", "vread", "history", "search"}),
    # The reports to the physician (reports_fhir.py): rendered by the hub when sent; the EHR reads and searches
    # them, and reads each one's PDF as a Binary.
    _stored("DiagnosticReport", {"read", "vread", "history", "search"}, includes=("DiagnosticReport:result",)),
    _stored("Binary", {"read", "vread", "history"}),
    # The audit trail (audit/, served by audit_fhir.py): the client's own clinic's rows, as IHE BALP AuditEvents.
    ServedType(
        "AuditEvent", frozenset({"read", "search"}),
        (Param("_id", "token"), Param("date", "date"), Param("agent", "token"), Param("entity-type", "token"),
         Param("action", "token"), Param("outcome", "token")),
        by_default=False,
        own=True,
    ),
    # The clinic's standing requests to be told of its referrals' changes (R4 Subscriptions Backport 1.1.0, the
    # Task topic): rows of notifications.Subscription, each clinic seeing and changing only its own. Delete switches
    # one off and stops serving it (subscription_routes.subscription_remove).
    ServedType(
        "Subscription",
        frozenset({"create", "read", "update", "delete", "search"}),
        (Param("_id", "token"), Param("url", "uri"), Param("status", "token")),
        operations=(
            ("status", f"{_BACKPORT_OPERATIONS}/backport-subscription-status", "read"),
            ("events", f"{_BACKPORT_OPERATIONS}/backport-subscription-events", "read"),
        ),
        own=True,
    ),
)

SERVED: dict[str, ServedType] = {served.name: served for served in TABLE}
# What a referral's transaction Bundle may carry and intake stores, as POST [type] takes it: the referral (Task,
# ServiceRequest) and everything an EHR may send beside it.
BUNDLE_TYPES = frozenset(served.name for served in TABLE if "create" in served.interactions and not served.own)


def answers(resource_type: str, interaction: str) -> bool:
    """Whether the surface serves ``interaction`` on ``resource_type``."""
    served = SERVED.get(resource_type)
    return served is not None and interaction in served.interactions
