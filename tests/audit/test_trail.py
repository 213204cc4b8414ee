"""Every access to PHI leaves exactly one append-only audit row (issue 12, part 3), and the trail is served as
FHIR AuditEvent only to a client granted system/AuditEvent.rs."""

from urllib.parse import urlencode

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from audit.middleware import admin_phi_models
from audit.models import Access, AppendOnly
from fhir_bridge.examples import scenario2_bundle
from fhir_bridge.fhir import structural_issues
from fhir_bridge.route_table import TABLE
from fhir_bridge.routes import ROUTES
from fhir_bridge.smart_scopes import DEFAULT_SCOPES, Grant, grant_allows, scopes_grantable
from referrals.models import Referral
from referrals.offers import offer_accept
from referrals.reports import report_request
from tests.conftest import FhirClient, fhir_client_for, json_of
from tests.factories import ALL_SCOPES, EhrClientFactory
from tests.portal.conftest import offer, practice, signed_in  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db

AUDITOR_SCOPES = ALL_SCOPES + " system/AuditEvent.rs"


def _one_row(before: int) -> Access:
    rows = list(Access.objects.order_by("id")[before:])
    assert len(rows) == 1, [(r.method, r.path, r.status) for r in rows]
    return rows[0]


def _example_path(route, resource_type: str, fhir_id: str) -> str:
    """A concrete path for one of the router's patterns."""
    pattern = route.pattern.pattern.strip("^$")
    path = (pattern.replace("(?P<type>[A-Z][A-Za-z]+)", resource_type)
            .replace(r"(?P<id>[A-Za-z0-9\-\.]{1,64})", fhir_id).replace("(?P<vid>[0-9]+)", "1")
            .replace(r"\$", "$"))
    return path


def test_every_fhir_route_on_every_type_leaves_exactly_one_row(fhir, ehr_client):
    assert fhir.post("", scenario2_bundle(identifier="audit-walk")).status_code == 200
    task_id = Referral.objects.get().resources.get(resource_type="Task").fhir_id
    walked = 0
    for route in ROUTES:
        if route.public:
            before = Access.objects.count()
            fhir.get(route.pattern.pattern.strip("^$").replace("\\", ""))
            assert Access.objects.count() == before  # metadata and SMART discovery carry no PHI
            continue
        for served in TABLE:
            fhir_id = task_id if served.name == "Task" else "unknown-id"
            path = _example_path(route, served.name, fhir_id)
            before = Access.objects.count()
            if route.method == "GET":
                response = fhir.get(path)
            elif route.method == "PUT":
                response = fhir.put(path, {"resourceType": served.name, "id": fhir_id})
            elif route.method == "DELETE":
                response = fhir.delete(path)
            elif path.endswith("_search"):
                response = fhir.post(path, urlencode({"_count": "1"}), content_type="application/x-www-form-urlencoded")
            else:
                response = fhir.post(path, {"resourceType": served.name if path else "Bundle"})
            row = _one_row(before)
            assert row.status == response.status_code < 500, (path, response.content[:300])
            assert (row.channel, row.method, row.agent_client) == ("fhir", route.method, ehr_client.client_id)
            assert row.clinic_id == ehr_client.clinic_id
            assert row.entity_type == (served.name if path else "Bundle")
            assert row.source_ip == "127.0.0.1"
            walked += 1
    assert walked == (len(ROUTES) - 2) * len(TABLE)


def test_each_interaction_names_what_it_touched(fhir, ehr_client):
    before = Access.objects.count()
    response = fhir.post("", scenario2_bundle(identifier="audit-what"))
    created = _one_row(before)
    task_id = Referral.objects.get().resources.get(resource_type="Task").fhir_id
    assert response.status_code == 200
    assert (created.interaction, created.action, created.entity_type, created.entity_id) == (
        "transaction", "E", "Task", task_id)

    before = Access.objects.count()
    fhir.get(f"Task/{task_id}")
    read = _one_row(before)
    assert (read.interaction, read.action, read.entity_id, read.status) == ("read", "R", task_id, 200)

    before = Access.objects.count()
    fhir.get("Task", status="requested", _count="5")
    found = _one_row(before)
    assert (found.interaction, found.query) == ("search", "status=requested&_count=5")


def test_refused_requests_are_recorded_too(fhir, other_fhir):
    fhir.post("", scenario2_bundle(identifier="audit-refused"))
    task_id = Referral.objects.get().resources.get(resource_type="Task").fhir_id

    before = Access.objects.count()
    FhirClient(None).get(f"Task/{task_id}")
    anonymous = _one_row(before)
    assert (anonymous.status, anonymous.agent_client, anonymous.entity_id) == (401, "", task_id)

    before = Access.objects.count()
    other_fhir.get(f"Task/{task_id}")  # another clinic's client: 404, and the attempt is on the record
    assert _one_row(before).status == 404

    before = Access.objects.count()
    fhir.get("Nonsense/1")
    assert _one_row(before).status == 404


