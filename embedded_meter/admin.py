from django.contrib import admin

from .models import Event, MeterDefinition


@admin.register(MeterDefinition)
class MeterDefinitionAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "event_type", "aggregation", "value_property", "window_size", "updated_at"]
    list_filter = ["aggregation", "window_size"]
    search_fields = ["slug", "name", "event_type"]
    readonly_fields = ["created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["slug", "name", "description"]}),
        ("What to count", {"fields": ["event_type", "aggregation", "value_property", "group_by", "event_from"]}),
        ("Windows", {"fields": ["window_size"]}),
        ("History", {"fields": ["created_at", "updated_at"]}),
    ]


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    """Ingested events, read-only: usage is corrected by new events, never by editing."""

    list_display = ["time", "type", "subject", "source", "event_id", "ingested_at"]
    list_filter = ["type", "subject"]
    search_fields = ["subject"]
    date_hierarchy = "time"
    ordering = ["-time", "-id"]
    # The events table grows large: skip the unfiltered COUNT(*) on every page.
    show_full_result_count = False
    readonly_fields = [f.name for f in Event._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
