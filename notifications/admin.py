from django.contrib import admin, messages

from notifications.models import Delivery, FollowUp, Subscription
from notifications.outbox import deliveries_replay


@admin.register(FollowUp)
class FollowUpAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "due_at", "state", "attempts", "claimed_until", "referral_id", "offer_id", "outcome")
    list_filter = ("state", "kind")
    search_fields = ("key",)
    ordering = ("-due_at",)


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ("id", "fhir_id", "clinic", "channel", "endpoint", "payload", "status", "events_since_start",
                    "error_count")
    list_filter = ("status", "channel")
    # What the clinic posted over FHIR is its own: the admin may switch a subscription off, not rewrite it.
    readonly_fields = ("fhir_id", "resource", "base_url", "events_since_start", "error_count")


@admin.action(description="Replay the selected dead deliveries")
def replay(modeladmin, request, queryset):
    count = deliveries_replay(delivery_ids=list(queryset.values_list("pk", flat=True)))
    skipped = queryset.count() - count
    modeladmin.message_user(request, f"{count} deliveries will be sent again.", messages.SUCCESS)
    if skipped:
        modeladmin.message_user(request, f"{skipped} were not dead and were left alone.", messages.WARNING)


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ("id", "channel", "subscription", "notification_type", "event_number", "endpoint", "state",
                    "attempts", "round", "next_attempt_at", "last_error")
    list_filter = ("state", "channel")  # "dead" lists the dead letters
    actions = [replay]
    readonly_fields = [f.name for f in Delivery._meta.fields]

    def has_add_permission(self, request):
        return False  # deliveries are written by the outbox, in the change's transaction

    def has_delete_permission(self, request, obj=None):
        return False  # the outbox is the record of what was told to whom: a dead letter is replayed, never erased
