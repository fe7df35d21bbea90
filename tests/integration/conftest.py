"""The integration harness: PostgreSQL, Redis and real ``celery worker`` processes.

- ``talon``: a sandbox with the demo campaigns, served from a thread of this process (one server
  for the session, reset before each test).
- ``pipeline``: this process dispatches through Celery, on this session's own queue, to the
  sandbox (``settings.TALONONE`` as the workers see it, see :data:`PIPELINE_SETTINGS`).
- ``workers``: ``workers.start(n)`` starts n ``celery -A tests.celery_app worker`` processes, each
  in its own process group, on the same broker and queue and on pytest-django's test database;
  it returns once every one answers ``inspect ping``. They are stopped (SIGTERM, then SIGKILL of
  the whole group) when the test ends, and their logs are shown when it fails.

Every test here writes through committed transactions (``django_db(transaction=True)``): the
workers are other processes and only see what was committed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from django_talonone.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[2]
DEMO_CAMPAIGNS = ROOT / "django_talonone" / "sandbox" / "campaigns" / "demo.json"
CELERY = Path(sys.executable).with_name("celery")

#: This test session's own queue: messages left on the broker by earlier (or parallel) runs
#: never reach these workers, and the workers never eat another run's messages.
QUEUE = f"talonone-it-{os.getpid()}-{uuid.uuid4().hex[:8]}"

#: TALONONE settings of the workers and of this process (on top of BASE_URL and API_KEY).
PIPELINE_SETTINGS: dict[str, Any] = {
    "DISPATCH": "celery",
    "TASK_OPTIONS": {"queue": QUEUE},
    # A killed worker's push is reclaimed 3 s after it was claimed; a request may take at most
    # 0.5 + 2 s (talonone.E037 wants the lease longer than that).
    "IN_FLIGHT_TIMEOUT": 3,
    "TIMEOUT": [0.5, 2.0],
    "RETRY_BASE_DELAY": 0.2,
    "RETRY_MAX_DELAY": 1.0,
    "MAX_ATTEMPTS": 8,
    "LOYALTY_PROGRAM_IDS": [1],
}

#: Seconds to wait for workers to answer a ping (a cold start on a busy CI machine included).
START_TIMEOUT = 45.0
#: Seconds a worker gets to stop on SIGTERM before its process group is killed.
STOP_TIMEOUT = 10.0


def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition not reached",
) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            pytest.fail(f"after {timeout:g}s: {text}", pytrace=True)
        time.sleep(interval)


# --- the sandbox and this process's settings ------------------------------------------------------


@pytest.fixture(scope="session")
def _integration_sandbox() -> Iterator[Sandbox]:
    with Sandbox(campaigns=DEMO_CAMPAIGNS) as sandbox:
        yield sandbox


@pytest.fixture
def talon(request: pytest.FixtureRequest, _integration_sandbox: Sandbox) -> Iterator[Sandbox]:
    """The sandbox with the demo campaigns, no data, no faults and an empty log."""
    _integration_sandbox.reset()
    request.node._talonone_sandbox = _integration_sandbox
    yield _integration_sandbox
    _integration_sandbox.faults.clear()


@pytest.fixture(scope="session")
def broker_url() -> str:
    from django.conf import settings

    return settings.CELERY_BROKER_URL


@pytest.fixture(scope="session")
def celery_app(broker_url: str) -> Iterator[Any]:
    """The test project's Celery app (the shared tasks bind to it), its session queue purged."""
    from django_talonone import tasks
    from tests.celery_app import app

    assert tasks.push.app is app, "django_talonone.push is not bound to tests.celery_app"
    with _session_queue(broker_url) as queue:
        queue.purge()  # whatever an earlier run with this name left (none, normally)
    try:
        yield app
    finally:
        with _session_queue(broker_url) as queue:
            queue.purge()
            queue.delete()  # the queue and its binding: nothing left on the broker


@contextlib.contextmanager
def _session_queue(broker_url: str) -> Iterator[Any]:
    """This session's queue, declared as Celery declares a ``-Q`` queue, bound to a channel."""
    from kombu import Connection, Exchange, Queue

    queue = Queue(QUEUE, Exchange(QUEUE, type="direct"), routing_key=QUEUE)
    with Connection(broker_url, connect_timeout=5) as conn:
        bound = queue(conn.default_channel)
        bound.declare()
        yield bound


def queued_messages(broker_url: str) -> int:
    """How many messages wait in this session's queue."""
    with _session_queue(broker_url) as queue:
        return queue.queue_declare().message_count


@pytest.fixture
def pipeline(settings: Any, talon: Sandbox, celery_app: Any) -> dict[str, Any]:
    """This process pushes through Celery, on the session queue, to the sandbox."""
    values = {
        **settings.TALONONE,
        "BASE_URL": talon.url,
        "API_KEY": talon.api_key,
        **PIPELINE_SETTINGS,
    }
    settings.TALONONE = values
    return values


# --- worker processes -----------------------------------------------------------------------------


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def pgid(self) -> int:
        # Started with start_new_session: the main process leads its group, its pool children
        # belong to it.
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self, limit: int = 20_000) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return text if len(text) <= limit else "...\n" + text[-limit:]


