"""A client-side rate limit: a token bucket per process, taken before every request we send.

Talon.One accounts have a contractual request rate (100 requests/s is the figure usually quoted).
``TALONONE["RATE_LIMIT"]`` is the share of it one process may use; with N worker processes, set it
to the account limit divided by N. ``None`` turns the limit off.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["TokenBucket", "acquire", "get_limiter"]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; thread-safe.

    ``clock`` and ``sleep`` are injectable so tests can drive the bucket with a fake clock.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate!r}")
        self.rate = float(rate)
        # One second's worth of requests may go out back to back, and never less than one.
        self.burst = float(burst) if burst is not None else max(1.0, self.rate)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = threading.Lock()

    def acquire(self, timeout: float | None = None) -> bool:
        """Take one token, sleeping until it is there; False if that would exceed ``timeout``."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            wait = (1 - self._tokens) / self.rate
            if timeout is not None and wait > timeout:
                return False
            # Reserve the token now (the balance goes negative) so that threads queue up in
            # order instead of all waking at once and racing for the same token.
            self._tokens -= 1
        self._sleep(wait)
        return True

    def wait_time(self) -> float:
        """Seconds until a token is free (0 when one is free now); takes nothing."""
        with self._lock:
            now = self._clock()
            tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            return 0.0 if tokens >= 1 else (1 - tokens) / self.rate


def get_limiter() -> TokenBucket | None:
    """The process-wide bucket for ``TALONONE["RATE_LIMIT"]`` (None when there is no limit)."""
    from .conf import settings

    global _limiter
    rate = settings.RATE_LIMIT
    if not rate:
        return None
    with _limiter_lock:
        # Rebuilt when the setting changes (override_settings in tests, a reloaded config).
        if _limiter is None or _limiter.rate != float(rate):
            _limiter = TokenBucket(float(rate))
        return _limiter


def acquire(timeout: float | None = None) -> bool:
    """Take a token from the process-wide bucket; True at once when there is no limit."""
    limiter = get_limiter()
    return True if limiter is None else limiter.acquire(timeout)


_limiter: TokenBucket | None = None
_limiter_lock = threading.Lock()
