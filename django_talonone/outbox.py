"""The outbox: record pushes in the shop's transaction, then send them one key at a time.

A :class:`~django_talonone.models.Push` row is the durable record of one request to the Integration
API. :func:`enqueue` writes it in the caller's transaction and wakes a sender when that transaction
commits (in-process, or through the ``django_talonone.push`` Celery task). :func:`process_key`
sends the rows of one key (a session or a profile) strictly in id order, one at a time, folding
consecutive cart updates into the latest, and mirrors each answer. :func:`sweep` re-wakes rows whose
wake-up call was lost and takes back rows from workers that died.

The row's ``payload`` holds the call: ``{"args": [path args], "body": {...}, "query": {...},
"headers": {...}, "link": {"order": ["app_label.model", "pk"], "user": "pk"}}``; every part but
``args`` may be left out. ``link`` names the shop's objects the mirror attaches to.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.core.signals import setting_changed
from django.db import DatabaseError, OperationalError, connection, models, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from . import _db, ratelimit
from .client import IntegrationClient, NotFoundError, RateLimitedError, TalonOneError
from .conf import settings
from .models import CustomerProfile, CustomerSession, Push

__all__ = [
    "DELETE_CUSTOMER",
    "OPERATIONS",
    "REOPEN_SESSION",
    "RETURN_ITEMS",
    "TRACK_EVENT",
    "UPDATE_PROFILE",
    "UPDATE_SESSION",
    "Attempt",
    "dispatch",
    "drain",
    "enqueue",
    "get_client",
    "make_link",
    "make_payload",
    "process_batch",
    "process_due",
    "process_key",
    "profile_key",
    "record_failure",
    "retry_dead",
    "schedule",
    "send_now",
    "session_key",
    "sweep",
]

logger = logging.getLogger("django_talonone.outbox")

UPDATE_SESSION = "update_customer_session_v2"
RETURN_ITEMS = "return_cart_items"
REOPEN_SESSION = "reopen_customer_session"
UPDATE_PROFILE = "update_customer_profile_v2"
DELETE_CUSTOMER = "delete_customer_data"
TRACK_EVENT = "track_event_v2"
#: The client methods a push may call.
OPERATIONS = frozenset(
    {UPDATE_SESSION, RETURN_ITEMS, REOPEN_SESSION, UPDATE_PROFILE, DELETE_CUSTOMER, TRACK_EVENT}
)
#: Session states whose update is a state change (a barrier: never coalesced, reconciled).
CLOSING_STATES = frozenset({"closed", "cancelled"})

UNFINISHED = (Push.State.PENDING, Push.State.IN_FLIGHT)
#: Rows one process_key call sends before it hands the key back (keeps one key from hogging a
#: worker while others wait).
MAX_ROWS_PER_CALL = 1000
#: Rows folded into one request at most.
MAX_COALESCE = 500
#: The sweep re-wakes pending rows due for at least this long (a fresh row's message is on its way).
SWEEP_GRACE = 10.0


# --- keys and payloads ------------------------------------------------------------------------


def session_key(session_id: str) -> str:
    """The outbox key of a customer session."""
    return f"session:{session_id}"


def profile_key(profile_id: str) -> str:
    """The outbox key of a customer profile (profile updates, deletions and events)."""
    return f"profile:{profile_id}"


def make_payload(
    *args: Any,
    body: Any = None,
    query: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    link: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a push payload: path args in path order, the wire body, query, headers, local links."""
    payload: dict[str, Any] = {"args": list(args)}
    if body is not None:
        payload["body"] = body
    if query:
        payload["query"] = {k: v for k, v in query.items() if v is not None}
    if headers:
        payload["headers"] = dict(headers)
    if link:
        payload["link"] = {k: v for k, v in link.items() if v is not None}
    return payload


def make_link(*, order: Any = None, user: Any = None, **extra: Any) -> dict[str, Any] | None:
    """The ``link`` part of a payload: the shop's order (a saved model instance) and user by pk.

    The mirror attaches the session to that order and the profile to that user after the push.
    """
    link: dict[str, Any] = {k: v for k, v in extra.items() if v is not None}
    if order is not None and getattr(order, "pk", None) is not None:
        link["order"] = [order._meta.label_lower, str(order.pk)]
    if user is not None and getattr(user, "pk", None) is not None:
        link["user"] = str(user.pk)
    return link or None


# --- enqueue and wake-up ----------------------------------------------------------------------


def enqueue(
    operation: str,
    key: str,
    payload: dict[str, Any],
    *,
    session: CustomerSession | None = None,
    profile: CustomerProfile | None = None,
    source: str = "",
) -> Push:
    """Write a pending push in the caller's transaction; it is sent after that transaction commits.

    If the transaction rolls back, the row and its wake-up call vanish together: nothing is sent.
    """
    if operation not in OPERATIONS:
        raise ValueError(f"unknown push operation {operation!r}; one of {sorted(OPERATIONS)}")
    push = Push.objects.create(
        key=key,
        operation=operation,
        payload=payload,
        session=session,
        profile=profile,
        source=source[:100],
    )
    schedule(key)
    return push


def schedule(key: str) -> None:
    """Wake the sender for ``key`` once the current transaction commits (at once outside one).

    Many rows for one key written in one transaction wake the sender once.
    """
    conn = transaction.get_connection()
    if not conn.in_atomic_block:
        dispatch(key)
        return
    scheduled: dict[str, Any] = conn.__dict__.setdefault("_talonone_scheduled", {})
    pending = getattr(conn, "run_on_commit", None)  # Django's list of (savepoint ids, func, ...)
    earlier = scheduled.get(key)
    if earlier is not None and pending is not None and any(e[1] is earlier for e in pending):
        return
    if len(scheduled) > 1000 and pending is not None:
        # Callbacks of rolled-back transactions never ran; forget them.
        live = {id(e[1]) for e in pending}
        for stale in [k for k, f in scheduled.items() if id(f) not in live]:
            del scheduled[stale]

    def wake() -> None:
        if scheduled.get(key) is wake:
            del scheduled[key]
        dispatch(key)

    scheduled[key] = wake
    transaction.on_commit(wake)


def dispatch(key: str, *, countdown: float | None = None) -> None:
    """Run the sender for ``key`` now (inline) or send the Celery task; never raises.

    With Celery, a broker that is down is logged and the row is left for :func:`sweep`.
    """
    if settings.DISPATCH == "celery":
        try:
            from .tasks import push as push_task

            options = dict(settings.TASK_OPTIONS or {})
            if countdown:
                options["countdown"] = countdown
            push_task.apply_async(args=[key], **options)
        except Exception:
            logger.exception("could not queue the push task for %s; the sweep will retry it", key)
        return
    if countdown:
        return  # inline: retries wait for the next wake-up or the sweep
    try:
        process_key(key)
    except Exception:
        # Inline dispatch runs in the shop's request: a failure here must never reach it.
        logger.exception("pushing %s failed; the rows stay in the outbox", key)


# --- sending one key --------------------------------------------------------------------------


