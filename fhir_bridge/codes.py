"""Every code-system, identifier-system, extension and profile URL the FHIR bridge reads or writes.

A URL written twice drifts (a typo in one copy silently stops a match), so modules import these names instead
of spelling the URLs. Codes *within* a system stay with the module whose rules they belong to (profiles.py's
value sets, clinical_facts.py's PAVS codes); the systems themselves are here.

The hub's own code systems live under ``HUB_CODES``; the CapabilityStatement publishes them (businessStatus)
and the README says what routing reads. The domain (``network``, ``referrals``) never imports this module: it
knows nothing of FHIR.
"""

# --- The hub's own ------------------------------------------------------------------------------------------

HUB_CODES = "http://exercise-referral-hub.org/fhir/CodeSystem"
# Task.businessStatus (referrals.models.BusinessStatus)
BUSINESS_STATUS_SYSTEM = f"{HUB_CODES}/referral-business-status"
# ServiceRequest.orderDetail: clearance (light | moderate | vigorous), precautions (hr-cap, no-valsalva, ...)
# and delivery (in-person | virtual | group | virtual-ok)
CLEARANCE_SYSTEM = f"{HUB_CODES}/exercise-clearance"
PRECAUTION_SYSTEM = f"{HUB_CODES}/exercise-precaution"
DELIVERY_SYSTEM = f"{HUB_CODES}/exercise-delivery"
# The network as FHIR: PractitionerRole/HealthcareService.specialty, Practitioner.qualification.code,
# Organization.type and HealthcareService.category
CONDITION_GROUP_SYSTEM = f"{HUB_CODES}/condition-group"
CREDENTIAL_TYPE_SYSTEM = f"{HUB_CODES}/credential-type"
ORGANIZATION_KIND_SYSTEM = f"{HUB_CODES}/network-organization-kind"
# The case records as FHIR (records_fhir.py): measures no standard code covers (Observation.code), and the kind of
# an adverse event (AdverseEvent.event). Published in the CapabilityStatement.
MEASURE_SYSTEM = f"{HUB_CODES}/exercise-measure"
ADVERSE_EVENT_KIND_SYSTEM = f"{HUB_CODES}/adverse-event-kind"
# What a report to the physician is (DiagnosticReport.code, beside LOINC 11488-4): progress | discharge |
# did-not-start | no-update (referrals.models.ReportKind). Published in the CapabilityStatement.
REPORT_KIND_SYSTEM = f"{HUB_CODES}/report-kind"
# An offer's child Task.identifier
OFFER_IDENTIFIER_SYSTEM = "http://exercise-referral-hub.org/fhir/sid/offer"
# What a provider reads of a patient before it accepts the offer (fhir_bridge/provider_fhir.py): the age band
# (valueRange, in years) and the postal area (valueString: the first three digits of a US ZIP code).
HUB_EXTENSIONS = "http://exercise-referral-hub.org/fhir/StructureDefinition"
AGE_BAND_EXTENSION = f"{HUB_EXTENSIONS}/patient-age-band"
POSTAL_AREA_EXTENSION = f"{HUB_EXTENSIONS}/patient-postal-area"

# --- Terminologies ------------------------------------------------------------------------------------------

LOINC_SYSTEM = "http://loinc.org"
SNOMED_SYSTEM = "http://snomed.info/sct"
UCUM_SYSTEM = "http://unitsofmeasure.org"
# Note the "fhir": PA's own FSH alias has a typo variant ("fhid") that validators do not accept.
ICD10CM_SYSTEM = "http://hl7.org/fhir/sid/icd-10-cm"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"

# --- FHIR core and HL7 terminology --------------------------------------------------------------------------

TASK_CODE_SYSTEM = "http://hl7.org/fhir/CodeSystem/task-code"
OBSERVATION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CLINICAL_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VER_STATUS_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
# meta.security REDACTED: a resource served with less than the hub holds (a provider's view before acceptance).
OBSERVATION_VALUE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
RESTFUL_SECURITY_SERVICE_SYSTEM = "http://terminology.hl7.org/CodeSystem/restful-security-service"
# Task.output type for what the Service Provider did (PA reuses the SDOH Clinical Care temporary code).
SDOHCC_TEMPORARY_SYSTEM = (
    "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
)

# SDOH Clinical Care STU3 (3.0.0): a program's capacity to take a new referral, on HealthcareService. A complex
# extension: ``capacityStatus`` (valueCodeableConcept from SDOHCC-ValueSetCapacityStatus: capacity, no-capacity,
# waitlist in SDOHCC_TEMPORARY_SYSTEM) and ``capacityNotes`` (valueString).
SDOHCC_CAPACITY_STATUS_EXTENSION = (
    "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-ExtensionHealthcareServiceCapacityStatus"
)

ADVERSE_EVENT_SERIOUSNESS_SYSTEM = "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness"
ADVERSE_EVENT_SEVERITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/adverse-event-severity"
# R4 core: the request an event fulfils, for resources without basedOn (AdverseEvent -> the ServiceRequest).
EVENT_BASED_ON_EXTENSION = "http://hl7.org/fhir/StructureDefinition/event-basedOn"
# R4 core vital-signs profiles.
VITAL_SIGNS_PROFILE = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
CORE_STRUCTURE_DEFINITION = "http://hl7.org/fhir/StructureDefinition"

GEOLOCATION_EXTENSION = "http://hl7.org/fhir/StructureDefinition/geolocation"  # on Patient.address
LOCATION_DISTANCE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/location-distance"  # on a `near` match
SMART_OAUTH_URIS_EXTENSION = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
# meta.tag on a resource a search returns only in part (_elements, _summary): R4 search.html#elements.
SUBSETTED_TAG = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED",
    "display": "subsetted",
}

# --- The Physical Activity IG (1.0.1) -----------------------------------------------------------------------

PA_IG = "http://hl7.org/fhir/us/physical-activity"
PA_STRUCTURE_DEFINITION = f"{PA_IG}/StructureDefinition"
PA_CATEGORY_SYSTEM = f"{PA_IG}/CodeSystem/pa-temporary-codes"  # the PhysicalActivity category
PA_SERVICE_PROVIDER_FULL = f"{PA_IG}/CapabilityStatement/pa-service-provider-full"
