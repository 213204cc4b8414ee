"""Physical Activity IG profile checks: what the hub validates beyond fhir.resources.

fhir.resources.R4B checks structure and datatypes, but not code bindings, fixed values, profile
cardinalities or invariants (it accepts ``Task.status = "bogus"``). This module checks those for the
resources of the PA referral loop (PA IG 1.0.1, see ``shared/reference/pa-ig-workflow.md`` sections 1.4,
1.5, 2.1-2.3 and 4):

* ServiceRequest: every one is checked against PA Service Request (the hub only takes PA referrals).
* Task: every one is checked against PA Task for Referral Management.
* Observation: the four PAVS/EVS codes (``EVS_UNITS``) get the EVS profile; other codes the base checks.
* Condition: PA Condition - Low Physical Activity when it carries the PA category, otherwise the base checks.
* DiagnosticReport: every one is checked against PA Intervention Report (in the hub a report only ever
  arrives as the result of a referral).
* Patient and Goal: R4 required bindings only. Any other resource type: no issues.

It works on plain JSON dicts, so it can also report on resources fhir.resources could not parse, and it
never raises on malformed input: a value of the wrong JSON shape becomes an issue with code ``structure``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

from fhir_bridge.codes import (
    CONDITION_CLINICAL_SYSTEM,
    CONDITION_VER_STATUS_SYSTEM,
    ICD10CM_SYSTEM,
    LOINC_SYSTEM,
    NPI_SYSTEM,
    OBSERVATION_CATEGORY_SYSTEM,
    PA_CATEGORY_SYSTEM,
    SDOHCC_TEMPORARY_SYSTEM,
    SNOMED_SYSTEM,
    TASK_CODE_SYSTEM,
    UCUM_SYSTEM,
)
from referrals.models import REASON_REQUIRED_STATUSES, ReferralStatus

# --- Code systems and fixed codes ---------------------------------------------------------------------------

# The systems are codes.py's; the codes the PA profiles fix in them are here.
PA_CATEGORY_CODE = "PhysicalActivity"
ACTIVITY_CATEGORY_CODE = "activity"
TASK_CODE_FULFILL = "fulfill"
RESULTING_ACTIVITY_CODE = "resulting-activity"
PA_CONDITION_CODE = "Z72.3"  # ICD-10-CM "Lack of physical exercise"
PDF_CONTENT_TYPE = "application/pdf"

# --- Value sets ---------------------------------------------------------------------------------------------

R4_TASK_STATUSES = frozenset(
    {
        "draft",
        "requested",
        "received",
        "accepted",
        "rejected",
        "ready",
        "cancelled",
        "in-progress",
        "on-hold",
        "failed",
        "completed",
        "entered-in-error",
    }
)
# pa-task-status (task-status without `received` and `ready`), and the statuses pa-taskrm-1 gives a reason,
# are the domain's: the referral's statuses are that value set (referrals.models), defined there once.
PA_TASK_STATUSES = frozenset(ReferralStatus.values)
TASK_STATUS_REASON_REQUIRED = frozenset(str(status) for status in REASON_REQUIRED_STATUSES)
PA_TASK_INTENT = "order"
PA_TASK_REQUESTER_TYPES = frozenset({"Practitioner", "PractitionerRole", "Organization"})
PA_TASK_OWNER_TYPES = frozenset({"Practitioner", "PractitionerRole", "Organization", "HealthcareService"})
PA_NOTE_AUTHOR_TYPES = frozenset({"Practitioner", "Organization"})

# R4 has `unknown` too; PA excludes it. There is no `cancelled`: a cancelled referral is `revoked`.
PA_SR_STATUSES = frozenset({"draft", "active", "on-hold", "revoked", "completed", "entered-in-error"})
PA_SR_INTENTS = frozenset({"original-order", "order", "filler-order"})
PA_SR_REQUESTER_TYPES = frozenset({"Practitioner", "PractitionerRole"})
PA_SR_PERFORMER_TYPES = frozenset(
    {"Patient", "Practitioner", "PractitionerRole", "Organization", "RelatedPerson"}
)
# category[USCore] (required binding), canonical .../ValueSet/pa-diagnosticreport-category (sic). All SNOMED.
PA_SR_CATEGORY_CODES = frozenset({"409063005", "409073007", "386053000", "91251008"})
# ServiceRequest.code (extensible binding), all SNOMED.
PA_SR_INTERVENTION_CODES = frozenset(
    {"819961005", "398636004", "435551000124105", "390893007", "426866005", "229095001", "229065009"}
)

R4_OBSERVATION_STATUSES = frozenset(
    {"registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"}
)
# PAVS / Exercise Vital Sign LOINC code -> the UCUM code fixed for valueQuantity.code.
EVS_UNITS: Mapping[str, str] = MappingProxyType(
    {
        "89555-7": "d/wk",  # days per week of moderate to vigorous activity
        "68516-4": "min/d",  # minutes per day on those days
        "82290-8": "min/wk",  # minutes per week
        "82291-6": "d/wk",  # strength-training days per week
    }
)

R4_CONDITION_CLINICAL_STATUSES = frozenset(
    {"active", "recurrence", "relapse", "inactive", "remission", "resolved"}
)
R4_CONDITION_VERIFICATION_STATUSES = frozenset(
    {"unconfirmed", "provisional", "differential", "confirmed", "refuted", "entered-in-error"}
)
PA_CONDITION_VERIFICATION_STATUSES = frozenset({"confirmed", "refuted", "entered-in-error"})

# pa-diagnosticreport-status: finished-enough reports only, so no `registered`, `cancelled` or `unknown`.
PA_DR_STATUSES = frozenset(
    {"partial", "preliminary", "final", "amended", "corrected", "appended", "entered-in-error"}
)
# DiagnosticReport.code (extensible binding): LOINC consult notes, or the PA temporary code.
PA_DR_TYPE_CODES = frozenset({"11488-4", "34833-4", "34822-7", "34824-3"})
PA_DR_TYPE_TEMPORARY_CODE = "PAConsultNote"

R4_GOAL_LIFECYCLE_STATUSES = frozenset(
    {
        "proposed",
        "planned",
        "accepted",
        "active",
        "on-hold",
        "completed",
        "cancelled",
        "entered-in-error",
        "rejected",
    }
)
R4_ADMINISTRATIVE_GENDERS = frozenset({"male", "female", "other", "unknown"})

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Issue:
    severity: str  # "error" | "warning"
    code: str  # FHIR issue type: "required", "value", "invariant", "code-invalid", "structure", ...
    expression: str  # FHIRPath of the offending element, e.g. "Task.statusReason"
    diagnostics: str  # one plain English sentence naming the rule


def check_resource(resource: dict, *, path: str | None = None) -> list[Issue]:
    """All profile issues of one resource (never stops at the first). `path` prefixes expressions, e.g.
    "Bundle.entry[2].resource" so an issue reads "Bundle.entry[2].resource.status"; default is the
    resourceType."""
    if not isinstance(resource, dict):
        return [
            Issue(
                ERROR,
                "structure",
                path or "Resource",
                f"A FHIR resource must be a JSON object, not {_shape(resource)}.",
            )
        ]
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        return [Issue(ERROR, "structure", path or "Resource", "The resource has no resourceType string.")]
    check = _CHECKS.get(resource_type)
    if check is None:
        return []
    report = _Report(resource, path or resource_type)
    check(report)
    return report.issues()


# --- The base invariants of DomainResource (R4 domainresource.html#invs), which fhir.resources does not check ---


def _strings(node, out: set[str]) -> set[str]:
    if isinstance(node, dict):
        for value in node.values():
            _strings(value, out)
    elif isinstance(node, list):
        for item in node:
            _strings(item, out)
    elif isinstance(node, str) and node.startswith("#"):
        out.add(node)
    return out


def domain_resource_issues(resource: dict, *, path: str | None = None) -> list[Issue]:
    """dom-2 to dom-5 as errors and dom-6 (a narrative) as a best-practice warning, for one resource as sent.

    A local reference (``#id``) counts wherever it is, as a reference, canonical or uri (dom-3's FHIRPath reads
    them all); a contained resource that points at its container (``#``) is referenced too.
    """
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return []
    path = path or resource["resourceType"]
    issues = []
    contained = resource.get("contained")
    contained = contained if isinstance(contained, list) else []
    if contained:
        local = _strings({k: v for k, v in resource.items() if k != "contained"}, set())
        for item in contained:
            if isinstance(item, dict):
                _strings({k: v for k, v in item.items()}, local)
    for i, item in enumerate(contained):
        if not isinstance(item, dict):
            continue
        where = f"{path}.contained[{i}]"
        if item.get("contained"):
            issues.append(Issue(ERROR, "invariant", f"{where}.contained",
                                "dom-2: a contained resource must not contain resources of its own."))
        item_id = item.get("id")
        referenced_from = _strings({k: v for k, v in item.items()}, set())
        if not (isinstance(item_id, str) and f"#{item_id}" in local) and "#" not in referenced_from:
            issues.append(Issue(ERROR, "invariant", where,
                                f"dom-3: contained resource {item.get('resourceType')} {item_id!r} is referenced "
                                "from nowhere in the resource; send it as a resource of its own, or reference it."))
        meta = item.get("meta") if isinstance(item.get("meta"), dict) else {}
        if "versionId" in meta or "lastUpdated" in meta:
            issues.append(Issue(ERROR, "invariant", f"{where}.meta",
                                "dom-4: a contained resource must not have meta.versionId or meta.lastUpdated."))
        if meta.get("security"):
            issues.append(Issue(ERROR, "invariant", f"{where}.meta.security",
                                "dom-5: a contained resource must not have a security label."))
    text = resource.get("text")
    if not (isinstance(text, dict) and isinstance(text.get("div"), str) and text["div"].strip()):
        issues.append(Issue(WARNING, "invariant", f"{path}.text",
                            "dom-6: a resource should have a narrative for robust management (best practice)."))
    return issues


# --- Reading JSON defensively -------------------------------------------------------------------------------


def _shape(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _absent(value: object) -> bool:
    # FHIR JSON forbids empty strings, arrays and objects; treat them as missing rather than as present.
    return value is None or value == "" or value == [] or value == {}


_REFERENCE_RE = re.compile(
    r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)
_CONDITIONAL_REFERENCE_RE = re.compile(r"^(?P<type>[A-Z][A-Za-z]+)\?")


def _reference_type(reference: str) -> str | None:
    """The resource type a literal reference names ("Patient/1", "https://x/fhir/Patient/1/_history/2",
    "Patient?identifier=..."); None when it cannot tell, e.g. for "urn:uuid:..." inside a Bundle."""
    match = _REFERENCE_RE.search(reference) or _CONDITIONAL_REFERENCE_RE.match(reference)
    return match.group("type") if match else None


_DATETIME_RE = re.compile(
    r"^(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})(?P<fraction>\.\d{1,9})?"
    r"(?P<offset>Z|[+-]\d{2}:\d{2}))?)?)?$"
)
# A value without an offset is local time somewhere between UTC-12:00 and UTC+14:00.
_EARLIEST_OFFSET = timedelta(hours=14)
_LATEST_OFFSET = timedelta(hours=12)


@dataclass(frozen=True)
class _Span:
    """The instants a FHIR date/dateTime may denote: [start, end); naive datetimes when it has no offset."""

    start: datetime
    end: datetime
    precision: str  # "year" | "month" | "day" | "time"

    @property
    def zoned(self) -> bool:
        return self.start.tzinfo is not None

    def bounds_utc(self) -> tuple[datetime, datetime]:
        if self.zoned:
            return self.start, self.end
        return (
            self.start.replace(tzinfo=UTC) - _EARLIEST_OFFSET,
            self.end.replace(tzinfo=UTC) + _LATEST_OFFSET,
        )


def _parse_datetime(value: str) -> _Span | None:
    """A FHIR R4 date or dateTime ("2023", "2023-03", "2023-03-16", "2023-03-16T10:00:00+02:00"), or None."""
    match = _DATETIME_RE.match(value)
    if match is None:
        return None
    year = int(match["year"])
    month = int(match["month"] or 1)
    day = int(match["day"] or 1)
    try:
        if match["hour"] is None:
            start = datetime(year, month, day)
            if match["day"]:
                precision, end = "day", start + timedelta(days=1)
            elif match["month"]:
                precision = "month"
                end = datetime(year + 1, 1, 1) if month == 12 else datetime(year, month + 1, 1)
            else:
                precision, end = "year", datetime(year + 1, 1, 1)
            return _Span(start, end, precision)
        offset = match["offset"]
        if offset == "Z":
            tz = UTC
        else:
            sign = -1 if offset[0] == "-" else 1
            hours, minutes = int(offset[1:3]), int(offset[4:6])
            if minutes > 59 or hours * 60 + minutes > 14 * 60:
                return None
            tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
        second = min(int(match["second"]), 59)  # a leap second (":60") is still a valid instant for ordering
        fraction = match["fraction"] or ""
        microsecond = int((fraction[1:] + "000000")[:6]) if fraction else 0
        start = datetime(
            year, month, day, int(match["hour"]), int(match["minute"]), second, microsecond, tzinfo=tz
        )
        unit = timedelta(seconds=10 ** -(len(fraction) - 1)) if fraction else timedelta(seconds=1)
        return _Span(start, start + max(unit, timedelta(microseconds=1)), "time")
    except (ValueError, OverflowError):  # 2023-02-30, hour 24, year 0, ...
        return None


def _certainly_before(earlier: _Span, later: _Span) -> bool:
    """True when every instant `earlier` may denote lies before every instant `later` may denote.

    Values of different precision are compared as intervals, so "2023-03-16T08:00:00Z" is not before
    "2023-03-16". Two values without an offset are taken to share one local time zone; when only one has an
    offset, the other may be in any zone, so only a gap that no zone can close counts."""
    if earlier.zoned == later.zoned:
        return earlier.end <= later.start
    _, earlier_end = earlier.bounds_utc()
    later_start, _ = later.bounds_utc()
    return earlier_end <= later_start


class _Report:
    """The issues of one resource, and accessors that record a structure issue instead of failing on junk."""

    def __init__(self, resource: dict[str, Any], root: str) -> None:
        self.resource = resource
        self.root = root
        self._issues: list[Issue] = []

    def issues(self) -> list[Issue]:
        # Elements read by two rules would report the same structure issue twice.
        return list(dict.fromkeys(self._issues))

    def error(self, code: str, expression: str, diagnostics: str) -> None:
        self._issues.append(Issue(ERROR, code, expression, diagnostics))

    def warning(self, code: str, expression: str, diagnostics: str) -> None:
        self._issues.append(Issue(WARNING, code, expression, diagnostics))

    def at(self, *names: str) -> str:
        return ".".join((self.root, *names))

    # Shapes

    def obj(self, parent: Mapping[str, Any], key: str, where: str) -> dict[str, Any] | None:
        value = parent.get(key)
        if _absent(value):
            return None
        if not isinstance(value, dict):
            self.error("structure", where, f"{where} must be a JSON object, not {_shape(value)}.")
            return None
        return value

    def objects(self, parent: Mapping[str, Any], key: str, where: str) -> list[tuple[str, dict[str, Any]]]:
        """(expression, item) for each object in an array element; junk items are reported and skipped."""
        value = parent.get(key)
        if _absent(value):
            return []
        if not isinstance(value, list):
            self.error("structure", where, f"{where} must be a JSON array, not {_shape(value)}.")
            return []
        items = []
        for index, item in enumerate(value):
            item_where = f"{where}[{index}]"
            if isinstance(item, dict):
                if item:
                    items.append((item_where, item))
            else:
                self.error(
                    "structure", item_where, f"{item_where} must be a JSON object, not {_shape(item)}."
                )
        return items

    def string(self, parent: Mapping[str, Any], key: str, where: str) -> str | None:
        value = parent.get(key)
        if _absent(value):
            return None
        if not isinstance(value, str):
            self.error("structure", where, f"{where} must be a JSON string, not {_shape(value)}.")
            return None
        return value

    def codings(self, concept: Mapping[str, Any], where: str) -> list[tuple[str, str | None, str | None]]:
        """(expression, system, code) of each coding of a CodeableConcept."""
        found = []
        for coding_where, coding in self.objects(concept, "coding", f"{where}.coding"):
            system = self.string(coding, "system", f"{coding_where}.system")
            code = self.string(coding, "code", f"{coding_where}.code")
            found.append((coding_where, system, code))
        return found

    def has_coding(
        self, concept: Mapping[str, Any], where: str, system: str, codes: frozenset[str] | str
    ) -> bool:
        wanted = {codes} if isinstance(codes, str) else codes
        return any(s == system and c in wanted for _, s, c in self.codings(concept, where))

    # Rules shared by several resources

    def required(self, parent: Mapping[str, Any], key: str, where: str, rule: str) -> bool:
        """Report a missing element; True when something is there (of whatever shape)."""
        if _absent(parent.get(key)):
            self.error("required", where, f"{rule}: {where.rsplit('.', 1)[-1]} is required but missing.")
            return False
        return True

    def prohibited(self, parent: Mapping[str, Any], keys: tuple[str, ...], where: str, rule: str) -> None:
        for key in keys:
            if key in parent and parent[key] is not None:
                self.error(
                    "structure",
                    f"{where}.{key}",
                    f"{rule}: {key} is not allowed (max 0) and must be removed.",
                )

    def code_value(
        self, parent: Mapping[str, Any], key: str, allowed: frozenset[str], *, rule: str, required: bool
    ) -> str | None:
        """A `code` element bound (required) to `allowed`; returns the value found even when it is invalid."""
        where = self.at(key)
        if required and not self.required(parent, key, where, rule):
            return None
        value = self.string(parent, key, where)
        if value is not None and value not in allowed:
            self.error(
                "code-invalid", where, f"{rule}: {value!r} is not one of {', '.join(sorted(allowed))}."
            )
        return value

    def concept_binding(
        self, concept: Mapping[str, Any], where: str, system: str, allowed: frozenset[str], rule: str
    ) -> None:
        """A CodeableConcept with a required binding to a value set drawn from one code system."""
        codings = [(w, c) for w, s, c in self.codings(concept, where) if s == system]
        if not codings:
            self.error("code-invalid", where, f"{rule}: it needs a coding from {system}.")
        for coding_where, code in codings:
            if code not in allowed:
                self.error(
                    "code-invalid",
                    f"{coding_where}.code",
                    f"{rule}: {code!r} is not one of {', '.join(sorted(allowed))}.",
                )

    def datetime_value(
        self, parent: Mapping[str, Any], key: str, where: str, *, rule: str, required: bool = False
    ) -> _Span | None:
        if required and not self.required(parent, key, where, rule):
            return None
        value = self.string(parent, key, where)
        if value is None:
            return None
        span = _parse_datetime(value)
        if span is None:
            self.error(
                "value",
                where,
                f"{rule}: {value!r} is not a valid FHIR dateTime (YYYY, YYYY-MM, YYYY-MM-DD or "
                "YYYY-MM-DDThh:mm:ss with a time zone).",
            )
        return span

    def reference(
        self,
        parent: Mapping[str, Any],
        key: str,
        where: str,
        *,
        targets: frozenset[str] | None,
        rule: str,
        required: bool = True,
        contained: bool = False,
    ) -> None:
        """A Reference with a literal `reference` (PA reference-rest) to one of `targets` (None: any type).

        `contained` allows "#id" to a contained resource, which PA reference-rest otherwise forbids."""
        if required and not self.required(parent, key, where, rule):
            return
        ref = self.obj(parent, key, where)
        if ref is None:
            return
        if not self.required(ref, "reference", f"{where}.reference", rule):
            return
        self.reference_target(ref, where, targets=targets, rule=rule, contained=contained)

    def reference_target(
        self,
        ref: Mapping[str, Any],
        where: str,
        *,
        targets: frozenset[str] | None,
        rule: str,
        contained: bool,
        severity: str = ERROR,
    ) -> None:
        name = where.rsplit(".", 1)[-1]
        literal = self.string(ref, "reference", f"{where}.reference")
        declared = self.string(ref, "type", f"{where}.type")
        if literal is None:
            target = declared.rsplit("/", 1)[-1] if declared else None
        elif literal.startswith("#"):
            if not contained:
                self.error(
                    "value",
                    f"{where}.reference",
                    f"{rule}: {name} {literal!r} points to a contained resource, but must point to a "
                    "stand-alone resource on a FHIR server.",
                )
                return
            target = self._contained_type(literal[1:])
            if target is None:
                self.error(
                    "value",
                    f"{where}.reference",
                    f"{rule}: {name} {literal!r} does not resolve to a resource in contained.",
                )
                return
        else:
            target = _reference_type(literal) or (declared.rsplit("/", 1)[-1] if declared else None)
        # Unresolvable here (e.g. urn:uuid in a Bundle): whoever holds the Bundle checks the target.
        if targets is not None and target is not None and target not in targets:
            issue = self.error if severity == ERROR else self.warning
            issue(
                "value",
                f"{where}.reference" if literal is not None else f"{where}.type",
                f"{rule}: {name} must point to {' or '.join(sorted(targets))}, not {target}.",
            )

    def _contained_type(self, fhir_id: str) -> str | None:
        if fhir_id == "":  # "#" is the containing resource itself
            return str(self.resource["resourceType"])
        contained = self.resource.get("contained")
        if not isinstance(contained, list):
            return None
        for item in contained:
            if (
                isinstance(item, dict)
                and item.get("id") == fhir_id
                and isinstance(item.get("resourceType"), str)
            ):
                return str(item["resourceType"])
        return None

    def rest_or_logical(
        self, ref: Mapping[str, Any], where: str, *, targets: frozenset[str], rule: str
    ) -> None:
        """PA reference-rest-or-logical: a literal reference, or an NPI identifier and a display."""
        name = where.rsplit(".", 1)[-1]
        if not _absent(ref.get("reference")):
            self.reference_target(ref, where, targets=targets, rule=rule, contained=False)
            return
        identifier = self.obj(ref, "identifier", f"{where}.identifier")
        if identifier is None:
            if _absent(ref.get("identifier")):
                self.error(
                    "required",
                    where,
                    f"PA-ident-1: {rule} {name} needs a reference or an NPI identifier.",
                )
        else:
            system = self.string(identifier, "system", f"{where}.identifier.system")
            if system != NPI_SYSTEM:
                self.error(
                    "value",
                    f"{where}.identifier.system",
                    f"PA-ident-1: {rule} {name}.identifier.system must be {NPI_SYSTEM}.",
                )
            self.required(
                identifier, "value", f"{where}.identifier.value", f"PA-ident-1: {rule} {name}.identifier"
            )
        if self.required(
            ref, "display", f"{where}.display", f"PA-ident-2: {rule} {name} without a reference"
        ):
            self.string(ref, "display", f"{where}.display")

    def notes(self, *, author_string: bool, rule: str) -> None:
        """Annotation rules shared by PA profiles: an author and a time on every note."""
        for where, note in self.objects(self.resource, "note", self.at("note")):
            has_reference = not _absent(note.get("authorReference"))
            if author_string:
                if not has_reference and _absent(note.get("authorString")):
                    self.error(
                        "required",
                        f"{where}.author",
                        f"{rule}: each note needs an authorReference or authorString.",
                    )
                self.string(note, "authorString", f"{where}.authorString")
            elif not has_reference:
                extra = " (authorString is not accepted)" if not _absent(note.get("authorString")) else ""
                self.error(
                    "required",
                    f"{where}.authorReference",
                    f"{rule}: each note needs an authorReference{extra}.",
                )
            author = self.obj(note, "authorReference", f"{where}.authorReference")
            if author is not None:
                # PA's own ExampleFulfillmentTask has a PractitionerRole author (the FSH has a TODO to allow
                # it), so a wrong target type is only a warning.
                self.reference_target(
                    author,
                    f"{where}.authorReference",
                    targets=PA_NOTE_AUTHOR_TYPES,
                    rule=rule,
                    contained=True,
                    severity=WARNING,
                )
            self.datetime_value(note, "time", f"{where}.time", rule=f"{rule} note", required=True)

    def category_slice(self, system: str, code: str, *, rule: str, at_most_once: bool) -> bool:
        """Whether category has a CodeableConcept carrying system#code; reports its absence (and repeats)."""
        where = self.at("category")
        matches = [
            w
            for w, cc in self.objects(self.resource, "category", where)
            if self.has_coding(cc, w, system, code)
        ]
        if not matches:
            self.error("required", where, f"{rule}: category must include {system}#{code}.")
        elif at_most_once and len(matches) > 1:
            self.error(
                "structure",
                where,
                f"{rule}: category {system}#{code} must appear once, found {len(matches)}.",
            )
        return bool(matches)


# --- PA Service Request -------------------------------------------------------------------------------------


def _check_service_request(r: _Report) -> None:
    res, rule = r.resource, "PA ServiceRequest"
    r.prohibited(res, ("implicitRules", "modifierExtension", "doNotPerform", "specimen"), r.root, rule)
    r.code_value(res, "status", PA_SR_STATUSES, rule=f"{rule} status", required=True)
    r.code_value(res, "intent", PA_SR_INTENTS, rule=f"{rule} intent", required=True)

    if r.required(res, "category", r.at("category"), rule):
        r.category_slice(PA_CATEGORY_SYSTEM, PA_CATEGORY_CODE, rule=rule, at_most_once=True)
    for where, concept in r.objects(res, "category", r.at("category")):
        # category[USCore] has a required binding; the PA slice uses another system, so only SNOMED is bound.
        for coding_where, system, category_code in r.codings(concept, where):
            if system == SNOMED_SYSTEM and category_code not in PA_SR_CATEGORY_CODES:
                r.error(
                    "code-invalid",
                    f"{coding_where}.code",
                    f"{rule} US Core category: SNOMED {category_code!r} is not one of "
                    f"{', '.join(sorted(PA_SR_CATEGORY_CODES))}.",
                )

    if r.required(res, "code", r.at("code"), rule):
        code = r.obj(res, "code", r.at("code"))
        if code is not None and not r.has_coding(code, r.at("code"), SNOMED_SYSTEM, PA_SR_INTERVENTION_CODES):
            r.warning(
                "code-invalid",
                r.at("code"),
                f"{rule} code: no coding from the PA intervention value set (extensible binding), "
                "e.g. SNOMED 390893007 Referral to physical activity program.",
            )

    r.reference(res, "subject", r.at("subject"), targets=frozenset({"Patient"}), rule=rule)
    r.datetime_value(res, "authoredOn", r.at("authoredOn"), rule=rule, required=True)
    if r.required(res, "requester", r.at("requester"), rule):
        requester = r.obj(res, "requester", r.at("requester"))
        if requester is not None:
            r.rest_or_logical(requester, r.at("requester"), targets=PA_SR_REQUESTER_TYPES, rule=rule)
    for where, performer in r.objects(res, "performer", r.at("performer")):
        r.rest_or_logical(performer, where, targets=PA_SR_PERFORMER_TYPES, rule=rule)

    for key in ("reasonCode", "reasonReference"):
        r.objects(res, key, r.at(key))  # only to report a wrongly shaped reason
    if _absent(res.get("reasonCode")) and _absent(res.get("reasonReference")):
        r.error("invariant", r.root, "pa-sr-1: a PA ServiceRequest needs a reasonCode or a reasonReference.")
    r.notes(author_string=True, rule=rule)


# --- PA Task for Referral Management ------------------------------------------------------------------------


def _check_task(r: _Report) -> None:
    res, rule = r.resource, "PA Task"
    r.prohibited(res, ("implicitRules", "modifierExtension"), r.root, rule)
    status = r.code_value(
        res,
        "status",
        PA_TASK_STATUSES,
        rule=f"{rule} status (task-status without received and ready)",
        required=True,
    )
    if r.required(res, "intent", r.at("intent"), rule):
        intent = r.string(res, "intent", r.at("intent"))
        if intent is not None and intent != PA_TASK_INTENT:
            r.error("value", r.at("intent"), f"{rule}: intent is fixed to 'order', found {intent!r}.")
    code = r.obj(res, "code", r.at("code"))
    if code is not None and not r.has_coding(code, r.at("code"), TASK_CODE_SYSTEM, TASK_CODE_FULFILL):
        r.error(
            "value",
            r.at("code"),
            f"{rule}: code, when present, must be {TASK_CODE_SYSTEM}#{TASK_CODE_FULFILL}.",
        )

    # The hub accepts a contained ServiceRequest or Patient (PA reference-rest would not); the other
    # references stay RESTful.
    r.reference(
        res,
        "focus",
        r.at("focus"),
        targets=frozenset({"ServiceRequest"}),
        rule=rule,
        contained=True,
    )
    r.reference(res, "for", r.at("for"), targets=frozenset({"Patient"}), rule=rule, contained=True)
    authored_on = r.datetime_value(res, "authoredOn", r.at("authoredOn"), rule=rule, required=True)
    last_modified = r.datetime_value(res, "lastModified", r.at("lastModified"), rule=rule)
    r.reference(res, "requester", r.at("requester"), targets=PA_TASK_REQUESTER_TYPES, rule=rule)
    r.reference(res, "owner", r.at("owner"), targets=PA_TASK_OWNER_TYPES, rule=rule)

    has_reason = not _absent(res.get("statusReason"))
    if status is not None:
        if status in TASK_STATUS_REASON_REQUIRED and not has_reason:
            r.error(
                "invariant",
                r.at("statusReason"),
                f"pa-taskrm-1: a Task with status {status!r} must say why in statusReason.",
            )
        elif status not in TASK_STATUS_REASON_REQUIRED and has_reason:
            r.error(
                "invariant",
                r.at("statusReason"),
                "pa-taskrm-1: statusReason is only allowed when status is rejected, on-hold, cancelled or "
                f"failed, not {status!r}.",
            )
    # Human-readable text is what the other side shows; PA (MS) and SDOH (1..1) both rely on it.
    for key in ("statusReason", "businessStatus", "reasonCode"):
        concept = r.obj(res, key, r.at(key))
        if concept is not None and r.required(concept, "text", r.at(key, "text"), f"{rule} {key}"):
            r.string(concept, "text", r.at(key, "text"))

    if (
        authored_on is not None
        and last_modified is not None
        and _certainly_before(last_modified, authored_on)
    ):
        r.error(
            "invariant",
            r.at("lastModified"),
            f"inv-1: lastModified ({res['lastModified']}) must not be earlier than authoredOn "
            f"({res['authoredOn']}).",
        )
    r.notes(author_string=False, rule=rule)

    for where, output in r.objects(res, "output", r.at("output")):
        r.prohibited(output, ("modifierExtension",), where, rule)
        output_type = r.obj(output, "type", f"{where}.type")
        value = r.obj(output, "valueCodeableConcept", f"{where}.valueCodeableConcept")
        # output[PerformedActivity] (type resulting-activity) must describe a coded activity in words.
        if (
            output_type is not None
            and value is not None
            and r.has_coding(output_type, f"{where}.type", SDOHCC_TEMPORARY_SYSTEM, RESULTING_ACTIVITY_CODE)
        ):
            r.required(
                value, "text", f"{where}.valueCodeableConcept.text", f"{rule} output[PerformedActivity]"
            )


# --- Observations -------------------------------------------------------------------------------------------


def _evs_code(r: _Report) -> str | None:
    code = r.obj(r.resource, "code", r.at("code"))
    if code is None:
        return None
    for _, system, value in r.codings(code, r.at("code")):
        if system == LOINC_SYSTEM and value in EVS_UNITS:
            return value
    return None


def _check_observation(r: _Report) -> None:
    res = r.resource
    r.code_value(res, "status", R4_OBSERVATION_STATUSES, rule="Observation status", required=True)
    r.required(res, "code", r.at("code"), "Observation")
    loinc = _evs_code(r)
    if loinc is None:
        r.reference(res, "subject", r.at("subject"), targets=None, rule="Observation", contained=True)
        return

    rule = f"PA EVS Observation {loinc}"
    r.prohibited(res, ("focus", "specimen"), r.root, rule)
    if r.required(res, "category", r.at("category"), rule):
        r.category_slice(OBSERVATION_CATEGORY_SYSTEM, ACTIVITY_CATEGORY_CODE, rule=rule, at_most_once=False)
        r.category_slice(PA_CATEGORY_SYSTEM, PA_CATEGORY_CODE, rule=rule, at_most_once=False)
    r.reference(res, "subject", r.at("subject"), targets=frozenset({"Patient"}), rule=rule)

    if "effectiveDateTime" in res and "effectivePeriod" in res:
        r.error("structure", r.at("effectivePeriod"), f"{rule}: only one effective[x] is allowed.")
    elif not _absent(res.get("effectivePeriod")):
        r.error(
            "value", r.at("effectivePeriod"), f"{rule}: effective must be an effectiveDateTime, not a Period."
        )
    else:
        effective = r.datetime_value(
            res, "effectiveDateTime", r.at("effectiveDateTime"), rule=rule, required=True
        )
        if effective is not None and effective.precision in ("year", "month"):
            r.error(
                "value", r.at("effectiveDateTime"), f"{rule}: effectiveDateTime must be at least a full date."
            )

    where = r.at("valueQuantity")
    if not r.required(res, "valueQuantity", where, rule):
        return
    quantity = r.obj(res, "valueQuantity", where)
    if quantity is None:
        return
    if r.required(quantity, "value", f"{where}.value", rule):
        value = quantity["value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            r.error(
                "structure",
                f"{where}.value",
                f"{rule}: valueQuantity.value must be a JSON number, not {_shape(value)}.",
            )
    if r.required(quantity, "system", f"{where}.system", rule):
        system = r.string(quantity, "system", f"{where}.system")
        if system is not None and system != UCUM_SYSTEM:
            r.error("value", f"{where}.system", f"{rule}: valueQuantity.system must be {UCUM_SYSTEM}.")
    expected = EVS_UNITS[loinc]
    if r.required(quantity, "code", f"{where}.code", rule):
        unit = r.string(quantity, "code", f"{where}.code")
        if unit is not None and unit != expected:
            r.error(
                "value",
                f"{where}.code",
                f"{rule}: valueQuantity.code must be the UCUM unit {expected!r}, not {unit!r}.",
            )


# --- Condition ----------------------------------------------------------------------------------------------


def _check_condition(r: _Report) -> None:
    res = r.resource
    pa = any(
        r.has_coding(concept, where, PA_CATEGORY_SYSTEM, PA_CATEGORY_CODE)
        for where, concept in r.objects(res, "category", r.at("category"))
    )
    rule = "PA Condition" if pa else "Condition"

    clinical = r.obj(res, "clinicalStatus", r.at("clinicalStatus"))
    if clinical is not None:
        r.concept_binding(
            clinical,
            r.at("clinicalStatus"),
            CONDITION_CLINICAL_SYSTEM,
            R4_CONDITION_CLINICAL_STATUSES,
            "Condition clinicalStatus",
        )
    verification = r.obj(res, "verificationStatus", r.at("verificationStatus"))
    if verification is not None:
        allowed = PA_CONDITION_VERIFICATION_STATUSES if pa else R4_CONDITION_VERIFICATION_STATUSES
        r.concept_binding(
            verification,
            r.at("verificationStatus"),
            CONDITION_VER_STATUS_SYSTEM,
            allowed,
            f"{rule} verificationStatus",
        )
    r.reference(
        res,
        "subject",
        r.at("subject"),
        targets=frozenset({"Patient"}) if pa else None,
        rule=rule,
        contained=not pa,
    )
    if not pa:
        return

    r.prohibited(res, ("implicitRules", "modifierExtension", "bodySite", "stage"), r.root, rule)
    if r.required(res, "code", r.at("code"), rule):
        code = r.obj(res, "code", r.at("code"))
        if code is not None and not r.has_coding(code, r.at("code"), ICD10CM_SYSTEM, PA_CONDITION_CODE):
            r.error(
                "value",
                r.at("code"),
                f"{rule}: code must carry {ICD10CM_SYSTEM}#{PA_CONDITION_CODE} (Lack of physical exercise).",
            )


# --- PA Intervention Report ---------------------------------------------------------------------------------


def _check_diagnostic_report(r: _Report) -> None:
    res, rule = r.resource, "PA Intervention Report"
    r.prohibited(res, ("implicitRules", "modifierExtension"), r.root, rule)
    r.code_value(res, "status", PA_DR_STATUSES, rule=f"{rule} status", required=True)
    if r.required(res, "category", r.at("category"), rule):
        r.category_slice(PA_CATEGORY_SYSTEM, PA_CATEGORY_CODE, rule=rule, at_most_once=True)
    if r.required(res, "code", r.at("code"), rule):
        code = r.obj(res, "code", r.at("code"))
        if code is not None and not (
            r.has_coding(code, r.at("code"), LOINC_SYSTEM, PA_DR_TYPE_CODES)
            or r.has_coding(code, r.at("code"), PA_CATEGORY_SYSTEM, PA_DR_TYPE_TEMPORARY_CODE)
        ):
            r.warning(
                "code-invalid",
                r.at("code"),
                f"{rule} code: no coding from the PA report type value set (extensible binding), "
                "e.g. LOINC 11488-4 Consult note.",
            )
    r.reference(res, "subject", r.at("subject"), targets=frozenset({"Patient"}), rule=rule)
    # US Core DiagnosticReport Note: effective[x] 1..1.
    if _absent(res.get("effectiveDateTime")) and _absent(res.get("effectivePeriod")):
        r.error("required", r.at("effective"), f"{rule}: effectiveDateTime or effectivePeriod is required.")

    for where, form in r.objects(res, "presentedForm", r.at("presentedForm")):
        if _absent(form.get("data")) and _absent(form.get("url")):
            r.error("invariant", where, "pa-dr-1: each presentedForm needs data or a url.")
        content_type = r.string(form, "contentType", f"{where}.contentType")
        if content_type is None:
            # The profile fixes the value but leaves the element optional; a consumer has to guess without it.
            r.warning(
                "value",
                f"{where}.contentType",
                f"{rule}: presentedForm.contentType should be {PDF_CONTENT_TYPE}.",
            )
        elif content_type != PDF_CONTENT_TYPE:
            r.error(
                "value",
                f"{where}.contentType",
                f"{rule}: presentedForm.contentType must be {PDF_CONTENT_TYPE}.",
            )


# --- Patient, Goal ------------------------------------------------------------------------------------------


def _check_patient(r: _Report) -> None:
    r.code_value(r.resource, "gender", R4_ADMINISTRATIVE_GENDERS, rule="Patient gender", required=False)


def _check_goal(r: _Report) -> None:
    r.code_value(
        r.resource, "lifecycleStatus", R4_GOAL_LIFECYCLE_STATUSES, rule="Goal lifecycleStatus", required=True
    )


_CHECKS: Mapping[str, Callable[[_Report], None]] = MappingProxyType(
    {
        "ServiceRequest": _check_service_request,
        "Task": _check_task,
        "Observation": _check_observation,
        "Condition": _check_condition,
        "DiagnosticReport": _check_diagnostic_report,
        "Patient": _check_patient,
        "Goal": _check_goal,
    }
)
