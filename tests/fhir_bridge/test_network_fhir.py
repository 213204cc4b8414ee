"""The network, read-only over FHIR."""

import datetime as dt
import math

import pytest
from django.utils import timezone

from network.models import Credential, CredentialType, Site
from fhir_bridge.fhir import structural_issues
from tests.conftest import FhirClient, fhir_client_for, issue_paths, json_of
from tests.factories import OrganizationFactory, ProfessionalRoleFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def springfield(db):
    """Two sites of one YMCA, 3 km and 60 km from downtown Springfield IL, with one role each."""
    ymca = OrganizationFactory(fhir_id="ymca-springfield", name="Springfield YMCA", kind="ymca")
    near = Site.objects.create(organization=ymca, fhir_id="ymca-downtown", name="Downtown", city="Springfield",
                               state="IL", postal_code="62701", latitude=39.80, longitude=-89.64)
    far = Site.objects.create(organization=ymca, fhir_id="ymca-decatur", name="Decatur", city="Decatur",
                              state="IL", postal_code="62521", latitude=39.84, longitude=-88.95)
    cep = CredentialType.objects.get(slug="acsm-cep")
    close_role = ProfessionalRoleFactory(fhir_id="role-near", organization=ymca, site=near)
    ProfessionalRoleFactory(fhir_id="role-far", organization=ymca, site=far)
    Credential.objects.create(professional=close_role.professional, type=cep, number="CEP-1",
                              expires_on=dt.date.today() + dt.timedelta(days=365), verified_at=timezone.now())
    return ymca


def _ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [e["resource"]["id"] for e in json_of(response)["entry"]]


def test_location_near_finds_sites_within_the_distance_nearest_first(fhir, springfield):
    assert _ids(fhir.get("Location", near="39.78|-89.65|10|km")) == ["ymca-downtown"]
    response = fhir.get("Location", near="39.78|-89.65|100|km")
    assert _ids(response) == ["ymca-downtown", "ymca-decatur"]
    distance = json_of(response)["entry"][0]["search"]["extension"][0]["valueDistance"]["value"]
    assert 1000 < distance < 4000


def _site_at(ymca, fhir_id: str, lat: float, lon: float) -> Site:
    return Site.objects.create(organization=ymca, fhir_id=fhir_id, name=fhir_id, city="X", state="IL",
                               postal_code="62701", latitude=lat, longitude=lon)


@pytest.mark.parametrize("radius_km", [5.0, 25.0, 250.0])
def test_near_keeps_what_is_just_inside_the_radius_and_drops_what_is_just_outside(fhir, springfield, radius_km):
    # Due north-east of the point, where the bounding box's corner lies well beyond the circle: a site 20 m inside
    # the great-circle radius is found, one 20 m outside is not, though both are inside the box.
    from network.geo import haversine_km

    lat, lon = 45.0, -100.0
    bearing = math.radians(45)
    for name, km in (("inside", radius_km - 0.02), ("outside", radius_km + 0.02)):
        # The destination point at distance km and this bearing, on the same sphere haversine_km uses.
        d = km / 6371.0088
        phi1, lam1 = math.radians(lat), math.radians(lon)
        phi2 = math.asin(math.sin(phi1) * math.cos(d) + math.cos(phi1) * math.sin(d) * math.cos(bearing))
        lam2 = lam1 + math.atan2(math.sin(bearing) * math.sin(d) * math.cos(phi1), math.cos(d) - math.sin(phi1) * math.sin(phi2))
        site = _site_at(springfield, f"{name}-{radius_km:g}", math.degrees(phi2), math.degrees(lam2))
        assert haversine_km(lat, lon, site.latitude, site.longitude) == pytest.approx(km, abs=1e-6)
    response = fhir.get("Location", near=f"{lat}|{lon}|{radius_km}|km")
    assert _ids(response) == [f"inside-{radius_km:g}"]
    distance_m = json_of(response)["entry"][0]["search"]["extension"][0]["valueDistance"]["value"]
    assert distance_m == round((radius_km - 0.02) * 1000)


