from django.contrib import admin

from fhir_bridge.models import EhrClient, InboundMessage, StoredResource


@admin.register(EhrClient)
class EhrClientAdmin(admin.ModelAdmin):
    list_display = ("name", "client_id", "clinic", "organization", "is_active", "created_at")
    list_filter = ("is_active", "clinic", "organization")
    readonly_fields = ("client_id", "created_at")
    search_fields = ("name", "client_id")


@admin.register(StoredResource)
class StoredResourceAdmin(admin.ModelAdmin):
    list_display = ("resource_type", "fhir_id", "version_id", "clinic", "referral", "last_updated")
    list_filter = ("resource_type",)
    search_fields = ("fhir_id",)
    readonly_fields = [f.name for f in StoredResource._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(InboundMessage)
class InboundMessageAdmin(admin.ModelAdmin):
    list_display = ("id", "client", "interaction", "referral", "received_at")
    readonly_fields = ("client", "interaction", "body", "referral", "received_at")

    def has_add_permission(self, request):
        return False
