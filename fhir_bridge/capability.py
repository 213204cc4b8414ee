"""The CapabilityStatement: what this server really does, built from the same tables the router uses."""

from fhir_bridge.limits import limits_described
from fhir_bridge.codes import (
    ADVERSE_EVENT_KIND_SYSTEM,
    BUSINESS_STATUS_SYSTEM,
    CLEARANCE_SYSTEM,
    DELIVERY_SYSTEM,
    MEASURE_SYSTEM,
    PA_SERVICE_PROVIDER_FULL,
    PA_STRUCTURE_DEFINITION,
    PRECAUTION_SYSTEM,
    REPORT_KIND_SYSTEM,
    RESTFUL_SECURITY_SERVICE_SYSTEM,
    SMART_OAUTH_URIS_EXTENSION,
)
from fhir_bridge.fhir import FHIR_VERSION
from fhir_bridge.clinical_facts import DAYS_PER_WEEK, MINUTES_PER_DAY, MINUTES_PER_WEEK
from fhir_bridge.records_fhir import HUB_MEASURE_CODES, VITAL_SIGNS_PROFILES, ACTIVITY_MEASURE_PROFILE
from fhir_bridge.route_table import TABLE
from fhir_bridge.reports_fhir import PA_INTERVENTION_REPORT_PROFILE
from referrals.models import AdverseEvent, BusinessStatus, ReportKind

PROFILES = {
    "Task": [f"{PA_STRUCTURE_DEFINITION}/pa-task-for-referral-management"],
    "ServiceRequest": [f"{PA_STRUCTURE_DEFINITION}/pa-servicerequest"],
    "Observation": [
        f"{PA_STRUCTURE_DEFINITION}/pa-observation-evs-days-per-week",
        f"{PA_STRUCTURE_DEFINITION}/pa-observation-evs-min-per-day",
        f"{PA_STRUCTURE_DEFINITION}/pa-observation-evs-min-per-week",
        f"{PA_STRUCTURE_DEFINITION}/pa-observation-strength-days-per-week",
        ACTIVITY_MEASURE_PROFILE,
        *VITAL_SIGNS_PROFILES,
    ],
    "Condition": [f"{PA_STRUCTURE_DEFINITION}/pa-condition-low-pa"],
    "Goal": [f"{PA_STRUCTURE_DEFINITION}/pa-goal"],
    "DiagnosticReport": [PA_INTERVENTION_REPORT_PROFILE],
    "Subscription": ["http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"],
}

# What the hub's own operations do (route_table.py lists them with their definitions).
OPERATION_DOCUMENTATION = {
    "report": (
        "POST Task/[id]/$report on a referral Task: a progress report now, covering the days since the last report "
        "(before a visit). Body: a Parameters resource, with send-now (valueBoolean) or without parameters. Without send-now the report is "
        "drafted for the therapist to sign (202, an OperationOutcome); with it, it is sent at once as preliminary "
        "and the DiagnosticReport is returned (200). Needs Task update scope."
    ),
}

SUBSCRIPTION_DOCUMENTATION = (
    "R4 Subscriptions Backport 1.1.0 on the Task topic; each clinic reads and changes only its own. Create: status "
    "requested until the handshake is delivered (then active, or error). end is honoured: at that time the hub "
    "switches the subscription off (nothing more is numbered, no heartbeat), and a create or update whose end has "
    "passed is refused (422), as the backport refuses what the server will not honour. Update (If-Match as "
    "elsewhere; meta.versionId counts the writes of the resource, not the status changes deliveries make): status "
    "off stops it; requested or active on one that is off or in error, or a new channel.endpoint, sends a new "
    "handshake; end, channel.endpoint, channel.header and the filter criteria may change, checked as on create; the "
    "channel type, payload content and heartbeat period are fixed (422). Delete switches it off and stops serving "
    "it (410 Gone after); its notifications and their delivery record are kept."
)

REPORTS_DOCUMENTATION = (
    "Reports to the physician (PA Intervention Report): every few weeks a progress report, and a discharge report "
    "at the end. DiagnosticReport.code carries LOINC 11488-4 and the report's kind in " + REPORT_KIND_SYSTEM + ": "
    + ", ".join(f"{k.value} ({k.label})" for k in ReportKind)
    + ". status is final when the therapist signed it, preliminary when it went out unreviewed (signing it later "
    "sends it again as final). presentedForm.url is the PDF as a Binary; result lists the period's Observations; "
    "the referral Task lists each report in output (type resulting-activity)."
)

# The systems and codes are clinical_facts' own, so that what is documented is what routing reads.
ROUTING_FACTS_DOCUMENTATION = (
    "What routing reads from a referral (codes only; free text is never parsed into a fact). "
    "Conditions: reasonCode, and Condition.code of each reasonReference (ICD-10-CM, SNOMED CT), mapped to condition "
    "groups; an unmapped code is kept and flagged. "
    f"Clearance: an orderDetail coding in {CLEARANCE_SYSTEM} (light | moderate | vigorous); when absent "
    "the hub assumes light. "
    f"Precautions: orderDetail codings in {PRECAUTION_SYSTEM} (hr-cap, no-valsalva, bp-monitoring, "
    "glucose-monitoring, fall-risk, no-heavy-lifting, no-high-impact, weight-bearing-limits, supervised-only, "
    "ecg-monitoring); a value such as the heart-rate cap in that orderDetail's text. "
    "ACSM screening: current activity from supportingInfo PAVS Observations "
    f"(LOINC {MINUTES_PER_WEEK}, {DAYS_PER_WEEK}, {MINUTES_PER_DAY}); "
    "known disease from the condition codes; when absent the hub assumes the conservative answer. "
    f"Delivery: orderDetail codings in {DELIVERY_SYSTEM} (in-person | virtual | group | virtual-ok). "
    "Location: the geolocation extension on Patient.address, else the US ZIP code centroid; an address that cannot "
    "be placed goes to manual routing. Language: Patient.communication (preferred, non-English = required). "
    "Directed: ServiceRequest.performer or a Task owner naming a network member."
)