@dataclass
class Attempt:
    """What one claimed push came to: ``outcome`` is done, retry, failed, dead, queued or lost."""

    push: Push
    outcome: str
    answer: Any = None
    error: BaseException | None = None
    session: CustomerSession | None = None
    profile: CustomerProfile | None = None
    folded: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the push is done (sent, or found already applied)."""
        return self.outcome == "done"


def process_key(key: str, *, client: IntegrationClient | None = None) -> int:
    """Send the due pushes of ``key`` oldest first, one at a time; returns how many were finished.

    Stops at the first row that is not due, is being sent by another worker, or failed and waits
    for its retry: later rows of the key never overtake it.
    """
    if key in _active_keys():
        return 0  # re-entered from a mirror signal: the outer loop picks the new row up
    finished = 0
    with _processing(key):
        for _ in range(MAX_ROWS_PER_CALL):
            # After a row, one cheap read usually finds the key empty; only then claim again.
            if finished and not _has_unfinished(key):
                return finished
            claimed = claim(key)
            if claimed is None:
                return finished
            push, token, folded = claimed
            attempt = run(push, token, client=client or get_client())
            attempt.folded = folded
            if attempt.outcome not in ("done", "failed", "dead"):
                return finished
            finished += 1
    if settings.DISPATCH == "celery":
        dispatch(key)  # a long backlog: hand the key back so other keys get a worker too
    return finished


def drain(key: str | None = None, *, client: IntegrationClient | None = None) -> int:
    """Send what is due, in batches of ``TALONONE["BATCH_SIZE"]`` keys; returns how many rows
    were finished. The body of the ``django_talonone.push`` task.

    ``key`` is the key the task was sent for: with ``BATCH_SIZE`` 1 only that key is served (as
    :func:`process_key`); otherwise its rows go with whatever else is due. After
    ``MAX_ROWS_PER_CALL`` rows the work is handed back (a new task) so that other tasks get a turn.
    """
    if int(settings.BATCH_SIZE) <= 1:
        return process_key(key, client=client) if key else process_due()
    finished, more = _drain_batches(client or get_client(), MAX_ROWS_PER_CALL)
    if more and settings.DISPATCH == "celery" and key:
        dispatch(key)
    return finished


def process_batch(
    *, client: IntegrationClient | None = None, size: int | None = None
) -> tuple[int, int]:
    """Claim the due head rows of up to ``size`` keys at once, send them, and mirror the session
    updates among them in one transaction; returns (rows finished, rows claimed).

    Per key nothing changes: only a key's first unfinished row is taken, and only when it is due
    and nobody else holds the key. A head with cart updates queued behind it is left to
    :func:`process_key` (which folds them); heads that are not plain cart updates, or whose last
    try may have been applied, are sent and mirrored one at a time as :func:`run` does.
    """
    client = client or get_client()
    batch = _start_batch(client, int(size or settings.BATCH_SIZE))
    if batch is None:
        return 0, 0
    return _complete_batch(batch, client), batch.claimed


@dataclass
class _Batch:
    """A claimed batch whose plain cart updates are being sent (``sending``: their results, or
    the iterator that waits for them)."""

    token: str
    claimed: int
    finished: int
    keys: list[str]
    sending: Iterable[tuple[Push, Any, Exception | None]]


def _drain_batches(client: IntegrationClient, limit: int) -> tuple[int, bool]:
    """Batches until nothing is due or ``limit`` rows were claimed; returns (rows finished,
    whether the limit stopped it). While one batch's requests are out, the next batch is claimed
    and its requests sent, so the mirror of one overlaps the round trips of the next."""
    finished = claimed = 0
    # Only rows due when the drain began: a row that fails in this drain waits for its retry
    # time even when the jitter made it tiny, instead of burning its attempts in a tight loop.
    due_by = timezone.now()
    current = _start_batch(client, _batch_size(), due_by)
    while current is not None:
        claimed += current.claimed
        upcoming = None
        try:
            upcoming = _start_batch(client, _batch_size(), due_by) if claimed < limit else None
        finally:
            # Whatever happened claiming the next batch, this one's answers are mirrored; and if
            # that fails, the next batch's answers (already on their way) still are.
            try:
                finished += _complete_batch(current, client)
            except BaseException:
                if upcoming is not None:
                    with contextlib.suppress(Exception):
                        _complete_batch(upcoming, client)
                raise
        current = upcoming
    return finished, claimed >= limit


def _batch_size() -> int:
    """Rows for the next batch: about what the sending threads get through in
    ``BATCH_SECONDS``, going by this process's recent round trips, within [SEND_CONCURRENCY,
    BATCH_SIZE]. With slow answers a worker thus claims little at a time, and the other workers
    get their share of a backlog."""
    most = int(settings.BATCH_SIZE)
    width = max(1, int(settings.SEND_CONCURRENCY))
    if _round_trip.seconds is None:
        return min(most, 4 * width)  # nothing measured yet: start small
    fits = int(width * BATCH_SECONDS / max(_round_trip.seconds, 1e-6))
    return max(min(most, width), min(most, fits))


@dataclass
class _RoundTrip:
    """A moving average of how long one request of a batch took, in this process."""

    seconds: float | None = None

    def add(self, seconds: float) -> None:
        self.seconds = seconds if self.seconds is None else 0.8 * self.seconds + 0.2 * seconds


_round_trip = _RoundTrip()
#: A batch is about this many seconds of sending (see _batch_size).
BATCH_SECONDS = 0.1


def _start_batch(
    client: IntegrationClient, size: int, due_by: datetime.datetime | None = None
) -> _Batch | None:
    """Claim a batch (rows due by ``due_by``, default now); send and mirror at once what cannot
    go together; start sending the rest."""
    claimed, token, folding = _claim_batch(size, due_by)
    if not claimed and not folding:
        return None
    finished = 0
    together: list[Push] = []
    with _processing_all([push.key for push in claimed]):
        for push in claimed:
            if _batchable(push):
                together.append(push)
            elif run(push, token, client=client).outcome in ("done", "failed", "dead"):
                finished += 1
    for key in folding:
        finished += process_key(key, client=client)
    keys = [push.key for push in together]
    return _Batch(token, len(claimed) + len(folding), finished, keys, _send_all(together, client))


def _complete_batch(batch: _Batch, client: IntegrationClient) -> int:
    """Wait for the batch's answers and mirror them; returns how many rows were finished."""
    with _processing_all(batch.keys):
        return batch.finished + _run_together(list(batch.sending), batch.token, client)


def claim(key: str) -> tuple[Push, str, list[int]] | None:
    """Claim the head row of ``key`` (and fold the cart updates behind it) for sending.

    Returns the row, now in flight, the claim token, and the ids of the rows folded into it; None
    when the key has nothing due or another worker holds it.
    """
    now = timezone.now()
    token = _new_token()
    try:
        with transaction.atomic():
            head = _lock_head(key)
            if head is None or head.state != Push.State.PENDING or head.next_attempt_at > now:
                return None
            if _is_plain_update(head) and getattr(head, "has_later", True):
                run_rows = _coalescible_run(key, head)
            else:
                run_rows = [head]
            survivor, earlier = run_rows[-1], run_rows[:-1]
            folded = sum(1 + r.coalesced for r in earlier)
            if earlier:
                survivor.payload = _merge_updates(run_rows)
            # Compare-and-set: only a pending row whose key has no earlier unfinished row and
            # nothing in flight. On PostgreSQL the row lock already makes this true; on SQLite,
            # which has no row locks but runs one writer at a time, this UPDATE is the lock.
            won = _compare_and_set(
                key,
                survivor,
                run_rows,
                token=token,
                now=now,
                coalesced=folded,
            )
            if not won:
                return None
            if earlier:
                Push.objects.filter(pk__in=[r.pk for r in earlier], state="pending").update(
                    state=Push.State.DONE,
                    done_at=now,
                    claimed_by=f"coalesced into #{survivor.pk}"[:255],
                    claimed_at=now,
                )
    except OperationalError as exc:
        if connection.vendor != "sqlite":
            raise
        # SQLite: another process wrote since our read ("database is locked"); it holds the key.
        logger.debug("claiming %s lost a race: %s", key, exc)
        return None
    # The row as the UPDATE left it, without reading it back: it was read in the same
    # transaction (under its row lock on PostgreSQL; on SQLite any write in between would have
    # failed the claim), so only the columns set above changed.
    _set_claimed(survivor, token, now)
    survivor.coalesced += folded
    return survivor, token, [r.pk for r in earlier]


