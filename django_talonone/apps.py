"""Django app configuration."""

from __future__ import annotations

from django.apps import AppConfig


class TalonOneConfig(AppConfig):
    """``django_talonone``: registers the system checks on start-up."""

    name = "django_talonone"
    label = "talonone"
    verbose_name = "Talon.One"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the checks)
