"""Importing the network from a FHIR Bundle (fhir_bridge/network_import.py): the same rows as the CSV reader, so
the same idempotent upserts; the hub's own rendering imports back unchanged."""

import copy

import pytest

from fhir_bridge.network_fhir import RENDER, _querysets
from fhir_bridge.network_import import EXT_MAX_ACTIVE_CASES, rows_from_fhir_bundle
from network.demo import demo_network_load
from network.importing import network_import
from network.models import Credential, Organization, Professional, ProfessionalRole, Site
from tests.network.factories import RoleFactory, SiteFactory
from tests.network.test_import import SAMPLE_BUNDLE, SAMPLE_CSV, import_csv, snapshot

pytestmark = pytest.mark.django_db


def hub_bundle() -> dict:
    """The whole network as the hub renders it, in a searchset Bundle like the FHIR API's."""
    entries = []
    for resource_type, queryset in _querysets().items():
        for row in queryset.order_by("pk"):
            resource = RENDER[resource_type](row)
            entries.append(
                {
                    "fullUrl": f"https://hub.example.org/fhir/{resource_type}/{row.fhir_id}",
                    "resource": resource,
                    "search": {"mode": "match"},
                }
            )
    return {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}


def test_the_fhir_sample_bundle_imports_the_same_network_as_the_csv_sample():
    report = network_import(rows=rows_from_fhir_bundle(SAMPLE_BUNDLE), dry_run=False, actor="test")

    assert report.errors == []
    assert (report.created, report.updated, report.unchanged) == (5, 0, 0)
    role = ProfessionalRole.objects.get(fhir_id="lincoln-wellness-santos")
    assert (role.languages, role.offers_virtual, role.payers) == (["en", "es"], True, ["medicare", "bcbs-il"])
    assert role.site.latitude == 39.7622  # no position in the Bundle: the ZIP centroid
    assert Credential.objects.get(professional__fhir_id="santos").verified_by == "network-admin"
    assert Organization.objects.get(fhir_id="lincoln-wellness").kind == Organization.Kind.WELLNESS

    same = import_csv(SAMPLE_CSV)
    assert (same.created, same.updated, same.unchanged, same.failed) == (0, 0, 5, 0)


def test_reimporting_the_hubs_own_fhir_rendering_changes_nothing():
    demo_network_load()
    import_csv(SAMPLE_CSV)
    RoleFactory(
        site=None, organization=Organization.objects.get(fhir_id="capital-pt"), fhir_id="virtual-only"
    )
    SiteFactory(
        organization=Organization.objects.get(fhir_id="get-fit"),
        fhir_id="get-fit-annex",
        latitude=None,
        longitude=None,
        postal_code="62701",
        state="IL",
    )  # a site no role uses yet
    before = snapshot()
    bundle = hub_bundle()

    report = network_import(rows=rows_from_fhir_bundle(bundle), dry_run=False, actor="test")

    assert report.errors == []
    assert report.created == report.updated == 0
    assert report.unchanged == ProfessionalRole.objects.count() + 1  # every role, and the unused site
    assert snapshot() == before


def test_a_change_in_the_rendering_is_imported_as_an_update():
    import_csv(SAMPLE_CSV)
    bundle = hub_bundle()
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "PractitionerRole" and resource["id"] == "prairie-ymca-okafor":
            resource["extension"] = [{"url": EXT_MAX_ACTIVE_CASES, "valueUnsignedInt": 3}]
            resource["active"] = False

    report = network_import(rows=rows_from_fhir_bundle(bundle), dry_run=False, actor="test")

    (row,) = [r for r in report.results if r.outcome != "unchanged"]
    assert row.changes[0].fields == {"active": (True, False), "max_active_cases": (20, 3)}
    okafor = ProfessionalRole.objects.get(fhir_id="prairie-ymca-okafor")
    assert (okafor.active, okafor.max_active_cases) == (False, 3)


