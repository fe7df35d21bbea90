"""``python -m django_talonone.sandbox``: the line it prints, serving, signals, --state."""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .conftest import Http, cart_body

ROOT = Path(__file__).parents[2]


@contextmanager
def _serve(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start the CLI, wait for its line, yield (process, url); kill it if still running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "django_talonone.sandbox", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        assert ready, "the sandbox printed nothing within 15 s"
        line = proc.stdout.readline()  # type: ignore[union-attr]
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:(\d+))\n", line)
        assert match, repr(line)
        assert int(match.group(2)) > 0
        yield proc, match.group(1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_the_line_serves_and_exits_cleanly(sig: signal.Signals) -> None:
    with _serve("--port", "0", "--api-key", "cli-key", "--seed", "3") as (proc, url):
        conn = Http(url, api_key="cli-key")
        status, _, body = conn.request("PUT", "/v2/customer_sessions/c1", cart_body())
        assert status == 200, body
        assert conn.request("GET", "/v2/customer_sessions/c1", auth=False)[0] == 401
        conn.close()
        proc.send_signal(sig)
        assert proc.wait(10) == 0
        assert "cli-key" not in proc.stderr.read()  # type: ignore[union-attr]


def test_cli_state_file_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    with _serve("--state", str(state), "--rate-limit", "1000") as (proc, url):
        conn = Http(url, api_key="sandbox-api-key")
        assert conn.request("PUT", "/v2/customer_sessions/kept", cart_body())[0] == 200
        conn.close()
        proc.terminate()
        assert proc.wait(10) == 0
    assert "kept" in state.read_text()
    json.loads(state.read_text())
    with _serve("--state", str(state)) as (proc, url):
        conn = Http(url, api_key="sandbox-api-key")
        assert conn.request("GET", "/v2/customer_sessions/kept")[0] == 200
        conn.close()
        proc.terminate()
        assert proc.wait(10) == 0


def test_cli_refuses_a_bad_campaigns_file(tmp_path: Path) -> None:
    bad = tmp_path / "campaigns.json"
    bad.write_text("{not json")
    done = subprocess.run(
        [sys.executable, "-m", "django_talonone.sandbox", "--campaigns", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert "campaigns file" in done.stderr and "not valid JSON" in done.stderr
