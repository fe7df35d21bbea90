"""Push pipeline throughput: pushes/s through the outbox with real Celery workers and the sandbox.

Set-up, all on 127.0.0.1:

- a dedicated PostgreSQL database (``talonone_bench``: dropped if left over, created, migrated with
  ``tests.settings``; dropped again at the end);
- the sandbox in its own process (``python -m django_talonone.sandbox`` with the demo campaigns),
  so it never shares a GIL with a worker; latency is injected through ``POST /sandbox/faults``;
- real ``celery worker`` processes of ``tests/celery_app.py`` on a Redis broker (a dedicated Redis
  database and queue, purged first), ``TALONONE["DISPATCH"] = "celery"``.

Each scenario: reset the sandbox (and add the latency fault), empty the mirror and outbox tables,
write N pushes in one transaction (``bulk_create``; each key is woken once on commit, through
``outbox.schedule``, so the wake-up messages wait in the queue), then start the workers and wait
until every row is finished. The figure is rows finished / (last ``done_at`` - first
``claimed_at``): from the first claim to the last row marked done, so worker start-up is left out.

Main scenarios: UpdateCustomerSessionV2 with a 5-line cart, one push per session key (distinct
keys: nothing to coalesce, every row is one request), 1 and 4 workers, 0 ms and 50 ms injected
latency. By default each session and its customer profile are already mirrored (an untimed first
round sends every session once): the common case of a cart that changes. ``--fresh`` leaves the
tables empty, so every push also creates its session and profile rows.

"N workers" is one worker node with ``-c N`` (``--pool prefork``, the default: N child processes;
``--pool threads``: N threads in one process); ``--nodes`` starts N worker processes of ``-c 1``
instead. Two more scenarios show the per-key rules: few keys with profile updates (never
coalesced: a key is served by one worker at a time, so throughput is capped at keys / latency)
and few keys with cart updates (coalesced: many rows, few requests).

Celery's Django fix-up closes the database connections after every task unless
``CELERY_DB_REUSE_MAX`` is set, so by default every push task opens a new PostgreSQL connection.
The workers run ``bench/_bench_settings.py``: ``tests.settings`` plus ``CELERY_DB_REUSE_MAX`` from
``--db-reuse`` (1000 by default, as docs/operations.md recommends; 0 leaves it unset, as in
``tests.settings``).

Prints a table and writes ``bench/results/pipeline_throughput.json``. Nothing is asserted.

    .venv/bin/python bench/pipeline_throughput.py [--n 2000] [--n-latency 300] [--pool prefork]
                                                  [--db-reuse 1000] [--fresh] [--nodes] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _services import (
    HOST,
    ROOT,
    SandboxProcess,
    django_versions,
    keep_proxies_away,
    machine_info,
    postgres_database,
)
from client_overhead import CART, SHIPPING  # the same 5-line cart as the client benchmark

sys.path.insert(0, str(ROOT))  # tests.settings, tests.celery_app, bench._bench_settings

DEFAULT_OUT = ROOT / "bench" / "results" / "pipeline_throughput.json"
QUEUE = "talonone_bench"
SETTINGS = "bench._bench_settings"

GOAL_ONE_WORKER = 500.0  # pushes/s, 1 worker, 0 ms
GOAL_SCALING = 0.8  # "near-linear": 4 workers at 50 ms >= 0.8 x 4 x one worker


@dataclass
class Scenario:
    name: str
    workers: int
    latency_ms: float
    n: int
    keys: int
    kind: str = "session"  # "session" (cart updates) or "profile" (profile updates)
    note: str = ""


@dataclass
class Result:
    scenario: Scenario
    pool: str
    nodes: int
    rows: int
    states: dict[str, int]
    requests: int
    seconds: float
    pushes_per_s: float
    requests_per_s: float
    conflicts: int
    max_parallel_per_key: int
    wall_seconds: float
    enqueue_seconds: float
    cpu_ms_per_push: dict[str, float]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="pushes per 0 ms scenario (2000)")
    parser.add_argument("--n-latency", type=int, default=600, help="pushes per 50 ms scenario")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="injected latency (50)")
    parser.add_argument("--workers", default="1,4", help="worker counts to compare (1,4)")
    parser.add_argument(
        "--pool",
        choices=["prefork", "threads", "solo"],
        default="prefork",
        help="Celery pool (prefork)",
    )
    parser.add_argument(
        "--nodes",
        action="store_true",
        help="N workers = N worker processes with -c 1 (default: one node with -c N)",
    )
    parser.add_argument(
        "--db-reuse",
        type=int,
        default=1000,
        help="CELERY_DB_REUSE_MAX for the workers (1000; 0: unset, a new connection per task)",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="no session or profile mirrored before the push"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help="TALONONE['BATCH_SIZE'] for the workers (default: the library's; 1: key by key)",
    )
    parser.add_argument(
        "--send-concurrency",
        type=int,
        default=0,
        help="TALONONE['SEND_CONCURRENCY'] for the workers (default: the library's)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the scenarios this many rounds and report each one's median run (the"
        " machine's speed drifts by a fifth from minute to minute)",
    )
    parser.add_argument("--no-extra", action="store_true", help="skip the few-keys scenarios")
    parser.add_argument("--only", help="run only scenarios whose name contains this")
    parser.add_argument("--database", default="talonone_bench", help="PostgreSQL database")
    parser.add_argument("--redis-db", type=int, default=11, help="dedicated Redis database (11)")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per scenario")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also cProfile the worker path in this process (500 pushes, no Celery) and list"
        " the statements of one batch",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON")
    args = parser.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",") if w.strip()]

    keep_proxies_away()
    scenarios = _scenarios(args, counts)
    if args.only:
        scenarios = [s for s in scenarios if args.only in s.name]
    results: list[Result] = []
    profile_text: str | None = None
    with contextlib.ExitStack() as stack:
        sandbox = stack.enter_context(SandboxProcess())
        _configure_django(sandbox.url, args)
        stack.enter_context(postgres_database(args.database, keep=args.keep_db))
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        from django_talonone.conf import settings as tsettings

        machine = machine_info(**django_versions())
        print(
            f"pipeline_throughput: Python {machine['python']}, Django {machine['django']},"
            f" Celery {machine.get('celery')}, orjson {machine.get('orjson')},"
            f" {machine['cpu_count']} CPU"
            f" ({machine['cpu_model']}), load {machine['loadavg_1m']}"
        )
        print(
            f"sandbox {sandbox.url} (own process); PostgreSQL database {args.database};"
            f" broker redis://{HOST}:6379/{args.redis_db} queue {QUEUE};"
            f" {_layout(args)}; CELERY_DB_REUSE_MAX {args.db_reuse or 'unset'};"
            f" sessions {'fresh' if args.fresh else 'already mirrored'};"
            f" BATCH_SIZE {tsettings.BATCH_SIZE}, SEND_CONCURRENCY {tsettings.SEND_CONCURRENCY}"
        )
        _purge_queue()
        runs: dict[str, list[Result]] = {s.name: [] for s in scenarios}
        for _round in range(max(1, args.repeat)):
            for scenario in scenarios:
                result = run_scenario(scenario, sandbox, args)
                runs[scenario.name].append(result)
                _print_row(result)
        results = [_median_run(runs[s.name]) for s in scenarios]
        if args.profile:
            profile_text = profile_worker_path(sandbox, 500, fresh=args.fresh)
            print(profile_text)
        _purge_queue()

    report = _report(results, args, machine, runs)
    if profile_text is not None:
        report["profile"] = profile_text
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


def _scenarios(args: argparse.Namespace, counts: list[int]) -> list[Scenario]:
    lat = args.latency_ms
    scenarios = [
        Scenario(f"{w}w-{latency:g}ms", w, latency, n, n, note="one push per session key")
        for latency, n in ((0.0, args.n), (lat, args.n_latency))
        for w in counts
    ]
    if not args.no_extra:
        top = max(counts)
        scenarios.append(
            Scenario(
                f"{top}w-{lat:g}ms-2keys-profile",
                top,
                lat,
                max(20, args.n_latency // 3),
                2,
                kind="profile",
                note="profile updates (never folded) on 2 keys: at most one worker per key",
            )
        )
        scenarios.append(
            Scenario(
                f"{top}w-0ms-4keys-coalesce",
                top,
                0.0,
                max(40, args.n // 4),
                4,
                note="cart updates on 4 keys: folded into a few requests",
            )
        )
    return scenarios


def _layout(args: argparse.Namespace) -> str:
    if args.nodes:
        return f"N workers = N worker processes, -P {args.pool} -c 1 each"
    return f"N workers = one worker node, -P {args.pool} -c N"


# --- one scenario ----------------------------------------------------------------------------


def run_scenario(scenario: Scenario, sandbox: SandboxProcess, args: argparse.Namespace) -> Result:
    from django.db.models import Count, Max, Min

    from django_talonone.models import Push
    from django_talonone.outbox import UNFINISHED

    sandbox.reset()
    _empty_tables()
    with WorkerProcesses(scenario.workers, args) as workers:
        workers.wait_ready(args.timeout)
        if not args.fresh:
            # Untimed first round through the same workers: every session and profile mirrored,
            # every worker warm (connections open, code loaded).
            first = Scenario("first", 1, 0.0, scenario.keys, scenario.keys, scenario.kind)
            enqueue(first, first_round=True)
            workers.wait_done(args.timeout)
            _truncate_pushes()
        workers.pause()  # the timed rows and their messages are all written before any is taken
        before = sandbox.counters()
        if scenario.latency_ms:
            sandbox.add_latency(scenario.latency_ms / 1000.0)
        t0 = time.perf_counter()
        enqueue(scenario)
        enqueue_seconds = time.perf_counter() - t0
        started = time.perf_counter()
        cpu_before = _cpu_by_process()
        workers.resume()
        workers.wait_done(args.timeout)
        wall = time.perf_counter() - started
        cpu_after = _cpu_by_process()
    span = Push.objects.aggregate(first=Min("claimed_at"), last=Max("done_at"))
    seconds = (span["last"] - span["first"]).total_seconds()
    states = dict(Push.objects.values_list("state").annotate(n=Count("id")).order_by())
    counters = sandbox.counters()
    requests = sum(counters.get("requests", {}).values()) - sum(before["requests"].values())
    conflicts = sum(counters.get("conflicts", {}).values()) - sum(before["conflicts"].values())
    finished = sum(n for state, n in states.items() if state not in UNFINISHED)
    return Result(
        scenario=scenario,
        pool=args.pool,
        nodes=scenario.workers if args.nodes else 1,
        rows=finished,
        states=states,
        requests=requests,
        seconds=round(seconds, 4),
        pushes_per_s=round(finished / seconds, 1) if seconds > 0 else 0.0,
        requests_per_s=round(requests / seconds, 1) if seconds > 0 else 0.0,
        conflicts=conflicts,
        max_parallel_per_key=max(counters.get("max_parallel", {}).values(), default=0),
        cpu_ms_per_push={
            name: round((cpu_after.get(name, 0.0) - spent) * 1000 / max(finished, 1), 3)
            for name, spent in cpu_before.items()
            if cpu_after.get(name, 0.0) - spent > 0
        },
        wall_seconds=round(wall, 3),
        enqueue_seconds=round(enqueue_seconds, 3),
    )


def enqueue(scenario: Scenario, *, first_round: bool = False) -> None:
    """Write the scenario's rows in one transaction; each key is woken once on commit."""
    from django.db import transaction

    from django_talonone import outbox
    from django_talonone.models import Push

    rows = []
    for i in range(scenario.n):
        k = i % scenario.keys
        if scenario.kind == "profile":
            profile_id = f"bench-customer-{k}"
            key = outbox.profile_key(profile_id)
            payload = outbox.make_payload(
                profile_id,
                body={"attributes": {"bench": i}, "responseContent": ["customerProfile"]},
                query={"run_rule_engine": True},
            )
            operation = outbox.UPDATE_PROFILE
        else:
            session_id = f"bench-session-{k}"
            key = outbox.session_key(session_id)
            payload = outbox.make_payload(session_id, body=session_body(k, i, first_round))
            operation = outbox.UPDATE_SESSION
        rows.append(Push(key=key, operation=operation, payload=payload, source="bench"))
    with transaction.atomic():
        Push.objects.bulk_create(rows, batch_size=500)
        for key in dict.fromkeys(row.key for row in rows):
            outbox.schedule(key)


