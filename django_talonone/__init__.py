"""django-talonone: connect a Django shop to Talon.One's Integration API."""

__version__ = "0.1.0.dev0"
