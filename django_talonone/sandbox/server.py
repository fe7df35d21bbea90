"""A lean threaded HTTP/1.1 server for a WSGI app: keep-alive, TCP_NODELAY, one write per answer.

The standard library's ``http.server`` parses headers with the ``email`` package and answers in
several writes, which costs a 40 ms Nagle / delayed-ACK stall per request unless TCP_NODELAY is set.
This server reads the request line and headers itself, answers with headers and body in one
``sendall``, and serves each connection on its own daemon thread.

Besides plain WSGI it understands one extension, used by the sandbox's fault injection: an app may
set ``environ[ABORT]`` to ``"reset"`` (drop the connection with a TCP RST) or ``"close"`` (close it
without answering) instead of having its answer sent.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

__all__ = ["ABORT", "Server"]

#: environ key an app sets to ``"reset"`` or ``"close"`` to drop the connection without an answer.
ABORT = "sandbox.abort"
#: environ key holding the request headers as a dict with lower-cased names.
HEADERS = "sandbox.headers"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

logger = logging.getLogger("django_talonone.sandbox")

_MAX_LINE = 65536
_MAX_HEADERS = 100
_MAX_BODY = 32 * 1024 * 1024
_REASONS = {
    100: "Continue",
    400: "Bad Request",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}


class Server:
    """Serve a WSGI app over HTTP/1.1 on ``host:port`` (port 0 picks a free one).

    The socket is bound at construction, so :attr:`port` is known before serving starts.
    """

    def __init__(
        self, app: WSGIApp, host: str = "127.0.0.1", port: int = 0, *, backlog: int = 256
    ) -> None:
        self.app = app
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=backlog)
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self._closing = False
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL clients use, e.g. ``http://127.0.0.1:8123``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> threading.Thread:
        """Serve in a background daemon thread and return it."""
        self._thread = threading.Thread(
            target=self.serve_forever, name=f"sandbox-accept-{self.port}", daemon=True
        )
        self._thread.start()
        return self._thread

    def serve_forever(self) -> None:
        """Accept connections until :meth:`shutdown`, each served on its own daemon thread."""
        while not self._closing:
            try:
                conn, peer = self._sock.accept()
            except OSError:
                if self._closing:
                    break
                # Out of file descriptors or an aborted handshake: keep serving the others.
                time.sleep(0.01)
                continue
            with self._conns_lock:
                if self._closing:
                    conn.close()
                    break
                self._conns.add(conn)
            threading.Thread(
                target=self._serve_connection,
                args=(conn, peer),
                name=f"sandbox-conn-{peer[1]}",
                daemon=True,
            ).start()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop accepting, wake every idle keep-alive connection and close it."""
        self._closing = True
        # shutdown() wakes a thread blocked in accept(); close() alone does not on Linux.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # -- one connection ---------------------------------------------------------------------

    def _serve_connection(self, conn: socket.socket, peer: Any) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rfile = conn.makefile("rb", buffering=65536)
        try:
            while not self._closing and self._serve_one(conn, rfile, peer):
                pass
        except (OSError, ValueError):
            pass  # the peer went away, or shutdown() closed the socket under us
        finally:
            with self._conns_lock:
                self._conns.discard(conn)
            try:
                rfile.close()
                conn.close()
            except OSError:
                pass

    def _serve_one(self, conn: socket.socket, rfile: io.BufferedReader, peer: Any) -> bool:
        """Read one request, answer it; True when the connection stays open for another."""
        line = rfile.readline(_MAX_LINE + 1)
        while line in (b"\r\n", b"\n"):  # tolerate stray blank lines between requests
            line = rfile.readline(_MAX_LINE + 1)
        if not line:
            return False
        if len(line) > _MAX_LINE:
            return _refuse(conn, 414)
        parts = line.split()
        if len(parts) != 3:
            return _refuse(conn, 400)
        method_b, target_b, version_b = parts
        if not version_b.startswith(b"HTTP/1."):
            return _refuse(conn, 505)

        headers: dict[str, str] = {}
        while True:
            hline = rfile.readline(_MAX_LINE + 1)
            if hline in (b"\r\n", b"\n"):
                break
            if not hline or len(hline) > _MAX_LINE or len(headers) >= _MAX_HEADERS:
                return _refuse(conn, 431 if hline else 400)
            name, sep, value = hline.partition(b":")
            if not sep:
                return _refuse(conn, 400)
            key = name.strip().lower().decode("latin-1")
            text = value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text

        http11 = version_b == b"HTTP/1.1"
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection if http11 else "keep-alive" in connection

        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = _read_chunked(rfile)
            if body is None:
                return _refuse(conn, 400)
        else:
            try:
                length = int(headers.get("content-length") or 0)
            except ValueError:
                return _refuse(conn, 400)
            if length < 0:
                return _refuse(conn, 400)
            if length > _MAX_BODY:
                return _refuse(conn, 413)
            if length and headers.get("expect", "").lower() == "100-continue":
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = rfile.read(length) if length else b""
            if len(body) != length:
                return False  # the peer closed mid-body

        environ = self._environ(method_b, target_b, version_b, headers, body, peer)
        status, out_headers, payload = self._run_app(environ)

        abort = environ.get(ABORT)
        if abort == "reset":
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if abort == "close":
            return False

        head = [f"HTTP/1.1 {status}\r\n"]
        head.extend(f"{k}: {v}\r\n" for k, v in out_headers if k.lower() != "content-length")
        head.append(f"Content-Length: {len(payload)}\r\n")
        if method_b == b"HEAD":
            payload = b""
        if not keep_alive:
            head.append("Connection: close\r\n")
        elif not http11:
            head.append("Connection: keep-alive\r\n")
        head.append("\r\n")
        conn.sendall("".join(head).encode("latin-1") + payload)
        return keep_alive

    def _environ(
        self,
        method: bytes,
        target: bytes,
        version: bytes,
        headers: dict[str, str],
        body: bytes,
        peer: Any,
    ) -> dict[str, Any]:
        raw_path, _, query = target.partition(b"?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method.decode("latin-1"),
            "SCRIPT_NAME": "",
            # WSGI wants the decoded path as latin-1 text; RAW_URI keeps the encoded form, where
            # an id's "%2F" is still distinguishable from a path separator.
            "PATH_INFO": unquote_to_bytes(raw_path).decode("latin-1"),
            "QUERY_STRING": query.decode("latin-1"),
            "RAW_URI": target.decode("latin-1"),
            "SERVER_NAME": self.host,
            "SERVER_PORT": str(self.port),
            "SERVER_PROTOCOL": version.decode("latin-1"),
            "REMOTE_ADDR": str(peer[0]),
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            HEADERS: headers,
        }
        if "content-type" in headers:
            environ["CONTENT_TYPE"] = headers["content-type"]
        for key, value in headers.items():
            if key not in ("content-type", "content-length"):
                environ["HTTP_" + key.upper().replace("-", "_")] = value
        return environ

    def _run_app(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        started: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            started[:] = [status, headers]
            return _no_write

        try:
            result = self.app(environ, start_response)
            try:
                payload = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            if not started:
                raise RuntimeError("the WSGI app did not call start_response")
            return started[0], started[1], payload
        except Exception:
            logger.exception("sandbox: the WSGI app failed")
            body = b'{"message":"internal server error","errors":[],"StatusCode":500}'
            return "500 Internal Server Error", [("Content-Type", "application/json")], body


def _no_write(data: bytes) -> None:
    raise NotImplementedError("this server does not support the WSGI write() callable")


def _refuse(conn: socket.socket, status: int) -> bool:
    """Answer a request the server cannot parse and close the connection."""
    reason = _REASONS.get(status, "Error")
    body = f'{{"message":"{reason}","errors":[],"StatusCode":{status}}}'.encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with contextlib.suppress(OSError):
        conn.sendall(head + body)
    return False


def _read_chunked(rfile: io.BufferedReader) -> bytes | None:
    """Decode a chunked request body; None when it is malformed or too large."""
    chunks: list[bytes] = []
    total = 0
    while True:
        size_line = rfile.readline(_MAX_LINE + 1)
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            return None
        if size < 0 or total + size > _MAX_BODY:
            return None
        if size == 0:
            break
        chunk = rfile.read(size)
        if len(chunk) != size or rfile.readline(3) not in (b"\r\n", b"\n"):
            return None
        chunks.append(chunk)
        total += size
    while True:  # trailers, up to the blank line
        trailer = rfile.readline(_MAX_LINE + 1)
        if trailer in (b"\r\n", b"\n", b""):
            break
    return b"".join(chunks)