def run(
    push: Push,
    token: str,
    *,
    client: IntegrationClient,
    max_wait: float | None = None,
    order: Any = None,
    prefetch: bool = False,
) -> Attempt:
    """Send one claimed push (reconciling first if an earlier try may have been applied), mirror
    the answer and record the outcome on the row.

    API and payload errors are recorded, not raised; only a database failure escapes (the row then
    stays in flight until the sweep takes it back). ``max_wait`` bounds the wait for the rate
    limit (None: as long as it takes). ``order``: the object the payload's link names, if at hand.
    ``prefetch``: read the session's mirrored rows while the request is under way (see
    :func:`_prefetch`).
    """
    prefetched = None
    try:
        if push.outcome_unknown:
            found = _reconcile(push, client)
            if found is not None:
                return _finish(push, token, found, client, reconciled=True, order=order)
        if prefetch and _db.pipelined():
            with _db.together():  # the reads go out first; answered after the request
                prefetched = _prefetch(push)
                answer = _send(push, client, max_wait=max_wait)
        else:
            answer = _send(push, client, max_wait=max_wait)
    except TalonOneError as exc:
        if (
            isinstance(exc, NotFoundError)
            and push.outcome_unknown
            and push.operation == DELETE_CUSTOMER
        ):
            # The earlier, unanswered delete went through: the profile is gone.
            return _finish(push, token, None, client, order=order)
        return _fail(push, token, exc)
    except Exception as exc:
        # Not an API answer: a payload the client refuses (bad path arg, unserialisable body).
        logger.exception("push #%s (%s %s) could not be sent", push.pk, push.operation, push.key)
        return _fail(push, token, exc)
    return _finish(push, token, answer, client, order=order, prefetched=prefetched)


def _prefetch(push: Push) -> Any:
    """Queue the reads of the mirrored rows a session update's answer will be written over
    (see :func:`mirror.prefetch_session`); None for anything else.

    The caller holds the push's key, so until its mirror is done nothing else mirrors this
    session: read now, the rows are what the mirror would read after the request. The profile
    is the one the request names; when the answer names another, the mirror reads again.
    """
    from . import mirror

    if push.operation != UPDATE_SESSION:
        return None
    payload = push.payload
    session = (payload.get("body") or {}).get("customerSession")
    if not isinstance(session, dict) or "profileId" not in session:
        return None
    session_id = (payload.get("args") or [None])[0]
    return mirror.prefetch_session(str(session_id), str(session.get("profileId") or ""))


def send_now(
    operation: str,
    key: str,
    payload: dict[str, Any],
    *,
    client: IntegrationClient,
    session: CustomerSession | None = None,
    session_id: int | None = None,
    order: Any = None,
    source: str = "",
    max_wait: float | None = None,
) -> Attempt:
    """Record a push and send it in this thread at once, unless its key is busy.

    The row is written already in flight, so no worker sends for the key meanwhile. When the key
    has earlier unfinished rows, or another sender holds it, the row is left pending behind them
    (outcome ``queued``) and nothing is sent. The synchronous path of :func:`evaluate_cart`.

    ``session`` (or just its ``session_id``) is the mirrored session the row belongs to, if any;
    ``order`` the shop's object the payload's ``link`` names, when the caller has it at hand (it
    is then not read again).
    """
    now = timezone.now()
    token = _new_token()
    # Every field given: _db.make skips Model.__init__'s per-field work (the cart page's path).
    push = _db.make(
        Push,
        {
            "id": None,
            "key": key,
            "operation": operation,
            "payload": payload,
            "state": Push.State.IN_FLIGHT,
            "attempts": 1,
            "next_attempt_at": now,
            "last_error": "",
            "error_class": "",
            "error_status": None,
            "outcome_unknown": False,
            "coalesced": 0,
            "source": source[:100],
            "session_id": session.pk if session is not None else session_id,
            "profile_id": None,
            "claimed_by": token,
            "claimed_at": now,
            "created_at": now,
            "updated_at": now,
            "done_at": None,
        },
    )
    # Both written out: on the checkout path the ORM took longer to build them than the
    # database to run them. The row is committed before the check, so of two senders racing for
    # one key at least one sees the other; on PostgreSQL both go in one round trip.
    found = _db.insert_then(
        Push,
        push,
        _db.statement(_busy_sql),
        [key, *UNFINISHED, token, key, Push.State.IN_FLIGHT, token, Push.State.IN_FLIGHT],
        # Losing the row of an open cart's update in a database crash loses nothing: the cart
        # was sent (or it was not, and nothing says it was). Every outcome but success is
        # written with a commit that waits for the disk, which makes this one durable too.
        durable=not (settings.ASYNC_COMMIT and _is_plain_update(push)),
    )
    busy = bool(found)
    if busy:
        _update_claimed(
            push,
            token,
            state=Push.State.PENDING,
            claimed_by="",
            claimed_at=None,
            attempts=0,
            updated_at=timezone.now(),
        )
        if settings.DISPATCH == "celery":
            schedule(key)
        return Attempt(push, "queued")
    # Holding the key, the mirror's reads can go out before the request and be answered while
    # it is under way (PostgreSQL pipelines), unless a transaction of the caller's is open.
    prefetch = not connection.in_atomic_block
    return run(push, token, client=client, max_wait=max_wait, order=order, prefetch=prefetch)


def record_failure(
    operation: str, key: str, exc: BaseException, *, source: str = "", payload: Any = None
) -> Push | None:
    """Record a push that could not even be built (e.g. the shop adapter raised) as failed.

    Logs it and sends ``push_failed``; never raises, so the shop's code carries on.
    """
    message = _describe(exc)
    logger.error("%s for %s could not be built (%s): %s", operation, key, source, message)
    try:
        with transaction.atomic():  # a savepoint: a failed insert must not break the shop's work
            push = Push.objects.create(
                key=key[:1100] or "unknown",
                operation=operation[:100],
                payload=payload if isinstance(payload, dict) else {},
                state=Push.State.FAILED,
                last_error=message,
                error_class=type(exc).__name__[:100],
                source=source[:100],
                done_at=timezone.now(),
            )
    except Exception:
        logger.exception("could not record the failed %s push for %s", operation, key)
        return None
    _announce_failure(push)
    return push


# --- the sweep, the due queue, dead rows --------------------------------------------------------


