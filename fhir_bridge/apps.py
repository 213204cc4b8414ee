from django.apps import AppConfig


class FhirBridgeConfig(AppConfig):
    name = "fhir_bridge"
    verbose_name = "FHIR bridge"

    def ready(self):
        from fhir_bridge import projection  # noqa: F401 - connects the Task projection to referral changes
        from fhir_bridge import records_fhir  # noqa: F401 - connects the case records' Observations to their changes
        from fhir_bridge import reports_fhir  # noqa: F401 - stores each report's DiagnosticReport when it is sent
        from fhir_bridge.network_import import rows_from_fhir_text
        from network.importing import READERS, Reader

        # The network's import takes FHIR Bundles too (the admin's import page, manage.py import_network).
        READERS["fhir"] = Reader(label="FHIR Bundle (JSON)", suffix=".json", read=rows_from_fhir_text)
