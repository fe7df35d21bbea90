"""Django settings of the pipeline benchmark (this process and its Celery workers).

``tests.settings`` (PostgreSQL, the sandbox's URL, the broker and ``TALONONE`` overrides all come
from the environment the benchmark sets) plus ``CELERY_DB_REUSE_MAX`` when
``TALONONE_BENCH_DB_REUSE_MAX`` is set: without it, Celery's Django fix-up closes the database
connection after every task.
"""

import os

from tests.settings import *  # noqa: F403

if os.environ.get("TALONONE_BENCH_DB_REUSE_MAX"):
    CELERY_DB_REUSE_MAX = int(os.environ["TALONONE_BENCH_DB_REUSE_MAX"])
