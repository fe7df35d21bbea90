"""Celery tasks: thin wrappers over the outbox, under stable names.

A library never creates a Celery app: these are ``@shared_task``s that bind to the host project's
app. Their names are fixed, so routing and beat entries can name them:

- ``django_talonone.push`` (``key``): send the due pushes of one session or profile key, and
  whatever else is due, in batches (``TALONONE["BATCH_SIZE"]``). The
  outbox sends it on commit when ``TALONONE["DISPATCH"] = "celery"``, with
  ``TALONONE["TASK_OPTIONS"]`` as ``apply_async`` options (``queue``, ``priority``, ...).
- ``django_talonone.sweep``: take back pushes abandoned by dead workers and re-wake pushes whose
  message was lost. Run it from beat every 30 seconds, on the queue the push task uses
  (``TASK_OPTIONS`` route only the push task)::

      CELERY_BEAT_SCHEDULE = {
          "talonone-sweep": {
              "task": "django_talonone.sweep",
              "schedule": 30.0,
              "options": {"queue": "talonone"},  # the queue in TASK_OPTIONS, if any
          },
      }

This module imports without Celery installed; the tasks are then plain functions whose
``delay``/``apply_async`` raise :class:`~django.core.exceptions.ImproperlyConfigured`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured

__all__ = ["push", "sweep"]

try:
    from celery import shared_task
except ImportError:  # Celery is an optional extra: inline dispatch needs none of it.
    shared_task = None


def _task(name: str) -> Callable[[Callable[..., Any]], Any]:
    if shared_task is not None:
        # The row in the database is the durable record; a lost message is re-sent by the sweep,
        # so results are not kept and the task itself never retries.
        return shared_task(name=name, ignore_result=True)

    def plain(func: Callable[..., Any]) -> Callable[..., Any]:
        def unavailable(*args: Any, **kwargs: Any) -> None:
            raise ImproperlyConfigured(
                f'{name} needs Celery: pip install "django-talonone[celery]", or set '
                'TALONONE["DISPATCH"] = "inline".'
            )

        func.delay = unavailable  # type: ignore[attr-defined]
        func.apply_async = unavailable  # type: ignore[attr-defined]
        func.name = name  # type: ignore[attr-defined]
        return func

    return plain


@_task("django_talonone.push")
def push(key: str) -> int:
    """Send the due pushes of ``key``, and with ``TALONONE["BATCH_SIZE"]`` above 1 whatever else
    is due, in batches; returns how many rows were finished."""
    from .outbox import drain

    return drain(key)


@_task("django_talonone.sweep")
def sweep() -> dict[str, int]:
    """Reclaim pushes of dead workers and re-wake overdue ones; returns the counts."""
    from .outbox import sweep as sweep_outbox

    return sweep_outbox()
