from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Running the app in production: health probes, Prometheus metrics, alerts, logs."""

    name = "ops"
    verbose_name = "Operations"
    default_auto_field = "django.db.models.BigAutoField"