def test_a_transaction_bundle_resolves_references_by_full_url():
    bundle = copy.deepcopy(SAMPLE_BUNDLE)
    bundle["type"] = "transaction"
    urls = {}
    for n, entry in enumerate(bundle["entry"]):
        resource = entry["resource"]
        if resource["resourceType"] in ("Organization", "Location"):
            urls[f"{resource['resourceType']}/{resource['id']}"] = (
                f"urn:uuid:00000000-0000-4000-8000-{n:012d}"
            )
            entry["fullUrl"] = urls[f"{resource['resourceType']}/{resource['id']}"]
            entry["request"] = {"method": "POST", "url": resource["resourceType"]}
            del resource["id"]

    def point(ref):
        ref["reference"] = urls.get(ref["reference"], ref["reference"])

    for entry in bundle["entry"]:
        resource = entry["resource"]
        for key in ("organization", "managingOrganization", "providedBy"):
            if key in resource:
                point(resource[key])
        for ref in resource.get("location", []):
            point(ref)

    report = network_import(rows=rows_from_fhir_bundle(bundle), dry_run=False, actor="test")

    assert report.errors == [] and report.created == 5
    ymca = Organization.objects.get(name="Prairie Capital YMCA")
    assert ymca.fhir_id == "00000000-0000-4000-8000-000000000000"
    assert ProfessionalRole.objects.get(fhir_id="prairie-ymca-hughes").organization == ymca


def test_fhir_errors_name_the_entry_and_element_and_the_other_roles_are_applied():
    bundle = copy.deepcopy(SAMPLE_BUNDLE)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Practitioner" and resource["id"] == "kim":
            resource["qualification"][0]["code"]["coding"][0]["code"] = "made-up"
        if resource["resourceType"] == "PractitionerRole" and resource["id"] == "prairie-ymca-okafor":
            resource["organization"] = {"reference": "Organization/not-in-the-hub"}

    report = network_import(rows=rows_from_fhir_bundle(bundle), dry_run=False, actor="test")

    assert (report.created, report.failed) == (3, 2)
    messages = [str(e) for e in report.errors]
    assert any(
        "PractitionerRole/prairie-ymca-okafor" in m
        and "'not-in-the-hub' is neither in the file nor in the hub" in m
        for m in messages
    )
    assert any(
        "PractitionerRole/lincoln-wellness-kim" in m and ".qualification[0]" in m and "'made-up'" in m
        for m in messages
    )
    assert not ProfessionalRole.objects.filter(
        fhir_id__in=["prairie-ymca-okafor", "lincoln-wellness-kim"]
    ).exists()
    assert not Professional.objects.filter(fhir_id="kim").exists()


def test_a_bundle_role_may_reference_members_already_in_the_hub():
    import_csv(SAMPLE_CSV)
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": {
                    "resourceType": "PractitionerRole",
                    "id": "capital-pt-okafor",
                    "practitioner": {"reference": "Practitioner/okafor"},
                    "organization": {"reference": "Organization/capital-pt"},
                    "location": [{"reference": "Location/capital-pt-west"}],
                }
            }
        ],
    }

    report = network_import(rows=rows_from_fhir_bundle(bundle), dry_run=False, actor="test")

    assert report.errors == [] and report.created == 1
    role = ProfessionalRole.objects.get(fhir_id="capital-pt-okafor")
    assert (role.professional.fhir_id, role.site.fhir_id, role.max_active_cases) == (
        "okafor",
        "capital-pt-west",
        10,
    )


def test_a_structurally_invalid_resource_is_reported_and_not_imported():
    bundle = copy.deepcopy(SAMPLE_BUNDLE)
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Location" and entry["resource"]["id"] == "capital-pt-west":
            entry["resource"]["position"]["latitude"] = "north"

    report = network_import(rows=rows_from_fhir_bundle(bundle), dry_run=False, actor="test")

    assert report.failed == 1
    assert any(".position.latitude" in e.column for e in report.errors)
    assert not Site.objects.filter(fhir_id="capital-pt-west").exists()
