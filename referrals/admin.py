from django.contrib import admin

from referrals.models import Clinic, Offer, OfferEvent, Referral, ReferralEvent, ReferralNote, RoutingDecision


@admin.register(Clinic)
class ClinicAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "created_at")
    prepopulated_fields = {"slug": ("name",)}
    search_fields = ("name", "slug")


class ReferralEventInline(admin.TabularInline):
    model = ReferralEvent
    extra = 0
    can_delete = False
    readonly_fields = ("at", "kind", "from_status", "to_status", "actor", "detail")


class ReferralNoteInline(admin.TabularInline):
    model = ReferralNote
    extra = 0
    readonly_fields = ("time", "author_reference", "author_display", "text")


@admin.register(Referral)
class ReferralAdmin(admin.ModelAdmin):
    """Read-only here: a referral changes only through its services, which keep the Task and its history."""

    list_display = ("id", "clinic", "patient_name", "status", "business_status", "owner_display", "created_at")
    list_filter = ("status", "business_status", "clinic")
    list_select_related = ("clinic",)
    search_fields = ("patient_name", "requester_display")
    inlines = [ReferralNoteInline, ReferralEventInline]

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False


class OfferEventInline(admin.TabularInline):
    model = OfferEvent
    extra = 0
    can_delete = False
    readonly_fields = ("from_status", "to_status", "actor", "detail", "at")


# Offers and decisions change only through referrals.offers (compare-and-set, events): read-only here.
class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Offer)
class OfferAdmin(ReadOnlyAdmin):
    list_display = ("id", "referral", "role", "status", "delivery", "created_at", "deadline", "responded_at")
    list_filter = ("status", "delivery")
    # Each row names the role as "<professional> at <organization>": one query for the page, not three per row.
    list_select_related = ("referral", "role__professional", "role__organization")
    inlines = [OfferEventInline]


@admin.register(RoutingDecision)
class RoutingDecisionAdmin(ReadOnlyAdmin):
    list_display = ("id", "referral", "trigger", "outcome", "chosen_role", "created_at", "gist")
    list_filter = ("trigger", "outcome")
    list_select_related = ("referral", "chosen_role__professional", "chosen_role__organization")
