"""Placing a patient on the map, and distances. Offline only: nothing is fetched at run time.

A patient is placed by the FHIR geolocation extension on their address when the EHR sent one, else by the
centroid of their US ZIP code from the ``zipcodes`` package (its bundled data). An address that cannot be
placed is never guessed: routing hands the referral to a coordinator.
"""

import functools
import math
from dataclasses import dataclass

import zipcodes

EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius
KM_PER_DEGREE_LATITUDE = 111.32


@dataclass(frozen=True)
class Place:
    latitude: float
    longitude: float
    state: str  # two letters, "" when unknown
    source: str  # "geolocation" or "postal-code"


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlambda = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


@functools.cache
def _zip_centroids() -> dict[str, tuple[float, float, str]]:
    # Built once per process from the package's bundled file (~42,000 ZIP codes); about 0.3 s.
    table = {}
    for row in zipcodes.list_all():
        try:
            lat, lon = float(row["lat"]), float(row["long"])
        except (KeyError, TypeError, ValueError):
            continue
        if lat == 0.0 and lon == 0.0:
            continue  # no coordinates in the data: not placeable
        table[row["zip_code"]] = (lat, lon, row.get("state") or "")
    return table


def zip_centroids_load() -> None:
    """Build the ZIP centroid table now (a process's start, config/long_lived.py) rather than when the first
    patient is placed."""
    _zip_centroids()


def zip_place(postal_code: str) -> Place | None:
    """The centroid of a US ZIP code ("12345" or ZIP+4 "12345-6789"), or None when it is not a known ZIP."""
    code = (postal_code or "").strip()
    if len(code) == 10 and code[5] == "-" and code[6:].isdigit():
        code = code[:5]
    if len(code) != 5 or not code.isdigit():
        return None
    found = _zip_centroids().get(code)
    if found is None:
        return None
    lat, lon, state = found
    return Place(latitude=lat, longitude=lon, state=state, source="postal-code")


def zip_state(postal_code: str) -> str:
    place = zip_place(postal_code)
    return place.state if place else ""


def patient_place(
    *, latitude: float | None, longitude: float | None, postal_code: str, state: str = ""
) -> Place | None:
    """Where the patient is: the geolocation when given (and sane), else the ZIP centroid, else None."""
    if latitude is not None and longitude is not None:
        if -90.0 <= latitude <= 90.0 and -180.0 <= longitude <= 180.0:
            return Place(
                latitude=latitude,
                longitude=longitude,
                state=(state or zip_state(postal_code)).upper(),
                source="geolocation",
            )
        return None  # out-of-range coordinates are an error in the data, not a place to guess around
    place = zip_place(postal_code)
    if place and state and state.upper() != place.state:
        # The ZIP and the state disagree: one of them is wrong, and we cannot tell which.
        return None
    return place