def test_near_orders_by_distance_and_pages_and_counts_in_the_database(fhir, springfield):
    lat, lon = 45.0, -100.0
    for i, km in enumerate((3.0, 1.0, 2.0, 9.0)):  # due north: 1 degree of latitude is 111.195 km on this sphere
        _site_at(springfield, f"s{i}", lat + km / 111.19508, lon)
    _site_at(springfield, "s-miles", lat + 16.2 / 111.19508, lon)  # 16.2 km: outside 10 mi (16.09 km)
    response = fhir.get("Location", near=f"{lat}|{lon}|10|mi", _count="2")
    body = json_of(response)
    assert body["total"] == 4
    assert [e["resource"]["id"] for e in body["entry"]] == ["s1", "s2"]
    second = json_of(fhir.get("Location", near=f"{lat}|{lon}|10|mi", _count="2", _offset="2"))
    assert [e["resource"]["id"] for e in second["entry"]] == ["s0", "s3"]
    assert [e["search"]["extension"][0]["valueDistance"]["value"] for e in second["entry"]] == [3000, 9000]


def test_a_bad_near_is_400(fhir, springfield):
    response = fhir.get("Location", near="north|-89")
    assert response.status_code == 400
    assert issue_paths(response) == ["near"]


def test_practitioner_role_search_by_specialty_and_location(fhir, springfield):
    cardio = _ids(fhir.get("PractitionerRole", specialty="cardiovascular"))
    assert cardio == ["role-near"]
    assert _ids(fhir.get("PractitionerRole", location="Location/ymca-decatur")) == ["role-far"]
    role = json_of(fhir.get("PractitionerRole/role-near"))
    assert role["location"][0]["reference"] == "Location/ymca-downtown"
    assert "cardiovascular" in [s["coding"][0]["code"] for s in role["specialty"]]


def test_practitioner_shows_only_current_credentials(fhir, springfield):
    role = springfield.roles.get(fhir_id="role-far")
    Credential.objects.create(professional=role.professional, type=CredentialType.objects.get(slug="acsm-cep"),
                              expires_on=dt.date.today() - dt.timedelta(days=1), verified_at=timezone.now())
    Credential.objects.create(professional=role.professional, type=CredentialType.objects.get(slug="acsm-cep"),
                              expires_on=dt.date.today() + dt.timedelta(days=300))  # never verified
    practitioner = json_of(fhir.get(f"Practitioner/{role.professional.fhir_id}"))
    assert "qualification" not in practitioner


def test_programs_are_healthcare_services_and_organizations_read(fhir, springfield):
    services = json_of(fhir.get("HealthcareService"))["entry"]
    assert [e["resource"]["id"] for e in services] == ["ymca-springfield"]
    assert len(services[0]["resource"]["location"]) == 2
    organization = fhir.get("Organization/ymca-springfield")
    assert json_of(organization)["name"] == "Springfield YMCA"
    assert organization["ETag"].startswith('W/"')


def test_the_network_needs_read_scopes(ehr_client, springfield):
    assert fhir_client_for(ehr_client, "system/Task.cruds").get("Location").status_code == 403
    assert FhirClient(None).get("Location").status_code == 401


def test_what_the_capability_statement_declares_for_the_network_works(fhir, springfield):
    statement = json_of(fhir.get("metadata"))
    declared = {r["type"]: {i["code"] for i in r["interaction"]} for r in statement["rest"][0]["resource"]}
    role = ProfessionalRoleFactory(fhir_id="role-declared")
    practitioner_id = role.professional.fhir_id
    for resource_type, fhir_id in (("Practitioner", practitioner_id), ("PractitionerRole", "role-declared"),
                                   ("Organization", "ymca-springfield")):
        assert {"read", "vread", "history-instance", "search-type"} <= declared[resource_type]
        read = fhir.get(f"{resource_type}/{fhir_id}")
        assert read.status_code == 200
        version = json_of(read)["meta"]["versionId"]
        assert read["ETag"] == f'W/"{version}"'
        vread = fhir.get(f"{resource_type}/{fhir_id}/_history/{version}")
        assert vread.status_code == 200 and json_of(vread) == json_of(read)
        assert fhir.get(f"{resource_type}/{fhir_id}/_history/1").status_code == 404
        history = json_of(fhir.get(f"{resource_type}/{fhir_id}/_history"))
        assert history["type"] == "history"
        assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == [version]