def session_body(k: int, i: int, first_round: bool = False) -> dict[str, Any]:
    """An UpdateCustomerSessionV2 body as the default adapter makes it: a 5-line cart of the
    customer ``bench-customer-<k>``. The first round has one more sock than the timed round, so
    the timed push changes the cart (its lines and its effects are rewritten)."""
    from django_talonone.conf import settings

    items = [
        {
            "sku": sku,
            "quantity": qty + (1 if first_round and n == 1 else 0),
            "name": name,
            "price": price,
            "category": category,
            "attributes": attrs,
        }
        for n, (name, sku, qty, price, category, attrs) in enumerate(CART)
    ]
    return {
        "customerSession": {
            "profileId": f"bench-customer-{k}",
            "cartItems": items,
            "additionalCosts": {"shipping": {"price": SHIPPING}},
            "attributes": {"channel": "web"},
        },
        "responseContent": list(settings.RESPONSE_CONTENT),
    }


def _mirror_first(scenario: Scenario) -> None:
    """Untimed: send every key once in this process, so its session and profile are mirrored."""

    from django_talonone import outbox
    from django_talonone.models import Push

    first = Scenario(scenario.name, 1, 0.0, scenario.keys, scenario.keys, scenario.kind)
    with _wake_nobody():
        enqueue(first, first_round=True)
    client = outbox.get_client()
    keys = list(dict.fromkeys(Push.objects.values_list("key", flat=True)))
    for key in keys:
        outbox.process_key(key, client=client)
    _truncate_pushes()