def sweep(
    *, now: datetime.datetime | None = None, grace: float = SWEEP_GRACE, wake: bool = True
) -> dict[str, int]:
    """Take back in-flight rows whose worker vanished and re-wake keys with overdue rows.

    Returns counts: ``reclaimed`` (back to pending, to be reconciled), ``dead`` (reclaimed with no
    attempts left) and ``woken`` (keys dispatched; none with ``wake=False``).
    """
    now = now or timezone.now()
    stale = Q(state=Push.State.IN_FLIGHT) & (
        Q(claimed_at__lt=now - datetime.timedelta(seconds=float(settings.IN_FLIGHT_TIMEOUT)))
        | Q(claimed_at__isnull=True)
    )
    note = "reclaimed: its worker stopped answering while sending; the outcome is unknown"
    # Their keys have no wake-up call on the way: wake them now, whatever the grace.
    stale_keys = set(Push.objects.filter(stale).values_list("key", flat=True))
    # A row whose worker keeps dying on it (say, out of memory) must not cycle for ever.
    dead_ids = list(
        Push.objects.filter(stale, attempts__gte=settings.MAX_ATTEMPTS).values_list("pk", flat=True)
    )
    dead = Push.objects.filter(stale, pk__in=dead_ids).update(
        state=Push.State.DEAD,
        outcome_unknown=True,
        last_error=note,
        error_class="Reclaimed",
        done_at=now,
        claimed_by="",
        claimed_at=None,
    )
    reclaimed = Push.objects.filter(stale).update(
        state=Push.State.PENDING,
        outcome_unknown=True,
        claimed_by="",
        claimed_at=None,
        next_attempt_at=now,
        last_error=note,
        error_class="Reclaimed",
    )
    if dead:
        for push in Push.objects.filter(pk__in=dead_ids, state=Push.State.DEAD):
            _announce_failure(push)
    keys: list[str] = []
    if wake:
        overdue = due_keys(now=now - datetime.timedelta(seconds=grace))
        keys = sorted(stale_keys | set(overdue))
    for key in keys:
        dispatch(key)
    if reclaimed or dead or keys:
        logger.info("sweep: %s reclaimed, %s dead, %s keys woken", reclaimed, dead, len(keys))
    return {"reclaimed": reclaimed, "dead": dead, "woken": len(keys)}


def due_keys(*, now: datetime.datetime | None = None, limit: int = 10_000) -> Iterator[str]:
    """Keys whose oldest unfinished row is pending and due at ``now``."""
    earlier = Push.objects.filter(key=OuterRef("key"), pk__lt=OuterRef("pk"), state__in=UNFINISHED)
    qs = (
        Push.objects.due(now or timezone.now())
        .exclude(Exists(earlier))
        .order_by()
        .values_list("key", flat=True)
    )
    return iter(qs.distinct()[:limit])


def process_due(*, limit: int = 10_000) -> int:
    """Send every due push in this process (in batches, or key by key with ``BATCH_SIZE`` 1);
    returns how many rows were finished."""
    if int(settings.BATCH_SIZE) <= 1:
        return sum(process_key(key) for key in list(due_keys(limit=limit)))
    return _drain_batches(get_client(), limit)[0]


def retry_dead(
    *,
    ids: Iterable[int] | None = None,
    key: str | None = None,
    include_failed: bool = False,
) -> dict[str, int]:
    """Put dead (and, if asked, failed) rows back in the queue with fresh attempts.

    A cart update that a later update of its session has superseded is not re-sent (it would
    overwrite the newer cart); it is counted as ``superseded`` and left as it is.
    """
    states = [Push.State.DEAD] + ([Push.State.FAILED] if include_failed else [])
    qs = Push.objects.filter(state__in=states)
    if ids is not None:
        qs = qs.filter(pk__in=list(ids))
    if key is not None:
        qs = qs.filter(key=key)
    later_update = Push.objects.filter(
        key=OuterRef("key"),
        pk__gt=OuterRef("pk"),
        operation=UPDATE_SESSION,
        state__in=[Push.State.PENDING, Push.State.IN_FLIGHT, Push.State.DONE],
    )
    retried = superseded = 0
    keys: set[str] = set()
    with transaction.atomic():
        for push in qs.annotate(superseded=Exists(later_update)).order_by("id"):
            if push.operation == UPDATE_SESSION and _is_plain_update(push) and push.superseded:
                superseded += 1
                continue
            Push.objects.filter(pk=push.pk).update(
                state=Push.State.PENDING,
                attempts=0,
                next_attempt_at=timezone.now(),
                done_at=None,
                claimed_by="",
                claimed_at=None,
            )
            retried += 1
            keys.add(push.key)
        for k in keys:
            schedule(k)
    return {"retried": retried, "superseded": superseded}


# --- the client --------------------------------------------------------------------------------


def get_client(timeout: float | None = None) -> IntegrationClient:
    """The process-wide client built from ``TALONONE`` (one per ``timeout``; rebuilt on change).

    With ``timeout``, the client waits that many seconds to connect and to read, and does not
    retry GETs: the synchronous path's bounded client.
    """
    with _clients_lock:
        client = _clients.get(timeout)
        if client is None:
            from .client import from_settings

            overrides: dict[str, Any] = {}
            if timeout is not None:
                overrides = {"timeout": (timeout, timeout), "get_retries": 0}
            client = _clients[timeout] = from_settings(**overrides)
        return client


def _reset_clients(*, setting: str, **kwargs: Any) -> None:
    if setting == "TALONONE":
        with _clients_lock:
            for client in _clients.values():
                client.close()
            _clients.clear()


_clients: dict[float | None, IntegrationClient] = {}
_clients_lock = threading.Lock()
setting_changed.connect(_reset_clients)


# --- helpers: claiming --------------------------------------------------------------------------


# The claim's two statements are written out: they run for every push, and building them with
# the ORM (Exists subqueries, F expressions) cost more CPU than running them.


# The extra columns _head_sql reads after the row's own.
HEAD = ("blocked", "has_later")


def _lock_head(key: str) -> Push | None:
    """The key's first unfinished row (locked on PostgreSQL), or None when another worker holds
    it. The row carries ``has_later``: whether unfinished rows of the key follow it.

    On PostgreSQL: the first unfinished row nobody else holds. If an earlier one exists, another
    worker has it locked (it is claiming the key right now): leave the key to that worker. The
    earlier and later rows are looked for in the same statement.
    """
    skip_locked = bool(connection.features.has_select_for_update_skip_locked)
    sql = _db.statement(_head_sql, skip_locked)
    rows: list[Push] = []
    params = [*UNFINISHED, *UNFINISHED, key, *UNFINISHED]
    _db.execute(sql, params, lambda cursor: rows.extend(_db.instances(Push, *HEAD)(cursor)))
    head = rows[0] if rows else None
    if head is not None and skip_locked and head.blocked:
        return None
    return head


def _compare_and_set(
    key: str, survivor: Push, run_rows: list[Push], *, token: str, now: Any, coalesced: int
) -> bool:
    """Mark ``survivor`` in flight if it is still pending and no other unfinished row of the key
    (the folded ``run_rows`` aside) is earlier or in flight; True when the row was won."""
    fields = {f: Push._meta.get_field(f) for f in ("claimed_at", "payload")}
    params: list[Any] = [Push.State.IN_FLIGHT, token]
    stamp = fields["claimed_at"].get_db_prep_save(now, connection)
    params += [stamp, stamp]  # claimed_at, updated_at
    if coalesced:
        params += [fields["payload"].get_db_prep_save(survivor.payload, connection), coalesced]
    run_ids = [r.pk for r in run_rows]
    params += [survivor.pk, Push.State.PENDING, key, *UNFINISHED, *run_ids, survivor.pk]
    params.append(Push.State.IN_FLIGHT)
    sql = _db.statement(_cas_sql, bool(coalesced), len(run_ids))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount == 1


