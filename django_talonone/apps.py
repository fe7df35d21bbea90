"""Django app configuration."""

from __future__ import annotations

from django.apps import AppConfig


class TalonOneConfig(AppConfig):
    """``django_talonone``: registers the system checks and the signal receivers on start-up."""

    name = "django_talonone"
    label = "talonone"
    verbose_name = "Talon.One"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # checks registers the system checks; receivers connects the lifecycle signals to the
        # outbox; model_signals watches the shop's order model when TALONONE["ORDER_MODEL"] is set.
        from . import checks, model_signals, receivers  # noqa: F401

        model_signals.connect()