def test_the_trail_is_append_only():
    row = Access.objects.create(channel="fhir", action="R", interaction="read", method="GET", status=200)
    row.status = 500
    with pytest.raises(AppendOnly):
        row.save()
    with pytest.raises(AppendOnly):
        row.delete()
    with pytest.raises(AppendOnly):
        Access.objects.filter(pk=row.pk).update(status=500)
    with pytest.raises(AppendOnly):
        Access.objects.all().delete()
    assert Access.objects.get(pk=row.pk).status == 200


@pytest.fixture
def staff(db):
    user = get_user_model().objects.create_user("coord", "c@hub.invalid", "pw-long-enough-1234", is_staff=True,
                                                is_superuser=True)
    client = Client()
    client.force_login(user)
    return client


def test_the_coordinators_api_leaves_one_row_per_request(staff, fhir):
    fhir.post("", scenario2_bundle(identifier="audit-api"))
    referral = Referral.objects.get()
    cases = [
        ("get", "/api/admin/routing/queue", "search", "", ""),
        ("get", f"/api/admin/referrals/{referral.pk}/routing", "read", "Referral", str(referral.pk)),
        ("post", f"/api/admin/referrals/{referral.pk}/route", "route", "Referral", str(referral.pk)),
        ("post", f"/api/admin/referrals/{referral.pk}/reroute", "reroute", "Referral", str(referral.pk)),
        ("post", "/api/admin/offers/999999/answer", "answer", "Offer", "999999"),
    ]
    for method, path, interaction, entity_type, entity_id in cases:
        before = Access.objects.count()
        response = getattr(staff, method)(path, {} if method == "get" else "{}", **(
            {} if method == "get" else {"content_type": "application/json"}))
        row = _one_row(before)
        assert response.status_code < 500
        assert (row.channel, row.interaction, row.agent_user, row.entity_type, row.entity_id, row.status) == (
            "api", interaction, "coord", entity_type, entity_id, response.status_code)

    before = Access.objects.count()
    assert Client().get("/api/admin/routing/queue").status_code == 401
    refused = _one_row(before)
    assert (refused.agent_user, refused.status) == ("", 401)


def test_admin_pages_of_referral_data_leave_one_row_and_others_none(staff, fhir):
    fhir.post("", scenario2_bundle(identifier="audit-admin"))
    referral = Referral.objects.get()
    for path, interaction, entity_id in [
        ("/admin/referrals/referral/", "search", ""),
        (f"/admin/referrals/referral/{referral.pk}/change/", "read", str(referral.pk)),
        ("/admin/fhir_bridge/storedresource/", "search", ""),
    ]:
        before = Access.objects.count()
        assert staff.get(path).status_code == 200
        row = _one_row(before)
        assert (row.channel, row.interaction, row.agent_user, row.entity_id) == ("admin", interaction, "coord",
                                                                                 entity_id)
    before = Access.objects.count()
    staff.get("/admin/")
    staff.get("/admin/network/conditiongroup/")
    assert Access.objects.count() == before


def test_no_client_has_the_audit_scope_by_default():
    assert not any("AuditEvent" in scope for scope in DEFAULT_SCOPES)
    assert scopes_grantable(requested=["system/AuditEvent.rs"], allowed=["system/*.cruds"]) == []
    grant = Grant(client=None, scopes=frozenset({"system/*.rs"}))
    assert grant_allows(grant, "Task", "read") and not grant_allows(grant, "AuditEvent", "read")


def test_audit_events_are_served_only_to_a_granted_client_and_only_its_clinics(fhir, ehr_client):
    fhir.post("", scenario2_bundle(identifier="audit-serve"))
    task_id = Referral.objects.get().resources.get(resource_type="Task").fhir_id
    fhir.get(f"Task/{task_id}")
    outsider = fhir_client_for(EhrClientFactory(scopes=AUDITOR_SCOPES), AUDITOR_SCOPES)
    outsider.get("Task")

    refused = fhir.get("AuditEvent")
    assert refused.status_code == 403
    assert Access.objects.order_by("-id").first().status == 403  # the refusal is itself on the record

    ehr_client.scopes = AUDITOR_SCOPES  # granted on purpose, as register_ehr_client --scope would
    ehr_client.save()
    auditor = fhir_client_for(ehr_client, AUDITOR_SCOPES)
    response = auditor.get("AuditEvent", agent=ehr_client.client_id, _count="50")
    assert response.status_code == 200, response.content[:400]
    bundle = json_of(response)
    events = [e["resource"] for e in bundle["entry"]]
    assert bundle["total"] == len(events) == 3  # the transaction, the read, the refused AuditEvent search
    assert {e["subtype"][0]["code"] for e in events} == {"transaction", "read", "search"}
    for event in events:
        assert structural_issues(event, path="AuditEvent") == []
        assert event["agent"][0]["who"]["identifier"]["value"] == ehr_client.client_id
    read = next(e for e in events if e["subtype"][0]["code"] == "read")
    assert read["entity"][0]["what"]["reference"] == f"Task/{task_id}"
    assert read["outcome"] == "0" and read["action"] == "R"
    assert read["meta"]["profile"] == ["https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.Read"]

    one = auditor.get(f"AuditEvent/{read['id']}")
    assert json_of(one)["id"] == read["id"]
    assert auditor.get("AuditEvent/" + "9" * 40).status_code == 404
    assert json_of(auditor.get("AuditEvent", _id="9" * 40))["total"] == 0
    outsiders_row = Access.objects.get(agent_client=outsider_client_id(outsider))
    assert auditor.get(f"AuditEvent/{outsiders_row.pk}").status_code == 404


