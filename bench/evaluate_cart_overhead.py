"""Checkout-path overhead of ``evaluate_cart(cart)`` above the bare client call, on SQLite and on
PostgreSQL.

The sandbox runs in its own process (``python -m django_talonone.sandbox`` with the demo campaigns,
127.0.0.1). For each database a child process (Django settings are per process) sets up
``tests.settings`` on that database (SQLite in memory, or a dedicated PostgreSQL database that is
created, migrated and dropped), makes a test-shop order (``tests.shop``) of a saved customer with
the 5 cart lines of ``client_overhead.py`` (lines prefetched, as a cart page has them), and times,
interleaved call by call after a warm-up:

- ``bare``: ``client.update_customer_session_v2(session_id, body)`` with the body the adapter makes
  for that cart, asking for the same parts of the answer as ``evaluate_cart``
  (``evaluate_response_content``), on the same client ``evaluate_cart`` uses, for a session of
  its own;
- ``evaluate_cart``: ``django_talonone.evaluate_cart(order)`` (inline dispatch), which also
  builds the body, records the push, mirrors the answer and returns the mirrored effects.

Before every call (untimed) the shop changes the cart: one line's quantity goes up or down, saved
and set on the prefetched line. So each answer brings a new cart and new effects to mirror, as
when a customer edits the cart. ``--same-cart`` sends the same
cart every time instead (nothing to rewrite). Overhead = p50(evaluate_cart) - p50(bare).

Prints a table and writes ``bench/results/evaluate_cart_overhead.json``. Nothing is asserted.

    .venv/bin/python bench/evaluate_cart_overhead.py [--n 1000] [--warmup 100] [--same-cart]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import json
import math
import os
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _services import (
    ROOT,
    SandboxProcess,
    django_versions,
    keep_proxies_away,
    machine_info,
    postgres_database,
)
from client_overhead import CART, SHIPPING  # the same 5-line cart as the client benchmark

sys.path.insert(0, str(ROOT))  # tests.settings, tests.shop

DEFAULT_OUT = ROOT / "bench" / "results" / "evaluate_cart_overhead.json"
PG_DATABASE = "talonone_bench_eval"
GOAL_OVERHEAD_MS = 3.0
# Django's PostgreSQL OPTIONS for statements bound and prepared by the server (psycopg's default
# threshold: a statement is prepared on its fifth run); off by default in Django, for poolers.
PREPARED_OPTIONS = {"server_side_binding": True, "prepare_threshold": 5}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="timed calls per contender (1000)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed calls per contender")
    parser.add_argument(
        "--db",
        default="sqlite,postgres",
        help="databases (sqlite,postgres; postgres-prepared: PostgreSQL with server-side binding"
        " and prepared statements, Django's OPTIONS server_side_binding and prepare_threshold)",
    )
    parser.add_argument("--same-cart", action="store_true", help="the same cart every call")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure each database this many times (alternating) and report the run with the"
        " median overhead (the machine's speed drifts by a fifth from minute to minute)",
    )
    parser.add_argument(
        "--queries", action="store_true", help="list the statements of one evaluate_cart call"
    )
    parser.add_argument(
        "--statement-times",
        action="store_true",
        help="also time each statement of 200 more evaluate_cart calls (median per statement)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also cProfile 200 more evaluate_cart calls and print where their time goes",
    )
    parser.add_argument(
        "--settings",
        type=json.loads,
        default={},
        help="TALONONE settings to change for a trial (JSON), e.g. '{\"RESPONSE_CONTENT\": [...]}'",
    )
    parser.add_argument(
        "--pg-options",
        type=json.loads,
        default={},
        help="Django OPTIONS added on PostgreSQL for a trial (JSON), e.g."
        ' \'{"options": "-c synchronous_commit=off"}\'',
    )
    parser.add_argument(
        "--against",
        metavar="TARGET=REPLACEMENT",
        help="also time evaluate_cart with the object at the dotted path TARGET swapped for the"
        " one at REPLACEMENT, call by call in the same process, and print the difference (the"
        " machine's drift cancels out), e.g. django_talonone._db.atomic_committed_with_last_block"
        "=django.db.transaction.atomic",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--sandbox-url", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON")
    args = parser.parse_args(argv)
    keep_proxies_away()
    if args.child:
        return child(args)

    dbs = [d.strip() for d in args.db.split(",") if d.strip()]
    results: dict[str, Any] = {}
    runs: dict[str, list[dict[str, Any]]] = {db: [] for db in dbs}
    with SandboxProcess() as sandbox:
        for _round in range(max(1, args.repeat)):
            for db in dbs:
                runs[db].append(_run_child(db, sandbox.url, args))
    for db in dbs:
        ordered = sorted(runs[db], key=lambda r: r["overhead"]["p50_ms"])
        results[db] = ordered[(len(ordered) - 1) // 2]  # the median run (lower middle)
        results[db]["overhead_p50_ms_runs"] = [r["overhead"]["p50_ms"] for r in runs[db]]
    machine = results[dbs[0]]["machine"] if dbs else {}
    print(
        f"evaluate_cart_overhead: Python {machine.get('python')}, Django {machine.get('django')},"
        f" orjson {machine.get('orjson')},"
        f" {machine.get('cpu_count')} CPU ({machine.get('cpu_model')}),"
        f" load {machine.get('loadavg_1m')}"
    )
    print(
        f"{args.n} calls per contender, interleaved, after {args.warmup} warm-up calls;"
        f" {'the same cart' if args.same_cart else 'the cart changes'} on every call;"
        " sandbox in its own process"
    )
    if args.settings or args.pg_options:
        print(f"trial: TALONONE changed {args.settings}, PostgreSQL OPTIONS added", args.pg_options)
    print(
        f"\n{'database':<17} {'contender':<14} {'p50 ms':>7} {'p95 ms':>7} {'mean ms':>8}"
        f" {'CPU p50':>8} {'queries':>8}"
    )
    goals = {}
    for db in dbs:
        r = results[db]
        for name in ("bare", "evaluate_cart", "against"):
            s = r["contenders"].get(name)
            if s is None:
                continue
            print(
                f"{db:<17} {name:<14} {s['p50_ms']:>7.2f} {s['p95_ms']:>7.2f} {s['mean_ms']:>8.2f}"
                f" {s['cpu_p50_ms']:>8.2f} {s.get('queries', 0):>8}"
            )
        over = r["overhead"]
        all_runs = r["overhead_p50_ms_runs"]
        spread = (
            f"; median of {len(all_runs)} runs: {', '.join(f'{v:.2f}' for v in all_runs)}"
            if len(all_runs) > 1
            else ""
        )
        print(
            f"{'':<17} overhead       {over['p50_ms']:>7.2f} {over['p95_ms']:>7.2f}"
            f"          {over['cpu_p50_ms']:>8.2f}   (evaluate_cart - bare{spread})"
        )
        if r.get("against"):
            a = r["against"]
            print(
                f"{'':<17} {'- against':<14} {a['p50_ms']:>7.2f}"
                f"                   {a['cpu_p50_ms']:>8.2f}   (evaluate_cart - against; median of"
                f" pairwise differences {a['median_of_pairwise_ms']:.2f}; against = {a['swap']})"
            )
        goals[db] = {
            "limit_ms": GOAL_OVERHEAD_MS,
            "value_ms": over["p50_ms"],
            "met": over["p50_ms"] <= GOAL_OVERHEAD_MS,
        }
        if r.get("profile"):
            print(f"    cProfile of 200 evaluate_cart calls ({db}):")
            print(r["profile"])
        if r.get("statement_times"):
            print(f"    median wall time of each statement over 200 evaluate_cart calls ({db}):")
            for ms, sql in r["statement_times"]:
                print(f"      {ms:6.3f} ms  {sql}")
        if r.get("statements"):
            print("    statements of one evaluate_cart call:")
            for sql in r["statements"]:
                print(f"      {sql}")
    print("\ngoal (issue 5): evaluate_cart overhead <= 3 ms p50 over the bare call")
    for db, goal in goals.items():
        print(f"  {db}: {goal['value_ms']:.2f} ms -> {'met' if goal['met'] else 'NOT met'}")

    report = {
        "bench": "evaluate_cart_overhead",
        "machine": machine,
        "config": {
            "n": args.n,
            "warmup": args.warmup,
            "cart": "5 lines (client_overhead.CART), shipping, a saved customer, lines prefetched",
            "cart_changes": not args.same_cart,
            "repeat": max(1, args.repeat),
            "dispatch": "inline",
            "sandbox": "python -m django_talonone.sandbox, own process, demo campaigns",
            "sqlite": "tests.settings: in memory",
            "postgres": f"127.0.0.1, dedicated database {PG_DATABASE}",
            "postgres-prepared": f"as postgres, with OPTIONS {PREPARED_OPTIONS}",
            "talonone_changed": args.settings,
            "postgres_options_added": args.pg_options,
        },
        "results": {
            db: {k: v for k, v in r.items() if k != "machine"} for db, r in results.items()
        },
        "goals": goals,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


def _run_child(db: str, sandbox_url: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", db]
    cmd += ["--sandbox-url", sandbox_url, "--n", str(args.n), "--warmup", str(args.warmup)]
    if args.same_cart:
        cmd.append("--same-cart")
    if args.queries:
        cmd.append("--queries")
    if args.profile:
        cmd.append("--profile")
    if args.statement_times:
        cmd.append("--statement-times")
    if args.against:
        cmd += ["--against", args.against]
    cmd += ["--settings", json.dumps(args.settings), "--pg-options", json.dumps(args.pg_options)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"the {db} run failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the child: one database ---------------------------------------------------------------------


def child(args: argparse.Namespace) -> int:
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    os.environ["TALONONE_TEST_BASE_URL"] = args.sandbox_url
    os.environ["TALONONE_TEST_API_KEY"] = "sandbox-api-key"
    # Only what the command line asks for: the environment of the shell must not leak in.
    os.environ["TALONONE_TEST_SETTINGS"] = json.dumps(args.settings)
    stack = contextlib.ExitStack()
    options = dict(args.pg_options)
    if args.child == "postgres-prepared":
        options.update(PREPARED_OPTIONS)
    os.environ["TALONONE_TEST_PG_OPTIONS"] = json.dumps(options)
    if args.child.startswith("postgres"):
        os.environ["TALONONE_TEST_DB"] = "postgres"
        os.environ["PGDATABASE"] = PG_DATABASE
        stack.enter_context(postgres_database(PG_DATABASE))
    else:
        os.environ.pop("TALONONE_TEST_DB", None)
    with stack:
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        result = measure(args)
        result["machine"] = machine_info(**django_versions())
    print(json.dumps(result))
    return 0


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from django_talonone import evaluate_cart, outbox
    from django_talonone.adapters import get_adapter
    from django_talonone.conf import settings
    from django_talonone.services import evaluate_response_content
    from tests.shop.models import Order, OrderLine

    customer = User.objects.create(username="bench-customer")
    orders = []
    for _ in range(2):  # one for evaluate_cart, one whose session the bare call updates
        order = Order.objects.create(customer=customer, shipping_cost=SHIPPING)
        OrderLine.objects.bulk_create(
            OrderLine(order=order, sku=sku, name=name, quantity=qty, price=price, category=cat)
            for name, sku, qty, price, cat, _attrs in CART
        )
        orders.append(Order.objects.prefetch_related("lines").get(pk=order.pk))
    cart, other = orders
    adapter = get_adapter()
    client = outbox.get_client(float(settings.EVALUATE_TIMEOUT))  # the one evaluate_cart uses
    bare_id = adapter.session_id(other)
    bodies = []
    for step in range(2):
        _set_quantity(other, step, args.same_cart)
        body = adapter.session_payload(other)
        # Asking for the same parts of the answer as evaluate_cart does.
        content = evaluate_response_content(body.pop("responseContent", None))
        if content:
            body["responseContent"] = content
        bodies.append(body)

    def call_bare(i: int) -> Any:
        return client.update_customer_session_v2(bare_id, bodies[i % 2])

    def call_evaluate(i: int) -> Any:
        result = evaluate_cart(cart)
        if result.stale or result.preview:
            raise SystemExit(f"evaluate_cart fell back: {result.error or 'preview'}")
        return result

    changes = [0]

    def prepare(name: str, i: int) -> None:  # untimed: the shop changes its cart
        if name != "bare":
            changes[0] += 1  # each call of a contender that sends the cart sees it changed
            _set_quantity(cart, changes[0], args.same_cart)

    contenders = {"bare": call_bare, "evaluate_cart": call_evaluate}
    if args.against:
        contenders["against"] = _swapped(call_evaluate, args.against)
    prepare("evaluate_cart", 0)
    if not call_evaluate(0).effects:
        raise SystemExit("the sandbox answered no effects for the cart")
    for i in range(1, args.warmup + 1):
        for name, call in contenders.items():
            prepare(name, i)
            call(i)
    queries: dict[str, int] = {}
    statements: list[str] = []
    for name, call in contenders.items():
        prepare(name, args.warmup + 1)
        with CaptureQueriesContext(connection) as captured:
            call(args.warmup + 1)
        queries[name] = len(captured)
        if name == "evaluate_cart" and args.queries:
            statements = [q["sql"][:140] for q in captured.captured_queries]
    samples: dict[str, list[int]] = {name: [] for name in contenders}
    cpu: dict[str, list[int]] = {name: [] for name in contenders}
    order = list(contenders.items())
    gc.collect()
    wall, proc = time.perf_counter_ns, time.process_time_ns
    for i in range(args.warmup + 2, args.warmup + 2 + args.n):
        for name, call in order if i % 2 else order[::-1]:
            prepare(name, i)
            c0, t0 = proc(), wall()
            call(i)
            t1, c1 = wall(), proc()
            samples[name].append(t1 - t0)
            cpu[name].append(c1 - c0)
    stats = {name: _summary(samples[name], cpu[name]) for name in contenders}
    for name in contenders:
        stats[name]["queries"] = queries[name]
    pairs = [e - b for e, b in zip(samples["evaluate_cart"], samples["bare"], strict=True)]
    overhead = {
        "p50_ms": round(stats["evaluate_cart"]["p50_ms"] - stats["bare"]["p50_ms"], 3),
        "p95_ms": round(stats["evaluate_cart"]["p95_ms"] - stats["bare"]["p95_ms"], 3),
        "cpu_p50_ms": round(stats["evaluate_cart"]["cpu_p50_ms"] - stats["bare"]["cpu_p50_ms"], 3),
        "median_of_pairwise_ms": round(statistics.median(pairs) / 1e6, 3),
    }
    found = {"contenders": stats, "overhead": overhead, "statements": statements}
    if args.against:
        pairs = [e - a for e, a in zip(samples["evaluate_cart"], samples["against"], strict=True)]
        found["against"] = {
            "swap": args.against,
            "p50_ms": round(stats["evaluate_cart"]["p50_ms"] - stats["against"]["p50_ms"], 3),
            "cpu_p50_ms": round(
                stats["evaluate_cart"]["cpu_p50_ms"] - stats["against"]["cpu_p50_ms"], 3
            ),
            "median_of_pairwise_ms": round(statistics.median(pairs) / 1e6, 3),
        }
    if args.statement_times:
        found["statement_times"] = _statement_times(call_evaluate, prepare, args.warmup + args.n)
    if args.profile:
        profiler = cProfile.Profile()
        for i in range(args.warmup + 2 + args.n, args.warmup + 202 + args.n):
            prepare("evaluate_cart", i)
            profiler.enable()
            call_evaluate(i)
            profiler.disable()
        if os.environ.get("PROFILE_DUMP"):  # the raw stats, for pstats or snakeviz
            profiler.dump_stats(f"{os.environ['PROFILE_DUMP']}.{args.child}")
        out = io.StringIO()
        stats_of = pstats.Stats(profiler, stream=out).strip_dirs()
        stats_of.sort_stats("tottime").print_stats(25)
        stats_of.sort_stats("cumulative").print_stats(os.environ.get("PROFILE_FILTER", ""), 60)
        found["profile"] = out.getvalue()
    return found


def _swapped(call: Any, spec: str) -> Any:
    """``call`` run with the object at one dotted path replaced by another (``TARGET=REPLACEMENT``)
    for the length of each call."""
    import importlib

    def resolve(path: str) -> tuple[Any, str]:
        module_name, _, attribute = path.strip().rpartition(".")
        if not module_name:
            raise SystemExit(f"--against: {path!r} is not a dotted path")
        module = importlib.import_module(module_name)
        if not hasattr(module, attribute):
            raise SystemExit(f"--against: {module_name} has no {attribute!r}")
        return module, attribute

    target, _, replacement = spec.partition("=")
    owner, name = resolve(target)
    source, source_name = resolve(replacement)
    new = getattr(source, source_name)

    def swapped(i: int) -> Any:
        old = getattr(owner, name)
        setattr(owner, name, new)
        try:
            return call(i)
        finally:
            setattr(owner, name, old)

    return swapped


def _statement_times(call: Any, prepare: Any, start: int) -> list[tuple[float, str]]:
    """Median wall time of each statement (by its place in the call) over 200 calls."""
    from django.db import connection

    times: list[list[float]] = []
    texts: list[str] = []

    def timed(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            times[-1].append(time.perf_counter() - t0)
            if len(times) == 1:
                texts.append(sql[:90])

    for i in range(start, start + 200):
        prepare("evaluate_cart", i)
        times.append([])
        with connection.execute_wrapper(timed):
            call(i)
    width = min(len(t) for t in times)
    return [
        (round(statistics.median(t[k] for t in times) * 1000, 3), texts[k]) for k in range(width)
    ]


def _set_quantity(order: Any, i: int, same: bool) -> None:
    """The second line's quantity alternates (2, 3, 2, ...): a changed cart on every call.

    Saved, and set on the prefetched line too, as a shop's cart page has it after the change.
    """
    from tests.shop.models import OrderLine

    line = sorted(order.lines.all(), key=lambda line: line.pk)[1]  # prefetched: no query
    line.quantity = CART[1][2] + (0 if same else i % 2)
    OrderLine.objects.filter(pk=line.pk).update(quantity=line.quantity)


def _summary(wall_ns: list[int], cpu_ns: list[int]) -> dict[str, Any]:
    ordered, cpu_sorted = sorted(wall_ns), sorted(cpu_ns)
    return {
        "p50_ms": round(_pct(ordered, 0.5), 3),
        "p95_ms": round(_pct(ordered, 0.95), 3),
        "mean_ms": round(statistics.fmean(wall_ns) / 1e6, 3),
        "cpu_p50_ms": round(_pct(cpu_sorted, 0.5), 3),
        "calls": len(wall_ns),
    }


def _pct(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted nanosecond samples, in ms."""
    rank = max(1, math.ceil(q * len(sorted_ns)))
    return sorted_ns[rank - 1] / 1e6


if __name__ == "__main__":
    sys.exit(main())