@dataclass
class WorkerPool:
    """Starts and stops the worker processes of one test."""

    env: dict[str, str]
    log_dir: Path
    app: Any
    workers: list[Worker] = field(default_factory=list)

    def start(self, count: int, *, pool: str = "prefork") -> list[Worker]:
        """Start ``count`` workers (each ``-c 1``) and wait until all of them answer a ping."""
        started = []
        for _ in range(count):
            name = f"it{len(self.workers) + 1}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
            log = self.log_dir / f"{name.partition('@')[0]}.log"
            command = [
                str(CELERY),
                "-A",
                "tests.celery_app",
                "worker",
                f"--pool={pool}",
                "--concurrency=1",
                "--prefetch-multiplier=1",
                "-n",
                name,
                "-Q",
                QUEUE,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel=INFO",
            ]
            with log.open("wb") as out:
                process = subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            worker = Worker(name, process, log)
            self.workers.append(worker)
            started.append(worker)
        self._wait_ready(started)
        return started

    def _wait_ready(self, workers: list[Worker]) -> None:
        waiting = {w.name: w for w in workers}
        deadline = time.monotonic() + START_TIMEOUT
        while waiting:
            for worker in waiting.values():
                if not worker.alive():
                    pytest.fail(
                        f"celery worker {worker.name} exited with {worker.process.returncode} "
                        f"while starting:\n{worker.log_text()}",
                        pytrace=False,
                    )
            replies = self.app.control.ping(destination=list(waiting), timeout=0.5) or []
            for reply in replies:
                for name in reply:
                    waiting.pop(name, None)
            if waiting and time.monotonic() >= deadline:
                logs = "\n".join(f"--- {w.name}\n{w.log_text()}" for w in waiting.values())
                pytest.fail(
                    f"celery workers did not answer a ping within {START_TIMEOUT:g}s:\n{logs}",
                    pytrace=False,
                )

    def holding(self, claimed_by: str) -> Worker:
        """The worker whose process (the pool child, with prefork) claimed a push."""
        pid = int(claimed_by.split(":")[-2])
        group = os.getpgid(pid)
        for worker in self.workers:
            if worker.pgid == group:
                return worker
        raise AssertionError(f"no worker of this test holds {claimed_by!r} (pid {pid})")

    def kill(self, worker: Worker) -> None:
        """SIGKILL the worker's whole process group: main process and pool children."""
        worker.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pgid, signal.SIGKILL)
        worker.process.wait(timeout=STOP_TIMEOUT)

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pgid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for worker in self.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            # Whatever is left of the group (a worker stuck in shutdown, an orphaned child).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(worker.pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=STOP_TIMEOUT)


def _die_with_parent() -> None:
    """In the worker, before exec: get SIGTERM should pytest itself be killed (Linux only), so
    that not even a ``kill -9`` of the test run leaves workers behind."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@pytest.fixture
def workers(
    request: pytest.FixtureRequest,
    transactional_db: None,
    pipeline: dict[str, Any],
    celery_app: Any,
    broker_url: str,
    tmp_path: Path,
) -> Iterator[WorkerPool]:
    """``workers.start(n)``: real Celery workers on this test's database, broker and sandbox."""
    from django.db import connection

    db = connection.settings_dict
    worker_settings = {k: pipeline[k] for k in PIPELINE_SETTINGS}
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "TALONONE_TEST_DB": "postgres",
        # pytest-django's test database, not the one tests/settings.py names by default.
        "PGDATABASE": db["NAME"],
        "PGUSER": db["USER"] or "postgres",
        "PGHOST": db["HOST"] or "127.0.0.1",
        "PGPORT": str(db["PORT"] or 5432),
        "TALONONE_TEST_BASE_URL": pipeline["BASE_URL"],
        "TALONONE_TEST_API_KEY": pipeline["API_KEY"],
        "TALONONE_TEST_SETTINGS": json.dumps(worker_settings),
        "TALONONE_TEST_BROKER": broker_url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
    }
    log_dir = tmp_path / "workers"
    log_dir.mkdir()
    pool = WorkerPool(env=env, log_dir=log_dir, app=celery_app)
    request.node._talonone_workers = pool
    try:
        yield pool
    finally:
        pool.stop_all()
        # Messages no worker took (a wake-up call queued behind the last test's work) must not
        # reach the next test's workers.
        with _session_queue(broker_url) as queue:
            queue.purge()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failure, show each worker's log and the sandbox's counters."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    pool: WorkerPool | None = getattr(item, "_talonone_workers", None)
    for worker in pool.workers if pool else []:
        state = "killed" if worker.killed else ("running" if worker.alive() else "exited")
        report.sections.append((f"celery worker {worker.name} ({state})", worker.log_text()))
    sandbox: Sandbox | None = getattr(item, "_talonone_sandbox", None)
    if sandbox is not None:
        with contextlib.suppress(Exception):
            report.sections.append(("sandbox counters", json.dumps(sandbox.counters, indent=1)))
