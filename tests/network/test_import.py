"""Importing the network from CSV: idempotent upserts keyed on fhir_id, dry runs that write nothing, and one
error per bad row (with its line and column) while the good rows are applied. The FHIR Bundle reader's tests are
in tests/fhir_bridge/test_network_import.py."""

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from network.importing import network_import, npi_is_valid, rows_from_csv
from network.models import Credential, CredentialType, Organization, Professional, ProfessionalRole, Site

pytestmark = pytest.mark.django_db

SAMPLES = Path(__file__).resolve().parents[2] / "network" / "samples"
SAMPLE_CSV = (SAMPLES / "network.csv").read_text()
SAMPLE_BUNDLE = json.loads((SAMPLES / "network-bundle.json").read_text())


def sample_rows() -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(SAMPLE_CSV)))


def csv_of(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def import_csv(content: str, *, dry_run: bool = False):
    return network_import(rows=rows_from_csv(content), dry_run=dry_run, actor="test")


def snapshot() -> dict[str, list[dict]]:
    """Every network row as plain values, to show that something wrote nothing."""
    return {
        model.__name__: list(model.objects.order_by("pk").values())
        for model in (Organization, Site, Professional, Credential, ProfessionalRole)
    }


# --- CSV --------------------------------------------------------------------------------------------------


def test_a_csv_import_creates_organizations_sites_professionals_credentials_and_roles():
    report = import_csv(SAMPLE_CSV)

    assert report.errors == []
    assert (report.created, report.updated, report.unchanged) == (5, 0, 0)
    assert Organization.objects.count() == 3
    assert Site.objects.count() == 3
    assert Professional.objects.count() == 4  # Hughes has two roles, one person
    assert ProfessionalRole.objects.count() == 5

    ymca = Organization.objects.get(fhir_id="prairie-ymca")
    assert (ymca.name, ymca.kind) == ("Prairie Capital YMCA", Organization.Kind.YMCA)
    south = Site.objects.get(fhir_id="prairie-ymca-south")
    assert (south.organization, south.postal_code, south.state) == (ymca, "62703", "IL")
    assert (south.latitude, south.longitude) == (39.7745, -89.649)

    hughes = Professional.objects.get(fhir_id="hughes")
    assert (hughes.given_name, hughes.family_name, hughes.npi) == ("Tanya", "Hughes", "1234567893")
    assert set(hughes.roles.values_list("fhir_id", flat=True)) == {"prairie-ymca-hughes", "capital-pt-hughes"}
    ep = hughes.credentials.get(type__slug="acsm-ep")
    assert (ep.number, ep.expires_on, ep.verified_by) == ("EP-20931", dt.date(2028, 5, 31), "network-admin")
    assert ep.verified_at is not None
    eim = hughes.credentials.get(type__slug="eim-2")
    assert (eim.number, eim.expires_on) == ("", dt.date(2027, 12, 31))

    role = ProfessionalRole.objects.get(fhir_id="prairie-ymca-hughes")
    assert (role.professional, role.organization, role.site) == (hughes, ymca, south)
    assert (role.offers_in_person, role.offers_group, role.offers_virtual) == (True, True, False)
    assert (role.max_active_cases, role.accepting, role.service_radius_km) == (12, True, 20.0)
    assert role.payers == ["medicare", "silver-sneakers"]
    assert role.email == "thughes@prairie-ymca.example.org"
    kim = ProfessionalRole.objects.get(fhir_id="lincoln-wellness-kim")
    assert (kim.languages, kim.paused_until) == (["en", "ko"], dt.date(2027, 1, 15))
    assert ProfessionalRole.objects.get(fhir_id="capital-pt-hughes").accepting is False


def test_credentials_without_verified_by_are_imported_unverified_so_routing_ignores_them():
    report = import_csv(SAMPLE_CSV)

    okafor = Credential.objects.get(professional__fhir_id="okafor")
    assert (okafor.verified_at, okafor.verified_by) == (None, "")
    assert not okafor.is_current(timezone.now().date())
    row = next(r for r in report.results if r.key == "role prairie-ymca-okafor")
    assert any("is not verified" in n for n in row.notices)


def test_a_site_without_coordinates_is_placed_at_its_zip_centroid_and_the_report_says_so():
    report = import_csv(SAMPLE_CSV)

    east = Site.objects.get(fhir_id="lincoln-wellness-east")
    assert (east.latitude, east.longitude) == (39.7622, -89.6275)  # ZIP 62703 in the zipcodes package
    row = next(r for r in report.results if r.key == "role lincoln-wellness-santos")
    assert any("centroid of ZIP 62703" in n for n in row.notices)

    # An admin's own coordinates are kept when the file still has none.
    Site.objects.filter(pk=east.pk).update(latitude=39.80, longitude=-89.62)
    again = import_csv(SAMPLE_CSV)
    assert again.unchanged == 5
    east.refresh_from_db()
    assert (east.latitude, east.longitude) == (39.80, -89.62)


def test_a_second_identical_import_reports_everything_unchanged_and_writes_nothing():
    import_csv(SAMPLE_CSV)
    before = snapshot()

    report = import_csv(SAMPLE_CSV)

    assert report.errors == []
    assert (report.created, report.updated, report.unchanged) == (0, 0, 5)
    assert all(r.changes == [] for r in report.results)
    assert snapshot() == before


def test_a_dry_run_of_a_changed_row_lists_the_changed_fields_and_writes_nothing():
    import_csv(SAMPLE_CSV)
    before = snapshot()
    rows = sample_rows()
    rows[0]["site_name"] = rows[1]["site_name"] = (
        "Prairie Capital YMCA at 6th Street"  # the site of both rows
    )
    rows[1].update(max_active_cases="25", accepting="no")
    rows[3]["credentials"] = "pt-license:IL-070-012345:2029-11-30;eim-3::2028-01-31"
    changed = csv_of(rows)

    dry = import_csv(changed, dry_run=True)

    assert snapshot() == before
    assert dry.dry_run and dry.errors == []
    assert (dry.created, dry.updated, dry.unchanged) == (0, 3, 2)
    hughes = next(r for r in dry.results if r.line == 2)
    assert [(c.kind, c.key, c.fields) for c in hughes.changes] == [
        (
            "site",
            "prairie-ymca-south",
            {"name": ("Prairie Capital YMCA South", "Prairie Capital YMCA at 6th Street")},
        )
    ]
    okafor = next(r for r in dry.results if r.line == 3)
    assert okafor.outcome == "updated"
    assert [(c.kind, c.key, c.fields) for c in okafor.changes] == [
        ("role", "prairie-ymca-okafor", {"max_active_cases": (20, 25), "accepting": (True, False)})
    ]
    assert "max_active_cases: 20 → 25" in dry.as_text()
    kim = next(r for r in dry.results if r.line == 5)
    (credential,) = kim.changes
    assert credential.fields["expires_on"] == (dt.date(2028, 11, 30), dt.date(2029, 11, 30))

    # The real run does exactly what the dry run said.
    real = import_csv(changed)
    assert [
        (r.line, r.outcome, [(c.kind, c.key, sorted(c.fields)) for c in r.changes]) for r in real.results
    ] == [(r.line, r.outcome, [(c.kind, c.key, sorted(c.fields)) for c in r.changes]) for r in dry.results]
    assert ProfessionalRole.objects.get(fhir_id="prairie-ymca-okafor").max_active_cases == 25


def test_a_renewed_credential_is_unverified_again_unless_the_file_names_who_verified_it():
    import_csv(SAMPLE_CSV)
    rows = sample_rows()
    rows[3].update(credentials="pt-license:IL-070-012345:2029-11-30", verified_by="")

    report = import_csv(csv_of(rows))

    license_ = Credential.objects.get(professional__fhir_id="kim", type__slug="pt-license")
    assert (license_.expires_on, license_.verified_at, license_.verified_by) == (
        dt.date(2029, 11, 30),
        None,
        "",
    )
    assert (
        Credential.objects.get(professional__fhir_id="kim", type__slug="eim-3").verified_at is not None
    )  # untouched
    assert any("verification is cleared" in n for r in report.results for n in r.notices)

    rows[3]["verified_by"] = "j.doe"
    import_csv(csv_of(rows))
    license_.refresh_from_db()
    assert license_.verified_by == "j.doe" and license_.verified_at is not None


def test_three_good_rows_and_two_bad_rows_apply_the_three_and_report_each_bad_row_with_its_line_and_column():
    rows = sample_rows()[:3]
    bad_type = dict(
        rows[0], role_id="bad-type-role", professional_id="nobody", credentials="acsm-xyz:1:2028-01-01"
    )
    bad_values = dict(
        rows[0],
        role_id="bad-values-role",
        organization_id="ghost-org",
        site_id="ghost-site",
        site_latitude="95.5",
        paused_until="2027-02-30",
        max_active_cases="many",
    )
    content = csv_of([rows[0], bad_type, rows[1], bad_values, rows[2]])

    report = import_csv(content)

    assert (report.created, report.failed) == (3, 2)
    assert set(ProfessionalRole.objects.values_list("fhir_id", flat=True)) == {
        "prairie-ymca-hughes",
        "prairie-ymca-okafor",
        "lincoln-wellness-santos",
    }
    errors = {(e.line, e.column): e.message for e in report.errors}
    assert len(report.errors) == 4
    assert set(errors) == {
        (3, "credentials"),
        (5, "site_latitude"),
        (5, "paused_until"),
        (5, "max_active_cases"),
    }
    assert "unknown credential type 'acsm-xyz'" in errors[(3, "credentials")]
    assert "out of range" in errors[(5, "site_latitude")]
    assert "'2027-02-30' is not a date" in errors[(5, "paused_until")]
    assert "'many' is not a whole number" in errors[(5, "max_active_cases")]
    assert "line 5, site_latitude:" in report.as_text()
    # nothing of the bad rows was written
    assert not Professional.objects.filter(fhir_id="nobody").exists()
    assert not Organization.objects.filter(fhir_id="ghost-org").exists()


def test_a_row_that_fails_while_being_applied_leaves_nothing_of_itself_behind():
    import_csv(SAMPLE_CSV)
    row = dict(
        sample_rows()[0],
        organization_id="new-gym",
        organization_name="New Gym",
        site_id="new-gym-site",
        professional_id="someone-else",
        professional_family="Else",
    )  # role prairie-ymca-hughes is Hughes's

    report = import_csv(csv_of([row]))

    (error,) = report.errors
    assert (error.line, error.column) == (2, "professional_id")
    assert "does not move to another person" in error.message
    assert not Organization.objects.filter(
        fhir_id="new-gym"
    ).exists()  # created in the row's savepoint, undone
    assert not Professional.objects.filter(fhir_id="someone-else").exists()
    assert ProfessionalRole.objects.get(fhir_id="prairie-ymca-hughes").professional.fhir_id == "hughes"


def test_a_row_that_contradicts_an_earlier_row_about_the_same_organization_is_an_error():
    rows = sample_rows()[:2]
    rows[1]["organization_name"] = "Prairie YMCA (renamed)"

    report = import_csv(csv_of(rows))

    (error,) = report.errors
    assert (error.line, error.column) == (3, "organization_name")
    assert "on line 2" in error.message
    assert Organization.objects.get(fhir_id="prairie-ymca").name == "Prairie Capital YMCA"


@pytest.mark.parametrize(
    ("header_change", "expected"),
    [
        (("paused_until", "paused_untill"), "unknown column(s) 'paused_untill'"),
        (("role_id", "role"), "missing required column(s) role_id"),
    ],
)
def test_a_bad_header_fails_the_whole_file_and_writes_nothing(header_change, expected):
    old, new = header_change
    header, rest = SAMPLE_CSV.split("\n", 1)
    content = header.replace(old, new, 1) + "\n" + rest

    report = import_csv(content)

    assert report.results == []
    (error,) = report.errors
    assert expected in error.message
    assert Organization.objects.count() == 0


def test_an_unchanged_reimport_costs_a_bounded_number_of_queries_per_row(django_assert_max_num_queries):
    import_csv(SAMPLE_CSV)

    # the credential types once, then per row: a savepoint, one read per organization, site, person, role and
    # credential (no related rows fetched to compare foreign keys)
    with django_assert_max_num_queries(1 + 5 * 8):
        import_csv(SAMPLE_CSV)


def test_a_column_left_out_leaves_that_field_alone_and_a_blank_cell_clears_it():
    import_csv(SAMPLE_CSV)
    rows = [{k: v for k, v in r.items() if k != "payers"} for r in sample_rows()]
    rows[3]["paused_until"] = ""

    report = import_csv(csv_of(rows))

    assert report.updated == 1
    kim = ProfessionalRole.objects.get(fhir_id="lincoln-wellness-kim")
    assert (kim.paused_until, kim.payers) == (None, ["medicare", "bcbs-il"])


def test_an_invalid_npi_is_a_row_error():
    assert npi_is_valid("1234567893") and not npi_is_valid("1234567890")
    row = dict(sample_rows()[0], professional_npi="1234567890")

    report = import_csv(csv_of([row]))

    assert [(e.line, e.column) for e in report.errors] == [(2, "professional_npi")]


# --- the command ------------------------------------------------------------------------------------------


def test_the_command_applies_the_good_rows_and_exits_non_zero_when_a_row_failed(tmp_path):
    rows = sample_rows()[:2]
    rows[1]["credentials"] = "acsm-cpt:CPT-55120:31/12/2027"
    path = tmp_path / "network.csv"
    path.write_text(csv_of(rows))
    out = io.StringIO()

    with pytest.raises(CommandError) as failed:
        call_command("import_network", str(path), stdout=out)

    assert failed.value.returncode == 1
    assert "line 3, credentials:" in out.getvalue()
    assert "1 created, 0 updated, 0 unchanged, 1 failed" in out.getvalue()
    assert list(ProfessionalRole.objects.values_list("fhir_id", flat=True)) == ["prairie-ymca-hughes"]


def test_the_command_dry_run_writes_nothing_and_reads_a_bundle_by_its_extension():
    out = io.StringIO()

    call_command("import_network", str(SAMPLES / "network-bundle.json"), "--dry-run", stdout=out)

    assert "5 created, 0 updated, 0 unchanged, 0 failed (dry run: nothing written)" in out.getvalue()
    assert ProfessionalRole.objects.count() == 0 and Credential.objects.count() == 0
    assert CredentialType.objects.filter(slug="acsm-cep").exists()  # the seeded qualification data is intact


# --- the admin page ---------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("coordinator", "c@example.org", "pw")
    client.force_login(user)
    return client


def upload(name: str, content: str):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, content.encode(), content_type="text/csv")