def _busy_sql() -> str:
    """Another unfinished row of the key than send_now's own (the one its token claims):
    earlier, or in flight. Named by the token, so the check can go out before the pk is known."""
    c = _columns()
    # In flight: found through the index of unfinished rows, whatever the key's history.
    mine = (
        f"(SELECT {c['id']} FROM {c['table']}"  # noqa: S608
        f" WHERE {c['key']} = %s AND {c['state']} = %s AND {c['claimed_by']} = %s)"
    )
    return (
        f"SELECT 1 FROM {c['table']} WHERE {c['key']} = %s"  # noqa: S608
        f" AND {c['state']} IN (%s, %s) AND {c['claimed_by']} <> %s"
        f" AND ({c['id']} < {mine} OR {c['state']} = %s)"
    )


def _columns() -> dict[str, str]:
    qn = connection.ops.quote_name
    names = ("id", "key", "state", "claimed_by", "claimed_at", "updated_at", "attempts")
    names += ("payload", "coalesced", "next_attempt_at")
    found = {name: qn(Push._meta.get_field(name).column) for name in names}
    found["table"] = qn(Push._meta.db_table)
    return found


# Only quoted identifiers and placeholders are interpolated into these statements (S608).


def _others_sql(c: dict[str, str], op: str) -> str:
    """EXISTS an unfinished row of ``p``'s key whose id is ``op`` (``<`` or ``>``) ``p``'s."""
    return (
        f"EXISTS (SELECT 1 FROM {c['table']} o WHERE o.{c['key']} = p.{c['key']}"  # noqa: S608
        f" AND o.{c['state']} IN (%s, %s) AND o.{c['id']} {op} p.{c['id']})"
    )


def _claim_sets_sql(c: dict[str, str]) -> str:
    """The SET list of a claim: state, claim token, claimed_at and updated_at as parameters,
    one more attempt."""
    return (
        f"{c['state']} = %s, {c['claimed_by']} = %s, {c['claimed_at']} = %s,"
        f" {c['updated_at']} = %s, {c['attempts']} = {c['attempts']} + 1"
    )


def _head_sql(skip_locked: bool) -> str:
    c = _columns()
    sql = (
        f"SELECT {_db.columns(Push, 'p')}, {_others_sql(c, '<')} AS blocked,"  # noqa: S608
        f" {_others_sql(c, '>')} AS has_later"
        f" FROM {c['table']} p WHERE p.{c['key']} = %s AND p.{c['state']} IN (%s, %s)"
        f" ORDER BY p.{c['id']} LIMIT 1"
    )
    return sql + " FOR UPDATE OF p SKIP LOCKED" if skip_locked else sql


def _cas_sql(coalescing: bool, run_len: int) -> str:
    c = _columns()
    sets = _claim_sets_sql(c)
    if coalescing:
        sets += f", {c['payload']} = %s, {c['coalesced']} = {c['coalesced']} + %s"
    run = ", ".join(["%s"] * run_len)
    return (
        f"UPDATE {c['table']} SET {sets} WHERE {c['id']} = %s AND {c['state']} = %s"  # noqa: S608
        f" AND NOT EXISTS (SELECT 1 FROM {c['table']} o WHERE o.{c['key']} = %s"
        f" AND o.{c['state']} IN (%s, %s) AND o.{c['id']} NOT IN ({run})"
        f" AND (o.{c['id']} < %s OR o.{c['state']} = %s))"
    )


def _has_unfinished(key: str) -> bool:
    return Push.objects.filter(key=key, state__in=UNFINISHED).exists()


def _coalescible_run(key: str, head: Push) -> list[Push]:
    """The head and the pending plain cart updates right behind it, up to the first barrier."""
    later = Push.objects.filter(key=key, state__in=UNFINISHED, pk__gt=head.pk).order_by("id")
    candidates = later.filter(state=Push.State.PENDING, operation=UPDATE_SESSION)
    if connection.features.has_select_for_update_skip_locked:
        candidates = candidates.select_for_update(skip_locked=True)
    usable = {p.pk: p for p in candidates[:MAX_COALESCE]}
    run_rows = [head]
    # Walk every unfinished row in id order: a row we could not lock, or any other operation,
    # ends the run, so no row is ever folded past one that must go first.
    for pk in later.values_list("pk", flat=True)[:MAX_COALESCE]:
        row = usable.get(pk)
        if row is None or not _is_plain_update(row):
            break
        run_rows.append(row)
    return run_rows


def _claim_batch(
    size: int, due_by: datetime.datetime | None = None
) -> tuple[list[Push], str, list[str]]:
    """Claim the heads of up to ``size`` keys due by ``due_by`` (default now): (rows now in
    flight, their claim token, keys left to :func:`process_key` because cart updates wait behind
    their head to be folded)."""
    now = timezone.now()
    token = _new_token()
    skip_locked = bool(connection.features.has_select_for_update_skip_locked)
    try:
        with transaction.atomic():
            due = due_by or now
            stamp = Push._meta.get_field("next_attempt_at").get_db_prep_save(due, connection)
            heads: list[Push] = []
            _db.execute(
                _db.statement(_batch_heads_sql, skip_locked),
                [*UNFINISHED, Push.State.PENDING, stamp, *UNFINISHED, size],
                lambda cursor: heads.extend(_db.instances(Push, "has_later")(cursor)),
            )
            folds = {h.pk for h in heads if h.has_later and _is_plain_update(h)}
            folding = [h.key for h in heads if h.pk in folds]
            wanted = [h for h in heads if h.pk not in folds]
            if not wanted:
                return [], token, folding
            stamp = Push._meta.get_field("claimed_at").get_db_prep_save(now, connection)
            ids = [h.pk for h in wanted]
            params = [Push.State.IN_FLIGHT, token, stamp, stamp, *ids, Push.State.PENDING]
            params += [*UNFINISHED, Push.State.IN_FLIGHT]
            with connection.cursor() as cursor:
                cursor.execute(_db.statement(_batch_cas_sql, len(ids)), params)
                if cursor.rowcount != len(ids):
                    won = set(
                        Push.objects.filter(pk__in=ids, claimed_by=token).values_list(
                            "pk", flat=True
                        )
                    )
                    wanted = [h for h in wanted if h.pk in won]
    except OperationalError as exc:
        if connection.vendor != "sqlite":
            raise
        logger.debug("claiming a batch lost a race: %s", exc)  # as in claim()
        return [], token, []
    for push in wanted:
        _set_claimed(push, token, now)
    return wanted, token, folding


def _set_claimed(push: Push, token: str, now: datetime.datetime) -> None:
    """The instance as a claim's UPDATE leaves its row (it is not read back)."""
    push.state = Push.State.IN_FLIGHT
    push.claimed_by = token
    push.claimed_at = push.updated_at = now
    push.attempts += 1


def _batch_heads_sql(skip_locked: bool) -> str:
    c = _columns()
    sql = (
        f"SELECT {_db.columns(Push, 'p')}, {_others_sql(c, '>')} AS has_later"  # noqa: S608
        f" FROM {c['table']} p"
        f" WHERE p.{c['state']} = %s AND p.{c['next_attempt_at']} <= %s"
        f" AND NOT {_others_sql(c, '<')} ORDER BY p.{c['id']} LIMIT %s"
    )
    return sql + " FOR UPDATE OF p SKIP LOCKED" if skip_locked else sql


