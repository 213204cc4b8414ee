"""The route table's facts: every resource type the FHIR surface serves, with its interactions and search
parameters. This is the one list; everything that names served types derives from it:

- the router (routes.py) answers an interaction only when the table lists it (else 404 for a type not here, 405
  for an interaction not listed);
- the SMART scopes the hub accepts, grants by default and advertises (smart_scopes.py);
- the CapabilityStatement's resources, interactions and search parameters (capability.py);
- what a referral Bundle may carry and intake stores (``BUNDLE_TYPES``, intake.py);
- the network's search parameters (network_fhir.py) and the ``_include`` values search answers (search.py).

It imports nothing of the bridge but search_params.py, so that each of those can import it without a cycle
(routes.py itself imports most of them).
"""

from dataclasses import dataclass

from fhir_bridge.search_params import SEARCH_PARAMS

# FHIR's interaction codes, as the router and SMART name them. history is history-instance, search search-type.
READS = frozenset({"read", "vread", "history", "search"})
WRITES = frozenset({"create", "update"})

# How a stored parameter's kind (search_params.SearchParam.kind) is typed in the CapabilityStatement.
_STORED_PARAM_TYPES = {"token": "token", "reference": "reference", "identifier": "token"}


@dataclass(frozen=True)
class ServedType:
    """One resource type the hub serves.

    ``search_params`` are (name, FHIR search-parameter type) pairs that the search interaction answers; empty when
    the type has no search. ``network`` types are the community network's, rendered from its own tables: search
    lists the network, and read finds a network member first and then what the clinic itself sent.
    """

    name: str
    interactions: frozenset[str]
    search_params: tuple[tuple[str, str], ...] = ()
    includes: tuple[str, ...] = ()  # the _include values search answers, as "Type:param"
    network: bool = False
    operations: tuple[str, ...] = ()  # instance operations, POST [type]/[id]/$[name] (routes.py answers each)

    @property
    def search_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.search_params)


def _stored(
    name: str, interactions: set[str], includes: tuple[str, ...] = (), operations: tuple[str, ...] = ()
) -> ServedType:
    """A type served from stored resources; its search parameters are the ones search_params.py indexes."""
    params = ()
    if "search" in interactions:
        params = (("_id", "token"), ("_lastUpdated", "date")) + tuple(
            (p.name, _STORED_PARAM_TYPES[p.kind]) for p in SEARCH_PARAMS.get(name, ())
        )
    return ServedType(name, frozenset(interactions), params, includes, operations=operations)


def _network(name: str, interactions: set[str], params: tuple[tuple[str, str], ...]) -> ServedType:
    return ServedType(name, frozenset(interactions), params, network=True)


_STORE = {"create", "read", "vread", "history"}  # a resource an EHR sends and reads back, versioned
_NAME, _ID, _ACTIVE = ("name", "string"), ("_id", "token"), ("active", "token")
_ORGANIZATION, _LOCATION = ("organization", "reference"), ("location", "reference")
_SPECIALTY = ("specialty", "token")  # a condition group (codes.CONDITION_GROUP_SYSTEM)

# In the order the SMART configuration lists them: the referral first, then what comes with it, then the network.
TABLE: tuple[ServedType, ...] = (
    # $report: a progress report now (an EHR before a visit), see routes.handle_task_report.
    _stored("Task", _STORE | {"update", "search"}, includes=("Task:focus", "Task:patient", "Task:part-of"),
            operations=("report",)),
    _stored("ServiceRequest", _STORE | {"search"}, includes=("ServiceRequest:patient",)),
    _stored("Patient", _STORE | {"search"}),
    _stored("Condition", _STORE),
    _stored("Observation", _STORE),
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
    # The reports to the physician (reports_fhir.py): rendered by the hub when sent; the EHR reads and searches
    # them, and reads each one's PDF as a Binary.
    _stored("DiagnosticReport", {"read", "vread", "history", "search"}, includes=("DiagnosticReport:result",)),
    _stored("Binary", {"read", "vread", "history"}),
)

SERVED: dict[str, ServedType] = {served.name: served for served in TABLE}
# What a referral's transaction Bundle may carry and intake stores, as POST [type] takes it: the referral (Task,
# ServiceRequest) and everything an EHR may send beside it.
BUNDLE_TYPES = frozenset(served.name for served in TABLE if "create" in served.interactions)


def answers(resource_type: str, interaction: str) -> bool:
    """Whether the surface serves ``interaction`` on ``resource_type``."""
    served = SERVED.get(resource_type)
    return served is not None and interaction in served.interactions
