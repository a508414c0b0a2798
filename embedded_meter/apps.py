from django.apps import AppConfig
from django.db.backends.signals import connection_created


def _register_sqlite_functions(sender, connection, **kwargs):
    if connection.vendor == "sqlite":
        from .expressions import register_sqlite_functions

        register_sqlite_functions(connection.connection)


class EmbeddedMeterConfig(AppConfig):
    name = "embedded_meter"
    verbose_name = "Embedded meter"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Exact decimal SUM/MAX on SQLite (see expressions.py), on every new connection
        # and on any already open.
        connection_created.connect(_register_sqlite_functions, dispatch_uid="embedded_meter_sqlite")
        from django.db import connections

        for connection in connections.all(initialized_only=True):
            if connection.vendor == "sqlite" and connection.connection is not None:
                _register_sqlite_functions(None, connection)
