"""Suite-wide fixtures: the services the integration suite needs, skipped or failed with a hint."""

from __future__ import annotations

import os
import socket

import pytest

SERVICES = {
    "postgres": (
        5432,
        "PostgreSQL",
        "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start "
        "(and run with TALONONE_TEST_DB=postgres, as `make test-postgres` does)",
    ),
    "redis": (
        6379,
        "Redis",
        'start it with: redis-server --daemonize yes --port 6379 --save ""',
    ),
}


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked postgres/redis/worker need the service: skip on a laptop, fail in CI.

    With TALONONE_TEST_DB=postgres every test needs PostgreSQL (its database is the test database).
    """
    needed = {m.name for m in item.iter_markers()} & {"postgres", "redis", "worker"}
    if os.environ.get("TALONONE_TEST_DB") == "postgres":
        needed.add("postgres")
    if "worker" in needed:
        needed |= {"postgres", "redis"}
    for name in sorted(needed & set(SERVICES)):
        port, label, hint = SERVICES[name]
        problem = None
        if not _port_open(port):
            problem = f"{label} is not running on 127.0.0.1:{port}; {hint}"
        elif name == "postgres" and os.environ.get("TALONONE_TEST_DB") != "postgres":
            problem = "this test needs TALONONE_TEST_DB=postgres (run `make test-postgres`)"
        if problem:
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail(f"CI requires {label}: {problem}", pytrace=False)
            pytest.skip(problem)
