"""A local, stateful fake of Talon.One's Integration API, for tests, CI and the demo shop.

``Sandbox`` runs it on a free port in a background thread::

    with Sandbox(campaigns="django_talonone/sandbox/campaigns/demo.json") as sandbox:
        client = IntegrationClient(sandbox.url, sandbox.api_key)
        ...

``python -m django_talonone.sandbox`` runs it as a process. Importing this package is cheap and
never imports Django: the server, the app and the state are loaded when a sandbox starts.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django_talonone.client import IntegrationClient

    from .app import SandboxApp
    from .server import Server
    from .state import State

__all__ = ["DEFAULT_API_KEY", "Faults", "Sandbox", "read_campaigns"]

#: The API key a sandbox accepts unless told otherwise. Not a secret: it only opens a local fake.
DEFAULT_API_KEY = "sandbox-api-key"


class Sandbox:
    """A running sandbox: a context manager that serves it on ``host:port`` in a daemon thread.

    ``campaigns`` is a path to a campaigns JSON file, the decoded dict, or None (no campaigns).
    With ``state_file``, the state is loaded from it on start (when it exists) and saved to it on
    stop. ``rate_limit`` is API requests per second (None: unlimited); ``seed`` makes injected
    faults repeatable.
    """

    def __init__(
        self,
        campaigns: str | os.PathLike[str] | dict[str, Any] | None = None,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: float | None = None,
        seed: int = 0,
        state_file: str | os.PathLike[str] | None = None,
    ) -> None:
        if not api_key or not isinstance(api_key, str):
            raise ValueError("api_key must be a non-empty string")
        self.campaigns = campaigns
        self.api_key = api_key
        self.host = host
        self.port = port
        self.rate_limit = rate_limit
        self.seed = seed
        self.state_file = Path(state_file) if state_file is not None else None
        self._app: SandboxApp | None = None
        self._server: Server | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"<Sandbox {where}>"

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Sandbox:
        """Bind the port and start serving; returns self. Raises ValueError on bad campaigns."""
        from .app import SandboxApp
        from .server import Server
        from .state import State

        with self._lock:
            if self._server is not None:
                return self
            campaigns = read_campaigns(self.campaigns)
            if self.state_file is not None and self.state_file.exists():
                state = State.restore(json.loads(self.state_file.read_text(encoding="utf-8")))
                if campaigns is not None:
                    state.load_campaigns(campaigns)
            else:
                state = State(campaigns)
            app = SandboxApp(
                state,
                api_key=self.api_key,
                rate_limit=self.rate_limit,
                seed=self.seed,
                campaigns=campaigns,
            )
            server = Server(app, self.host, self.port)
            server.start()
            self._app, self._server = app, server
            self.port = server.port
        return self

    def stop(self) -> None:
        """Stop serving, close connections, and save the state when ``state_file`` is set."""
        with self._lock:
            app, server = self._app, self._server
            if server is None or app is None:
                return
            app.close()
            server.shutdown()
            self._server = None
            if self.state_file is not None:
                self.save_state(self.state_file, app)

    def save_state(self, path: str | os.PathLike[str], app: SandboxApp | None = None) -> None:
        """Write the state snapshot to ``path`` as JSON (atomically: a temporary file, renamed)."""
        snapshot = (app or self.app).snapshot()
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(snapshot, indent=1, default=str), encoding="utf-8")
        tmp.replace(target)

    @property
    def url(self) -> str:
        """The base URL to give the client (``http://127.0.0.1:PORT``)."""
        if self._server is None:
            raise RuntimeError("the sandbox is not running; use it as a context manager")
        return self._server.url

    @property
    def app(self) -> SandboxApp:
        """The WSGI app (for in-process control)."""
        if self._app is None:
            raise RuntimeError("the sandbox has not been started")
        return self._app

    @property
    def state(self) -> State:
        """The domain state behind the API (inspect it under ``state.lock``)."""
        return self.app.state

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The request log, oldest first: method, path, operation, status, query, body, time."""
        return self.app.requests()

    @property
    def counters(self) -> dict[str, Any]:
        """Requests per operation and status, 409s and peak parallel requests per key, 429s."""
        return self.app.counters()

    @property
    def faults(self) -> Faults:
        """Fault injection: ``sandbox.faults.add("update_customer_session_v2", "status")``."""
        return Faults(self.app)

    def reset(self) -> None:
        """Forget all data, the log, counters and faults; campaigns return to the initial ones."""
        self.app.reset()

    def load_campaigns(self, data: str | os.PathLike[str] | dict[str, Any]) -> None:
        """Replace the campaigns with a file's or a dict's (until the next :meth:`reset`)."""
        campaigns = read_campaigns(data)
        if campaigns is None:
            raise ValueError("no campaigns given")
        self.app.load_campaigns(campaigns)

    def set_rate_limit(self, rate: float | None) -> None:
        """Limit API requests per second (None: unlimited) until the next :meth:`reset`."""
        self.app.set_rate_limit(rate)

    def client(self, **kwargs: Any) -> IntegrationClient:
        """An :class:`~django_talonone.client.IntegrationClient` pointed at this sandbox."""
        from django_talonone.client import IntegrationClient

        return IntegrationClient(self.url, self.api_key, **kwargs)


class Faults:
    """The faults of a running sandbox: add, list, clear."""

    def __init__(self, app: SandboxApp) -> None:
        self._app = app

    def add(
        self,
        operation: str,
        kind: str,
        rate: float = 1.0,
        count: int | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """Inject a fault: ``operation`` is a name, a title or ``"*"``; ``kind`` one of latency,
        status, rate_limit, conflict, reset, timeout, malformed. See docs/sandbox.md."""
        return self._app.add_fault(operation, kind, rate, count, **params)

    def list(self) -> list[dict[str, Any]]:
        """The faults in force, with how often each fired."""
        return self._app.faults()

    def remove(self, fault_id: int) -> bool:
        """Remove one fault by id; False when there is none."""
        return self._app.remove_fault(fault_id)

    def clear(self) -> None:
        """Remove every fault."""
        self._app.clear_faults()

    def __iter__(self) -> Any:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self.list())


def read_campaigns(
    source: str | os.PathLike[str] | dict[str, Any] | None,
) -> dict[str, Any] | None:
    """Campaigns from a path or a dict; ValueError with the file name when it is not JSON."""
    if source is None or isinstance(source, dict):
        return source
    path = Path(source)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read campaigns file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"campaigns file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"campaigns file {path} must hold a JSON object")
    return data
