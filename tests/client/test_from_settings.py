"""Building a client: from Django's TALONONE setting, or by hand."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
import requests

from django_talonone.client import IntegrationClient, ServerError, from_settings

from .conftest import ANY_URL, API_KEY, BASE_URL

PROXY_VARS = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"]


# ---- from_settings() --------------------------------------------------------------------------


def test_from_settings_reads_talonone(settings: Any, rsps: Any) -> None:
    settings.TALONONE = {
        "BASE_URL": "https://shop.europe-west1.talon.one/",
        "API_KEY": API_KEY,
        "TIMEOUT": 4,
        "USER_AGENT": "shop/1.0",
        "GET_RETRIES": 0,
    }
    client = from_settings()
    assert client.base_url == "https://shop.europe-west1.talon.one"
    assert client.timeout == (4.0, 4.0)
    assert client.get_retries == 0
    rsps.add("GET", ANY_URL, status=503)
    with pytest.raises(ServerError):
        client.get_customer_session("s")
    request = rsps.calls[0].request
    assert request.url == "https://shop.europe-west1.talon.one/v2/customer_sessions/s"
    assert request.headers["Authorization"] == f"ApiKey-v1 {API_KEY}"
    assert request.headers["User-Agent"] == "shop/1.0"
    assert len(rsps.calls) == 1  # GET_RETRIES=0 was applied


def test_from_settings_defaults(settings: Any) -> None:
    settings.TALONONE = {"BASE_URL": BASE_URL, "API_KEY": API_KEY}
    client = from_settings()
    assert client.timeout == (3.05, 10.0)
    assert client.get_retries == 2


def test_from_settings_keyword_overrides(settings: Any, rsps: Any) -> None:
    settings.TALONONE = {"BASE_URL": BASE_URL, "API_KEY": "sk-from-settings", "TIMEOUT": (1, 2)}
    session = requests.Session()
    client = from_settings(
        base_url="https://other.talon.one",
        api_key=API_KEY,
        timeout=(5, 6),
        get_retries=0,
        session=session,
    )
    assert client.base_url == "https://other.talon.one"
    assert client.timeout == (5.0, 6.0)
    assert client.session is session
    rsps.add("GET", ANY_URL, json={"effects": []})
    client.get_customer_session("s")
    assert rsps.calls[0].request.headers["Authorization"] == f"ApiKey-v1 {API_KEY}"
    assert rsps.calls[0].request.req_kwargs["timeout"] == (5.0, 6.0)


def test_from_settings_follows_setting_changes(settings: Any) -> None:
    settings.TALONONE = {"BASE_URL": "https://one.talon.one", "API_KEY": API_KEY}
    assert from_settings().base_url == "https://one.talon.one"
    settings.TALONONE = {"BASE_URL": "https://two.talon.one", "API_KEY": API_KEY}
    assert from_settings().base_url == "https://two.talon.one"


def test_from_settings_without_a_key_fails_clearly(settings: Any) -> None:
    settings.TALONONE = {"BASE_URL": BASE_URL}
    with pytest.raises(ValueError, match="api_key"):
        from_settings()


def test_importing_the_client_does_not_import_django() -> None:
    code = (
        "import sys, django_talonone.client\n"
        "loaded = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
        "print(loaded)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout


# ---- IntegrationClient(...) by hand -----------------------------------------------------------


@pytest.mark.parametrize(
    "base_url",
    ["ftp://acme.talon.one", "acme.talon.one", "", "file:///etc/passwd", None, 42],
)
def test_non_http_base_url_refused(base_url: Any) -> None:
    with pytest.raises(ValueError, match="base_url must be an http") as info:
        IntegrationClient(base_url, API_KEY)
    assert API_KEY not in str(info.value)


def test_refused_url_is_shown_when_it_is_one() -> None:
    with pytest.raises(ValueError, match=r"'ftp://acme\.talon\.one'"):
        IntegrationClient("ftp://acme.talon.one", API_KEY)


@pytest.mark.parametrize("api_key", ["", "   ", None, 1234])
def test_empty_key_refused(api_key: Any) -> None:
    with pytest.raises(ValueError, match="api_key must be a non-empty string"):
        IntegrationClient(BASE_URL, api_key)


@pytest.mark.parametrize("timeout", [0, -1, (0, 5), (5, -1), "10", (1, 2, 3)])
def test_bad_timeout_refused(timeout: Any) -> None:
    with pytest.raises(ValueError, match="timeout"):
        IntegrationClient(BASE_URL, API_KEY, timeout=timeout)


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://acme.talon.one", "https://acme.talon.one/v2/customer_sessions/s"),
        ("https://acme.talon.one/", "https://acme.talon.one/v2/customer_sessions/s"),
        ("https://acme.talon.one//", "https://acme.talon.one/v2/customer_sessions/s"),
        ("http://localhost:8123/", "http://localhost:8123/v2/customer_sessions/s"),
        ("https://gw.example.com/talon/", "https://gw.example.com/talon/v2/customer_sessions/s"),
    ],
)
def test_trailing_slash_of_base_url(rsps: Any, base_url: str, expected: str) -> None:
    rsps.add("GET", ANY_URL, json={"effects": []})
    IntegrationClient(base_url, API_KEY).get_customer_session("s")
    assert rsps.calls[0].request.url == expected


def test_key_whitespace_is_stripped(rsps: Any) -> None:
    rsps.add("GET", ANY_URL, json={"effects": []})
    IntegrationClient(BASE_URL, f"  {API_KEY}\n").get_customer_session("s")
    assert rsps.calls[0].request.headers["Authorization"] == f"ApiKey-v1 {API_KEY}"


class SpySession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self.closed = 0
        self.headers["X-Shop"] = "acme"

    def close(self) -> None:
        self.closed += 1
        super().close()


def test_user_session_is_used_and_not_closed(rsps: Any) -> None:
    session = SpySession()
    rsps.add("GET", ANY_URL, json={"effects": []})
    client = IntegrationClient(BASE_URL, API_KEY, session=session)
    assert client.session is session
    client.get_customer_session("s")
    assert rsps.calls[0].request.headers["X-Shop"] == "acme"  # went through that session
    assert rsps.calls[0].request.headers["Authorization"] == f"ApiKey-v1 {API_KEY}"
    client.close()
    with client:
        pass
    assert session.closed == 0


def test_own_session_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    client = IntegrationClient(BASE_URL, API_KEY)
    closed: list[bool] = []
    monkeypatch.setattr(client.session, "close", lambda: closed.append(True))
    with client:
        pass
    assert closed == [True]


def test_with_headers_adds_headers_and_keeps_the_key_hidden(rsps: Any) -> None:
    client = IntegrationClient(BASE_URL, API_KEY)
    rsps.add("PUT", ANY_URL, json={"effects": []})
    tagged = client.with_headers({"Idempotency-Key": "order-17"})
    tagged.update_customer_session_v2("s", {"customerSession": {}})
    headers = rsps.calls[0].request.headers
    assert headers["Idempotency-Key"] == "order-17"
    assert headers["Authorization"] == f"ApiKey-v1 {API_KEY}"
    assert API_KEY not in repr(tagged) and API_KEY not in repr(vars(tagged))
    with pytest.raises(ValueError, match="Authorization"):
        client.with_headers({"authorization": "ApiKey-v1 other"})


# ---- environment: proxies and CA bundle, read once at construction ----------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.lower(), raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    return monkeypatch


def test_https_proxy_is_read_once_at_construction(rsps: Any, clean_env: Any) -> None:
    clean_env.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    client = IntegrationClient(BASE_URL, API_KEY)
    clean_env.delenv("HTTPS_PROXY")  # later changes do not matter
    rsps.add("GET", ANY_URL, json={"effects": []})
    client.get_customer_session("s")
    proxies = rsps.calls[0].request.req_kwargs["proxies"]
    assert proxies.get("https") == "http://proxy.internal:3128"


def test_proxy_set_after_construction_is_not_used(rsps: Any, clean_env: Any) -> None:
    client = IntegrationClient(BASE_URL, API_KEY)
    clean_env.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    rsps.add("GET", ANY_URL, json={"effects": []})
    client.get_customer_session("s")
    assert not rsps.calls[0].request.req_kwargs["proxies"]


def test_no_proxy_is_honoured(rsps: Any, clean_env: Any) -> None:
    clean_env.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    clean_env.setenv("NO_PROXY", ".talon.one")
    client = IntegrationClient(BASE_URL, API_KEY)
    rsps.add("GET", ANY_URL, json={"effects": []})
    client.get_customer_session("s")
    assert not rsps.calls[0].request.req_kwargs["proxies"]


def test_ca_bundle_is_read_once(rsps: Any, clean_env: Any, tmp_path: Any) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    clean_env.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    client = IntegrationClient(BASE_URL, API_KEY)
    clean_env.delenv("REQUESTS_CA_BUNDLE")
    rsps.add("GET", ANY_URL, json={"effects": []})
    client.get_customer_session("s")
    assert rsps.calls[0].request.req_kwargs["verify"] == str(bundle)


def test_plain_http_without_a_proxy_looks_up_no_ca_bundle(
    rsps: Any, clean_env: Any, tmp_path: Any
) -> None:
    # requests stats the bundle on every request; over plain HTTP nothing is verified anyway.
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    clean_env.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    client = IntegrationClient("http://127.0.0.1:9", API_KEY)
    rsps.add("GET", re.compile(r"http://127\.0\.0\.1:9/.*"), json={"effects": []})
    client.get_customer_session("s")
    assert rsps.calls[0].request.req_kwargs["verify"] is True
    # Through a proxy (which may speak TLS itself) the bundle still applies.
    clean_env.setenv("HTTP_PROXY", "https://proxy.internal:3129")
    proxied = IntegrationClient("http://127.0.0.1:9", API_KEY)
    proxied.get_customer_session("s")
    assert rsps.calls[1].request.req_kwargs["verify"] == str(bundle)