def test_string_parameters_match_from_the_start_whole_with_exact_or_anywhere_with_contains(fhir, springfield):
    def names(**params):
        return _ids(fhir.get("Organization", **params))

    assert names(name="springfield") == ["ymca-springfield"]  # from the start, case aside
    assert names(name="YMCA") == []
    assert names(**{"name:contains": "ymca"}) == ["ymca-springfield"]
    assert names(**{"name:exact": "Springfield YMCA"}) == ["ymca-springfield"]
    assert names(**{"name:exact": "springfield ymca"}) == []
    assert _ids(fhir.get("Location", **{"address-postalcode": "625"})) == ["ymca-decatur"]
    assert _ids(fhir.get("Location", **{"address-state": "il"})) == ["ymca-downtown", "ymca-decatur"]
    assert fhir.get("Organization", **{"name:missing": "true"}).status_code == 400


CAPACITY_URL = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-ExtensionHealthcareServiceCapacityStatus"


def _capacity(fhir) -> tuple[str, str]:
    service = json_of(fhir.get("HealthcareService/ymca-springfield"))
    extension = next(e for e in service["extension"] if e["url"] == CAPACITY_URL)
    parts = {e["url"]: e for e in extension["extension"]}
    coding = parts["capacityStatus"]["valueCodeableConcept"]["coding"][0]
    assert coding["system"] == "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
    assert structural_issues(service, path="HealthcareService") == []
    return coding["code"], parts["capacityNotes"]["valueString"]


def _live_offer(clinic, role):
    from referrals.models import Offer, RoutingDecision
    from tests.network.factories import referral_make

    referral = referral_make(clinic)
    decision = RoutingDecision.objects.create(referral=referral, trigger="initial", outcome="offered", gist="t")
    now = timezone.now()
    Offer.objects.create(referral=referral, role=role, organization=role.organization, decision=decision,
                         created_at=now, deadline=now + dt.timedelta(hours=48))


def test_a_search_of_programs_counts_every_role_load_in_one_query(fhir, springfield, clinic):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries() -> tuple[int, list[str]]:
        with CaptureQueriesContext(connection) as captured:
            ids = _ids(fhir.get("HealthcareService"))
        return len(captured), ids

    few, _ = queries()
    other = OrganizationFactory(fhir_id="cardiac-two", name="Cardiac Two", kind="cardiac-rehab")
    for n in range(3):
        _live_offer(clinic, ProfessionalRoleFactory(fhir_id=f"cardiac-{n}", organization=other, max_active_cases=1))
    many, ids = queries()
    assert sorted(ids) == ["cardiac-two", "ymca-springfield"]
    assert many == few  # the load of 5 roles of 2 programs: one grouped query, as of 2 roles of 1


def test_a_program_publishes_its_capacity_status_as_sdoh_clinical_care_says(fhir, springfield, clinic):
    near, far = springfield.roles.get(fhir_id="role-near"), springfield.roles.get(fhir_id="role-far")
    near.max_active_cases, far.max_active_cases = 1, 1
    near.save(), far.save()
    assert _capacity(fhir) == ("capacity", "2 of 2 places free across 2 professionals")

    _live_offer(clinic, near)
    _live_offer(clinic, far)
    code, notes = _capacity(fhir)
    assert code == "waitlist" and notes.startswith("All 2 places taken")

    springfield.paused_until = dt.date.today() + dt.timedelta(days=3)
    springfield.save()
    assert _capacity(fhir) == ("no-capacity", f"Paused until {springfield.paused_until.isoformat()}")


@pytest.mark.parametrize("near", ["nan|-89.65|10|km", "39.78|nan|10|km", "39.78|-89.65|nan|km", "39.78|-89.65|inf|km"])
def test_near_with_a_number_that_is_no_number_is_a_400_naming_near(fhir, springfield, near):
    # Before: a distance of nan or inf passed the range check (nan compares false) and was searched.
    response = fhir.get("Location", near=near)

    assert response.status_code == 400
    assert issue_paths(response) == ["near"]
