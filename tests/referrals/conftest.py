from referrals.risk import Screening
from referrals.routing import PatientFacts
from tests.network.factories import ZIP_10001

# A patient at the centroid of ZIP 10001, with known coronary disease, asymptomatic, inactive, cleared by the
# physician for moderate intensity: risk tier 2 (moderate).
CARDIAC_PATIENT = PatientFacts(
    latitude=ZIP_10001[0],
    longitude=ZIP_10001[1],
    postal_code="10001",
    clearance="moderate",
    screening=Screening(currently_active=False, known_disease=True, symptoms=False),
)
HEALTHY_PATIENT = PatientFacts(
    latitude=ZIP_10001[0], longitude=ZIP_10001[1], postal_code="10001", clearance="moderate"
)