def _truncate_pushes() -> None:
    from django.db import connection

    from django_talonone.models import Push

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {Push._meta.db_table} RESTART IDENTITY")


def _empty_tables() -> None:
    from django.apps import apps
    from django.db import connection

    tables = [m._meta.db_table for m in apps.get_app_config("talonone").get_models()]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")


@contextlib.contextmanager
def _wake_nobody() -> Iterator[None]:
    """Enqueue without a wake-up call: this process sends the rows itself."""
    from django_talonone import outbox

    original = outbox.schedule
    outbox.schedule = lambda key: None  # type: ignore[assignment]
    try:
        yield
    finally:
        outbox.schedule = original  # type: ignore[assignment]


# --- the worker path in this process, profiled -------------------------------------------------


def profile_worker_path(sandbox: SandboxProcess, n: int, *, fresh: bool) -> str:
    """cProfile the worker's path (``outbox.process_batch``, as the push task runs it) over ``n``
    session pushes in this process; the statements of one batch."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from django_talonone import outbox
    from django_talonone.conf import settings

    sandbox.reset()
    _empty_tables()
    scenario = Scenario("profile", 1, 0.0, n, n)
    if not fresh:
        _mirror_first(scenario)
    with _wake_nobody():
        enqueue(scenario)
    client = outbox.get_client()
    size = int(settings.BATCH_SIZE)
    with CaptureQueriesContext(connection) as queries:  # also the warm-up
        first, _claimed = outbox.process_batch(client=client)
    t0, c0 = time.perf_counter(), time.process_time()
    plain = 0
    while plain < (n - first) // 2:
        done, claimed = outbox.process_batch(client=client)
        plain += done
        if not claimed:
            break
    wall_ms = (time.perf_counter() - t0) / max(plain, 1) * 1000
    cpu_ms = (time.process_time() - c0) / max(plain, 1) * 1000
    profiler = cProfile.Profile()
    profiler.enable()
    profiled = outbox.drain(client=client)
    profiler.disable()
    out = io.StringIO()
    out.write(
        f"\nprocess_batch in this process (no Celery, BATCH_SIZE {size}): {wall_ms:.2f} ms wall,"
        f" {cpu_ms:.2f} ms CPU per push ({plain} pushes); {len(queries)} statements for the"
        f" first batch of {first} pushes:\n"
    )
    for q in queries.captured_queries:
        out.write(f"  {q['sql'][:140]}\n")
    out.write(f"\ncProfile of {profiled} more pushes:\n")
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(20)
    stats.sort_stats("cumulative").print_stats(30)
    return out.getvalue()


# --- worker processes --------------------------------------------------------------------------


class WorkerProcesses:
    """``celery worker`` of tests/celery_app.py on the bench queue; stopped (warm) on exit."""

    def __init__(self, workers: int, args: argparse.Namespace) -> None:
        self.workers = workers
        self.pool = args.pool
        self.nodes = args.nodes
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logdir = tempfile.TemporaryDirectory(prefix="talonone-bench-")

    def __enter__(self) -> WorkerProcesses:
        if self.nodes:
            layout = [(f"bench{i}", 1) for i in range(self.workers)]
        else:
            layout = [("bench", self.workers)]
        for name, concurrency in layout:
            cmd = [sys.executable, "-m", "celery", "-A", "tests.celery_app", "worker"]
            cmd += ["-Q", QUEUE, "-n", f"{name}@%h", "-P", self.pool, "-c", str(concurrency)]
            cmd += ["-l", "warning", "--without-gossip", "--without-mingle", "--without-heartbeat"]
            with open(Path(self.logdir.name) / f"{name}.log", "wb") as log:
                self.procs.append(
                    subprocess.Popen(
                        cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
        return self

    @property
    def names(self) -> list[str]:
        host = socket.gethostname()
        if self.nodes:
            return [f"bench{i}@{host}" for i in range(self.workers)]
        return [f"bench@{host}"]

    def check(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise SystemExit(f"a worker exited ({proc.returncode}):\n{self.logs()}")

    def wait_ready(self, timeout: float) -> None:
        """Until every worker node answers a ping."""
        from tests.celery_app import app

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            replies = app.control.ping(destination=self.names, timeout=0.5) or []
            if len(replies) == len(self.names):
                return
        raise SystemExit(f"the workers did not start in {timeout:.0f} s:\n{self.logs()}")

    def wait_done(self, timeout: float) -> None:
        """Until no row is pending or in flight."""
        from django_talonone.models import Push
        from django_talonone.outbox import UNFINISHED

        deadline = time.monotonic() + timeout
        while Push.objects.filter(state__in=UNFINISHED).exists():
            self.check()
            if time.monotonic() > deadline:
                raise SystemExit(f"pushes not finished after {timeout:.0f} s:\n{self.logs()}")
            time.sleep(0.02)

    def pause(self) -> None:
        self._control("cancel_consumer")

    def resume(self) -> None:
        self._control("add_consumer")

    def _control(self, command: str) -> None:
        from tests.celery_app import app

        replies = getattr(app.control, command)(
            QUEUE, destination=self.names, reply=True, timeout=5.0
        )
        if len(replies or []) != len(self.names):
            raise SystemExit(f"{command}: {len(replies or [])} of {len(self.names)} nodes answered")

    def logs(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")[-3000:] for path in Path(self.logdir.name).iterdir()
        )

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # warm shutdown
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # its own group: this worker's processes
                proc.wait(timeout=10)
        problems = [ln for ln in self.logs().splitlines() if "ERROR" in ln or "Traceback" in ln]
        if problems:
            print("  worker log:\n    " + "\n    ".join(problems[:10]))
        self.logdir.cleanup()


def _configure_django(sandbox_url: str, args: argparse.Namespace) -> None:
    """Environment for this process and the workers (tests/settings.py reads it)."""
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    os.environ["TALONONE_TEST_DB"] = "postgres"
    os.environ["PGDATABASE"] = args.database
    os.environ["TALONONE_TEST_BASE_URL"] = sandbox_url
    os.environ["TALONONE_TEST_API_KEY"] = "sandbox-api-key"
    os.environ["TALONONE_TEST_BROKER"] = f"redis://{HOST}:6379/{args.redis_db}"
    os.environ["TALONONE_TEST_SETTINGS"] = json.dumps(
        {
            "DISPATCH": "celery",
            "TASK_OPTIONS": {"queue": QUEUE},
            **({"BATCH_SIZE": args.batch_size} if args.batch_size else {}),
            **({"SEND_CONCURRENCY": args.send_concurrency} if args.send_concurrency else {}),
        }
    )
    os.environ["TALONONE_BENCH_DB_REUSE_MAX"] = str(args.db_reuse or "")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )


def _purge_queue() -> None:
    from tests.celery_app import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(QUEUE)


# --- report ------------------------------------------------------------------------------------


def _print_row(r: Result) -> None:
    s = r.scenario
    print(
        f"  {s.name:<24} {r.rows:>5} rows, {r.requests:>5} requests in {r.seconds:6.2f} s"
        f" -> {r.pushes_per_s:7.1f} pushes/s; 409s {r.conflicts},"
        f" max parallel per key {r.max_parallel_per_key}; {r.states}"
    )
    cpu = ", ".join(f"{name} {ms:.2f}" for name, ms in sorted(r.cpu_ms_per_push.items()))
    print(
        f"  {'':<24} CPU ms per push (from resume to the last row done, wall {r.wall_seconds}s):"
        f" {cpu}"
    )


def _cpu_by_process() -> dict[str, float]:
    """CPU seconds (user + system) used so far by the processes of the run, grouped: the
    workers (the pool processes that run the tasks), their worker node (the parent), the
    sandbox, PostgreSQL, Redis and this script (Linux /proc; empty elsewhere)."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    found: dict[str, float] = {}
    celery: set[str] = set()
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if b"celery" in (entry / "cmdline").read_bytes():
                celery.add(entry.name)
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == os.getpid():
            name = "bench"
        elif "celery" in cmdline:
            # The pool's processes run the tasks; their parent takes the messages from Redis.
            name = "workers" if fields[1] in celery else "worker node"
        elif "django_talonone.sandbox" in cmdline:
            name = "sandbox"
        elif cmdline.startswith("postgres"):
            name = "postgres"
        elif "redis-server" in cmdline:
            name = "redis"
        else:
            continue
        found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return found