RECORDS_DOCUMENTATION = (
    "The case records are served as Observations (search by patient, category, code, date, based-on) and "
    "AdverseEvents. Measures without a standard code use the code system " + MEASURE_SYSTEM + ": "
    + ", ".join(f"{code} ({display})" for code, display in HUB_MEASURE_CODES.items())
    + ". An AdverseEvent's event uses " + ADVERSE_EVENT_KIND_SYSTEM + ": "
    + ", ".join(f"{k.value} ({k.label})" for k in AdverseEvent.Kind)
    + "; a note on the referral Task acknowledges it."
)


# R4's CapabilityStatement has no element for _sort keys or result parameters: the resource's documentation says
# them, from the same table search.py applies.
_SEARCH_DOCUMENTATION = (
    "Search answers _count (0 gives the total only), _offset, _total (none | estimate | accurate), _summary "
    "(count | data | false), _elements (the result is tagged SUBSETTED) and _sort on: {sorts} (a leading - sorts "
    "descending). An unknown or unsupported parameter, modifier or _include is a 400 OperationOutcome, or is "
    "ignored (and left out of the self link) under Prefer: handling=lenient."
)


def _search_param(param) -> dict:
    entry = {"name": param.name, "type": param.type}
    if param.modifiers:
        entry["documentation"] = "Modifiers: " + ", ".join(f":{m}" for m in param.modifiers) + "."
    return entry


def capability_statement(*, base_url: str, token_url: str) -> dict:
    resources = []
    # The router's own table (route_table.py), so the statement cannot drift from what is served.
    for served in sorted(TABLE, key=lambda s: s.name):
        resource_type, interactions = served.name, served.interactions
        entry = {
            "type": resource_type,
            "interaction": [{"code": "search-type" if i == "search" else "history-instance" if i == "history" else i}
                            for i in sorted(interactions)],
            # Subscription keeps a versionId (If-Match on update) but no history to vread.
            "versioning": "versioned" if interactions & {"vread", "update"} else "no-version",
            "readHistory": "history" in interactions,
            "updateCreate": False,
            "conditionalCreate": "create" in interactions and not served.own,
        }
        if served.operations:
            entry["operation"] = [
                {"name": name, "definition": url}
                | ({"documentation": OPERATION_DOCUMENTATION[name]} if name in OPERATION_DOCUMENTATION else {})
                for name, url, _ in served.operations
            ]
        if resource_type in PROFILES:
            entry["supportedProfile"] = PROFILES[resource_type]
        if resource_type == "ServiceRequest":
            entry["documentation"] = ROUTING_FACTS_DOCUMENTATION
        if resource_type == "DiagnosticReport":
            entry["documentation"] = REPORTS_DOCUMENTATION
        if resource_type == "Subscription":
            entry["documentation"] = SUBSCRIPTION_DOCUMENTATION
        if "search" in interactions:
            entry["searchParam"] = [_search_param(param) for param in served.search_params]
            entry["searchInclude"] = list(served.includes)
            entry["searchRevInclude"] = list(served.revincludes)
        if served.network:
            entry["documentation"] = "Read-only view of the hub's community network (search lists the network)."
        if "search" in interactions:
            sorts = ", ".join(served.sorts) or "none"
            entry["documentation"] = (entry.get("documentation", "") + " " + _SEARCH_DOCUMENTATION.format(sorts=sorts)).strip()
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-27",
        "kind": "instance",
        "name": "ExerciseReferralHub",
        "title": "Exercise-referral hub",
        "publisher": "Exercise-referral hub project",
        "description": (
            "Takes Physical Activity IG exercise referrals (transaction Bundle, ServiceRequest or Task; a Task whose "
            "focus is a ServiceRequest on the sender's registered FHIR server is fetched from there, notify and "
            "pull, as a SMART backend client whose keys are at /.well-known/jwks.json), routes "
            "them to qualified exercise professionals, and reports back through the referral Task. Resources are "
            "checked against the PA profiles, their required bindings and the invariants pa-sr-1, pa-taskrm-1 "
            "and inv-1. The referral Task's businessStatus uses the code system " + BUSINESS_STATUS_SYSTEM + ": "
            + ", ".join(f"{c.value} ({c.label})" for c in BusinessStatus) + ". "
            + RECORDS_DOCUMENTATION
        ),
        "implementation": {"description": "Exercise-referral hub FHIR R4 endpoint", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "instantiates": [PA_SERVICE_PROVIDER_FULL],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "cors": False,
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": RESTFUL_SECURITY_SERVICE_SYSTEM,
                                    "code": "SMART-on-FHIR",
                                }
                            ],
                            "text": "SMART Backend Services: client_credentials with a private_key_jwt (RS384 or ES384)",
                        }
                    ],
                    "extension": [
                        {
                            "url": SMART_OAUTH_URIS_EXTENSION,
                            "extension": [{"url": "token", "valueUri": token_url}],
                        }
                    ],
                    "description": "A bearer token from the token endpoint; SMART v1 and v2 system scopes.",
                },
                "documentation": "Limits on what one request may carry: "
                + "; ".join(text for _, text in limits_described()) + ".",
                "resource": resources,
                "interaction": [{"code": "transaction"}],
            }
        ],
    }
