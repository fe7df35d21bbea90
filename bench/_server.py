"""A canned-answer HTTP/1.1 keep-alive server for the benchmarks, in its own process.

Every request, whatever its method or path, gets the same answer (status 200 unless told
otherwise, ``Content-Type: application/json``). The server:

- listens on 127.0.0.1 only, on a free port it picks itself;
- keeps connections alive (HTTP/1.1), one thread per connection;
- sets ``TCP_NODELAY`` on every accepted socket and sends status line, headers and body in one
  ``sendall`` -- without that, Nagle's algorithm plus the client's delayed ACK adds ~40 ms to every
  answer;
- runs in a child process, so the client being timed never shares a GIL with it;
- exits when the parent closes its stdin (or dies), so it never outlives a benchmark.

Use from a benchmark::

    with CannedServer(json.dumps(state).encode()) as server:
        requests.put(server.url + "/v2/customer_sessions/s1", json=body)

The child side is ``python bench/_server.py --serve`` (see :func:`_serve`); it reads
``<length>\\n<body bytes>`` from stdin and prints ``LISTENING <port>`` once it accepts connections.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import IO

HOST = "127.0.0.1"
_MAX_HEAD = 64 * 1024
_MAX_BODY = 16 * 1024 * 1024
_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 500: "Server Error"}


class CannedServer:
    """Starts the canned-answer server in a child process; ``url`` is its base URL."""

    def __init__(
        self,
        body: bytes,
        *,
        status: int = 200,
        cpu: int | None = None,
        startup_timeout: float = 15.0,
    ) -> None:
        self.body = body
        self.status = status
        self.cpu = cpu  # pin the server process to this CPU (Linux), or leave it to the scheduler
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("server not started")
        return f"http://{HOST}:{self.port}"

    def start(self) -> CannedServer:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--serve",
                "--status",
                str(self.status),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._proc = proc
        if self.cpu is not None and hasattr(os, "sched_setaffinity"):
            try:
                os.sched_setaffinity(proc.pid, {self.cpu})
            except OSError:  # not allowed here: leave it to the scheduler
                self.cpu = None
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"%d\n" % len(self.body) + self.body)
        proc.stdin.flush()
        line: list[bytes] = []
        reader = threading.Thread(target=_read_line, args=(proc.stdout, line), daemon=True)
        reader.start()
        reader.join(self.startup_timeout)
        if not line or not line[0].startswith(b"LISTENING "):
            self.stop()
            raise RuntimeError(f"canned server did not start (got {line!r})")
        self.port = int(line[0].split()[1])
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # the child exits on EOF
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> CannedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _read_line(stream: IO[bytes], out: list[bytes]) -> None:
    out.append(stream.readline())


# --- child process ----------------------------------------------------------------------------


def _response(status: int, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: keep-alive\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


_LENGTH_REQUIRED = b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def _parse_head(head: bytes) -> tuple[int, bool, bool]:
    """(content length, close after answering, chunked) from a request head."""
    lines = head.split(b"\r\n")
    length = 0
    close = lines[0].endswith(b"HTTP/1.0")
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            close = value == b"close"
        elif name == b"transfer-encoding":
            chunked = value != b"identity"
    return length, close, chunked


def _handle(conn: socket.socket, response: bytes) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    with conn:
        try:
            while True:
                end = buf.find(b"\r\n\r\n")
                while end < 0:
                    chunk = conn.recv(65536)
                    if not chunk or len(buf) > _MAX_HEAD:
                        return
                    buf += chunk
                    end = buf.find(b"\r\n\r\n")
                length, close, chunked = _parse_head(buf[:end])
                if chunked or not 0 <= length <= _MAX_BODY:
                    conn.sendall(_LENGTH_REQUIRED)
                    return
                need = end + 4 + length
                while len(buf) < need:
                    chunk = conn.recv(max(65536, need - len(buf)))
                    if not chunk:
                        return
                    buf += chunk
                buf = buf[need:]
                conn.sendall(response)  # status line, headers and body in one write
                if close:
                    return
        except (OSError, ValueError):
            return


def _exit_on_stdin_eof() -> None:
    while sys.stdin.buffer.read(4096):
        pass
    os._exit(0)


def _serve(status: int) -> None:
    stdin = sys.stdin.buffer
    size = int(stdin.readline())
    body = stdin.read(size)
    response = _response(status, body)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, 0))
    listener.listen(64)
    threading.Thread(target=_exit_on_stdin_eof, daemon=True).start()
    sys.stdout.write(f"LISTENING {listener.getsockname()[1]}\n")
    sys.stdout.flush()
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_handle, args=(conn, response), daemon=True).start()


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--serve":
        _serve(int(sys.argv[3]) if len(sys.argv) >= 4 and sys.argv[2] == "--status" else 200)
    else:
        sys.exit(f"usage: {sys.argv[0]} --serve [--status N]  (started by CannedServer)")
