from django.apps import AppConfig


class EmbeddedMeterConfig(AppConfig):
    name = "embedded_meter"
    verbose_name = "Embedded meter"
    default_auto_field = "django.db.models.BigAutoField"
