"""Sandbox throughput: UpdateCustomerSessionV2 requests/s with a 5-line cart.

Starts ``python -m django_talonone.sandbox`` (with the demo campaigns when they exist) pinned to one
CPU, and, for comparison in the same run, a canned-answer server built on the standard library's
``http.server`` (TCP_NODELAY on, so it is not held back by Nagle) pinned the same way. The load
comes from ``wrk`` with a Lua script (PUT + JSON body) on the other CPU when ``wrk`` is installed,
else from a multi-threaded Python keep-alive client (which tops out near what Python can send, so
its figures are a floor, not the server's ceiling). Prints the figures and writes
``bench/results/sandbox_throughput.json``.

    .venv/bin/python bench/sandbox_throughput.py [--seconds 5] [--connections 4]
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "sandbox_throughput.json"
DEMO = ROOT / "django_talonone" / "sandbox" / "campaigns" / "demo.json"
API_KEY = "bench-key"
CART_LINES = 5
#: Each session gets its own customer ("bench-customer-<n>"), as real carts do.
PROFILE = "bench-customer-"


def main() -> int:
    """Measure both servers and print/write the figures."""
    args = _parser().parse_args()
    if args.baseline_server:
        return _serve_baseline()
    use_wrk = shutil.which("wrk") is not None and not args.python_client
    tool = "wrk" if use_wrk else "python-threads"
    body = json.dumps(_cart_body(), separators=(",", ":"))
    server_cpu, load_cpus = _cpus()
    campaigns = DEMO if DEMO.exists() else None

    figures: dict[str, Any] = {}
    servers = {
        "sandbox": [sys.executable, "-m", "django_talonone.sandbox", "--api-key", API_KEY]
        + (["--campaigns", str(campaigns)] if campaigns else []),
        "stdlib_baseline": [sys.executable, str(Path(__file__).resolve()), "--baseline-server"],
    }
    for name, cmd in servers.items():
        with _server(cmd, server_cpu) as url:
            _check(url, body, expect_effects=name == "sandbox" and campaigns is not None)
            if use_wrk:
                figures[name] = _run_wrk(url, body, args.seconds, args.connections, load_cpus)
            else:
                figures[name] = _run_python(url, body, args.seconds, args.connections)
        print(
            f"{name:16s} {figures[name]['requests_per_s']:8.0f} requests/s  "
            f"(avg latency {figures[name]['latency_avg_ms']:.2f} ms, "
            f"non-2xx {figures[name]['non_2xx']}, {figures[name]['requests']} requests)"
        )

    result = {
        "what": "UpdateCustomerSessionV2, 5-line cart, keep-alive, server pinned to one CPU",
        "load_generator": tool,
        "seconds": args.seconds,
        "connections": args.connections,
        "campaigns": str(campaigns.relative_to(ROOT)) if campaigns else None,
        "server_cpu": server_cpu,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **figures,
        "sandbox_vs_baseline": round(
            figures["sandbox"]["requests_per_s"] / figures["stdlib_baseline"]["requests_per_s"], 2
        ),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"load generator: {tool}; written to {RESULTS.relative_to(ROOT)}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per server (5)")
    parser.add_argument("--connections", type=int, default=4, help="keep-alive connections (4)")
    parser.add_argument("--python-client", action="store_true", help="do not use wrk")
    parser.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    return parser


def _cart_body() -> dict[str, Any]:
    return {
        "customerSession": {
            "profileId": PROFILE,
            "state": "open",
            "couponCodes": [],
            "cartItems": [
                {
                    "sku": f"SKU-{i}",
                    "name": f"Bench item {i}",
                    "quantity": 1 + i % 3,
                    "price": 19.99 + 5 * i,
                    "category": ("shoes", "socks", "shirts")[i % 3],
                    "attributes": {"colour": "blue"},
                }
                for i in range(CART_LINES)
            ],
            "additionalCosts": {"shipping": {"price": 4.95}},
            "attributes": {"channel": "web"},
        },
        "responseContent": ["customerSession", "customerProfile", "loyalty", "coupons"],
    }


def _cpus() -> tuple[int | None, set[int] | None]:
    """One CPU for the server, the rest for the load generator (when there are two or more)."""
    try:
        available = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None, None
    if len(available) < 2:
        return None, None
    return available[0], set(available[1:])


class _server:
    """Run a server command (pinned to ``cpu``) until exit; yields its URL."""

    def __init__(self, cmd: list[str], cpu: int | None) -> None:
        self.cmd, self.cpu = cmd, cpu

    def __enter__(self) -> str:
        cpu = self.cpu

        def pin() -> None:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        self.proc = subprocess.Popen(
            self.cmd,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            preexec_fn=pin,  # before exec, so every server thread inherits the CPU mask
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        line = self.proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
        match = re.match(r"listening on (http://127\.0\.0\.1:\d+)", line)
        if not match:
            self.proc.kill()
            raise SystemExit(f"server did not start: {self.cmd} printed {line!r}")
        return match.group(1)

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc.stdout.close()  # type: ignore[union-attr]


def _check(url: str, body: str, expect_effects: bool) -> None:
    """One request first: the benchmark must measure successful answers."""
    status, answer = _put(url, "/v2/customer_sessions/bench-check", body)
    if status != 200:
        raise SystemExit(f"{url}: check request answered {status}: {answer[:300]!r}")
    if expect_effects and not json.loads(answer).get("effects"):
        print("warning: the demo campaigns produced no effects for the bench cart")


def _put(url: str, path: str, body: str) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("PUT", path, body=body, headers=_headers())
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def _headers() -> dict[str, str]:
    return {"Content-Type": "application/json", "Authorization": f"ApiKey-v1 {API_KEY}"}


# -- wrk --------------------------------------------------------------------------------------

_LUA = """
wrk.method = "PUT"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "ApiKey-v1 %(key)s"
local head, tail = %(head)s, %(tail)s
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
function request()
  n = n + 1
  -- 1000 sessions per wrk thread, cycled, each with its own customer: no two in-flight
  -- requests share a session or a profile (no 409s), as with real shoppers.
  local k = tid .. "-" .. (n %% 1000)
  return wrk.format(nil, "/v2/customer_sessions/bench-" .. k, nil, head .. k .. tail)
