"""Django settings for the test suite: SQLite in memory by default, PostgreSQL when asked."""

import json
import os

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_talonone",
    # The test shop: an Order model with a status, for model-signal mode and adapter tests.
    "tests.shop",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

if os.environ.get("TALONONE_TEST_DB") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("PGDATABASE", "talonone"),
            "USER": os.environ.get("PGUSER", "postgres"),
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            # Extra connection OPTIONS as JSON (the benches compare prepared statements).
            "OPTIONS": json.loads(os.environ.get("TALONONE_TEST_PG_OPTIONS") or "{}"),
        }
    }
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}

TALONONE = {
    # Nothing listens here: unit tests mock HTTP with `responses`, whole-flow tests point
    # TALONONE at the sandbox through the talonone_sandbox fixture.
    "BASE_URL": "http://127.0.0.1:9",
    "API_KEY": "tests-api-key",
}

# Integration suite: Celery workers are separate processes started by tests/integration; they
# read the sandbox URL and the broker from the environment the test gives them.
if os.environ.get("TALONONE_TEST_BASE_URL"):
    TALONONE.update(
        BASE_URL=os.environ["TALONONE_TEST_BASE_URL"],
        API_KEY=os.environ.get("TALONONE_TEST_API_KEY", "sandbox-api-key"),
    )
if os.environ.get("TALONONE_TEST_SETTINGS"):
    TALONONE.update(json.loads(os.environ["TALONONE_TEST_SETTINGS"]))

CELERY_BROKER_URL = os.environ.get("TALONONE_TEST_BROKER", "redis://127.0.0.1:6379/15")
CELERY_TASK_ALWAYS_EAGER = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