def _batch_cas_sql(count: int) -> str:
    c = _columns()
    t = c["table"]
    ids = ", ".join(["%s"] * count)
    return (
        f"UPDATE {t} SET {_claim_sets_sql(c)}"  # noqa: S608
        f" WHERE {c['id']} IN ({ids}) AND {c['state']} = %s"
        f" AND NOT EXISTS (SELECT 1 FROM {t} o WHERE o.{c['key']} = {t}.{c['key']}"
        f" AND o.{c['state']} IN (%s, %s) AND o.{c['id']} <> {t}.{c['id']}"
        f" AND (o.{c['id']} < {t}.{c['id']} OR o.{c['state']} = %s))"
    )


def _batchable(push: Push) -> bool:
    """A plain cart update of its own session key, not possibly applied already: it can be
    mirrored with others."""
    if push.outcome_unknown or not _is_plain_update(push):
        return False
    args = push.payload.get("args") or []
    return bool(args) and isinstance(args[0], str) and push.key == session_key(args[0])


def _run_together(
    results: list[tuple[Push, Any, Exception | None]], token: str, client: IntegrationClient
) -> int:
    """Mirror the answers to claimed plain cart updates in one transaction and record the errors;
    returns how many rows were finished. If that transaction fails, each answer is mirrored on its
    own as :func:`run` does, so an answer the mirror cannot take costs only its own row."""
    answered: list[tuple[Push, Any]] = []
    finished = 0
    for push, answer, exc in results:
        if exc is not None:
            if not isinstance(exc, TalonOneError):
                logger.error(
                    "push #%s (%s %s) could not be sent",
                    push.pk,
                    push.operation,
                    push.key,
                    exc_info=exc,
                )
            if _fail(push, token, exc).outcome in ("failed", "dead"):
                finished += 1
            continue
        answered.append((push, answer))
    if not answered:
        return finished
    orders = _linked_orders([push for push, _answer in answered])
    from . import mirror

    items = [
        mirror.SessionAnswer(
            push.payload["args"][0],
            answer,
            sent=push.payload.get("body"),
            order=orders.get(push.pk),
        )
        for push, answer in answered
        if isinstance(answer, dict)
    ]
    now = timezone.now()
    ids = [push.pk for push, answer in answered if isinstance(answer, dict)]
    counted: list[int] = []

    def mark_done(sessions: list[CustomerSession]) -> None:
        # Among the mirror's writes: on PostgreSQL, no wait of its own.
        _queue_update_claimed(ids, token, _done_fields(now), counted, session_by_key=True)

    try:
        # As in _finish: the COMMIT goes with the mirror's writes, without waiting for the disk.
        with _db.atomic_committed_with_last_block(durable=not settings.ASYNC_COMMIT):
            mirror.mirror_session_answers(items, also=mark_done)
            updated = counted[0] if counted else 0  # no items: nothing was marked
    except Exception:
        logger.exception(
            "mirroring %s answers together failed; mirroring them one by one", len(items)
        )
        for push, answer in answered:
            if _finish(push, token, answer, client, order=orders.get(push.pk)).ok:
                finished += 1
        return finished
    if updated < len(ids):
        # The sweep took some back meanwhile (this worker was too slow); as in _finish.
        logger.warning(
            "%s of %s pushes finished after they were reclaimed", len(ids) - updated, len(ids)
        )
    for push, answer in answered:
        if not isinstance(answer, dict) and _finish(push, token, answer, client).ok:
            finished += 1
    return finished + updated


def _send_all(
    pushes: list[Push], client: IntegrationClient
) -> Iterable[tuple[Push, Any, Exception | None]]:
    """Send pushes of distinct keys, up to ``TALONONE["SEND_CONCURRENCY"]`` at a time in other
    threads; returns (push, answer, error) for each, in the order given: with more than one
    thread, an iterator that waits for them (the requests are under way when this returns).
    Only HTTP happens in the other threads: the database is left to the calling thread."""

    def send(push: Push) -> tuple[Push, Any, Exception | None]:
        started = time.monotonic()
        try:
            return push, _send(push, client), None
        except Exception as exc:
            return push, None, exc
        finally:
            _round_trip.add(time.monotonic() - started)

    width = min(int(settings.SEND_CONCURRENCY), len(pushes))
    if width <= 1:
        return [send(push) for push in pushes]
    return _sender_pool(width).map(send, pushes)