def outsider_client_id(fhir_client: FhirClient) -> str:
    import jwt

    return jwt.decode(fhir_client.token, options={"verify_signature": False})["sub"]


def test_a_deeply_nested_body_to_the_coordinators_api_is_a_400_and_on_the_record(staff, fhir):
    fhir.post("", scenario2_bundle(identifier="audit-deep"))
    referral = Referral.objects.get()
    body = '{"role":' + "[" * 5000 + "]" * 5000 + "}"

    before = Access.objects.count()
    response = staff.post(f"/api/admin/referrals/{referral.pk}/route", body, content_type="application/json")

    assert response.status_code == 400
    assert _one_row(before).status == 400


# --- Pages: the therapists' portal, and the admin's models of PHI -----------------------------------------------

_PORTAL_KWARGS = {"offer_id": None, "referral_id": None, "report_id": None, "action": "session", "uidb64": "MQ", "token": "set-password"}


def test_every_portal_page_leaves_exactly_one_row_for_each_method(clinic, practice, offer):
    # Walks portal.urls itself: a page added there later is walked (and audited, by its namespace) too.
    from portal.urls import urlpatterns

    offer_accept(offer=offer, actor="user:therapist")
    offer.referral.refresh_from_db()
    report = report_request(referral=offer.referral, actor="user:therapist")  # the case's report pages need one
    kwargs = {**_PORTAL_KWARGS, "offer_id": offer.pk, "referral_id": offer.referral_id, "report_id": report.pk}
    browser = signed_in(practice.therapist)
    walked = []
    patterns = sorted(urlpatterns, key=lambda p: p.name == "logout")  # signing out last
    for pattern in patterns:
        path = reverse(f"portal:{pattern.name}", kwargs={k: kwargs[k] for k in pattern.pattern.converters})
        for method in ("get", "post"):
            before = Access.objects.count()
            response = getattr(browser, method)(path)
            row = _one_row(before)
            assert (row.channel, row.method, row.path, row.status) == (
                "portal", method.upper(), path, response.status_code), path
            assert response.status_code < 500
            assert row.agent_user == ("" if (pattern.name, method) == ("logout", "post") else "therapist")
            if "referral_id" in pattern.pattern.converters:
                assert (row.entity_type, row.entity_id) == ("Referral", str(offer.referral_id))
            walked.append((method, pattern.name))
    assert {"offers", "case", "case_action", "offer_accept", "login"} <= {name for _, name in walked}
    case = next(r for r in Access.objects.filter(channel="portal", method="GET", path__endswith=f"/{offer.referral_id}"))
    assert (case.interaction, case.action) == ("read", "R")
    listed = Access.objects.filter(channel="portal", method="GET", path="/portal/offers").get()
    assert listed.interaction == "search"
    recorded = Access.objects.filter(channel="portal", method="POST", path__endswith="/session").get()
    assert (recorded.interaction, recorded.status) == ("session", 400)  # an empty form, refused in place


def test_the_admins_models_of_phi_are_derived_and_include_every_case_record():
    models = admin_phi_models()
    for name in ("assessment", "measurement", "exerciseprogram", "programcomponent", "session",
                 "sessioncomponent", "pavscheckin", "adverseevent", "report", "referral", "offer"):
        assert f"referrals_{name}" in models
    assert {"fhir_bridge_storedresource", "fhir_bridge_resourceversion", "notifications_delivery"} <= models
    assert not any(model.startswith(("network_", "auth_", "audit_")) for model in models)


def test_control_characters_in_a_logged_path_or_query_are_stored_as_escapes(staff):
    before = Access.objects.count()
    response = staff.get("/api/admin/ref\x00errals/\x1b[31m", QUERY_STRING="q=a\x00b\rc")
    row = _one_row(before)

    assert response.status_code == 404
    assert row.path == "/api/admin/ref\\x00errals/\\x1b[31m"
    assert row.query == "q=a\\x00b\\x0dc"
