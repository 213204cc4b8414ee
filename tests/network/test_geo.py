"""Placing the patient: geolocation first, then the offline ZIP centroid; nothing guessed."""

import pytest

from network.geo import haversine_km, patient_place, zip_place


def test_a_zip_is_placed_at_its_centroid_offline():
    place = zip_place("10001")
    assert (place.latitude, place.longitude, place.state, place.source) == (
        40.7484,
        -73.9967,
        "NY",
        "postal-code",
    )
    assert zip_place("10001-1234") == place


@pytest.mark.parametrize("code", ["", "1000", "ABCDE", "00000", "10001-12", "H3Z 2Y7"])
def test_an_unknown_or_malformed_zip_is_not_placed(code):
    assert zip_place(code) is None


def test_the_geolocation_wins_and_keeps_the_zips_state():
    place = patient_place(latitude=40.7, longitude=-74.0, postal_code="10001")
    assert (place.latitude, place.longitude, place.state, place.source) == (40.7, -74.0, "NY", "geolocation")


def test_impossible_coordinates_are_not_placed():
    assert patient_place(latitude=140.0, longitude=-74.0, postal_code="10001") is None


def test_a_zip_that_contradicts_the_state_is_not_placed():
    assert patient_place(latitude=None, longitude=None, postal_code="10001", state="CA") is None
    assert patient_place(latitude=None, longitude=None, postal_code="10001", state="ny").state == "NY"


def test_haversine_new_york_to_los_angeles():
    assert haversine_km(40.7128, -74.0060, 34.0522, -118.2437) == pytest.approx(3936, abs=5)