def _sender_pool(width: int) -> concurrent.futures.ThreadPoolExecutor:
    """This process's sending threads (made anew in a forked child, e.g. a prefork worker)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid() or _pool[1] < width:
            if _pool is not None and _pool[0] == os.getpid():
                _pool[2].shutdown(wait=False)
            executor = concurrent.futures.ThreadPoolExecutor(width, "talonone-send")
            _pool = (os.getpid(), width, executor)
        return _pool[2]


_pool: tuple[int, int, concurrent.futures.ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def _linked_orders(pushes: list[Push]) -> dict[int, Any]:
    """The shop's orders the pushes' links name, by push id, read in one query per model."""
    wanted: dict[str, dict[str, list[int]]] = {}
    for push in pushes:
        ref = (push.payload.get("link") or {}).get("order")
        if ref:
            try:
                wanted.setdefault(str(ref[0]), {}).setdefault(str(ref[1]), []).append(push.pk)
            except (IndexError, TypeError):
                continue
    found: dict[int, Any] = {}
    for label, by_pk in wanted.items():
        try:
            from django.apps import apps

            model = apps.get_model(label)
            objects = model._default_manager.in_bulk(list(by_pk))
        except (LookupError, ValueError, TypeError, DatabaseError):
            logger.warning("the %s orders linked to %s pushes no longer resolve", label, len(by_pk))
            continue
        for pk, obj in objects.items():
            for push_id in by_pk.get(str(pk), []):
                found[push_id] = obj
    return found


def _is_plain_update(push: Push) -> bool:
    """A session update that changes no state (a cart change): safe to fold into a later one."""
    if push.operation != UPDATE_SESSION:
        return False
    payload = push.payload if isinstance(push.payload, dict) else {}
    if (payload.get("query") or {}).get("dry"):
        return False
    session = (payload.get("body") or {}).get("customerSession") or {}
    return session.get("state") in (None, "", "open")


def _merge_updates(rows: list[Push]) -> dict[str, Any]:
    """The survivor's payload with the fields of the earlier updates it leaves out.

    Talon.One builds each update on the previous state: a field left out keeps its earlier value.
    Folding earlier updates in keeps that, e.g. coupon codes sent once and then left out.
    """
    survivor = rows[-1].payload
    merged_session: dict[str, Any] = {}
    for row in rows:
        merged_session.update(((row.payload.get("body") or {}).get("customerSession")) or {})
    body = dict(survivor.get("body") or {})
    body["customerSession"] = merged_session
    return {**survivor, "body": body}


def _new_token() -> str:
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


_HOST = socket.gethostname()[:200]


@contextlib.contextmanager
def _processing(key: str) -> Iterator[None]:
    with _processing_all([key]):
        yield


@contextlib.contextmanager
def _processing_all(keys: list[str]) -> Iterator[None]:
    active = _active_keys()
    mine = [key for key in keys if key not in active]
    active.update(mine)
    try:
        yield
    finally:
        active.difference_update(mine)


def _active_keys() -> set[str]:
    keys = getattr(_local, "keys", None)
    if keys is None:
        keys = _local.keys = set()
    return keys


_local = threading.local()


# --- helpers: sending, reconciling, mirroring -----------------------------------------------------


def _send(push: Push, client: IntegrationClient, *, max_wait: float | None = None) -> Any:
    payload = push.payload if isinstance(push.payload, dict) else {}
    headers = payload.get("headers")
    if headers:
        client = client.with_headers(headers)
    method = getattr(client, push.operation)
    args = list(payload.get("args") or [])
    if "body" in payload:
        args.append(payload["body"])
    _take_token(push.operation, max_wait)
    return method(*args, **(payload.get("query") or {}))


def _take_token(operation: str, max_wait: float | None) -> None:
    if not ratelimit.acquire(max_wait):
        limiter = ratelimit.get_limiter()
        raise RateLimitedError(
            "client-side rate limit (TALONONE['RATE_LIMIT']) reached",
            operation=operation,
            retry_after=limiter.wait_time() if limiter else None,
        )


def _target_state(push: Push) -> str | None:
    """The state a state-changing session push leaves the session in (None: not one)."""
    if push.operation == REOPEN_SESSION:
        return "open"
    if push.operation == UPDATE_SESSION and not _is_plain_update(push):
        state = ((push.payload.get("body") or {}).get("customerSession") or {}).get("state")
        return state if state in CLOSING_STATES else None
    return None


def _reconcile(push: Push, client: IntegrationClient) -> Any:
    """For a state change that may already have been applied: the session read back, when it is
    in the target state already (then the push must not be sent again); else None.

    Returns carry an Idempotency-Key instead: Talon.One answers a repeat with the first answer.
    """
    target = _target_state(push)
    if target is None:
        return None
    session_id = push.payload["args"][0]
    _take_token("get_customer_session", None)
    try:
        answer = client.get_customer_session(session_id)
    except NotFoundError:
        return None  # never created: the earlier try did not get through
    state = ((answer or {}).get("customerSession") or {}).get("state")
    if state == target:
        logger.info(
            "push #%s: %s is already %s; not sending %s again",
            push.pk,
            session_id,
            target,
            push.operation,
        )
        return answer
    return None


def _finish(
    push: Push,
    token: str,
    answer: Any,
    client: IntegrationClient,
    *,
    reconciled: bool = False,
    order: Any = None,
    prefetched: Any = None,
) -> Attempt:
    """Mirror the answer and mark the row done in one transaction; a mirror error is recorded on
    the (still done: it was sent) row and logged. ``prefetched``: the session's rows read while
    the request was under way, if they were."""
    # A return answers only its rollback effects; the session's current set (the lines kept) is
    # read back before the mirror's transaction, so no database lock waits on HTTP.
    settled = None
    if push.operation == RETURN_ITEMS and not reconciled and isinstance(answer, dict):
        settled = _read_settled(push, client)
    now = timezone.now()
    attempt = Attempt(push, "done", answer=answer)
    done = _done_fields(now)
    counted: list[int] = []

    def mark_done(sessions: list[CustomerSession]) -> None:
        # Among the mirror's writes: on PostgreSQL, no wait of its own.
        done["session"] = sessions[0]
        _queue_update_claimed([push.pk], token, done, counted)

    try:
        # Nothing after the mirror's writes runs a statement in this transaction: on PostgreSQL
        # its COMMIT goes out with them (when the transaction is this one's own).
        # A crash of the database that undid this commit would leave the row in flight (its
        # claim was durable), to be reclaimed and reconciled like any other: no need to wait.
        with _db.atomic_committed_with_last_block(durable=not settings.ASYNC_COMMIT):
            attempt.session, attempt.profile = _mirror(
                push,
                answer,
                reconciled=reconciled,
                order=order,
                settled=settled,
                also=mark_done,
                prefetched=prefetched,
            )
            if attempt.session is not None:
                done["session"] = attempt.session
            if attempt.profile is not None:
                done["profile"] = attempt.profile
            if counted:
                updated = _updated(push, done, counted[0])
            else:
                updated = _update_claimed(push, token, **done)
    except Exception as exc:
        logger.exception(
            "push #%s (%s %s) was sent but mirroring the answer failed",
            push.pk,
            push.operation,
            push.key,
        )
        attempt.session = attempt.profile = None  # rolled back with the transaction
        counted.clear()
        done.pop("session", None)
        done.pop("profile", None)
        done.update(
            last_error=f"sent; mirroring the answer failed: {_describe(exc)}"[:4000],
            error_class=type(exc).__name__[:100],
        )
        updated = _update_claimed(push, token, **done)
    if not updated:
        # The sweep took the row back meanwhile (this worker was too slow); the next sender
        # reconciles it. Nothing more to do here.
        logger.warning("push #%s finished after it was reclaimed", push.pk)
        attempt.outcome = "lost"
    if _changes_points(push):
        _fetch_loyalty(push, answer, client)
    return attempt


def _done_fields(now: datetime.datetime) -> dict[str, Any]:
    """What a row that was sent (or found applied) is updated with."""
    return {
        "state": Push.State.DONE,
        "done_at": now,
        "updated_at": now,
        "outcome_unknown": False,
        "last_error": "",
        "error_class": "",
        "error_status": None,
    }


def _fail(push: Push, token: str, exc: BaseException) -> Attempt:
    now = timezone.now()
    retryable = bool(getattr(exc, "retryable", False))
    unknown = push.outcome_unknown or bool(getattr(exc, "outcome_unknown", False))
    fields: dict[str, Any] = {
        "last_error": _describe(exc),
        "error_class": type(exc).__name__[:100],
        "error_status": getattr(exc, "status", None),
        "outcome_unknown": unknown,
        "claimed_by": "",
        "claimed_at": None,
    }
    delay = 0.0
    if retryable and push.attempts < settings.MAX_ATTEMPTS:
        delay = retry_delay(push.attempts, getattr(exc, "retry_after", None))
        outcome = "retry"
        fields.update(
            state=Push.State.PENDING, next_attempt_at=now + datetime.timedelta(seconds=delay)
        )
    else:
        outcome = "dead" if retryable else "failed"
        fields.update(state=outcome, done_at=now)
    fields["updated_at"] = now
    updated = _update_claimed(push, token, **fields)
    log = logger.warning if outcome == "retry" else logger.error
    log(
        "push #%s (%s %s) attempt %s: %s -> %s%s",
        push.pk,
        push.operation,
        push.key,
        push.attempts,
        fields["last_error"],
        outcome,
        f" in {delay:.1f}s" if outcome == "retry" else "",
    )
    if not updated:
        return Attempt(push, "lost", error=exc)
    if outcome == "retry":
        dispatch(push.key, countdown=max(delay, 0.001))
    else:
        _announce_failure(push)
    return Attempt(push, outcome, error=exc)


def retry_delay(attempts: int, retry_after: float | None = None) -> float:
    """Seconds to wait before retrying after ``attempts`` tries: full jitter, uniform in
    [0, min(MAX, BASE * 2**(attempts - 1))], and at least the answer's Retry-After."""
    base = float(settings.RETRY_BASE_DELAY)
    cap = float(settings.RETRY_MAX_DELAY)
    ceiling = min(cap, base * (2 ** max(0, min(attempts - 1, 60))))
    delay = random.uniform(0, ceiling)
    if retry_after:
        delay = max(delay, float(retry_after))
    return delay


def _read_settled(push: Push, client: IntegrationClient) -> dict[str, Any] | None:
    """After a return: the session read back, its effects netted of what was rolled back (the
    discounts of the lines kept). None when it cannot be read: the mirror then keeps the return's
    rollbacks as the current set until the session's next answer."""
    session_id = (push.payload.get("args") or [""])[0]
    try:
        _take_token("get_customer_session", None)
        answer = client.get_customer_session(session_id)
    except Exception as exc:
        logger.warning(
            "push #%s (%s %s): the return went through, but reading the session back failed: %s",
            push.pk,
            push.operation,
            push.key,
            _describe(exc),
        )
        return None
    return answer if isinstance(answer, dict) else None