end
"""


def _run_wrk(
    url: str, body: str, seconds: float, connections: int, cpus: set[int] | None
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        head, _, tail = body.partition(PROFILE)
        script.write(
            _LUA % {"head": _lua_string(head + PROFILE), "tail": _lua_string(tail), "key": API_KEY}
        )
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-s",
        script.name,
        url,
    ]

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=seconds + 30, preexec_fn=pin
        ).stdout
    finally:
        os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "requests_per_s": round(rps, 1),
        "requests": total,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(0) if errors else None,
        "latency_avg_ms": _wrk_ms(re.search(r"Latency\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "latency_p99_ms": _wrk_ms(re.search(r"99%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
    }


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _wrk_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]
    return round(float(value) * scale, 3)


# -- the Python fallback ----------------------------------------------------------------------


def _run_python(url: str, body: str, seconds: float, connections: int) -> dict[str, Any]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    deadline = time.perf_counter() + seconds
    counts = [0] * connections
    non2xx = [0] * connections
    latency = [0.0] * connections
    head, _, tail = body.partition(PROFILE)

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        n = 0
        while time.perf_counter() < deadline:  # bounded by the deadline
            started = time.perf_counter()
            k = f"{i}-{n % 1000}"
            payload = f"{head}{PROFILE}{k}{tail}".encode()
            conn.request("PUT", f"/v2/customer_sessions/bench-{k}", payload, _headers())
            resp = conn.getresponse()
            resp.read()
            latency[i] += time.perf_counter() - started
            if resp.status >= 300:
                non2xx[i] += 1
            n += 1
        counts[i] = n
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    total = sum(counts)
    return {
        "requests_per_s": round(total / elapsed, 1),
        "requests": total,
        "non_2xx": sum(non2xx),
        "latency_avg_ms": round(sum(latency) / max(total, 1) * 1000, 3),
    }


# -- the stdlib baseline server ---------------------------------------------------------------


def _serve_baseline() -> int:
    """A canned-answer ``http.server`` with keep-alive and TCP_NODELAY (no state, no rules)."""
    import signal
    import socket
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    canned = json.dumps(
        {"customerSession": {"integrationId": "bench", "state": "open"}, "effects": []}
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_PUT(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(canned)))
            self.end_headers()
            self.wfile.write(canned)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=server.shutdown).start())
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
