"""Shared helpers of the pipeline benchmarks: the sandbox in its own process, a throw-away
PostgreSQL database, the machine's description. Not a benchmark itself.

- :class:`SandboxProcess` runs ``python -m django_talonone.sandbox`` (127.0.0.1, a free port, the
  demo campaigns) in a child process, so it never shares a GIL with the code being timed, and talks
  to its test-only control endpoints (``/sandbox/reset``, ``/sandbox/faults``,
  ``/sandbox/counters``).
- :func:`postgres_database` creates a dedicated database (dropping a leftover one first) and drops
  it again on exit.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CAMPAIGNS = ROOT / "django_talonone" / "sandbox" / "campaigns" / "demo.json"
HOST = "127.0.0.1"
API_KEY = "sandbox-api-key"


def keep_proxies_away() -> None:
    """Only 127.0.0.1 is contacted: never through a proxy from the environment."""
    no_proxy = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(
        p for p in (no_proxy, HOST, "localhost") if p
    )


class SandboxProcess:
    """``python -m django_talonone.sandbox`` in a child process; control through /sandbox/."""

    def __init__(self, campaigns: Path | None = CAMPAIGNS) -> None:
        self.campaigns = campaigns
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __enter__(self) -> SandboxProcess:
        cmd = [sys.executable, "-m", "django_talonone.sandbox", "--host", HOST, "--port", "0"]
        cmd += ["--api-key", API_KEY]
        if self.campaigns is not None:
            cmd += ["--campaigns", str(self.campaigns)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        line = _readline(self.proc, 20.0)
        if not line.startswith("listening on "):
            self.__exit__()
            raise SystemExit(f"the sandbox did not start: {line!r}")
        self.url = line.split()[-1]
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def control(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with self._opener.open(request, timeout=10) as answer:
            text = answer.read()
        return json.loads(text) if text else None

    def reset(self, latency_s: float = 0.0) -> None:
        """Forget all data, the log, counters and faults; then add the latency, if any."""
        self.control("POST", "/sandbox/reset")
        if latency_s > 0:
            self.add_latency(latency_s)

    def add_latency(self, seconds: float) -> None:
        """Every API request answered ``seconds`` late (until the next reset)."""
        self.control(
            "POST",
            "/sandbox/faults",
            {"operation": "*", "kind": "latency", "params": {"seconds": seconds}},
        )

    def counters(self) -> dict[str, Any]:
        return self.control("GET", "/sandbox/counters")


@contextlib.contextmanager
def postgres_database(name: str, *, keep: bool = False) -> Iterator[None]:
    """A fresh PostgreSQL database ``name`` on 127.0.0.1 (user postgres); dropped on exit."""
    import psycopg

    def admin(sql: str) -> None:
        with psycopg.connect(host=HOST, user="postgres", dbname="postgres", autocommit=True) as c:
            c.execute(sql)

    if not name.replace("_", "").isalnum():
        raise SystemExit(f"refusing the database name {name!r}")
    admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{name}"')
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        if not keep:
            admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def machine_info(**extra: Any) -> dict[str, Any]:
    """Where and on what a figure was measured (``extra``: versions the caller adds)."""
    cpu = platform.processor() or None
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # read-only
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        **extra,
        "git_commit": commit or None,
    }


def django_versions() -> dict[str, Any]:
    """Django's, Celery's and orjson's versions (orjson: None when the library's JSON falls back
    to the standard library), for :func:`machine_info`."""
    import django

    found: dict[str, Any] = {"django": django.get_version(), "orjson": None}
    with contextlib.suppress(ImportError):
        import celery

        found["celery"] = celery.__version__
    with contextlib.suppress(ImportError):
        import orjson

        found["orjson"] = orjson.__version__
    return found


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    out: list[str] = []
    stream = proc.stdout
    assert stream is not None
    reader = threading.Thread(target=lambda: out.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return out[0].strip() if out else ""
