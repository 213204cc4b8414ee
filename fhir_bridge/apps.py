from django.apps import AppConfig


class FhirBridgeConfig(AppConfig):
    name = "fhir_bridge"
    verbose_name = "FHIR bridge"

    def ready(self):
        from fhir_bridge import projection  # noqa: F401 - connects the Task projection to referral changes