def _median_run(runs: list[Result]) -> Result:
    """The run with the median pushes/s (the lower middle one of an even number)."""
    ordered = sorted(runs, key=lambda r: r.pushes_per_s)
    return ordered[(len(ordered) - 1) // 2]


def _report(
    results: list[Result],
    args: argparse.Namespace,
    machine: dict[str, Any],
    runs: dict[str, list[Result]],
) -> dict:
    by_name = {r.scenario.name: r for r in results}
    lat = f"{args.latency_ms:g}ms"
    head = ("workers", "latency", "pushes", "pushes/s", "speed-up", "409s")
    rounds = max(len(found) for found in runs.values()) if runs else 1
    if rounds > 1:
        print(f"\nmedian of {rounds} runs per scenario (all runs: min-max)")
    print("\n" + " ".join(f"{h:>{w}}" for h, w in zip(head, (7, 8, 7, 9, 9, 5), strict=True)))
    table = []
    for r in results:
        s = r.scenario
        if s.keys != s.n:
            continue
        base = by_name.get(f"1w-{s.latency_ms:g}ms")
        speedup = r.pushes_per_s / base.pushes_per_s if base and base.pushes_per_s else None
        all_runs = [run.pushes_per_s for run in runs.get(s.name, [r])]
        table.append(
            {
                "workers": s.workers,
                "latency_ms": s.latency_ms,
                "pushes": r.rows,
                "pushes_per_s": r.pushes_per_s,
                "pushes_per_s_runs": all_runs,
                "speedup_vs_1_worker": round(speedup, 2) if speedup else None,
            }
        )
        shown = f"{speedup:.2f}x" if speedup else "-"
        spread = f"  ({min(all_runs):.1f}-{max(all_runs):.1f})" if len(all_runs) > 1 else ""
        print(
            f"{s.workers:>7} {s.latency_ms:>6g}ms {r.rows:>7} {r.pushes_per_s:>9.1f}"
            f" {shown:>9} {r.conflicts:>5}{spread}"
        )
    for r in results:
        s = r.scenario
        if s.keys != s.n:
            print(
                f"  {s.name}: {r.rows} rows on {s.keys} keys -> {r.requests} requests in"
                f" {r.seconds:.2f} s ({r.requests_per_s:.1f} requests/s); {s.note}"
            )
    one = by_name.get("1w-0ms")
    lat1, lat4 = by_name.get(f"1w-{lat}"), by_name.get(f"4w-{lat}")
    scaling = lat4.pushes_per_s / lat1.pushes_per_s if lat1 and lat4 and lat1.pushes_per_s else None
    goals = {
        "one_worker_0ms_pushes_per_s": {
            "limit": GOAL_ONE_WORKER,
            "value": one.pushes_per_s if one else None,
            "met": None if one is None else one.pushes_per_s >= GOAL_ONE_WORKER,
        },
        f"four_workers_{lat}_speedup": {
            "limit": 4 * GOAL_SCALING,
            "value": round(scaling, 2) if scaling else None,
            "met": None if scaling is None else scaling >= 4 * GOAL_SCALING,
        },
    }
    g1, g4 = goals["one_worker_0ms_pushes_per_s"], goals[f"four_workers_{lat}_speedup"]
    print("\ngoals (issue 5):")
    print(f"  >= {GOAL_ONE_WORKER:.0f} pushes/s, 1 worker, 0 ms: {g1['value']} -> {_mark(g1)}")
    print(
        f"  near-linear, 4 workers at {lat} (>= {4 * GOAL_SCALING:.1f}x):"
        f" {g4['value']}x -> {_mark(g4)}"
    )
    return {
        "bench": "pipeline_throughput",
        "machine": machine,
        "config": {
            "database": "PostgreSQL, dedicated database migrated with tests.settings",
            "broker": f"Redis db {args.redis_db}, queue {QUEUE}",
            "workers": _layout(args),
            "celery_db_reuse_max": args.db_reuse or None,
            "sessions": "fresh" if args.fresh else "already mirrored (untimed first round)",
            "sandbox": "python -m django_talonone.sandbox, own process, demo campaigns",
            "latency_fault": {"operation": "*", "kind": "latency", "ms": args.latency_ms},
            "measure": "rows finished / (last done_at - first claimed_at); rows enqueued first",
        },
        "table": table,
        "scenarios": [{**asdict(r), "scenario": asdict(r.scenario)} for r in results],
        "runs": {
            name: [{**asdict(r), "scenario": r.scenario.name} for r in found]
            for name, found in runs.items()
        },
        "goals": goals,
    }


def _mark(goal: dict[str, Any]) -> str:
    return {True: "met", False: "NOT met", None: "not measured"}[goal["met"]]


if __name__ == "__main__":
    sys.exit(main())
