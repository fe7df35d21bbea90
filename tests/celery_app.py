"""The Celery app of the test project (a library never makes one; a host project does)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

app = Celery("tests")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["django_talonone"])
# The app of every thread, not only of the one that imported this module. Celery's Django fixup
# does this only when no app was asked for before; in a long test run an earlier test may have
# touched a shared task first, and the shop's threads (whose commits publish the pushes) would
# then publish through Celery's unconfigured fallback app instead.
app.set_default()
