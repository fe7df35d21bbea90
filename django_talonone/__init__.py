"""django-talonone: connect a Django shop to Talon.One's Integration API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

__all__ = ["Evaluation", "__version__", "evaluate_cart"]

if TYPE_CHECKING:
    from .services import Evaluation, evaluate_cart

# Exported lazily: importing the package (or django_talonone.client) must not import Django,
# and the services need the app registry, which is only ready once Django has set up.
_LAZY = {"evaluate_cart": "services", "Evaluation": "services"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'django_talonone' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