def _mirror(
    push: Push,
    answer: Any,
    *,
    reconciled: bool = False,
    order: Any = None,
    settled: dict[str, Any] | None = None,
    also: Callable[[list[CustomerSession]], None] | None = None,
    prefetched: Any = None,
) -> tuple[CustomerSession | None, CustomerProfile | None]:
    """Mirror an answer by operation; ``also``: passed on to the session writer, which calls it
    among its writes (other operations do not call it)."""
    from . import mirror

    op = push.operation
    payload = push.payload
    first = (payload.get("args") or [None])[0]
    if reconciled:
        # A GET answer: {customerSession, effects}.
        return mirror.mirror_customer_session(first, answer), None
    if op in (UPDATE_SESSION, RETURN_ITEMS):
        if not isinstance(answer, dict):
            return None, None
        sent = payload.get("body")
        # _finish's transaction wraps the mirror and is rolled back whole on error: no savepoint.
        if order is None:
            order = _linked_orders([push]).get(push.pk)
        session = mirror.mirror_session_answer(
            first,
            answer,
            order=order,
            sent_payload=sent,
            savepoint=False,
            settled=settled,
            also=also,
            prefetched=prefetched,
        )
        return session, None
    if op == REOPEN_SESSION:
        return mirror.mirror_reopen_answer(first, answer or {}), None
    if op == UPDATE_PROFILE:
        profile = mirror.mirror_profile_answer(
            first, answer or {}, user=_linked_user(payload), savepoint=False
        )
        return None, profile
    if op == DELETE_CUSTOMER:
        mirror.purge_profile(first)
        return None, None
    if op == TRACK_EVENT and isinstance(answer, dict) and answer.get("customerProfile"):
        profile_id = (payload.get("body") or {}).get("profileId")
        return None, mirror.mirror_profile_answer(profile_id, answer, savepoint=False)
    return None, None


def _changes_points(push: Push) -> bool:
    return push.operation in (RETURN_ITEMS, REOPEN_SESSION) or _target_state(push) in CLOSING_STATES


def _fetch_loyalty(push: Push, answer: Any, client: IntegrationClient) -> None:
    """After a close, cancel, return or reopen: read the profile's balances into LoyaltyBalance."""
    program_ids = list(settings.LOYALTY_PROGRAM_IDS or [])
    if not program_ids:
        return
    profile_id = _profile_of(push, answer)
    if not profile_id:
        return
    from . import mirror

    for program_id in program_ids:
        try:
            _take_token("get_loyalty_balances", None)
            balances = client.get_loyalty_balances(program_id, profile_id, include_tiers=True)
            mirror.mirror_loyalty_balances(profile_id, program_id, balances)
        except Exception:
            # The push itself succeeded; balances are refreshed again on the next change.
            logger.exception("could not refresh loyalty program %s for %s", program_id, profile_id)


def _profile_of(push: Push, answer: Any) -> str:
    if isinstance(answer, dict):
        found = (answer.get("customerSession") or {}).get("profileId")
        if found:
            return str(found)
    sent = ((push.payload.get("body") or {}).get("customerSession") or {}).get("profileId")
    if sent:
        return str(sent)
    session = (
        CustomerSession.objects.filter(integration_id=(push.payload.get("args") or [""])[0])
        .values_list("profile_integration_id", flat=True)
        .first()
    )
    return session or ""


def _linked_user(payload: dict[str, Any]) -> Any:
    pk = (payload.get("link") or {}).get("user")
    if pk is None:
        return None
    from django.contrib.auth import get_user_model

    try:
        return get_user_model()._default_manager.filter(pk=pk).first()
    except (ValueError, TypeError, DatabaseError):
        return None


def _announce_failure(push: Push) -> None:
    # After commit, as the app's other signals: receivers read the row as others see it.
    transaction.on_commit(lambda: _send_push_failed(push))


def _send_push_failed(push: Push) -> None:
    try:
        from .signals import push_failed

        push_failed.send(sender=Push, push=push)
    except Exception:
        logger.exception("a push_failed receiver raised for push #%s", push.pk)


def _describe(exc: BaseException) -> str:
    """The error as stored on the row: the client's errors carry no secret by construction."""
    text = str(exc) if isinstance(exc, TalonOneError) else f"{type(exc).__name__}: {exc}"
    return _redact(text)[:4000]


def _redact(text: str) -> str:
    key = str(settings.API_KEY or "").strip()
    return text.replace(key, "***") if key and key in text else text


def _update_claimed(push: Push, token: str, **fields: Any) -> int:
    """UPDATE the row while ``token`` still holds it; then the instance says what the row holds
    (set from ``fields``, or read back when the row was taken back meanwhile)."""
    counted: list[int] = []
    _queue_update_claimed([push.pk], token, fields, counted)
    return _updated(push, fields, counted[0])


def _queue_update_claimed(
    pks: list[int],
    token: str,
    fields: dict[str, Any],
    counted: list[int],
    *,
    session_by_key: bool = False,
) -> None:
    """The UPDATE of :func:`_update_claimed` for rows ``pks``, through :func:`_db.execute` (so it
    can join a pipeline); how many rows it changed is appended to ``counted``. A field's value
    may be a model instance (its pk is written). ``session_by_key``: each row is also linked to
    the mirrored session its key names."""
    params = [_db_value(Push._meta.get_field(name), value) for name, value in fields.items()]
    params += [*pks, token]
    sql = _db.statement(_update_claimed_sql, tuple(fields), len(pks), session_by_key)
    _db.execute(sql, params, lambda cursor: counted.append(cursor.rowcount))


def _db_value(field: Any, value: Any) -> Any:
    if isinstance(value, models.Model):
        value = value.pk
    return field.get_db_prep_save(value, connection)


def _update_claimed_sql(names: tuple[str, ...], count: int, session_by_key: bool) -> str:
    qn = connection.ops.quote_name
    opts = Push._meta
    table, pk = qn(opts.db_table), qn(opts.pk.column)
    sets = [f"{qn(opts.get_field(name).column)} = %s" for name in names]
    if session_by_key:
        session = CustomerSession._meta
        named = (
            f"SELECT s.{qn(session.pk.column)} FROM {qn(session.db_table)} s"  # noqa: S608
            f" WHERE s.{qn(session.get_field('integration_id').column)}"
            f" = SUBSTR({table}.{qn(opts.get_field('key').column)}, {len(session_key('')) + 1})"
        )
        sets.append(f"{qn(opts.get_field('session').column)} = ({named})")
    claimed = qn(opts.get_field("claimed_by").column)
    return (
        f"UPDATE {table} SET {', '.join(sets)}"  # noqa: S608
        f" WHERE {pk} IN ({_db.marks(count)}) AND {claimed} = %s"
    )


def _updated(push: Push, fields: dict[str, Any], updated: int) -> int:
    """After :func:`_queue_update_claimed` of one row: the instance set from ``fields`` if the
    row was changed, else read back."""
    if updated:
        for name, value in fields.items():
            setattr(push, name, value)
    else:
        _refresh(push)
    return updated


def _refresh(push: Push) -> None:
    with contextlib.suppress(Push.DoesNotExist):
        push.refresh_from_db()
