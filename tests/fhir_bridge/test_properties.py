"""Property tests (Hypothesis) of the parser, the validator and the transaction processor: the PA fixtures,
mutated as a careless or hostile client would (elements dropped, wrong types, huge strings, deep nesting,
unknown types, duplicate fullUrls, self and circular references, control characters). Every input is either
taken or refused with a 4xx OperationOutcome, and a refused one leaves no row behind.

Small here (HUB_PROPERTY_EXAMPLES, 15 per property by default); ``make assure`` runs 1,000.
"""

import copy
import os
import uuid

import orjson
import pytest
from django.test import override_settings
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fhir_bridge import intake, limits
from fhir_bridge.examples import example, scenario2_bundle
from fhir_bridge.fhir import structural_issues
from fhir_bridge.models import InboundMessage, SearchToken, StoredResource
from fhir_bridge.outcomes import FhirError
from referrals.models import Referral, ReferralEvent

EXAMPLES = int(os.environ.get("HUB_PROPERTY_EXAMPLES", "15"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES < 50,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])

_WRONG = st.one_of(st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=False), st.booleans(), st.none(), st.just([]), st.just({}),
                   st.just([1, "x"]), st.text(max_size=5))
_CONTROL = st.text(alphabet=[chr(c) for c in range(0, 32)] + ["\u007f", "\u2028", "\ufeff"], min_size=1, max_size=4)


def _paths(node, path=()):
    """Every path to a value inside ``node`` (dict keys and list indexes)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path + (key,)
            yield from _paths(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield path + (index,)
            yield from _paths(value, path + (index,))


def _parent(document, path):
    node = document
    for part in path[:-1]:
        node = node[part]
    return node


@st.composite
def mutated(draw, document: dict) -> dict:
    """``document`` with one to three mutations."""
    document = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(document))
        kind = draw(st.sampled_from(["drop", "wrong-type", "huge", "deep", "unknown-type", "duplicate-fullurl",
                                     "self-reference", "circular", "control"]))
        if kind in ("drop", "wrong-type", "huge", "control") and paths:
            path = draw(st.sampled_from(paths))
            parent = _parent(document, path)
            if kind == "drop":
                del parent[path[-1]]
            elif kind == "wrong-type":
                parent[path[-1]] = draw(_WRONG)
            elif kind == "huge":
                parent[path[-1]] = "x" * draw(st.sampled_from([256, 501, 2_000, 1_100]))
            else:
                value = parent[path[-1]]
                text = value if isinstance(value, str) else "text"
                cut = draw(st.integers(0, len(text)))
                parent[path[-1]] = text[:cut] + draw(_CONTROL) + text[cut:]
        elif kind == "deep":
            node = document
            for _ in range(draw(st.integers(1, 80))):
                child = {"url": "http://example.org/nested"}
                node.setdefault("extension", []).append(child)
                node = child
            node["valueString"] = "bottom"
        elif kind == "unknown-type":
            targets = [e.get("resource") for e in document.get("entry") or [] if isinstance(e, dict)] or [document]
            target = draw(st.sampled_from(targets))
            if isinstance(target, dict):
                target["resourceType"] = draw(st.sampled_from(["Nonsense", "DiagnosticReport", "Subscription", "",
                                                               "task", "Bundle"]))
        elif kind in ("duplicate-fullurl", "self-reference", "circular"):
            entries = [e for e in document.get("entry") or [] if isinstance(e, dict)]
            if len(entries) >= 2:
                first, second = draw(st.sampled_from(entries)), draw(st.sampled_from(entries))
                if kind == "duplicate-fullurl":
                    second["fullUrl"] = first.get("fullUrl")
                elif isinstance(first.get("resource"), dict):
                    resource = first["resource"]
                    target = first.get("fullUrl") if kind == "self-reference" else second.get("fullUrl")
                    # Point an element that holds references at the entry itself, or at another that points back.
                    resource[draw(st.sampled_from(["focus", "basedOn", "subject", "partOf"]))] = (
                        {"reference": target} if draw(st.booleans()) else [{"reference": target}])
                    if kind == "circular" and isinstance(second.get("resource"), dict):
                        second["resource"]["basedOn"] = [{"reference": first.get("fullUrl")}]
    return document


def _rows() -> tuple[int, ...]:
    return (Referral.objects.count(), ReferralEvent.objects.count(), StoredResource.objects.count(),
            SearchToken.objects.count(), InboundMessage.objects.count())


def _assert_taken_or_refused_cleanly(response, before) -> None:
    event(f"answered {response.status_code}")  # make assure shows the spread (--hypothesis-show-statistics)
    assert response.status_code < 500, response.content[:600]
    body = orjson.loads(response.content) if response.content else None
    if response.status_code >= 400:
        assert body["resourceType"] == "OperationOutcome", body
        assert body["issue"] and all(i["severity"] in ("error", "fatal") for i in body["issue"])
        assert _rows() == before, "a refused request left rows behind"


def _fresh_bundle() -> dict:
    return scenario2_bundle(identifier=f"prop-{uuid.uuid4()}")


@pytest.mark.django_db
@override_settings(HUB_MAX_STRING_CHARS=1_024)  # so that a "huge" string can cross the limit in a small run
@PROPERTY
@given(data=st.data())
def test_a_mutated_referral_bundle_is_taken_or_refused_with_a_4xx_and_no_rows(fhir, data):
    bundle = data.draw(mutated(_fresh_bundle()))
    before = _rows()

    response = fhir.post("", bundle)

    _assert_taken_or_refused_cleanly(response, before)


@pytest.mark.django_db
@PROPERTY
@given(data=st.data(), resource_type=st.sampled_from(["Patient", "ServiceRequest", "Task", "Condition", "Goal"]))
def test_a_mutated_single_resource_is_taken_or_refused_with_a_4xx_and_no_rows(fhir, data, resource_type):
    names = {"Patient": "Scen2PatientJohansson", "ServiceRequest": "Scen2ServiceRequest",
             "Task": "Scen2TaskFit4LifeV2", "Condition": "Scen2ConditionLackOfExercise", "Goal": "Scen1GoalV1"}
    resource = data.draw(mutated(example(names[resource_type])))
    before = _rows()

    response = fhir.post(resource_type, resource)

    _assert_taken_or_refused_cleanly(response, before)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=40,
)


@PROPERTY
@given(document=_JSON, resource_type=st.sampled_from(["Patient", "Task", "Bundle", "Nonsense"]))
def test_the_parser_and_validator_raise_only_fhir_errors(document, resource_type):
    if isinstance(document, dict):
        document["resourceType"] = resource_type
    raw = orjson.dumps(document)
    try:
        parsed = limits.parse_json(raw)
        structural_issues(parsed, path=resource_type)
        intake.validate([(resource_type, parsed)])
    except FhirError as exc:
        assert 400 <= exc.status < 500 and exc.issues


@PROPERTY
@given(depth=st.integers(1, 3000))
def test_any_depth_is_parsed_or_refused_without_a_recursion_error(depth):
    raw = b'{"resourceType":"Patient","extension":' + b'[{"extension":' * depth + b"[]" + b"}]" * depth + b"}"
    try:
        limits.parse_json(raw)
    except FhirError as exc:
        assert exc.status == 400 and "deep" in exc.issues[0].diagnostics
    else:
        assert 2 * depth + 2 <= 32