def test_the_admin_page_previews_a_dry_run_then_applies_exactly_the_previewed_file(admin_client):
    url = "/admin/network/organization/import/"
    rows = sample_rows()[:2]
    rows[1]["accepting"] = "perhaps"

    preview = admin_client.post(url, {"file": upload("network.csv", csv_of(rows))})

    assert preview.status_code == 200
    assert ProfessionalRole.objects.count() == 0
    assert preview.context["report"].dry_run
    body = preview.content.decode()
    assert "1 created, 0 updated, 0 unchanged, 1 failed (dry run: nothing written)" in body
    assert "&#x27;perhaps&#x27; is not yes or no" in body

    applied = admin_client.post(url, {"preview": preview.context["preview"]})

    assert applied.status_code == 200
    assert not applied.context["report"].dry_run
    assert list(ProfessionalRole.objects.values_list("fhir_id", flat=True)) == ["prairie-ymca-hughes"]
    assert Credential.objects.filter(professional__fhir_id="hughes").count() == 2


def test_the_admin_page_refuses_an_altered_preview(admin_client):
    response = admin_client.post("/admin/network/organization/import/", {"preview": "forged:value"})

    assert response.status_code == 200
    assert "expired or was altered" in response.content.decode()
    assert ProfessionalRole.objects.count() == 0


def test_the_admin_page_is_for_staff_with_permission_to_change_the_network(client, django_user_model):
    url = "/admin/network/organization/import/"
    assert client.get(url).status_code == 302  # to the admin login

    staff = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.post(url, {"file": upload("network.csv", SAMPLE_CSV)}).status_code == 403
    assert ProfessionalRole.objects.count() == 0
