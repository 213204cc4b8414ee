from django.contrib import admin

from console.models import ConsoleRole


@admin.register(ConsoleRole)
class ConsoleRoleAdmin(admin.ModelAdmin):
    list_display = ("user", "role", "clinic")
    list_filter = ("role",)
    list_select_related = ("user", "clinic")
    raw_id_fields = ("user",)
