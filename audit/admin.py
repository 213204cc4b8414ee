from django.contrib import admin

from audit.models import Access


@admin.register(Access)
class AccessAdmin(admin.ModelAdmin):
    """Read-only: the trail is append-only for everyone, staff included."""

    list_display = ("recorded_at", "channel", "interaction", "agent_client", "agent_user", "entity_type",
                    "entity_id", "status", "source_ip")
    list_filter = ("channel", "action", "status")
    date_hierarchy = "recorded_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
