"""The network in Django's admin: members and qualification data (admin-editable by design)."""

from django.contrib import admin

from network.admin_import import NetworkImportAdminMixin
from network.models import (
    Account,
    ConditionCodeMap,
    ConditionGroup,
    Credential,
    CredentialType,
    Organization,
    Professional,
    ProfessionalRole,
    Site,
)


class SiteInline(admin.TabularInline):
    model = Site
    extra = 0
    fields = ("fhir_id", "name", "city", "state", "postal_code", "latitude", "longitude")


@admin.register(Organization)
class OrganizationAdmin(NetworkImportAdminMixin, admin.ModelAdmin):  # + import/ (network/admin_import.py)
    list_display = ("name", "kind", "active", "paused_until", "fhir_id")
    list_filter = ("kind", "active")
    search_fields = ("name", "fhir_id")
    inlines = [SiteInline]


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ("name", "organization", "city", "state", "postal_code", "latitude", "longitude")
    list_filter = ("state",)
    list_select_related = ("organization",)
    search_fields = ("name", "fhir_id", "postal_code", "city")
    raw_id_fields = ("organization",)


class CredentialInline(admin.TabularInline):
    model = Credential
    extra = 0
    fields = ("type", "number", "issuer", "expires_on", "verified_by", "verified_at")


@admin.register(Professional)
class ProfessionalAdmin(admin.ModelAdmin):
    list_display = ("display_name", "npi", "active", "fhir_id")
    list_filter = ("active",)
    search_fields = ("family_name", "given_name", "npi", "fhir_id")
    inlines = [CredentialInline]


@admin.register(ProfessionalRole)
class ProfessionalRoleAdmin(admin.ModelAdmin):
    list_display = (
        "fhir_id",
        "professional",
        "organization",
        "site",
        "active",
        "accepting",
        "paused_until",
        "max_active_cases",
        "service_radius_km",
    )
    list_filter = ("active", "accepting", "offers_virtual", "offers_group")
    list_select_related = ("professional", "organization", "site")
    search_fields = ("fhir_id", "professional__family_name", "organization__name")
    raw_id_fields = ("professional", "organization", "site")
    filter_horizontal = ("only_condition_groups",)


@admin.register(Credential)
class CredentialAdmin(admin.ModelAdmin):
    list_display = ("professional", "type", "number", "expires_on", "verified_by", "verified_at")
    list_filter = ("type",)
    list_select_related = ("professional", "type")
    search_fields = ("number", "professional__family_name")
    raw_id_fields = ("professional",)


@admin.register(ConditionGroup)
class ConditionGroupAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "cardiometabolic_renal", "min_risk_tier")


@admin.register(ConditionCodeMap)
class ConditionCodeMapAdmin(admin.ModelAdmin):
    list_display = ("system", "code", "match", "group", "display")
    list_filter = ("system", "match", "group")
    list_select_related = ("group",)
    search_fields = ("code", "display")


@admin.register(CredentialType)
class CredentialTypeAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "max_risk_tier")
    filter_horizontal = ("condition_groups",)


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    """Links a web user to the professional (therapist) or organization (manager) they act for in the portal."""

    list_display = ("user", "role", "professional", "organization")
    list_filter = ("role",)
    list_select_related = ("user", "professional", "organization")
    search_fields = ("user__username", "professional__family_name", "organization__name")
    raw_id_fields = ("user", "professional", "organization")
