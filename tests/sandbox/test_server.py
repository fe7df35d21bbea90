"""The HTTP/1.1 transport: keep-alive, Connection: close, framing, shutdown."""

from __future__ import annotations

import json
import socket
import time

from django_talonone.sandbox import Sandbox

from .conftest import API_KEY, Echo, Http


def _raw_socket(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Read until the server closes the connection (or 5 s pass)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _get_session_request(session: str, extra: str = "") -> bytes:
    return (
        f"GET /v2/customer_sessions/{session} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: ApiKey-v1 {API_KEY}\r\n{extra}\r\n"
    ).encode()


def test_keep_alive_reuses_one_connection_without_nagle_stalls(echo: Echo) -> None:
    conn = Http(echo.url)
    conn.request("GET", "/v2/customer_sessions/s0")
    sock = conn.conn.sock
    started = time.perf_counter()
    for i in range(20):
        status, headers, _ = conn.request(
            "PUT", f"/v2/customer_sessions/s{i}", {"customerSession": {}}
        )
        assert status == 200
        assert "close" not in headers.get("connection", "")
    elapsed = time.perf_counter() - started
    # The same socket served all of them: http.client would have opened a new one otherwise.
    assert conn.conn.sock is sock
    # Nagle + delayed ACK would cost ~40 ms per request; TCP_NODELAY / one write avoids it.
    assert elapsed < 20 * 0.040
    conn.close()


def test_connection_close_is_honoured(echo: Echo) -> None:
    sock = _raw_socket(echo.url)
    sock.sendall(_get_session_request("s1", "Connection: close\r\n"))
    data = _read_all(sock)  # returns only because the server closed the connection
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"\r\nConnection: close" in head
    assert json.loads(body)["operation"] == "get_customer_session"
    sock.close()


def test_http_1_0_closes_unless_keep_alive_is_asked(echo: Echo) -> None:
    sock = _raw_socket(echo.url)
    request = f"GET /v2/customer_sessions/s1 HTTP/1.0\r\nAuthorization: ApiKey-v1 {API_KEY}\r\n\r\n"
    sock.sendall(request.encode())
    assert _read_all(sock).startswith(b"HTTP/1.1 200")
    sock.close()


def test_pipelined_requests_are_answered_in_order(echo: Echo) -> None:
    sock = _raw_socket(echo.url)
    sock.sendall(
        _get_session_request("first") + _get_session_request("second", "Connection: close\r\n")
    )
    data = _read_all(sock)
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert data.index(b"first") < data.index(b"second")
    sock.close()


def test_each_answer_has_content_length_and_json_type(echo: Echo) -> None:
    sock = _raw_socket(echo.url)
    sock.sendall(_get_session_request("s1", "Connection: close\r\n"))
    head, _, body = _read_all(sock).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    assert int(fields["Content-Length"]) == len(body)
    assert fields["Content-Type"] == "application/json"
    sock.close()


def test_chunked_body_and_expect_continue(echo: Echo) -> None:
    body = json.dumps({"customerSession": {"profileId": "p"}}).encode()
    sock = _raw_socket(echo.url)
    chunked = f"{len(body[:10]):x}\r\n".encode() + body[:10] + b"\r\n"
    chunked += f"{len(body[10:]):x}\r\n".encode() + body[10:] + b"\r\n0\r\n\r\n"
    sock.sendall(
        b"PUT /v2/customer_sessions/c1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        + f"Authorization: ApiKey-v1 {API_KEY}\r\nConnection: close\r\n\r\n".encode()
        + chunked
    )
    assert _read_all(sock).startswith(b"HTTP/1.1 200")
    sock.close()
    assert echo.calls[-1].body == {"customerSession": {"profileId": "p"}}

    sock = _raw_socket(echo.url)
    sock.sendall(
        b"PUT /v2/customer_sessions/c2 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        + f"Content-Length: {len(body)}\r\nAuthorization: ApiKey-v1 {API_KEY}\r\n".encode()
        + b"Connection: close\r\n\r\n"
    )
    assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
    sock.sendall(body)
    assert b"HTTP/1.1 200" in _read_all(sock)
    sock.close()


def test_garbage_request_line_gets_400_and_close(echo: Echo) -> None:
    sock = _raw_socket(echo.url)
    sock.sendall(b"NONSENSE\r\n\r\n")
    assert _read_all(sock).startswith(b"HTTP/1.1 400")
    sock.close()


def test_oversized_content_length_gets_413(echo: Echo) -> None:
    sock = _raw_socket(echo.url)
    sock.sendall(b"PUT /v2/customer_sessions/x HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n")
    assert _read_all(sock).startswith(b"HTTP/1.1 413")
    sock.close()


def test_stop_closes_idle_keep_alive_connections() -> None:
    sandbox = Sandbox(api_key=API_KEY).start()
    conn = Http(sandbox.url)
    assert conn.request("GET", "/sandbox/health")[0] == 200
    sock = conn.conn.sock
    sandbox.stop()
    sock.settimeout(5)
    assert sock.recv(10) == b""  # the server closed its end
    conn.close()
    sandbox.stop()  # stopping twice is harmless
